package gitremote

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// The servers below are hostile git servers of the test's own, all on 127.0.0.1. The Client
// reaches them only because each test allows their address through the allow list; a second
// 127.0.0.1 listener that the test does not allow stands for an address the manager must never
// reach (an instance metadata service, a database in the cluster).

const zeroID = "0123456789abcdef0123456789abcdef01234567"

// rawServer accepts TCP connections on 127.0.0.1 and hands each to handle; it counts them.
type rawServer struct {
	addr    string
	accepts atomic.Int32
	done    chan struct{}
}

func serveRaw(t *testing.T, handle func(conn net.Conn, done <-chan struct{})) *rawServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: l.Addr().String(), done: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() { close(s.done); l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				handle(conn, s.done)
			}()
		}
	}()
	return s
}

// readRequest reads an HTTP request's head.
func readRequest(conn net.Conn) {
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil || line == "\r\n" {
			return
		}
	}
}

// advertisement is the start of a smart HTTP answer: the service line and its flush.
func advertisement() string { return pkt("# service=git-upload-pack\n") + "0000" }

// floodLines returns a block of ref lines with names of nameLen bytes, to write again and again.
func floodLines(nameLen int) string {
	var b strings.Builder
	for i := 0; b.Len() < 64<<10; i++ {
		name := fmt.Sprintf("refs/heads/f%0*d", nameLen, i)
		b.WriteString(pkt(zeroID + " " + name + "\n"))
	}
	return b.String()
}

// flood writes block until the client goes away.
func flood(w io.Writer, block string) {
	for {
		if _, err := io.WriteString(w, block); err != nil {
			return
		}
	}
}

// resolveWithin resolves and fails the test if the Client does not return within d.
func resolveWithin(t *testing.T, d time.Duration, c *Client, url, rev string) (string, error) {
	t.Helper()
	type answer struct {
		commit string
		err    error
	}
	ch := make(chan answer, 1)
	start := time.Now()
	go func() {
		commit, err := c.Resolve(context.Background(), url, rev)
		ch <- answer{commit, err}
	}()
	select {
	case a := <-ch:
		t.Logf("Resolve(%s, %q) after %s: %q, %v", url, rev, time.Since(start).Round(time.Millisecond), a.commit, a.err)
		return a.commit, a.err
	case <-time.After(d):
		t.Fatalf("Resolve(%s, %q) did not return within %s", url, rev, d)
		return "", nil
	}
}

func httpServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, strings.TrimPrefix(srv.URL, "http://")
}

func wantError(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want one that says %q", err, want)
	}
	if err != nil && strings.Contains(err.Error(), "SECRET") {
		t.Errorf("the error %q holds bytes the server sent", err)
	}
}

// TestFloodsAreBounded: an advertisement that never ends is cut at the byte limit (long ref
// names) or at the ref limit (short ones), over HTTP and git://.
func TestFloodsAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nameLen int
		want    string
	}{
		{"bytes", 2000, fmt.Sprintf("the ref list is longer than %d bytes", DefaultMaxBytes)},
		{"refs", 1, fmt.Sprintf("the repository advertises more than %d refs", DefaultMaxRefs)},
	} {
		block := floodLines(tc.nameLen)
		t.Run("http-"+tc.name, func(t *testing.T) {
			_, addr := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, advertisement()+pkt(zeroID+" HEAD\x00multi_ack\n"))
				flood(w, block)
			})
			_, err := resolveWithin(t, 20*time.Second, allowing(t, Options{}, addr), "http://"+addr+"/app.git", "main")
			wantError(t, err, tc.want)
		})
		t.Run("git-"+tc.name, func(t *testing.T) {
			srv := serveRaw(t, func(conn net.Conn, _ <-chan struct{}) { flood(conn, block) })
			_, err := resolveWithin(t, 20*time.Second, allowing(t, Options{}, srv.addr), "git://"+srv.addr+"/app.git", "main")
			wantError(t, err, tc.want)
		})
	}
}

