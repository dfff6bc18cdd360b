package gitremote

import (
	"context"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// repo makes a bare repository with a branch, a lightweight and an annotated tag, and returns
// its parent directory and the commits.
func repo(t *testing.T) (base string, first, second string) {
	t.Helper()
	work, git := testenv.GitRepo(t, map[string]string{"a": "a"})
	first = git("rev-parse", "HEAD")
	git("tag", "v1")
	git("tag", "-a", "v1-annotated", "-m", "annotated")
	if err := os.WriteFile(filepath.Join(work, "b"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", ".")
	git("commit", "-q", "-m", "two")
	second = git("rev-parse", "HEAD")
	base = t.TempDir()
	git("clone", "-q", "--bare", work, filepath.Join(base, "app.git"))
	return base, first, second
}

// allowing is a Client that may connect to the test's own servers at addrs (host:port on
// 127.0.0.1), through the same allow list as --poll-allowed-cidrs.
func allowing(t *testing.T, opts Options, addrs ...string) *Client {
	t.Helper()
	a, err := ParseAllowList(addrs)
	if err != nil {
		t.Fatal(err)
	}
	opts.Allow = a
	return New(opts)
}

func checkResolve(t *testing.T, c *Client, url, first, second string) {
	t.Helper()
	for rev, want := range map[string]string{"": second, "HEAD": second, "main": second, "refs/heads/main": second, "v1": first, "v1-annotated": first, "refs/tags/v1-annotated": first} {
		got, err := c.Resolve(context.Background(), url, rev)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %s", rev, got, err, want)
		}
	}
	if _, err := c.Resolve(context.Background(), url, "nope"); err == nil || !strings.Contains(err.Error(), `no branch or tag named "nope"`) {
		t.Errorf("Resolve(nope) error %v", err)
	}
}

func TestResolveOverGitProtocol(t *testing.T) {
	base, first, second := repo(t)
	addr := testenv.StartGitDaemon(t, base)
	c := allowing(t, Options{}, addr)
	url := "git://" + addr + "/app.git"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := c.Resolve(context.Background(), url, ""); err == nil || time.Now().After(deadline) {
			break
		}
	}
	checkResolve(t, c, url, first, second)
}

func TestResolveOverSmartHTTP(t *testing.T) {
	base, first, second := repo(t)
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git-http-backend is not installed")
	}
	srv := httptest.NewServer(&cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + base, "GIT_HTTP_EXPORT_ALL=1"}})
	defer srv.Close()
	c := allowing(t, Options{}, strings.TrimPrefix(srv.URL, "http://"))
	checkResolve(t, c, srv.URL+"/app.git", first, second)

	if _, err := c.Resolve(context.Background(), srv.URL+"/missing.git", ""); err == nil || !strings.Contains(err.Error(), "HTTP 404 Not Found") {
		t.Errorf("a missing repository: %v", err)
	}
	if _, err := c.Resolve(context.Background(), "ssh://git@example.com/app.git", ""); err == nil || !strings.Contains(err.Error(), "only https://, http:// and git://") {
		t.Errorf("ssh error %v", err)
	}
}

func TestIsCommit(t *testing.T) {
	if !IsCommit(strings.Repeat("a", 40)) || IsCommit("main") || IsCommit(strings.Repeat("a", 39)) {
		t.Error("IsCommit")
	}
}

func TestRefsResolveWithoutHEAD(t *testing.T) {
	if _, err := (Refs{}).Resolve(""); err == nil || err.Error() != "the repository advertises no HEAD" {
		t.Errorf("error %v", err)
	}
}
