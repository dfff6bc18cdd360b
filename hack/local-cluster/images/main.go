// Command images builds the images the local cluster runs and pushes them to its registry over
// plain HTTP (hack/local-cluster/up runs it from the repository root):
//
//	pause:3.10                    the pod sandbox (hack/local-cluster/pause)
//	kiln:dev                      kiln built from the working tree, laid out like the Dockerfile's
//	buildkit:<v>-rootless         like moby/buildkit:<v>-rootless: a Debian root filesystem (made by
//	                              hack/local-cluster/buildkit-rootfs) plus our buildkitd/buildctl
//	buildkit:<v>                  like moby/buildkit:<v> (rootful: buildkitd as root, for pods with
//	                              hostUsers: false): the same root filesystem, buildkitd/buildctl
//	                              and runc from bin/runc-<v>
//	base/busybox:1, base/golang:1 internal/testenv's base images, for FROM lines of test builds
//
// Every layer has fixed timestamps, so unchanged inputs give unchanged digests and a second run
// uploads nothing.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-dev/kiln/internal/testenv"
)

var layerTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type options struct {
	registry       string
	only           map[string]bool
	workDir        string
	buildkitRootfs string
	buildkitBin    string
	buildkitTag    string
	rootfulTag     string
	runc           string
	digestsFile    string
}

func main() {
	var o options
	var only string
	flag.StringVar(&o.registry, "registry", "", "host:port of the registry (plain HTTP)")
	flag.StringVar(&only, "only", "pause,kiln,buildkit,buildkit-rootful,busybox,golang", "comma-separated images to build and push")
	flag.StringVar(&o.workDir, "work", "", "scratch directory (default: a temporary directory)")
	flag.StringVar(&o.buildkitRootfs, "buildkit-rootfs", "", "gzipped tar of the BuildKit image's root filesystem")
	flag.StringVar(&o.buildkitBin, "buildkit-bin", "", "directory holding buildkitd and buildctl")
	flag.StringVar(&o.buildkitTag, "buildkit-tag", "", "tag of the BuildKit image, e.g. v0.33.0-rootless")
	flag.StringVar(&o.rootfulTag, "buildkit-rootful-tag", "", "tag of the rootful BuildKit image, e.g. v0.33.0")
	flag.StringVar(&o.runc, "runc", "", "the runc binary of the rootful BuildKit image")
	flag.StringVar(&o.digestsFile, "digests", "", "file of \"<ref> <digest>\" lines, one per pushed image, updated after each push")
	flag.Parse()
	if o.registry == "" {
		fatalf("-registry is required")
	}
	o.only = map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.only[s] = true
		}
	}
	if o.workDir == "" {
		d, err := os.MkdirTemp("", "kiln-lc-images-")
		if err != nil {
			fatalf("%v", err)
		}
		defer os.RemoveAll(d)
		o.workDir = d
	}

	type job struct {
		name, repoTag string
		make          func() (v1.Image, error)
	}
	jobs := []job{
		{"pause", "pause:3.10", func() (v1.Image, error) { return pauseImage(o) }},
		{"buildkit", "buildkit:" + o.buildkitTag, func() (v1.Image, error) { return buildkitImage(o) }},
		{"buildkit-rootful", "buildkit:" + o.rootfulTag, func() (v1.Image, error) { return buildkitRootfulImage(o) }},
		{"busybox", testenv.BusyboxRepoTag, testenv.MakeBusyboxImage},
		{"golang", testenv.GoRepoTag, func() (v1.Image, error) { return testenv.MakeGoImage(logf) }},
		// Last: the working tree may not build while kiln is being edited.
		{"kiln", "kiln:dev", func() (v1.Image, error) { return kilnImage(o) }},
	}
	for _, j := range jobs {
		if !o.only[j.name] {
			continue
		}
		delete(o.only, j.name)
		start := time.Now()
		img, err := j.make()
		if err != nil {
			fatalf("%s: %v", j.name, err)
		}
		ref := o.registry + "/" + j.repoTag
		d, err := push(ref, img)
		if err != nil {
			fatalf("%s: pushing %s: %v", j.name, ref, err)
		}
		logf("pushed %s@%s (%s)", ref, d, time.Since(start).Round(time.Millisecond))
		if o.digestsFile != "" {
			if err := recordDigest(o.digestsFile, ref, d.String()); err != nil {
				fatalf("%v", err)
			}
		}
	}
	for n := range o.only {
		fatalf("unknown image %q", n)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[images] "+format+"\n", args...)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[images] ERROR: "+format+"\n", args...)
	os.Exit(1)
}

