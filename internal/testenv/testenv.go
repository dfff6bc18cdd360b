// Package testenv starts real parts for tests: a Distribution registry (Debian's docker-registry)
// on 127.0.0.1, a rootless BuildKit daemon (rootlesskit + buildkitd, run as an unprivileged user),
// and small base images (busybox, a Go toolchain) made locally and pushed to such a registry, since
// tests cannot pull anything from the internet.
//
// Everything it needs is installed by hack/install-test-deps.sh: Debian packages (runc,
// rootlesskit, uidmap, docker-registry, busybox-static), buildkitd and buildctl at the pinned
// BuildKit version in bin/buildkit-<version>/, and the build user with /etc/subuid and /etc/subgid
// ranges. A missing part fails the test with a pointer to that script; tests skip only when they
// cannot work on this host at all (not root, or no user namespaces), and not even then when the
// CI environment variable is set: in continuous integration every real part must be there, so a
// test fails with what is missing instead of skipping (see SkipOrFail).
//
// Environment overrides:
//
//	KILN_BUILDKIT_BIN     directory holding buildkitd and buildctl (default <repo>/bin/buildkit-<version>)
//	KILN_BUILD_USER       user rootless buildkitd runs as (default kilnbuild)
//	KILN_REGISTRY_BIN     the registry binary (default docker-registry from PATH, then /usr/bin)
//	KILN_TESTENV_CACHE    cache directory for built image layers (default <repo>/bin/testenv-cache)
//	CI                    set (and not "false" or "0"): tests fail instead of skipping
package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/version"
)

const (
	// DefaultBuildUser is the unprivileged user rootless buildkitd runs as.
	DefaultBuildUser = "kilnbuild"
	// modulePath is this repository's module, used to find the repo root.
	modulePath = "github.com/kiln-dev/kiln"
	// installHint is appended to failures caused by a missing dependency.
	installHint = "run hack/install-test-deps.sh (as root) to install the test dependencies"
)

// RepoRoot returns the repository root: the nearest directory, walking up from the working
// directory, whose go.mod declares this module (or, failing that, the nearest go.mod at all).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return root
}

var (
	repoRootOnce sync.Once
	repoRootDir  string
	repoRootErr  error
)

func repoRoot() (string, error) {
	repoRootOnce.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			repoRootErr = err
			return
		}
		first := ""
		for dir := wd; ; dir = filepath.Dir(dir) {
			if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
				if first == "" {
					first = dir
				}
				if declaresModule(string(b), modulePath) {
					repoRootDir = dir
					return
				}
			}
			if parent := filepath.Dir(dir); parent == dir {
				break
			}
		}
		if first != "" {
			repoRootDir = first
			return
		}
		repoRootErr = fmt.Errorf("no go.mod found above %s", wd)
	})
	return repoRootDir, repoRootErr
}

func declaresModule(gomod, module string) bool {
	sc := bufio.NewScanner(strings.NewReader(gomod))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == module {
			return true
		}
	}
	return false
}

// BuildKitBinDir returns the directory holding buildkitd and buildctl: $KILN_BUILDKIT_BIN (a
// directory, or the path of buildkitd itself) or <repo>/bin/buildkit-<version.BuildKitVersion>.
// It fails the test when buildkitd or buildctl is missing there.
func BuildKitBinDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KILN_BUILDKIT_BIN")
	if dir != "" {
		if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
			dir = filepath.Dir(dir)
		}
	} else {
		dir = filepath.Join(RepoRoot(t), "bin", "buildkit-"+version.BuildKitVersion)
	}
	for _, b := range []string{"buildkitd", "buildctl"} {
		if err := isExecutable(filepath.Join(dir, b)); err != nil {
			t.Fatalf("testenv: BuildKit %s not found: %v; %s (or set KILN_BUILDKIT_BIN)", b, err, installHint)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return abs
}

// cacheDir returns (creating it) the directory where built image layers are cached between runs.
func cacheDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KILN_TESTENV_CACHE")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "bin", "testenv-cache")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testenv: cache dir: %v", err)
	}
	return dir
}

func isExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// lookBin finds a program: the env override, then PATH, then the given fallback directories.
func lookBin(t testing.TB, envVar, name string, fallbacks ...string) string {
	t.Helper()
	if envVar != "" {
		if p := os.Getenv(envVar); p != "" {
			if err := isExecutable(p); err != nil {
				t.Fatalf("testenv: $%s: %v", envVar, err)
			}
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range fallbacks {
		p := filepath.Join(dir, name)
		if isExecutable(p) == nil {
			return p
		}
	}
	t.Fatalf("testenv: %s not found in PATH or %v; %s", name, fallbacks, installHint)
	return ""
}

// InCI reports whether the tests run in continuous integration: the CI environment variable is
// set to anything but "", "false" or "0".
func InCI() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("CI"))) {
	case "", "false", "0":
		return false
	}
	return true
}

