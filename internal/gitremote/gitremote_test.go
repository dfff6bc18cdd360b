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

func checkRefs(t *testing.T, refs Refs, first, second string) {
	t.Helper()
	for rev, want := range map[string]string{"": second, "main": second, "refs/heads/main": second, "v1": first, "v1-annotated": first} {
		got, err := refs.Resolve(rev)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %s", rev, got, err, want)
		}
	}
	if _, err := refs.Resolve("nope"); err == nil || !strings.Contains(err.Error(), `no branch or tag named "nope"`) {
		t.Errorf("Resolve(nope) error %v", err)
	}
}

func TestListOverGitProtocol(t *testing.T) {
	base, first, second := repo(t)
	url := "git://" + testenv.StartGitDaemon(t, base) + "/app.git"
	var err error
	var refs Refs
	for deadline := time.Now().Add(10 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		refs, err = List(ctx, url)
		cancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	checkRefs(t, refs, first, second)
}

func TestListOverSmartHTTP(t *testing.T) {
	base, first, second := repo(t)
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git-http-backend is not installed")
	}
	srv := httptest.NewServer(&cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + base, "GIT_HTTP_EXPORT_ALL=1"}})
	defer srv.Close()
	refs, err := List(context.Background(), srv.URL+"/app.git")
	if err != nil {
		t.Fatal(err)
	}
	checkRefs(t, refs, first, second)

	if _, err := List(context.Background(), srv.URL+"/missing.git"); err == nil {
		t.Error("a missing repository listed without error")
	}
	if _, err := List(context.Background(), "ssh://git@example.com/app.git"); err == nil || !strings.Contains(err.Error(), "only https://, http:// and git://") {
		t.Errorf("ssh error %v", err)
	}
}

func TestIsCommit(t *testing.T) {
	if !IsCommit(strings.Repeat("a", 40)) || IsCommit("main") || IsCommit(strings.Repeat("a", 39)) {
		t.Error("IsCommit")
	}
}
