package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/kiln-dev/kiln/internal/registry"
)

// RegistryOption configures StartRegistry.
type RegistryOption func(*registryConfig)

type registryConfig struct {
	username, password string
}

// WithBasicAuth makes the registry require HTTP basic auth with this user and password
// (an htpasswd file with a bcrypt hash).
func WithBasicAuth(username, password string) RegistryOption {
	return func(c *registryConfig) { c.username, c.password = username, password }
}

// Registry is a running Distribution registry (Debian's docker-registry) serving plain HTTP on
// 127.0.0.1. Its methods inspect it with go-containerregistry, using its credentials if any.
type Registry struct {
	// Addr is "127.0.0.1:PORT", the registry host of image references.
	Addr string
	// Username and Password are the basic auth credentials ("" without WithBasicAuth).
	Username, Password string
	// RootDir is the storage root (filesystem driver).
	RootDir string
	// ConfigPath is the registry's config.yml.
	ConfigPath string
	// LogPath is the registry's log file (appended to across restarts).
	LogPath string

	bin string
	mu  sync.Mutex
	p   *proc
}

// StartRegistry starts a registry on a free port of 127.0.0.1 with filesystem storage in a temp
// dir and deletes enabled, waits until GET /v2/ answers, and stops it when the test ends.
func StartRegistry(t testing.TB, opts ...RegistryOption) *Registry {
	t.Helper()
	var cfg registryConfig
	for _, o := range opts {
		o(&cfg)
	}
	bin := lookBin(t, "KILN_REGISTRY_BIN", "docker-registry", "/usr/bin")
	dir := t.TempDir()
	r := &Registry{
		Username:   cfg.username,
		Password:   cfg.password,
		RootDir:    filepath.Join(dir, "storage"),
		ConfigPath: filepath.Join(dir, "config.yml"),
		LogPath:    filepath.Join(dir, "registry.log"),
		bin:        bin,
	}
	if err := os.MkdirAll(r.RootDir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	htpasswd := ""
	if cfg.username != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(cfg.password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("testenv: bcrypt: %v", err)
		}
		htpasswd = filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(cfg.username+":"+string(hash)+"\n"), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	t.Cleanup(r.Stop)

	// The port is picked free and then bound by the registry; retry if something else got it
	// in between.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		r.Addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
		if err := os.WriteFile(r.ConfigPath, []byte(registryConfigYAML(r.Addr, r.RootDir, htpasswd)), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if lastErr = r.start(); lastErr == nil {
			t.Logf("testenv: registry on http://%s (storage %s, log %s)", r.Addr, r.RootDir, r.LogPath)
			return r
		}
		if !strings.Contains(tail(r.LogPath, 4096), "address already in use") {
			break
		}
	}
	t.Fatalf("testenv: registry did not start: %v\n--- %s ---\n%s", lastErr, r.LogPath, tail(r.LogPath, 16<<10))
	return nil
}

func registryConfigYAML(addr, root, htpasswd string) string {
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
  accesslog:
    disabled: true
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  secret: %q
  headers:
    X-Content-Type-Options: [nosniff]
`, root, addr, hex.EncodeToString(secret))
	if htpasswd != "" {
		fmt.Fprintf(&b, `auth:
  htpasswd:
    realm: kiln-test-registry
    path: %q
`, htpasswd)
	}
	return b.String()
}

// start runs the registry with the current config and waits until it answers.
func (r *Registry) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p != nil {
		if ok, _ := r.p.exited(); !ok {
			return errors.New("registry is already running")
		}
	}
	cmd := exec.Command(r.bin, "serve", r.ConfigPath)
	cmd.Dir = filepath.Dir(r.ConfigPath)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + filepath.Dir(r.ConfigPath)}
	p, err := startProc("registry", cmd, r.LogPath)
	if err != nil {
		return err
	}
	r.p = p
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ok, werr := p.exited(); ok {
			return fmt.Errorf("registry exited: %w", werr)
		}
		resp, err := client.Get("http://" + r.Addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			p.stop(5 * time.Second)
			return fmt.Errorf("registry not ready after 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the registry (its storage stays). Idempotent; the test's cleanup calls it too.
func (r *Registry) Stop() {
	r.mu.Lock()
	p := r.p
	r.mu.Unlock()
	if p != nil {
		p.stop(5 * time.Second)
	}
}

// Restart starts a stopped registry again on the same address with the same storage (Stop
// followed by Restart simulates a registry that is unreachable for a while).
func (r *Registry) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		t.Fatalf("testenv: restarting registry on %s: %v\n--- %s ---\n%s", r.Addr, err, r.LogPath, tail(r.LogPath, 16<<10))
	}
}

// Ref returns the reference of repoAndTag in this registry: Ref("test/app:v1") is
// "127.0.0.1:PORT/test/app:v1".
func (r *Registry) Ref(repoAndTag string) string { return r.Addr + "/" + repoAndTag }

// Authenticator returns the registry's credentials for go-containerregistry (anonymous without
// basic auth).
func (r *Registry) Authenticator() authn.Authenticator {
	if r.Username == "" {
		return authn.Anonymous
	}
	return &authn.Basic{Username: r.Username, Password: r.Password}
}

// DockerConfigJSON returns a Docker config.json ({"auths": {...}}) holding the registry's
// credentials (no entry without basic auth), e.g. for a kubernetes.io/dockerconfigjson Secret.
func (r *Registry) DockerConfigJSON() []byte {
	auths := map[string]map[string]string{}
	if r.Username != "" {
		auths[r.Addr] = map[string]string{
			"auth": base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password)),
		}
	}
	b, _ := json.Marshal(map[string]any{"auths": auths})
	return b
}

// RemoteOptions returns go-containerregistry remote options for this registry (credentials).
func (r *Registry) RemoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithAuth(r.Authenticator()), remote.WithContext(ctx)}
}

// ParseRef parses a reference in this registry ("repo:tag", "repo@sha256:...", or the same with
// the registry address in front), as an insecure (HTTP) reference.
func (r *Registry) ParseRef(t testing.TB, ref string) name.Reference {
	t.Helper()
	ref = strings.TrimPrefix(ref, r.Addr+"/")
	n, err := name.ParseReference(r.Addr+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatalf("testenv: reference %q: %v", ref, err)
	}
	return n
}

// Tags returns the sorted tags of repo (given with or without the registry address); nil when
// the repository does not exist.
func (r *Registry) Tags(t testing.TB, repo string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tags, err := remote.List(r.ParseRef(t, repo).Context(), r.RemoteOptions(ctx)...)
	if err != nil {
		if registry.IsNotFound(err) {
			return nil
		}
		t.Fatalf("testenv: listing tags of %s: %v", repo, err)
	}
	sort.Strings(tags)
	return tags
}

// Repositories returns the sorted repository names in the registry (from /v2/_catalog).
func (r *Registry) Repositories(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, err := name.NewRegistry(r.Addr, name.Insecure)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	repos, err := remote.Catalog(ctx, reg, remote.WithAuth(r.Authenticator()))
	if err != nil {
		t.Fatalf("testenv: listing repositories: %v", err)
	}
	sort.Strings(repos)
	return repos
}

// Digest returns the manifest digest ("sha256:...") that ref ("repo:tag", with or without the
// registry address) points to, or "" when it does not exist.
func (r *Registry) Digest(t testing.TB, ref string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	desc, err := remote.Head(r.ParseRef(t, ref), r.RemoteOptions(ctx)...)
	if err != nil {
		if registry.IsNotFound(err) {
			return ""
		}
		t.Fatalf("testenv: HEAD %s: %v", ref, err)
	}
	return desc.Digest.String()
}

// Get fetches the manifest (image or index) that ref points to; it fails the test when missing.
func (r *Registry) Get(t testing.TB, ref string) *remote.Descriptor {
	t.Helper()
	// The descriptor reads blobs lazily, so its context must outlive this call.
	desc, err := remote.Get(r.ParseRef(t, ref), r.RemoteOptions(context.Background())...)
	if err != nil {
		t.Fatalf("testenv: GET %s: %v", ref, err)
	}
	return desc
}

// Delete deletes the manifest that ref points to (by digest, so every tag of it goes).
func (r *Registry) Delete(t testing.TB, ref string) {
	t.Helper()
	d := r.Digest(t, ref)
	if d == "" {
		t.Fatalf("testenv: delete %s: not found", ref)
	}
	n := r.ParseRef(t, ref)
	dref, err := name.NewDigest(n.Context().String()+"@"+d, name.Insecure)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := remote.Delete(dref, r.RemoteOptions(ctx)...); err != nil {
		t.Fatalf("testenv: delete %s: %v", ref, err)
	}
}
