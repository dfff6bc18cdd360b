package gitremote

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
)

// Address classes the dialer tells apart. A tenant chooses the URL and so, through DNS, the
// address: the class of the address the socket is about to connect to decides, not the name.
var (
	// neverPrefixes are never dialled: they reach the manager's own node or pod (0.0.0.0 and ::
	// connect to the local host), instance metadata services (169.254.169.254, fd00:ec2::254
	// is in fc00::/7 below) or no single host at all.
	neverPrefixes = prefixes("0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128", "fe80::/10", "ff00::/8")
	// loopbackPrefixes are dialled only when an allow-list entry lies inside them: a broad entry
	// such as 0.0.0.0/0 never opens the manager's own loopback.
	loopbackPrefixes = prefixes("127.0.0.0/8", "::1/128")
	// privatePrefixes are the ranges clusters and private networks use (RFC 1918, shared address
	// space, benchmarking, unique local IPv6, NAT64 that embeds an IPv4 address): dialled only
	// when an allow-list entry contains the address.
	privatePrefixes = prefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
		"198.18.0.0/15", "fc00::/7", "fec0::/10", "64:ff9b::/96", "64:ff9b:1::/48")
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func inAny(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// within reports whether all of p lies inside one of list.
func within(p netip.Prefix, list []netip.Prefix) bool {
	for _, outer := range list {
		if outer.Bits() <= p.Bits() && outer.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// AllowList names the private, cluster and loopback addresses the poller may connect to
// (--poll-allowed-cidrs). Public addresses need no entry; link-local, multicast and unspecified
// addresses are never dialled whatever the list says.
type AllowList struct {
	entries []allowEntry
}

type allowEntry struct {
	prefix netip.Prefix
	port   uint16 // 0: any port
}

// ParseAllowList reads entries of the form 10.0.0.0/8 (a CIDR, any port), 10.1.2.3 (one
// address, any port) or 10.1.2.3:9418 / [fd00::1]:443 (one address and port). Empty entries are
// skipped.
func ParseAllowList(entries []string) (*AllowList, error) {
	a := &AllowList{}
	for _, s := range entries {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		e, err := parseEntry(s)
		if err != nil {
			return nil, err
		}
		a.entries = append(a.entries, e)
	}
	return a, nil
}

func parseEntry(s string) (allowEntry, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return allowEntry{prefix: p.Masked()}, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
		a := ap.Addr().Unmap()
		return allowEntry{prefix: netip.PrefixFrom(a, a.BitLen()), port: ap.Port()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return allowEntry{prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	return allowEntry{}, fmt.Errorf("%q is not a CIDR (10.0.0.0/8), an address (10.1.2.3) or an address and port (10.1.2.3:9418)", s)
}

// String lists the entries as ParseAllowList reads them.
func (a *AllowList) String() string {
	if a == nil {
		return ""
	}
	out := make([]string, len(a.entries))
	for i, e := range a.entries {
		out[i] = e.prefix.String()
		if e.port != 0 {
			out[i] = netip.AddrPortFrom(e.prefix.Addr(), e.port).String()
		}
	}
	return strings.Join(out, ",")
}

// allows reports whether an entry contains ap; loopbackOnly counts only entries that lie inside
// the loopback ranges.
func (a *AllowList) allows(ap netip.AddrPort, loopbackOnly bool) bool {
	if a == nil {
		return false
	}
	for _, e := range a.entries {
		if !e.prefix.Contains(ap.Addr()) || (e.port != 0 && e.port != ap.Port()) {
			continue
		}
		if !loopbackOnly || within(e.prefix, loopbackPrefixes) {
			return true
		}
	}
	return false
}

// RefusedError is a connection the dialer would not make; its message names the resolved
// address and why, and nothing the server sent.
type RefusedError struct {
	Addr netip.AddrPort
	Why  string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the manager does not connect to %s: %s", e.Addr, e.Why)
}

// Check says whether the poller may connect to ap, the address a name resolved to.
func (a *AllowList) Check(ap netip.AddrPort) error {
	ap = netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
	addr := ap.Addr()
	switch {
	case !addr.IsValid():
		return &RefusedError{ap, "not an IP address"}
	case inAny(neverPrefixes, addr) || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return &RefusedError{ap, "link-local, multicast and unspecified addresses are never polled"}
	case inAny(loopbackPrefixes, addr):
		if a.allows(ap, true) {
			return nil
		}
		return &RefusedError{ap, "a loopback address, polled only when --poll-allowed-cidrs names it"}
	case inAny(privatePrefixes, addr):
		if a.allows(ap, false) {
			return nil
		}
		return &RefusedError{ap, "a private or cluster address, polled only when --poll-allowed-cidrs allows it"}
	}
	return nil
}

// control is the dialer's net.Dialer.Control: it runs for each address a name resolved to,
// just before the socket connects, so that DNS answers cannot steer the poller around the list.
func (c *Client) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Why: "not an IP address and port"}
	}
	return c.allow.Load().Check(ap)
}
