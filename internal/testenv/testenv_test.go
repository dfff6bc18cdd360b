package testenv_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clitypes "github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/tonistiigi/fsutil"

	"github.com/kiln-dev/kiln/internal/testenv"
)

func TestRegistryWithBasicAuth(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.WithBasicAuth("kiln", "s3cret"))

	resp, err := http.Get("http://" + reg.Addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /v2/: %s, want 401", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+reg.Addr+"/v2/", nil)
	req.SetBasicAuth("kiln", "wrong")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ with a wrong password: %s, want 401", resp.Status)
	}

	if got := reg.Tags(t, "base/busybox"); len(got) != 0 {
		t.Fatalf("tags of a missing repository: %v", got)
	}
	if d := reg.Digest(t, "base/busybox:1"); d != "" {
		t.Fatalf("digest of a missing tag: %q", d)
	}
	ref := testenv.BusyboxImage(t, reg)
	if want := reg.Addr + "/base/busybox:1"; ref != want {
		t.Fatalf("BusyboxImage = %q, want %q", ref, want)
	}
	digest := reg.Digest(t, ref)
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("digest of %s: %q", ref, digest)
	}
	if again := testenv.NewBusyboxImage(t); mustDigest(t, again) != digest {
		t.Fatalf("busybox image digest is not reproducible: %s vs %s", mustDigest(t, again), digest)
	}
	if got := reg.Tags(t, "base/busybox"); !slices.Equal(got, []string{"1"}) {
		t.Fatalf("tags: %v", got)
	}
	if got := reg.Repositories(t); !slices.Equal(got, []string{"base/busybox"}) {
		t.Fatalf("repositories: %v", got)
	}

	// Unreachable for a while, then back with the same storage on the same address.
	reg.Stop()
	if _, err := http.Get("http://" + reg.Addr + "/v2/"); err == nil {
		t.Fatal("registry still answers after Stop")
	}
	reg.Restart(t)
	if got := reg.Digest(t, ref); got != digest {
		t.Fatalf("after restart: digest %q, want %q", got, digest)
	}

	reg.Delete(t, ref)
	if got := reg.Tags(t, "base/busybox"); len(got) != 0 {
		t.Fatalf("tags after delete: %v", got)
	}
}

func TestBusyboxRunInBuildKit(t *testing.T) {
	testenv.SkipUnlessBuildKitPossible(t)
	reg := testenv.StartRegistry(t)
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{InsecureRegistries: []string{reg.Addr}})
	busybox := testenv.BusyboxImage(t, reg)

	dir := t.TempDir()
	writeFile(t, dir, "Dockerfile", "FROM "+busybox+`
RUN echo hi > /x && test "$(cat /x)" = hi && id -u && ls /bin/sh && sha256sum /x
`)
	out := reg.Addr + "/test/busybox-run:v1"
	solve(t, bk, dir, out)

	img, err := remote.Image(mustRef(t, out), remote.WithContext(context.Background()))
	if err != nil {
		t.Fatalf("pulling %s back: %v", out, err)
	}
	if got := fileInImage(t, img, "x"); got != "hi\n" {
		t.Fatalf("/x in the built image = %q, want %q", got, "hi\n")
	}

	// A daemon configured for a registry with basic auth pushes there with the session's
	// credentials.
	regAuth := testenv.StartRegistry(t, testenv.WithBasicAuth("kiln", "s3cret"))
	bk2 := testenv.StartBuildKit(t, testenv.BuildKitOptions{InsecureRegistries: []string{reg.Addr, regAuth.Addr}})
	creds := authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
		AuthConfigProvider: func(_ context.Context, host string, _ []string, _ authprovider.ExpireCachedAuthCheck) (clitypes.AuthConfig, error) {
			if host == regAuth.Addr {
				return clitypes.AuthConfig{Username: regAuth.Username, Password: regAuth.Password}, nil
			}
			return clitypes.AuthConfig{}, nil
		},
	})
	solve(t, bk2, dir, regAuth.Addr+"/test/busybox-run:v1", creds)
	if got := regAuth.Tags(t, "test/busybox-run"); !slices.Equal(got, []string{"v1"}) {
		t.Fatalf("tags in the registry with auth: %v", got)
	}
}

