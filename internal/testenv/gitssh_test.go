package testenv_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestGitSSH: the SSH git server serves a repository to its client key when the client knows
// its host key, refuses a client that expects another key before any login, and counts the
// connections it accepted.
func TestGitSSH(t *testing.T) {
	srv := testenv.StartGitSSH(t)
	if n := srv.Connections(); n != 0 {
		t.Fatalf("%d connections before any client", n)
	}
	work, git := testenv.GitRepo(t, map[string]string{"hello.txt": "over ssh\n"})
	commit := git("rev-parse", "HEAD")
	url := srv.AddRepo(t, "app.git", work)

	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, srv.ClientKey, 0o600); err != nil {
		t.Fatal(err)
	}
	lsRemote := func(knownHosts string) (string, error) {
		kh := filepath.Join(dir, "known_hosts")
		if err := os.WriteFile(kh, []byte(knownHosts), 0o600); err != nil {
			t.Fatal(err)
		}
		// As BuildKit runs ssh: no config, the given known hosts, no terminal to ask on.
		cmd := exec.Command("git", "ls-remote", url, "refs/heads/main")
		cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND=ssh -F /dev/null -o UserKnownHostsFile="+kh+" -o IdentitiesOnly=yes -i "+key+" -o BatchMode=yes")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := lsRemote(srv.KnownHosts())
	if err != nil || !strings.HasPrefix(out, commit) {
		t.Fatalf("git ls-remote %s: %v\n%s\nsshd log:\n%s", url, err, out, srv.Log())
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections after one ls-remote", n)
	}
	out, err = lsRemote(srv.KnownHostsWith(testenv.NewSSHHostKey(t)))
	if err == nil || !strings.Contains(out, "Host key verification failed") {
		t.Errorf("a client that expects another host key: %v\n%s", err, out)
	}
	if n := strings.Count(srv.Log(), "Accepted publickey"); n != 1 {
		t.Errorf("%d logins, want the first client's only (the second refused the host key):\n%s", n, srv.Log())
	}
	// git-shell allows git and nothing else.
	cmd := exec.Command("ssh", "-F", "/dev/null", "-o", "UserKnownHostsFile="+filepath.Join(dir, "known_hosts"), "-o", "StrictHostKeyChecking=no",
		"-o", "BatchMode=yes", "-i", key, "-p", strings.Split(srv.Addr, ":")[1], srv.User+"@127.0.0.1", "id")
	if out, err := cmd.CombinedOutput(); err == nil || strings.Contains(string(out), "uid=") {
		t.Errorf("the client key ran a shell command: %v\n%s", err, out)
	}
}
