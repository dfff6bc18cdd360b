package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// GitSSH is an SSH git server started by StartGitSSH: Debian's OpenSSH sshd on 127.0.0.1, run
// by an unprivileged user with a host key of its own, that serves the bare repositories under
// Dir through git-shell to one client key.
type GitSSH struct {
	// Addr is "127.0.0.1:PORT".
	Addr string
	// User is the user sshd runs as, which is the user of every URL.
	User string
	// Dir holds the repositories (AddRepo); URL names them by their path under it.
	Dir string
	// HostKey is the server's public host key in authorized_keys form ("ssh-ed25519 AAAA…").
	HostKey string
	// ClientKey is the private key the server accepts (OpenSSH PEM), as a git Secret's
	// ssh-privatekey holds it.
	ClientKey []byte

	logPath string
	uid     int
	gid     int
}

// StartGitSSH starts sshd on 127.0.0.1 with a new host key and a new client key, and stops it
// (and every session) when the test ends. sshd runs as the build user (KILN_BUILD_USER, default
// kilnbuild) when the test runs as root, else as the test's own user: an unprivileged sshd can
// only log in as itself. Its authorized_keys entry restricts the client key to git-shell, so
// the server serves git fetches and pushes and nothing else. It fails the test when sshd is not
// installed (hack/install-test-deps.sh installs Debian's openssh-server).
func StartGitSSH(t testing.TB) *GitSSH {
	t.Helper()
	sshd := lookBin(t, "", "sshd", "/usr/sbin", "/usr/bin", "/sbin")
	if !filepath.IsAbs(sshd) {
		// sshd re-executes itself for every connection and refuses to start from a relative path.
		abs, err := filepath.Abs(sshd)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		sshd = abs
	}
	gitShell := lookBin(t, "", "git-shell", "/usr/bin", "/usr/local/bin")
	name, uid, gid := gitSSHUser(t)

	dir, err := os.MkdirTemp("", "kiln-gitssh-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s := &GitSSH{User: name, Dir: filepath.Join(dir, "repos"), logPath: filepath.Join(dir, "sshd.log"), uid: uid, gid: gid}

	hostPub, hostPEM := newSSHKey(t, "kiln-test-host")
	clientPub, clientPEM := newSSHKey(t, "kiln-test-client")
	s.HostKey, s.ClientKey = hostPub, clientPEM
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	writeSSHDFiles(t, dir, name, port, hostPEM, fmt.Sprintf("restrict,command=\"%s -c \\\"$SSH_ORIGINAL_COMMAND\\\"\" %s\n", gitShell, clientPub))
	if err := os.Mkdir(s.Dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := chownTree(dir, uid, gid); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	cmd := exec.Command(sshd, "-D", "-f", filepath.Join(dir, "sshd_config"), "-E", s.logPath)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if os.Getuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	}
	p, err := startProc("sshd", cmd, filepath.Join(dir, "sshd.out"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { p.stop(5 * time.Second) })
	// Ready when sshd says it listens: a probe connection would count in Connections.
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(s.Log(), "Server listening on 127.0.0.1 port "+strconv.Itoa(port)); {
		if ok, werr := p.exited(); ok || time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(dir, "sshd.out"))
			t.Fatalf("testenv: sshd did not listen on %s (exited: %v %v):\n%s%s", s.Addr, ok, werr, out, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// writeSSHDFiles writes sshd's configuration, host key and authorized_keys into dir.
func writeSSHDFiles(t testing.TB, dir, user string, port int, hostKey []byte, authorizedKeys string) {
	t.Helper()
	config := strings.Join([]string{
		"ListenAddress 127.0.0.1",
		"Port " + strconv.Itoa(port),
		"HostKey " + filepath.Join(dir, "host_key"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"PidFile none",
		"StrictModes no", // the files are in a temporary directory, not the user's home
		"UsePAM no",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"AllowUsers " + user,
		"LogLevel VERBOSE", // "Connection from …" for every connection (Connections)
		"",
	}, "\n")
	for file, body := range map[string]string{"host_key": string(hostKey), "authorized_keys": authorizedKeys, "sshd_config": config} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(body), 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
}

// gitSSHUser is the user sshd runs as: the build user for a root test, else the test's user.
func gitSSHUser(t testing.TB) (name string, uid, gid int) {
	t.Helper()
	var u *user.User
	var err error
	if os.Getuid() == 0 {
		u, err = user.Lookup(buildUserName())
	} else {
		u, err = user.Current()
	}
	if err != nil {
		t.Fatalf("testenv: the user for sshd: %v; %s", err, installHint)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return u.Username, uid, gid
}

// newSSHKey makes an ed25519 key: its public half in authorized_keys form, its private half in
// OpenSSH PEM.
func newSSHKey(t testing.TB, comment string) (string, []byte) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), pem.EncodeToMemory(block)
}

// NewSSHHostKey returns a public key in authorized_keys form that is no server's, for
// known_hosts that name the wrong key.
func NewSSHHostKey(t testing.TB) string {
	t.Helper()
	pub, _ := newSSHKey(t, "kiln-test-other")
	return pub
}

// chownTree gives dir and everything under it to uid:gid.
func chownTree(dir string, uid, gid int) error {
	if os.Getuid() != 0 {
		return nil // the test's own user owns them already
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// AddRepo copies the repository at src (a work tree or a bare repository) as the bare
// repository Dir/name, owned by the server's user, and returns its URL.
func (s *GitSSH) AddRepo(t testing.TB, name, src string) string {
	t.Helper()
	dst := filepath.Join(s.Dir, name)
	if out, err := exec.Command("git", "clone", "-q", "--bare", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("testenv: git clone --bare %s: %v\n%s", src, err, out)
	}
	if err := chownTree(dst, s.uid, s.gid); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return s.URL(name)
}

// URL is the ssh:// URL of the repository Dir/name.
func (s *GitSSH) URL(name string) string {
	return "ssh://" + s.User + "@" + s.Addr + filepath.Join(s.Dir, name)
}

// KnownHosts is the known_hosts line for the server: its address, written [host]:port, and its
// host key.
func (s *GitSSH) KnownHosts() string {
	return s.KnownHostsWith(s.HostKey)
}

// KnownHostsWith is a known_hosts line that gives the server's address the public key key.
func (s *GitSSH) KnownHostsWith(key string) string {
	host, port, _ := net.SplitHostPort(s.Addr)
	return fmt.Sprintf("[%s]:%s %s\n", host, port, key)
}

// Connections counts the TCP connections sshd has accepted so far (its "Connection from" lines).
func (s *GitSSH) Connections() int {
	return strings.Count(s.Log(), "Connection from ")
}

// Log is sshd's log so far.
func (s *GitSSH) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}
