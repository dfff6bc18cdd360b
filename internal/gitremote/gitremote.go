// Package gitremote finds the commit a git repository's branch or tag points to, over the smart
// HTTP and git:// protocols, the way `git ls-remote` does, so that the manager can notice a
// moving branch without a clone and without credentials (the manager never reads Secrets).
//
// The URL is a tenant's, so the manager treats the server as hostile: a Client reads at most
// Options.MaxBytes and Options.MaxRefs and stops as soon as the wanted ref is settled; every
// connection goes through a dialer that checks the resolved address against an AllowList at
// connect time; redirects stay on the same host; dial, TLS, header and whole-listing timeouts
// are short; and error messages are kiln's own sentences, never bytes the server sent.
//
// The protocol part is the ref advertisement only (pkt-lines up to the first flush), written
// here rather than taken from go-git: go-git's git:// transport dials with net.Dial (no place
// for the address check) and its advertisement decoder reads every ref before it returns.
package gitremote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"
)

// Refs maps ref names (HEAD, refs/heads/main, refs/tags/v1, refs/tags/v1^{}) to commit ids.
type Refs map[string]string

var commitID = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// IsCommit reports whether rev is a full commit id, which never moves.
func IsCommit(rev string) bool { return commitID.MatchString(rev) }

// candidates are the ref names rev may stand for, best first.
func candidates(rev string) []string {
	switch {
	case rev == "" || rev == "HEAD":
		return []string{"HEAD"}
	case strings.HasPrefix(rev, "refs/"):
		return []string{rev}
	}
	return []string{"refs/heads/" + rev, "refs/tags/" + rev}
}

// Resolve returns the commit rev names among refs: a branch, a tag (peeled to its commit) or,
// when rev is empty, HEAD.
func (r Refs) Resolve(rev string) (string, error) {
	for _, name := range candidates(rev) {
		if c, ok := r[name+"^{}"]; ok {
			return c, nil // an annotated tag, peeled to its commit
		}
		if c, ok := r[name]; ok {
			return c, nil
		}
	}
	if rev == "" || rev == "HEAD" {
		return "", &Error{msg: "the repository advertises no HEAD"}
	}
	return "", &Error{msg: fmt.Sprintf("no branch or tag named %q", rev)}
}

// Options are a Client's network rules and limits; zero values take the defaults.
type Options struct {
	// Allow names the private, cluster and loopback addresses the Client may connect to.
	Allow *AllowList
	// Timeout bounds one whole listing, from dial to the last byte (default 20s).
	Timeout time.Duration
	// DialTimeout bounds name resolution and connect (default 5s).
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake (default 5s).
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an HTTP response's headers (default 10s).
	ResponseHeaderTimeout time.Duration
	// MaxBytes bounds the ref advertisement read (default 16 MiB).
	MaxBytes int64
	// MaxRefs bounds the refs read (default 200000).
	MaxRefs int
}

// Defaults of Options.
const (
	DefaultTimeout               = 20 * time.Second
	DefaultDialTimeout           = 5 * time.Second
	DefaultTLSHandshakeTimeout   = 5 * time.Second
	DefaultResponseHeaderTimeout = 10 * time.Second
	DefaultMaxBytes              = 16 << 20
	DefaultMaxRefs               = 200000
)

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Client lists refs under Options' rules. It is safe for concurrent use.
type Client struct {
	opts   Options
	allow  atomic.Pointer[AllowList]
	dialer *net.Dialer
	http   *http.Client
}

// New returns a Client with opts' rules.
func New(opts Options) *Client {
	opts.Timeout = orDefault(opts.Timeout, DefaultTimeout)
	opts.DialTimeout = orDefault(opts.DialTimeout, DefaultDialTimeout)
	opts.TLSHandshakeTimeout = orDefault(opts.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
	opts.ResponseHeaderTimeout = orDefault(opts.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	opts.MaxBytes = orDefault(opts.MaxBytes, DefaultMaxBytes)
	opts.MaxRefs = orDefault(opts.MaxRefs, DefaultMaxRefs)
	c := &Client{opts: opts}
	c.allow.Store(opts.Allow)
	c.dialer = &net.Dialer{Timeout: opts.DialTimeout, Control: c.control}
	c.http = &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // the dialer checks the repository's address, not a proxy's
			DialContext:            c.dialer.DialContext,
			TLSHandshakeTimeout:    opts.TLSHandshakeTimeout,
			ResponseHeaderTimeout:  opts.ResponseHeaderTimeout,
			MaxResponseHeaderBytes: 64 << 10,
			DisableCompression:     true,
			DisableKeepAlives:      true,
		},
		CheckRedirect: sameHost,
	}
	return c
}

