package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// BusyboxRepoTag is where BusyboxImage pushes the busybox image in a registry.
	BusyboxRepoTag = "base/busybox:1"
	// GoRepoTag is where GoImage pushes the Go builder image in a registry.
	GoRepoTag = "base/golang:1"

	// DefaultPath is the PATH of the busybox image.
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

	// goLayerFormat is bumped whenever the recipe of the cached Go toolchain layer changes.
	goLayerFormat = "v1"
)

// layerTime is the modification time of every file in the generated layers, so that they (and
// the images) have the same digests on every run and BuildKit's cache keys stay stable.
var layerTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// BusyboxImage pushes the busybox image (see NewBusyboxImage) to reg as base/busybox:1 and
// returns its reference, "127.0.0.1:PORT/base/busybox:1".
func BusyboxImage(t testing.TB, reg *Registry) string {
	t.Helper()
	return Push(t, reg, BusyboxRepoTag, NewBusyboxImage(t))
}

// GoImage pushes the Go builder image (see NewGoImage) to reg as base/golang:1 and returns its
// reference, "127.0.0.1:PORT/base/golang:1".
func GoImage(t testing.TB, reg *Registry) string {
	t.Helper()
	return Push(t, reg, GoRepoTag, NewGoImage(t))
}

// Push pushes img to reg as repoTag ("repo:tag") and returns the full reference.
func Push(t testing.TB, reg *Registry, repoTag string, img v1.Image) string {
	t.Helper()
	ref := reg.Ref(repoTag)
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if err := remote.Write(tag, img, reg.RemoteOptions(ctx)...); err != nil {
		t.Fatalf("testenv: pushing %s: %v", ref, err)
	}
	d, _ := img.Digest()
	t.Logf("testenv: pushed %s (%s) in %s", ref, d, time.Since(start).Round(time.Millisecond))
	return ref
}

// NewBusyboxImage returns a one-layer linux image holding Debian's static /bin/busybox with a
// symlink for every applet (sh, ls, cat, cp, mkdir, sha256sum, tar, ...), /etc/passwd and
// /etc/group with root and nobody, /tmp (1777) and /root; Env PATH=DefaultPath, Cmd ["sh"].
// Its digest is the same on every run.
func NewBusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	l := busyboxLayer(t)
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   l,
		History: v1.History{Created: v1.Time{Time: layerTime}, CreatedBy: "kiln testenv: busybox", Comment: "busybox-static from the host"},
	})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return withConfig(t, img, []string{"PATH=" + DefaultPath})
}

// NewGoImage returns the busybox image plus a layer with the host's Go toolchain in
// /usr/local/go (without its tests, api/ and doc/), with Env PATH (/usr/local/go/bin first),
// GOTOOLCHAIN=local, GOPROXY=off, CGO_ENABLED=0, HOME=/root and GOCACHE=/root/.cache/go-build.
// The toolchain layer is cached under bin/testenv-cache/ by Go version.
func NewGoImage(t testing.TB) v1.Image {
	t.Helper()
	base := NewBusyboxImage(t)
	gl := goLayer(t)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   gl,
		History: v1.History{Created: v1.Time{Time: layerTime}, CreatedBy: "kiln testenv: go toolchain", Comment: "GOROOT from the host"},
	})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return withConfig(t, img, []string{
		"PATH=/usr/local/go/bin:/root/go/bin:" + DefaultPath,
		"GOTOOLCHAIN=local",
		"GOPROXY=off",
		"CGO_ENABLED=0",
		"HOME=/root",
		"GOCACHE=/root/.cache/go-build",
	})
}

func withConfig(t testing.TB, img v1.Image, env []string) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Created = v1.Time{Time: layerTime}
	cf.Config.Env = env
	cf.Config.Cmd = []string{"sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return img
}

// --- busybox layer -------------------------------------------------------------------------

var (
	busyboxOnce sync.Once
	busyboxTar  []byte
	busyboxErr  error
)

func busyboxLayer(t testing.TB) v1.Layer {
	t.Helper()
	busyboxOnce.Do(func() { busyboxTar, busyboxErr = makeBusyboxTar() })
	if busyboxErr != nil {
		t.Fatalf("testenv: busybox layer: %v; %s", busyboxErr, installHint)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(busyboxTar)), nil
	}, tarball.WithCompressedCaching)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return l
}

func findBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if isExecutable(p) != nil {
			continue
		}
		f, err := elf.Open(p)
		if err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		dynamic := false
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				dynamic = true
			}
		}
		f.Close()
		if dynamic {
			return "", fmt.Errorf("%s is dynamically linked (install busybox-static, not busybox)", p)
		}
		return p, nil
	}
	return "", fmt.Errorf("no /bin/busybox (Debian package busybox-static)")
}

