package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bkclient "github.com/moby/buildkit/client"
)

// BuildKitOptions configures StartBuildKit.
type BuildKitOptions struct {
	// StateDir is buildkitd's --root (cache, snapshots, metadata); "" means a fresh t.TempDir().
	// A StateDir reused by a later StartBuildKit (after the first one stopped) keeps its cache.
	StateDir string
	// InsecureRegistries are registry hosts ("127.0.0.1:PORT") buildkitd talks plain HTTP to.
	InsecureRegistries []string
	// Snapshotter is --oci-worker-snapshotter; "" lets buildkitd choose (overlayfs when the
	// kernel allows it in a user namespace, else native).
	Snapshotter string
	// Debug runs buildkitd with --debug (a much longer log).
	Debug bool
	// ExtraConfig is appended to the generated buildkitd.toml.
	ExtraConfig string
	// ExtraArgs are appended to buildkitd's command line.
	ExtraArgs []string
	// StartTimeout bounds the wait for the daemon to answer; 0 means 60s.
	StartTimeout time.Duration
}

// BuildKit is a running rootless buildkitd.
type BuildKit struct {
	// Addr is buildkitd's address, "unix:///.../buildkitd.sock", for client.New.
	Addr string
	// SocketPath is the path of the socket in Addr.
	SocketPath string
	// StateDir is buildkitd's --root.
	StateDir string
	// ConfigPath is the generated buildkitd.toml.
	ConfigPath string
	// LogPath is the daemon's log (rootlesskit and buildkitd stdout/stderr).
	LogPath string
	// User is the unprivileged user the daemon runs as.
	User string
	// Snapshotter is the snapshotter the worker reports using (e.g. "overlayfs", "native").
	Snapshotter string

	p *proc
}

// StartBuildKit starts rootless buildkitd as the unprivileged build user (default kilnbuild)
// under rootlesskit with the host network, waits until it lists its workers, and stops the whole
// process tree when the test ends. It skips the test when rootless BuildKit is impossible on this
// host (see SkipUnlessBuildKitPossible) and fails it when a dependency is missing.
func StartBuildKit(t testing.TB, opts BuildKitOptions) *BuildKit {
	t.Helper()
	SkipUnlessBuildKitPossible(t)

	binDir := BuildKitBinDir(t)
	rootlesskit := lookBin(t, "", "rootlesskit", "/usr/bin")
	runc := lookBin(t, "", "runc", "/usr/sbin", "/usr/bin", "/sbin")
	for _, b := range []string{"newuidmap", "newgidmap"} {
		lookBin(t, "", b, "/usr/bin")
	}
	u := lookupBuildUser(t)
	stateDir := buildKitStateDir(t, opts.StateDir, u)
	runDir := buildKitRunDir(t, u)

	bk := &BuildKit{
		SocketPath: filepath.Join(runDir, "buildkitd.sock"),
		StateDir:   stateDir,
		ConfigPath: filepath.Join(runDir, "buildkitd.toml"),
		User:       u.name,
	}
	bk.Addr = "unix://" + bk.SocketPath
	// The log outlives the daemon's run dir so that failing tests can print it at the end.
	bk.LogPath = filepath.Join(t.TempDir(), "buildkitd.log")

	if err := os.WriteFile(bk.ConfigPath, []byte(buildkitdConfig(opts)), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	args := []string{
		rootlesskit,
		// The host network namespace: buildkitd and RUN steps reach the test registries on the
		// host's 127.0.0.1 directly (--disable-host-loopback only matters for non-host networks).
		"--net=host",
		"--state-dir=" + filepath.Join(runDir, "rootlesskit"),
		filepath.Join(binDir, "buildkitd"),
		// No PID namespace and /proc mount per RUN step: not allowed in a user namespace
		// without an unmasked /proc (as in BuildKit's rootless Kubernetes examples).
		"--oci-worker-no-process-sandbox",
		"--oci-worker-binary=" + runc,
		"--root=" + stateDir,
		"--addr=" + bk.Addr,
		"--config=" + bk.ConfigPath,
	}
	if opts.Snapshotter != "" {
		args = append(args, "--oci-worker-snapshotter="+opts.Snapshotter)
	}
	if opts.Debug {
		args = append(args, "--debug")
	}
	args = append(args, opts.ExtraArgs...)

	p, err := startProc("buildkitd", buildKitCommand(args, runDir, binDir, u), bk.LogPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	bk.p = p
	t.Cleanup(bk.Stop)

	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	start := time.Now()
	if err := bk.waitReady(timeout); err != nil {
		bk.Stop()
		t.Fatalf("testenv: buildkitd did not come up: %v\ncommand: %s\n--- %s ---\n%s",
			err, strings.Join(args, " "), bk.LogPath, tail(bk.LogPath, 32<<10))
	}
	t.Logf("testenv: rootless buildkitd (user %s, snapshotter %s) ready in %s at %s (state %s, log %s)",
		u.name, bk.Snapshotter, time.Since(start).Round(time.Millisecond), bk.Addr, stateDir, bk.LogPath)
	return bk
}

// buildKitStateDir makes buildkitd's state directory (dir, or a new temporary one when dir is
// ""), owned by and reachable for the build user; it returns its absolute path.
func buildKitStateDir(t testing.TB, dir string, u buildUser) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("testenv: state dir: %v", err)
	}
	makeReachable(t, dir, u)
	if err := chownIfNeeded(dir, u); err != nil {
		t.Fatalf("testenv: state dir: %v", err)
	}
	return dir
}