// TestStopsOnceTheWantedRefIsSeen: a listing ends at the wanted branch or HEAD; it does not wait
// for the rest of a list that never ends.
func TestStopsOnceTheWantedRefIsSeen(t *testing.T) {
	main, next := strings.Repeat("1", 40), strings.Repeat("2", 40)
	block := floodLines(1)
	_, addr := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, advertisement()+pkt(main+" HEAD\x00multi_ack\n")+pkt(main+" refs/heads/main\n")+pkt(next+" refs/heads/next\n"))
		flood(w, block)
	})
	c := allowing(t, Options{}, addr)
	for rev, want := range map[string]string{"": main, "main": main, "refs/heads/next": next} {
		if got, err := resolveWithin(t, 10*time.Second, c, "http://"+addr+"/app.git", rev); err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %s", rev, got, err, want)
		}
	}
}

// TestRedirects: a redirect to an address the allow list does not name is refused by the
// dialer, before it connects; a redirect to another host name is not followed; a redirect on
// the same host is.
func TestRedirects(t *testing.T) {
	metaURL, metaConns := testenv.MetadataServer(t)
	tiny := advertisement() + pkt(zeroID+" HEAD\x00multi_ack\n") + "0000"
	_, addr := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/meta/"):
			http.Redirect(w, r, metaURL+"/latest/meta-data/iam/", http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/other-name/"):
			http.Redirect(w, r, "http://localhost:"+r.Host[strings.LastIndex(r.Host, ":")+1:]+"/app.git/info/refs?service=git-upload-pack", http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/old.git/"):
			http.Redirect(w, r, "/app.git/info/refs?service=git-upload-pack", http.StatusMovedPermanently)
		default:
			_, _ = io.WriteString(w, tiny)
		}
	})
	c := allowing(t, Options{}, addr)

	_, err := resolveWithin(t, 10*time.Second, c, "http://"+addr+"/meta/app.git", "")
	wantError(t, err, "the manager does not connect to "+strings.TrimPrefix(metaURL, "http://")+": a loopback address")
	if n := metaConns.Load(); n != 0 {
		t.Errorf("the metadata listener got %d connections", n)
	}
	_, err = resolveWithin(t, 10*time.Second, c, "http://"+addr+"/other-name/app.git", "")
	wantError(t, err, "the server redirected to another host")
	if got, err := resolveWithin(t, 10*time.Second, c, "http://"+addr+"/old.git", ""); err != nil || got != zeroID {
		t.Errorf("a redirect on the same host: %q, %v", got, err)
	}
}

// TestRefusesAddressesNotAllowed: without an entry, the test's own loopback servers are not
// dialled, whether named by address or by a name that resolves to them; an entry for one port
// opens no other.
func TestRefusesAddressesNotAllowed(t *testing.T) {
	srv := serveRaw(t, func(conn net.Conn, _ <-chan struct{}) { readRequest(conn) })
	_, err := resolveWithin(t, 10*time.Second, New(Options{}), "git://"+srv.addr+"/app.git", "")
	wantError(t, err, "a loopback address, polled only when --poll-allowed-cidrs names it")
	port := srv.addr[strings.LastIndex(srv.addr, ":")+1:]
	_, err = resolveWithin(t, 10*time.Second, allowing(t, Options{}, "127.0.0.1:1"), "http://localhost:"+port+"/app.git", "")
	wantError(t, err, "the manager does not connect to")
	if n := srv.accepts.Load(); n != 0 {
		t.Errorf("the server got %d connections", n)
	}
	// The same name is dialled once its resolved address is allowed: the check is on the
	// address at connect time, not on the name.
	_, err = resolveWithin(t, 10*time.Second, allowing(t, Options{}, srv.addr, "[::1]:"+port), "http://localhost:"+port+"/app.git", "")
	wantError(t, err, "the server closed the connection")
	if n := srv.accepts.Load(); n == 0 {
		t.Error("an allowed address was not dialled")
	}
}