// SkipOrFail skips the test because a real part it needs is missing on this host, which the
// message names; in continuous integration (InCI) it fails the test instead, so that a missing
// part cannot pass unnoticed as a skip.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("testenv: CI is set, so this test fails instead of skipping: %s", msg)
		return
	}
	t.Skipf("testenv: skipping: %s", msg)
}

// SkipUnlessRoot skips the test unless it runs as root (needed to run the daemons as another
// user and to read what rootless BuildKit writes with subordinate ids); in CI it fails instead.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root (euid is %d) to run rootless BuildKit as user %s", os.Geteuid(), buildUserName())
	}
}

// SkipUnlessUserNamespaces skips the test when an unprivileged process cannot create a user
// namespace on this host (rootless BuildKit is impossible then); in CI it fails instead.
func SkipUnlessUserNamespaces(t testing.TB) {
	t.Helper()
	if reason := userNamespacesUnavailable(); reason != "" {
		SkipOrFail(t, "user namespaces are not available: %s", reason)
	}
}

// SkipUnlessBuildKitPossible skips the test unless rootless BuildKit can run here at all: the
// test runs as root and unprivileged user namespaces work; in CI it fails instead. Missing
// binaries or a missing build user are not a reason to skip; StartBuildKit fails then.
func SkipUnlessBuildKitPossible(t testing.TB) {
	t.Helper()
	SkipUnlessRoot(t)
	SkipUnlessUserNamespaces(t)
}

var (
	usernsOnce   sync.Once
	usernsReason string
)

func userNamespacesUnavailable() string {
	usernsOnce.Do(func() { usernsReason = probeUserNamespaces() })
	return usernsReason
}

func probeUserNamespaces() string {
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil {
		if strings.TrimSpace(string(b)) == "0" {
			return "sysctl user.max_user_namespaces is 0"
		}
	} else if errors.Is(err, os.ErrNotExist) {
		return "kernel without user namespace support (/proc/sys/user/max_user_namespaces missing)"
	}
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return "sysctl kernel.unprivileged_userns_clone is 0"
	}
	// Try it for real, as an unprivileged user (nobody), like rootlesskit will.
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		unshare = "/usr/bin/unshare"
	}
	if isExecutable(unshare) == nil && os.Geteuid() == 0 {
		cmd := exec.Command(unshare, "--user", "true")
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		if out, err := cmd.CombinedOutput(); err != nil {
			msg := fmt.Sprintf("an unprivileged `unshare --user true` failed: %v: %s", err, strings.TrimSpace(string(out)))
			if b, err := os.ReadFile("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); err == nil && strings.TrimSpace(string(b)) == "1" {
				msg += " (kernel.apparmor_restrict_unprivileged_userns is 1)"
			}
			return msg
		}
		return ""
	}
	// No unshare binary (or not root): clone a process into a new user namespace directly.
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("cannot create a user namespace: %v", err)
	}
	return ""
}

func buildUserName() string {
	if u := os.Getenv("KILN_BUILD_USER"); u != "" {
		return u
	}
	return DefaultBuildUser
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a started daemon in its own process group, logging to a file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	mu      sync.Mutex
	stopped bool
}

func startProc(name string, cmd *exec.Cmd, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "### %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(cmd.Args, " "))
	cmd.Stdout = logf
	cmd.Stderr = logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Don't outlive the test binary if it dies without running cleanups (e.g. -timeout panic).
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited (and its Wait error).
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group leader, waits up to grace, then SIGKILLs the whole
// process group, and waits for the leader. Safe to call more than once.
func (p *proc) stop(grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	pgid := p.cmd.Process.Pid
	if ok, _ := p.exited(); !ok {
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// Whatever is left in the group (the leader after the grace period, or children that
	// survived it) is killed.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
	}
	// Wait (bounded) until no process of the group is left, so that files are closed and
	// mounts gone before the test's temp dirs are removed.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
}

// tail returns the last max bytes of a log file, for failure messages.
func tail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := int64(0)
	if fi.Size() > max {
		off = fi.Size() - max
	}
	b := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(b, off)
	s := string(b[:n])
	if off > 0 {
		s = "...(" + strconv.FormatInt(off, 10) + " bytes cut)...\n" + s
	}
	return s
}