// buildKitRunDir makes a short private directory (unix socket paths are limited to 108 bytes)
// for the socket, the user's XDG_RUNTIME_DIR (xdg/), rootlesskit's state, the config and the
// log, removed when the test ends. Root (the test) connects to the socket regardless of its
// permissions.
func buildKitRunDir(t testing.TB, u buildUser) string {
	t.Helper()
	runDir, err := os.MkdirTemp("", "kiln-bk-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(runDir) })
	for _, d := range []string{runDir, filepath.Join(runDir, "xdg")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if err := os.Chown(d, u.uid, u.gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	makeReachable(t, runDir, u)
	return runDir
}

// buildKitCommand runs args (rootlesskit and buildkitd) in runDir as the build user, with the
// user's own environment.
func buildKitCommand(args []string, runDir, binDir string, u buildUser) *exec.Cmd {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = runDir
	cmd.Env = []string{
		"HOME=" + u.home,
		"USER=" + u.name,
		"LOGNAME=" + u.name,
		"SHELL=/bin/sh",
		"PATH=" + binDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"XDG_RUNTIME_DIR=" + filepath.Join(runDir, "xdg"),
		"XDG_DATA_HOME=" + filepath.Join(u.home, ".local", "share"),
		"XDG_CONFIG_HOME=" + filepath.Join(u.home, ".config"),
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}},
	}
	return cmd
}

func (bk *BuildKit) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		if ok, werr := bk.p.exited(); ok {
			return fmt.Errorf("daemon exited: %w", werr)
		}
		if _, err := os.Stat(bk.SocketPath); err == nil {
			lastErr = bk.listWorkers()
			if lastErr == nil {
				return nil
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer after %s: %w", timeout, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (bk *BuildKit) listWorkers() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := bkclient.New(ctx, bk.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	ws, err := c.ListWorkers(ctx)
	if err != nil {
		return err
	}
	if len(ws) == 0 {
		return errors.New("no workers yet")
	}
	bk.Snapshotter = ws[0].Labels["org.mobyproject.buildkit.worker.snapshotter"]
	return nil
}

// Client returns a new BuildKit client connected to the daemon, closed when the test ends.
func (bk *BuildKit) Client(t testing.TB) *bkclient.Client {
	t.Helper()
	c, err := bkclient.New(context.Background(), bk.Addr)
	if err != nil {
		t.Fatalf("testenv: buildkit client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop stops the daemon: SIGTERM to rootlesskit (which forwards it to buildkitd), then SIGKILL
// to the whole process group after a grace period, and waits. Idempotent; the test's cleanup
// calls it too. The state dir is kept, so a later StartBuildKit with it finds the cache.
func (bk *BuildKit) Stop() {
	if bk.p != nil {
		bk.p.stop(15 * time.Second)
	}
}

// Log returns the daemon's log so far.
func (bk *BuildKit) Log() string {
	b, _ := os.ReadFile(bk.LogPath)
	return string(b)
}

func buildkitdConfig(opts BuildKitOptions) string {
	var b strings.Builder
	b.WriteString("# generated by internal/testenv\n")
	if opts.Debug {
		b.WriteString("debug = true\n")
	}
	b.WriteString("\n[worker.oci]\n  enabled = true\n\n[worker.containerd]\n  enabled = false\n")
	for _, r := range opts.InsecureRegistries {
		fmt.Fprintf(&b, "\n[registry.%q]\n  http = true\n  insecure = true\n", r)
	}
	if opts.ExtraConfig != "" {
		b.WriteString("\n" + opts.ExtraConfig + "\n")
	}
	return b.String()
}

type buildUser struct {
	name     string
	uid, gid int
	home     string
}

// lookupBuildUser finds the build user and checks it has subordinate uid and gid ranges.
func lookupBuildUser(t testing.TB) buildUser {
	t.Helper()
	name := buildUserName()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("testenv: build user %q: %v; %s", name, err, installHint)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		t.Fatalf("testenv: build user %q is root; rootless BuildKit needs an unprivileged user", name)
	}
	bu := buildUser{name: name, uid: uid, gid: gid, home: u.HomeDir}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if subIDEntry(f, name, u.Uid) == "" {
			t.Fatalf("testenv: %s has no range for %s; %s", f, name, installHint)
		}
	}
	if fi, err := os.Stat(bu.home); err != nil || !fi.IsDir() {
		t.Fatalf("testenv: home directory %q of %s missing; %s", bu.home, name, installHint)
	}
	return bu
}

func subIDEntry(file, name, uid string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) == 3 && (f[0] == name || f[0] == uid) {
			return line
		}
	}
	return ""
}

// makeReachable gives "others" search (x) permission on every ancestor of dir that lacks it, so
// that the build user can reach dir (t.TempDir() creates 0700 parents). Directories are only
// made traversable, never listable or writable.
func makeReachable(t testing.TB, dir string, u buildUser) {
	t.Helper()
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		searchable := fi.Mode().Perm()&0o001 != 0 ||
			(st != nil && int(st.Uid) == u.uid && fi.Mode().Perm()&0o100 != 0) ||
			(st != nil && int(st.Gid) == u.gid && fi.Mode().Perm()&0o010 != 0)
		if !searchable {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				t.Fatalf("testenv: making %s reachable for %s: %v", d, u.name, err)
			}
			t.Logf("testenv: chmod o+x %s (so that %s can reach %s)", d, u.name, dir)
		}
		if parent := filepath.Dir(d); parent == d {
			return
		}
	}
}

// chownIfNeeded gives dir to the build user unless it already owns it. Only dir itself: a reused
// state dir already holds what buildkitd wrote as that user (and its subordinate ids).
func chownIfNeeded(dir string, u buildUser) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == u.uid && int(st.Gid) == u.gid {
		return nil
	}
	if err := os.Chown(dir, u.uid, u.gid); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}