func makeBusyboxTar() ([]byte, error) {
	bin, err := findBusybox()
	if err != nil {
		return nil, err
	}
	content, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", bin, err)
	}
	links := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		dir := path.Dir(l)
		switch dir {
		case "bin", "sbin", "usr/bin", "usr/sbin":
			if path.Base(l) != "busybox" {
				links[l] = true
			}
		}
	}
	if !links["bin/sh"] {
		return nil, fmt.Errorf("%s has no sh applet", bin)
	}

	var buf bytes.Buffer
	tw := newTarWriter(&buf)
	for _, d := range []struct {
		name string
		mode int64
	}{
		{"bin", 0o755}, {"dev", 0o755}, {"etc", 0o755}, {"home", 0o755}, {"proc", 0o555},
		{"root", 0o700}, {"sbin", 0o755}, {"sys", 0o555}, {"tmp", 0o1777}, {"usr", 0o755},
		{"usr/bin", 0o755}, {"usr/sbin", 0o755}, {"usr/local", 0o755}, {"usr/local/bin", 0o755},
		{"var", 0o755}, {"var/tmp", 0o1777},
	} {
		tw.dir(d.name, d.mode)
	}
	tw.file("bin/busybox", 0o755, content)
	tw.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	tw.file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n"))
	tw.file("etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"))
	tw.file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n"))
	names := make([]string, 0, len(links))
	for l := range links {
		names = append(names, l)
	}
	sort.Strings(names)
	for _, l := range names {
		rel, _ := filepath.Rel(path.Dir(l), "bin/busybox")
		tw.symlink(l, rel)
	}
	if err := tw.close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarWriter writes layer entries owned by root with a fixed mtime.
type tarWriter struct {
	tw  *tar.Writer
	err error
}

func newTarWriter(w io.Writer) *tarWriter { return &tarWriter{tw: tar.NewWriter(w)} }

func (w *tarWriter) header(h *tar.Header) {
	if w.err != nil {
		return
	}
	h.ModTime = layerTime
	h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
	h.Format = tar.FormatPAX
	w.err = w.tw.WriteHeader(h)
}

func (w *tarWriter) dir(name string, mode int64) {
	w.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
}

func (w *tarWriter) file(name string, mode int64, content []byte) {
	w.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(content))})
	if w.err == nil {
		_, w.err = w.tw.Write(content)
	}
}

func (w *tarWriter) symlink(name, target string) {
	w.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
}

func (w *tarWriter) close() error {
	if w.err != nil {
		return w.err
	}
	return w.tw.Close()
}

// --- Go toolchain layer --------------------------------------------------------------------

var goLayerMu sync.Mutex // one builder per process; other processes are handled by rename

type cachedLayerMeta struct {
	Digest    string `json:"digest"`
	DiffID    string `json:"diffID"`
	Size      int64  `json:"size"`
	GoVersion string `json:"goVersion"`
	GOROOT    string `json:"goroot"`
}

func goEnv() (goroot, goversion string, err error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		// The toolchain that built this test binary, on the machine that runs it.
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go") //nolint:staticcheck // SA1019: tests run where they were built, so the build's GOROOT is meaningful here.
	}
	cmd := exec.Command(goBin, "env", "GOROOT", "GOVERSION")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=")
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("%s env GOROOT GOVERSION: %w", goBin, err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return "", "", fmt.Errorf("unexpected output of go env: %q", out)
	}
	return f[0], f[1], nil
}