// SetAllowList replaces the addresses the Client may connect to, for the next connections.
func (c *Client) SetAllowList(a *AllowList) { c.allow.Store(a) }

// sameHost follows at most five redirects, each to the first request's host name, and never
// from https to http.
func sameHost(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	switch {
	case len(via) >= 5:
		return &Error{msg: "the server redirected more than 5 times"}
	case !strings.EqualFold(req.URL.Hostname(), first.Hostname()):
		return &Error{msg: "the server redirected to another host, which the manager does not follow"}
	case first.Scheme == "https" && req.URL.Scheme != "https":
		return &Error{msg: "the server redirected from https to http, which the manager does not follow"}
	}
	return nil
}

// Resolve finds the commit rev points to in the repository at rawURL (https://, http:// or
// git://): a branch, a tag (peeled) or, when rev is empty, HEAD.
func (c *Client) Resolve(ctx context.Context, rawURL, rev string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", &Error{msg: "the URL does not parse"}
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	var refs Refs
	switch u.Scheme {
	case "http", "https":
		refs, err = c.listHTTP(ctx, u, candidates(rev))
	case "git":
		refs, err = c.listGit(ctx, u, candidates(rev))
	default:
		return "", &Error{msg: "only https://, http:// and git:// repositories can be polled"}
	}
	if err != nil {
		return "", &Error{msg: describe(err), err: err}
	}
	return refs.Resolve(rev)
}

func (c *Client) listHTTP(ctx context.Context, u *url.URL, want []string) (Refs, error) {
	info := *u
	info.Path = strings.TrimSuffix(u.Path, "/") + "/info/refs"
	info.RawPath = strings.TrimSuffix(u.EscapedPath(), "/") + "/info/refs"
	info.RawQuery, info.Fragment = "service=git-upload-pack", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, info.String(), nil)
	if err != nil {
		return nil, &Error{msg: "the URL cannot be requested"}
	}
	req.Header.Set("User-Agent", "git/2.0 (kiln)")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &Error{msg: fmt.Sprintf("the server answered HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))}
	}
	r := c.reader(resp.Body)
	// Smart HTTP starts with "# service=git-upload-pack" and a flush.
	notSmart := &Error{msg: "the server is not a smart git server (no service announcement)"}
	first, err := r.next()
	switch {
	case errors.Is(err, errFlush):
		return nil, notSmart
	case err != nil:
		return nil, err
	case !strings.HasPrefix(string(first), "# service=git-upload-pack"):
		return nil, notSmart
	}
	if _, err := r.next(); err == nil {
		return nil, notSmart
	} else if !errors.Is(err, errFlush) {
		return nil, err
	}
	return r.refs(want)
}

func (c *Client) listGit(ctx context.Context, u *url.URL, want []string) (Refs, error) {
	// The path travels raw in the request: a control character (a percent-encoded CR or LF)
	// would become a line of its own for whatever service listens there.
	if strings.ContainsFunc(u.Path+u.Host, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, &Error{msg: "the repository path holds a control character"}
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "9418")
	}
	conn, err := c.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	request := "git-upload-pack " + u.Path + "\x00host=" + u.Host + "\x00"
	if len(request) > maxPkt-4 {
		return nil, &Error{msg: "the repository path is too long"}
	}
	if _, err := io.WriteString(conn, pkt(request)); err != nil {
		return nil, err
	}
	refs, err := c.reader(conn).refs(want)
	_, _ = io.WriteString(conn, "0000") // we want nothing: end the session
	return refs, err
}