func TestGoBuildInBuildKit(t *testing.T) {
	testenv.SkipUnlessBuildKitPossible(t)
	reg := testenv.StartRegistry(t)
	stateDir := t.TempDir()
	opts := testenv.BuildKitOptions{StateDir: stateDir, InsecureRegistries: []string{reg.Addr}}
	bk := testenv.StartBuildKit(t, opts)
	goimg := testenv.GoImage(t, reg)

	dir := t.TempDir()
	writeFile(t, dir, "go.mod", "module example.com/hello\n\ngo 1.22\n")
	writeFile(t, dir, "main.go", `package main

import "fmt"

func main() { fmt.Println("hello from kiln") }
`)
	writeFile(t, dir, "Dockerfile", "FROM "+goimg+` AS build
WORKDIR /src
COPY main.go go.mod ./
RUN --mount=type=cache,target=/root/.cache/go-build go build -trimpath -ldflags="-s -w" -o /out/hello .
FROM scratch
COPY --from=build /out/hello /hello
ENTRYPOINT ["/hello"]
`)
	out := reg.Addr + "/test/hello:v1"
	vertices := solve(t, bk, dir, out)
	if cached, ok := findVertex(vertices, "go build"); !ok || cached {
		t.Fatalf("first build: go build vertex found=%v cached=%v", ok, cached)
	}

	if got := reg.Tags(t, "test/hello"); !slices.Equal(got, []string{"v1"}) {
		t.Fatalf("tags of test/hello: %v", got)
	}
	desc, err := remote.Get(mustRef(t, out))
	if err != nil {
		t.Fatalf("remote.Get %s: %v", out, err)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/hello"}) {
		t.Fatalf("entrypoint %v", cf.Config.Entrypoint)
	}
	// The binary is a static linux program: run it here.
	bin := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(bin, []byte(fileInImage(t, img, "hello")), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := exec.Command(bin).Output(); err != nil || string(got) != "hello from kiln\n" {
		t.Fatalf("running the built binary: %q, %v", got, err)
	}

	// A second daemon on the same state dir has the cache: the go build step is a cache hit.
	bk.Stop()
	bk2 := testenv.StartBuildKit(t, opts)
	vertices = solve(t, bk2, dir, reg.Addr+"/test/hello:v2")
	if cached, ok := findVertex(vertices, "go build"); !ok || !cached {
		t.Fatalf("rebuild on the reused state dir: go build vertex found=%v cached=%v\n%s", ok, cached, bk2.Log())
	}
	if got := reg.Tags(t, "test/hello"); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Fatalf("tags of test/hello: %v", got)
	}
}

// solve builds the Dockerfile in dir with the dockerfile.v0 frontend and pushes the result to
// ref; it returns each vertex name with whether it was a cache hit.
func solve(t *testing.T, bk *testenv.BuildKit, dir, ref string, attachables ...session.Attachable) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := bk.Client(t)
	fsys, err := fsutil.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *bkclient.SolveStatus)
	vertices := map[string]bool{}
	var logs strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		for st := range ch {
			for _, v := range st.Vertexes {
				if v.Completed != nil || v.Cached {
					vertices[v.Name] = v.Cached
				}
				if v.Error != "" {
					logs.WriteString("ERROR " + v.Name + ": " + v.Error + "\n")
				}
			}
			for _, l := range st.Logs {
				logs.Write(l.Data)
			}
		}
	}()
	start := time.Now()
	_, err = c.Solve(ctx, nil, bkclient.SolveOpt{
		Frontend:    "dockerfile.v0",
		LocalMounts: map[string]fsutil.FS{"context": fsys, "dockerfile": fsys},
		Session:     attachables,
		Exports: []bkclient.ExportEntry{{
			Type:  bkclient.ExporterImage,
			Attrs: map[string]string{"name": ref, "push": "true"},
		}},
	}, ch)
	<-done
	if err != nil {
		t.Fatalf("build of %s failed: %v\n--- build output ---\n%s\n--- %s ---\n%s", ref, err, logs.String(), bk.LogPath, bk.Log())
	}
	t.Logf("built and pushed %s in %s", ref, time.Since(start).Round(time.Millisecond))
	for n, cached := range vertices {
		t.Logf("  vertex cached=%-5v %s", cached, n)
	}
	return vertices
}

func findVertex(vertices map[string]bool, substr string) (cached, ok bool) {
	for n, c := range vertices {
		if strings.Contains(n, substr) {
			return c, true
		}
	}
	return false, false
}

func mustDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func mustRef(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fileInImage returns the content of file p (no leading slash) in img's flattened filesystem.
func fileInImage(t *testing.T, img v1.Image, p string) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s not found in the image", p)
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "./") == p {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}