// recordDigest sets ref's line in the digests file (sorted "<ref> <digest>" lines).
func recordDigest(file, ref, digest string) error {
	lines := map[string]string{}
	if b, err := os.ReadFile(file); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 {
				lines[f[0]] = f[1]
			}
		}
	}
	lines[ref] = digest
	refs := make([]string, 0, len(lines))
	for r := range lines {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	var b strings.Builder
	for _, r := range refs {
		fmt.Fprintf(&b, "%s %s\n", r, lines[r])
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

func push(ref string, img v1.Image) (v1.Hash, error) {
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := remote.Write(tag, img, remote.WithContext(ctx), remote.WithJobs(4)); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// --- images ------------------------------------------------------------------------------------

func pauseImage(o options) (v1.Image, error) {
	bin := filepath.Join(o.workDir, "pause")
	if err := goBuild(bin, "./hack/local-cluster/pause"); err != nil {
		return nil, err
	}
	content, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var l layer
	l.file("pause", 0o755, 0, content)
	return image(empty.Image, []v1.Layer{l.build()}, "kiln local-cluster: pause", v1.Config{
		Entrypoint: []string{"/pause"},
		User:       "65535:65535",
	})
}

func kilnImage(o options) (v1.Image, error) {
	bin := filepath.Join(o.workDir, "kiln")
	if err := goBuild(bin, "./cmd/kiln"); err != nil {
		return nil, err
	}
	content, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	// The files of gcr.io/distroless/static-debian12:nonroot that matter to a static Go binary.
	var l layer
	for _, d := range []string{"etc", "etc/ssl", "etc/ssl/certs", "home"} {
		l.dir(d, 0o755, 0)
	}
	l.dir("home/nonroot", 0o700, 65532)
	l.dir("tmp", 0o1777, 0)
	l.file("etc/passwd", 0o644, 0, []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
	l.file("etc/group", 0o644, 0, []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"))
	if ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		l.file("etc/ssl/certs/ca-certificates.crt", 0o644, 0, ca)
	}
	l.file("kiln", 0o755, 0, content)
	return image(empty.Image, []v1.Layer{l.build()}, "kiln local-cluster: kiln from the working tree", v1.Config{
		Entrypoint: []string{"/kiln"},
		Cmd:        []string{"manager"},
		User:       "65532:65532",
		Env:        []string{"PATH=" + defaultPath, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
	})
}

func buildkitImage(o options) (v1.Image, error) {
	if o.buildkitRootfs == "" || o.buildkitBin == "" || o.buildkitTag == "" {
		return nil, fmt.Errorf("-buildkit-rootfs, -buildkit-bin and -buildkit-tag are required")
	}
	base, err := cachedGzipLayer(o.buildkitRootfs)
	if err != nil {
		return nil, fmt.Errorf("root filesystem layer: %w", err)
	}
	var l layer
	l.dir("usr/bin", 0o755, 0)
	for _, b := range []string{"buildkitd", "buildctl"} {
		content, err := os.ReadFile(filepath.Join(o.buildkitBin, b))
		if err != nil {
			return nil, err
		}
		l.file("usr/bin/"+b, 0o755, 0, content)
	}
	// Builds pull base images from and push to the local registry over plain HTTP.
	l.dir("home/user/.config", 0o755, 1000)
	l.dir("home/user/.config/buildkit", 0o755, 1000)
	l.file("home/user/.config/buildkit/buildkitd.toml", 0o644, 1000, []byte(fmt.Sprintf(
		"# The local cluster's registry speaks plain HTTP.\n[registry.%q]\n  http = true\n", o.registry)))
	return image(empty.Image, []v1.Layer{base, l.build()}, "kiln local-cluster: buildkit "+o.buildkitTag, v1.Config{
		Entrypoint: []string{"rootlesskit", "buildkitd"},
		User:       "1000:1000",
		Env: []string{
			"PATH=" + defaultPath,
			"HOME=/home/user",
			"USER=user",
			"XDG_RUNTIME_DIR=/run/user/1000",
			"TMPDIR=/home/user/.local/tmp",
			"BUILDKIT_HOST=unix:///run/user/1000/buildkit/buildkitd.sock",
		},
	})
}

// buildkitRootfulImage is like moby/buildkit:<v>: buildkitd runs as root (in the pod's user
// namespace: hostUsers: false) with its state in /var/lib/buildkit and its configuration in
// /etc/buildkit/buildkitd.toml. On the rootless image's root filesystem (whose Debian runc 1.1.5
// stays as /usr/sbin/runc) it puts bin/runc-<v>/runc first in PATH, as /usr/local/sbin/runc.
func buildkitRootfulImage(o options) (v1.Image, error) {
	if o.buildkitRootfs == "" || o.buildkitBin == "" || o.rootfulTag == "" || o.runc == "" {
		return nil, fmt.Errorf("-buildkit-rootfs, -buildkit-bin, -buildkit-rootful-tag and -runc are required")
	}
	base, err := cachedGzipLayer(o.buildkitRootfs)
	if err != nil {
		return nil, fmt.Errorf("root filesystem layer: %w", err)
	}
	var l layer
	l.dir("usr/bin", 0o755, 0)
	for _, b := range []string{"buildkitd", "buildctl"} {
		content, err := os.ReadFile(filepath.Join(o.buildkitBin, b))
		if err != nil {
			return nil, err
		}
		l.file("usr/bin/"+b, 0o755, 0, content)
	}
	runc, err := os.ReadFile(o.runc)
	if err != nil {
		return nil, err
	}
	l.dir("usr/local", 0o755, 0)
	l.dir("usr/local/sbin", 0o755, 0)
	l.file("usr/local/sbin/runc", 0o755, 0, runc)
	// moby's image makes the CDI directories; builds pull from and push to the local registry over
	// plain HTTP.
	for _, d := range []string{"etc/buildkit", "etc/buildkit/cdi", "etc/cdi", "var", "var/lib", "var/lib/buildkit", "run", "run/cdi"} {
		l.dir(d, 0o755, 0)
	}
	l.file("etc/buildkit/buildkitd.toml", 0o644, 0, []byte(fmt.Sprintf(
		"# The local cluster's registry speaks plain HTTP.\n[registry.%q]\n  http = true\n", o.registry)))
	img, err := image(empty.Image, []v1.Layer{base, l.build()}, "kiln local-cluster: buildkit "+o.rootfulTag, v1.Config{
		Entrypoint: []string{"buildkitd"},
		Env:        []string{"PATH=" + defaultPath},
		Volumes:    map[string]struct{}{"/var/lib/buildkit": {}},
	})
	return img, err
}

func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

func image(base v1.Image, layers []v1.Layer, createdBy string, cfg v1.Config) (v1.Image, error) {
	img := base
	for _, l := range layers {
		var err error
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:   l,
			History: v1.History{Created: v1.Time{Time: layerTime}, CreatedBy: createdBy},
		})
		if err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Created = v1.Time{Time: layerTime}
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// --- layers ------------------------------------------------------------------------------------

// layer is an uncompressed layer tarball built in memory; its entries have fixed times.
type layer struct {
	buf bytes.Buffer
	tw  *tar.Writer
	err error
}

func (l *layer) header(h *tar.Header) {
	if l.tw == nil {
		l.tw = tar.NewWriter(&l.buf)
	}
	if l.err != nil {
		return
	}
	h.ModTime = layerTime
	h.Format = tar.FormatPAX
	l.err = l.tw.WriteHeader(h)
}

func (l *layer) dir(name string, mode int64, owner int) {
	l.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: owner, Gid: owner})
}

func (l *layer) file(name string, mode int64, owner int, content []byte) {
	l.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: owner, Gid: owner, Size: int64(len(content))})
	if l.err == nil {
		_, l.err = l.tw.Write(content)
	}
}

func (l *layer) build() v1.Layer {
	if l.err == nil {
		l.err = l.tw.Close()
	}
	if l.err != nil {
		fatalf("writing a layer: %v", l.err)
	}
	b := l.buf.Bytes()
	tl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithCompressedCaching, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		fatalf("%v", err)
	}
	return tl
}