// dripRefs sends ref lines a byte every 50ms, for ever.
func dripRefs(conn net.Conn, done <-chan struct{}) {
	for line := pkt(zeroID + " refs/heads/x\n"); ; {
		for i := range line {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := io.WriteString(conn, line[i:i+1]); err != nil {
				return
			}
		}
	}
}

// TestStallsAreBounded: a server that accepts and says nothing, or that sends its answer a
// byte at a time, costs at most the header or whole-listing timeout.
func TestStallsAreBounded(t *testing.T) {
	silent := func(conn net.Conn, done <-chan struct{}) { readRequest(conn); <-done }
	drip := func(conn net.Conn, done <-chan struct{}) {
		readRequest(conn)
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n\r\n"+advertisement())
		dripRefs(conn, done)
	}
	opts := Options{Timeout: 2 * time.Second, ResponseHeaderTimeout: 500 * time.Millisecond}
	for _, tc := range []struct {
		name, scheme string
		handle       func(net.Conn, <-chan struct{})
	}{{"http-silent", "http", silent}, {"http-drip", "http", drip}, {"git-silent", "git", silent}, {"git-drip", "git", dripRefs}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serveRaw(t, tc.handle)
			start := time.Now()
			_, err := resolveWithin(t, 10*time.Second, allowing(t, opts, srv.addr), tc.scheme+"://"+srv.addr+"/app.git", "main")
			wantError(t, err, "the server did not answer in time")
			if took := time.Since(start); took > 4*time.Second {
				t.Errorf("the listing took %s", took)
			}
		})
	}
}

// TestMessagesHoldNoServerBytes: what a server says (a reason phrase, a body, an ERR packet)
// never reaches the error, which becomes an Event in the tenant's namespace.
func TestMessagesHoldNoServerBytes(t *testing.T) {
	for _, tc := range []struct {
		name, scheme, reply, want string
	}{
		{"reason-phrase", "http", "HTTP/1.1 403 SECRET-PHRASE\r\nContent-Length: 0\r\n\r\n", "the server answered HTTP 403 Forbidden"},
		{"not-git", "http", "HTTP/1.1 200 OK\r\n\r\nSECRET-BODY of some other service", "the server sent a malformed pkt-line"},
		{"not-smart", "http", "HTTP/1.1 200 OK\r\n\r\n" + pkt("SECRET-LINE\n"), "the server is not a smart git server"},
		{"err-http", "http", "HTTP/1.1 200 OK\r\n\r\n" + advertisement() + pkt("ERR SECRET-ERR\n"), "the git server refused the request"},
		{"err-git", "git", pkt("ERR SECRET-ERR\n"), "the git server refused the request"},
		{"short-git", "git", pkt(zeroID+" HEAD\n") + "00", "the server closed the connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serveRaw(t, func(conn net.Conn, _ <-chan struct{}) {
				if tc.scheme == "http" {
					readRequest(conn)
				}
				_, _ = io.WriteString(conn, tc.reply)
			})
			_, err := resolveWithin(t, 10*time.Second, allowing(t, Options{}, srv.addr), tc.scheme+"://"+srv.addr+"/app.git", "main")
			wantError(t, err, tc.want)
		})
	}
}

// TestGitPathsCannotSmuggleLines: a git:// path with a percent-encoded CR or LF is refused
// before anything is sent, so it cannot become a command for a line-based service.
func TestGitPathsCannotSmuggleLines(t *testing.T) {
	var got atomic.Value
	srv := serveRaw(t, func(conn net.Conn, _ <-chan struct{}) {
		b, _ := io.ReadAll(io.LimitReader(conn, 4096))
		got.Store(string(b))
	})
	_, err := resolveWithin(t, 10*time.Second, allowing(t, Options{}, srv.addr), "git://"+srv.addr+"/app.git%0d%0aFLUSHALL%0d%0a", "")
	wantError(t, err, "the repository path holds a control character")
	if n := srv.accepts.Load(); n != 0 {
		t.Errorf("the server got %d connections (%q)", n, got.Load())
	}
}
