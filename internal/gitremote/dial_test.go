package gitremote

import (
	"net/netip"
	"strings"
	"testing"
)

func TestAllowListCheck(t *testing.T) {
	for _, tc := range []struct {
		allow []string
		addr  string
		ok    bool
	}{
		{nil, "203.0.113.7:443", true}, // public: no entry needed
		{nil, "[2001:db8::1]:443", true},
		{nil, "10.1.2.3:443", false},
		{nil, "172.20.0.1:443", false},
		{nil, "192.168.1.1:443", false},
		{nil, "100.64.0.1:443", false},
		{nil, "[fd00::1]:443", false},
		{nil, "[64:ff9b::a00:1]:443", false}, // NAT64 of 10.0.0.1
		{nil, "127.0.0.1:80", false},
		{nil, "[::1]:80", false},
		{nil, "[::ffff:127.0.0.1]:80", false},
		{[]string{"10.0.0.0/8"}, "10.1.2.3:443", true},
		{[]string{"10.0.0.0/8"}, "192.168.1.1:443", false},
		{[]string{"10.1.2.3:9418"}, "10.1.2.3:9418", true},
		{[]string{"10.1.2.3:9418"}, "10.1.2.3:22", false},
		{[]string{"10.1.2.3"}, "10.1.2.3:22", true},
		{[]string{"[fd00::1]:443"}, "[fd00::1]:443", true},
		// A broad entry never opens loopback, link-local or unspecified addresses.
		{[]string{"0.0.0.0/0", "::/0"}, "10.1.2.3:443", true},
		{[]string{"0.0.0.0/0", "::/0"}, "127.0.0.1:80", false},
		{[]string{"0.0.0.0/0", "::/0"}, "[::1]:80", false},
		{[]string{"0.0.0.0/0", "::/0"}, "169.254.169.254:80", false},
		{[]string{"0.0.0.0/0", "::/0"}, "0.0.0.0:80", false},
		{[]string{"0.0.0.0/0", "::/0"}, "[::]:80", false},
		{[]string{"0.0.0.0/0", "::/0"}, "[fe80::1]:80", false},
		{[]string{"0.0.0.0/0", "::/0"}, "224.0.0.1:80", false},
		{[]string{"0.0.0.0/0", "::/0"}, "255.255.255.255:80", false},
		// An entry inside loopback opens it; link-local stays closed even when named.
		{[]string{"127.0.0.1:8080"}, "127.0.0.1:8080", true},
		{[]string{"127.0.0.1:8080"}, "127.0.0.1:8081", false},
		{[]string{"127.0.0.1:8080"}, "[::ffff:127.0.0.1]:8080", true},
		{[]string{"127.0.0.0/8"}, "127.0.0.5:1", true},
		{[]string{"169.254.169.254/32"}, "169.254.169.254:80", false},
	} {
		a, err := ParseAllowList(tc.allow)
		if err != nil {
			t.Fatal(err)
		}
		err = a.Check(netip.MustParseAddrPort(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("allow %v, dial %s: error %v, want allowed=%v", tc.allow, tc.addr, err, tc.ok)
		}
	}
}

func TestParseAllowList(t *testing.T) {
	a, err := ParseAllowList([]string{" 10.0.0.0/8", "", "10.9.0.1/16", "192.168.0.7", "127.0.0.1:8080", "[fd00::1]:443"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.String(), "10.0.0.0/8,10.9.0.0/16,192.168.0.7/32,127.0.0.1:8080,[fd00::1]:443"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1:0", "10.0.0.0/8:443"} {
		if _, err := ParseAllowList([]string{bad}); err == nil || !strings.Contains(err.Error(), "is not a CIDR") {
			t.Errorf("%q: error %v", bad, err)
		}
	}
}