// gzipLayerMeta is what cachedGzipLayer keeps of a gzipped layer file.
type gzipLayerMeta struct {
	Size    int64  `json:"size"`
	ModTime int64  `json:"modTime"`
	Digest  string `json:"digest"`
	DiffID  string `json:"diffID"`
}

// cachedGzipLayer is the layer in a gzipped layer file whose digests are computed once and kept
// next to it in <file>.digests.json (valid while the file's size and modification time are
// unchanged).
func cachedGzipLayer(path string) (v1.Layer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	metaPath := path + ".digests.json"
	var meta gzipLayerMeta
	if b, err := os.ReadFile(metaPath); err != nil || json.Unmarshal(b, &meta) != nil ||
		meta.Size != fi.Size() || meta.ModTime != fi.ModTime().UnixNano() {
		logf("computing the digests of %s", path)
		if meta, err = digestGzip(path, fi); err != nil {
			return nil, err
		}
		b, _ := json.MarshalIndent(meta, "", "  ")
		if err := os.WriteFile(metaPath, b, 0o644); err != nil {
			return nil, err
		}
	}
	return testenv.GzipFileLayer(path, meta.Size, meta.Digest, meta.DiffID)
}

func digestGzip(path string, fi os.FileInfo) (gzipLayerMeta, error) {
	f, err := os.Open(path)
	if err != nil {
		return gzipLayerMeta{}, err
	}
	defer f.Close()
	compressed, uncompressed := sha256.New(), sha256.New()
	zr, err := gzip.NewReader(io.TeeReader(f, compressed))
	if err != nil {
		return gzipLayerMeta{}, err
	}
	if _, err := io.Copy(uncompressed, zr); err != nil {
		return gzipLayerMeta{}, err
	}
	// The gzip reader may stop before the end of the file (trailing bytes); hash all of it.
	if _, err := io.Copy(compressed, f); err != nil {
		return gzipLayerMeta{}, err
	}
	return gzipLayerMeta{
		Size:    fi.Size(),
		ModTime: fi.ModTime().UnixNano(),
		Digest:  "sha256:" + hex.EncodeToString(compressed.Sum(nil)),
		DiffID:  "sha256:" + hex.EncodeToString(uncompressed.Sum(nil)),
	}, nil
}
