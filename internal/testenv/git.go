package testenv

import (
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StartGitDaemon serves the bare repositories under base with `git daemon` on 127.0.0.1 and
// returns "127.0.0.1:PORT"; repositories are then git://127.0.0.1:PORT/<name>.git. The daemon and
// its children stop when the test ends.
func StartGitDaemon(t testing.TB, base string) string {
	t.Helper()
	return StartGitDaemonOn(t, base, "127.0.0.1")
}

// StartGitDaemonOn is StartGitDaemon listening on host, an address of this machine (the local
// cluster's bridge gateway, so that pods reach it).
func StartGitDaemonOn(t testing.TB, base, host string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("testenv: git is not installed (run hack/install-test-deps.sh)")
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("git", "daemon", "--reuseaddr", "--export-all", "--listen="+host, fmt.Sprintf("--port=%d", port), "--base-path="+base, base)
	// A log file, not a pipe: the daemon's children would keep a pipe open past Wait. Its own
	// process group, so that the children go with it.
	logPath := filepath.Join(t.TempDir(), "git-daemon.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: starting git daemon: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	addr := net.JoinHostPort(host, fmt.Sprint(port))
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("testenv: git daemon did not listen on %s: %v\n%s", addr, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// GitRepo makes a work tree with the given files committed on branch main at a fixed time, and
// returns a function that runs git in it (for more commits and tags).
func GitRepo(t testing.TB, files map[string]string) (dir string, git func(args ...string) string) {
	t.Helper()
	dir = t.TempDir()
	git = func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=kiln", "GIT_AUTHOR_EMAIL=kiln@example.com", "GIT_COMMITTER_NAME=kiln",
			"GIT_COMMITTER_EMAIL=kiln@example.com", "GIT_AUTHOR_DATE=2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2026-01-02T03:04:05Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("testenv: git %v: %v\n%s", args, err, out)
		}
		return string(trimNewline(out))
	}
	git("init", "-q", "-b", "main")
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("add", ".")
	git("commit", "-q", "-m", "first")
	return dir, git
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// GitHTTP is a git smart-HTTP server started by StartGitHTTP.
type GitHTTP struct {
	// URL is "http://127.0.0.1:PORT"; repositories are <URL>/<name>.git.
	URL string

	mu    sync.Mutex
	auths []string
}

// Authorizations are the Authorization headers of every request so far, "" for none.
func (g *GitHTTP) Authorizations() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.auths...)
}

// StartGitHTTP serves the bare repositories under base over git's smart HTTP protocol (git
// http-backend behind Go's CGI handler) on 127.0.0.1. With a password, every request must carry
// it in basic auth (any user name), as a token-protected git host wants; paths under
// /status/<code>/ answer with that HTTP status, as a failing host would. It records the
// Authorization header of every request (GitHTTP.Authorizations).
func StartGitHTTP(t testing.TB, base, password string) *GitHTTP {
	t.Helper()
	exe, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("testenv: git is not installed (run hack/install-test-deps.sh): %v", err)
	}
	backend := &cgi.Handler{
		Path: filepath.Join(string(trimNewline(exe)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + base, "GIT_HTTP_EXPORT_ALL=1"},
	}
	g := &GitHTTP{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.auths = append(g.auths, r.Header.Get("Authorization"))
		g.mu.Unlock()
		if rest, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			code, _ := strconv.Atoi(strings.SplitN(rest, "/", 2)[0])
			http.Error(w, "testenv: failing on purpose", code)
			return
		}
		if _, pw, _ := r.BasicAuth(); password != "" && pw != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="testenv"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}