// goLayer returns the Go toolchain layer, building and caching it on first use.
func goLayer(t testing.TB) v1.Layer {
	t.Helper()
	goLayerMu.Lock()
	defer goLayerMu.Unlock()
	goroot, goversion, err := goEnv()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	key := fmt.Sprintf("golang-%s-linux_%s-%s", goversion, runtime.GOARCH, goLayerFormat)
	dir := cacheDir(t)
	tgz := filepath.Join(dir, key+".tar.gz")
	metaPath := filepath.Join(dir, key+".json")

	if l, err := loadCachedLayer(tgz, metaPath); err == nil {
		return l
	}
	start := time.Now()
	meta, err := writeGoLayer(goroot, goversion, tgz, metaPath)
	if err != nil {
		t.Fatalf("testenv: building the Go toolchain layer from %s: %v", goroot, err)
	}
	t.Logf("testenv: built Go toolchain layer %s (%d MB) in %s", tgz, meta.Size>>20, time.Since(start).Round(time.Millisecond))
	l, err := loadCachedLayer(tgz, metaPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return l
}

// writeGoLayer writes the gzipped layer and its metadata to temp files and renames them into
// place (metadata last), so that concurrent test processes never see half a layer.
func writeGoLayer(goroot, goversion, tgz, metaPath string) (*cachedLayerMeta, error) {
	f, err := os.CreateTemp(filepath.Dir(tgz), ".tmp-golayer-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()

	compressedHash := sha256.New()
	uncompressedHash := sha256.New()
	counter := &countWriter{}
	gz, err := gzip.NewWriterLevel(io.MultiWriter(f, compressedHash, counter), gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := newTarWriter(io.MultiWriter(gz, uncompressedHash))
	tw.dir("usr", 0o755)
	tw.dir("usr/local", 0o755)
	if err := addGOROOT(tw, goroot, "usr/local/go"); err != nil {
		return nil, err
	}
	if err := tw.close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return nil, err
	}
	meta := &cachedLayerMeta{
		Digest:    "sha256:" + hex.EncodeToString(compressedHash.Sum(nil)),
		DiffID:    "sha256:" + hex.EncodeToString(uncompressedHash.Sum(nil)),
		Size:      counter.n,
		GoVersion: goversion,
		GOROOT:    goroot,
	}
	if err := os.Rename(f.Name(), tgz); err != nil {
		return nil, err
	}
	mb, _ := json.MarshalIndent(meta, "", "  ")
	mf, err := os.CreateTemp(filepath.Dir(metaPath), ".tmp-golayer-meta-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(mf.Name())
	if _, err := mf.Write(mb); err != nil {
		mf.Close()
		return nil, err
	}
	if err := mf.Close(); err != nil {
		return nil, err
	}
	if err := os.Chmod(mf.Name(), 0o644); err != nil {
		return nil, err
	}
	return meta, os.Rename(mf.Name(), metaPath)
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// addGOROOT adds the toolchain under prefix, leaving out what building Go code does not need:
// test/, api/, doc/, misc/, tools of other platforms, and tests and testdata in src/.
func addGOROOT(tw *tarWriter, goroot, prefix string) error {
	hostTools := "linux_" + runtime.GOARCH
	tw.dir(prefix, 0o755)
	return filepath.WalkDir(goroot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(goroot, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			switch {
			case rel == "test" || rel == "api" || rel == "doc" || rel == "misc" || rel == ".git" || rel == "pkg/obj":
				return filepath.SkipDir
			case strings.HasPrefix(rel, "pkg/tool/") && strings.Count(rel, "/") == 2 && path.Base(rel) != hostTools:
				return filepath.SkipDir
			case strings.HasPrefix(rel, "src/") && d.Name() == "testdata":
				return filepath.SkipDir
			}
		} else if strings.HasPrefix(rel, "src/") && strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		name := prefix + "/" + rel
		mode := int64(fi.Mode().Perm())
		switch {
		case fi.Mode().IsDir():
			tw.dir(name, mode)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			tw.symlink(name, target)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tw.file(name, mode, b)
		}
		return tw.err
	})
}

func loadCachedLayer(tgz, metaPath string) (v1.Layer, error) {
	mb, err := os.ReadFile(metaPath)
	if err != nil {
		return nil, err
	}
	var meta cachedLayerMeta
	if err := json.Unmarshal(mb, &meta); err != nil {
		return nil, err
	}
	fi, err := os.Stat(tgz)
	if err != nil {
		return nil, err
	}
	if fi.Size() != meta.Size {
		return nil, fmt.Errorf("%s: size %d, expected %d", tgz, fi.Size(), meta.Size)
	}
	return GzipFileLayer(tgz, meta.Size, meta.Digest, meta.DiffID)
}

// GzipFileLayer is the layer in the gzipped tarball at path, whose size and digests ("sha256:…")
// are known, recorded when it was written: the file is read only when the layer's content is.
func GzipFileLayer(path string, size int64, digest, diffID string) (v1.Layer, error) {
	l := &gzipFileLayer{path: path, size: size}
	var err error
	if l.digest, err = v1.NewHash(digest); err != nil {
		return nil, err
	}
	if l.diffID, err = v1.NewHash(diffID); err != nil {
		return nil, err
	}
	return l, nil
}

// gzipFileLayer is GzipFileLayer's layer.
type gzipFileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

func (l *gzipFileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *gzipFileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *gzipFileLayer) Size() (int64, error)                { return l.size, nil }
func (l *gzipFileLayer) MediaType() (types.MediaType, error) { return types.DockerLayer, nil }
func (l *gzipFileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *gzipFileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}
