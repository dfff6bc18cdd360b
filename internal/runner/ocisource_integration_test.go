package runner

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/bundle"
	"github.com/kiln-dev/kiln/internal/contract"
)

// TestOCISourceWithRealBuildKit (issue 17): a build context pushed as an OCI artifact (as kiln
// build pushes it) builds; the revision is the artifact's digest; a hostile archive, a missing
// artifact and a context over the size limit are BadInput naming what is wrong.
func TestOCISourceWithRealBuildKit(t *testing.T) {
	e := newEnv(t)
	push := func(t *testing.T, repo string, img v1.Image) string {
		t.Helper()
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		ref := e.reg.Addr + "/" + repo + "@" + d.String()
		if err := remote.Write(e.reg.ParseRef(t, ref), img, e.reg.RemoteOptions(context.Background())...); err != nil {
			t.Fatal(err)
		}
		return ref
	}
	source := func(ref string, maxBytes int64) func(*contract.BuildSpec) {
		return func(s *contract.BuildSpec) {
			s.Source = contract.Source{OCI: &contract.OCISource{Image: ref, Insecure: true, MaxBytes: maxBytes, MaxEntries: contract.MaxSourceEntries}}
		}
	}
	dir := t.TempDir()
	for name, content := range map[string]string{
		"Dockerfile":    "FROM " + e.busybox + "\nCOPY . /app\nRUN ls /app > /listing\n",
		"hello.txt":     "hello from an OCI source\n",
		"secret.key":    "not for the image\n",
		".dockerignore": "*.key\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, _, err := bundle.Image(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := push(t, "test/app-src", img)

	req := e.request("from-oci", source(ref, contract.DefaultMaxSourceBytes))
	res, log, _ := e.runLogged(t, req, e.paths(t, nil), 5*time.Minute)
	if res.FailureClass != "" || !res.Pushed {
		t.Fatalf("build from %s: %s %s\n%s", ref, res.FailureClass, res.Message, log)
	}
	if want := ref[strings.Index(ref, "@")+1:]; res.Revision != want {
		t.Errorf("revision %q, want the artifact's digest %s", res.Revision, want)
	}
	var files []string
	built, err := e.get(t, req.Spec.Output.Image+"@"+res.Digest).Image()
	if err != nil {
		t.Fatal(err)
	}
	eachLayerFile(t, built, func(name string, _ io.Reader) { files = append(files, name) })
	if joined := strings.Join(files, " "); !strings.Contains(joined, "app/hello.txt") || strings.Contains(joined, "secret.key") {
		t.Errorf("image files %v: want app/hello.txt, and not the .dockerignore'd secret.key", files)
	}

	t.Run("hostile archive", func(t *testing.T) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		_ = tw.WriteHeader(&tar.Header{Name: "../escape.txt", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
		_, _ = tw.Write([]byte("x\n"))
		_ = tw.Close()
		_ = zw.Close()
		bad, err := mutate.Append(mutate.ConfigMediaType(empty.Image, bundle.ConfigMediaType), mutate.Addendum{Layer: static.NewLayer(buf.Bytes(), bundle.ContentMediaType)})
		if err != nil {
			t.Fatal(err)
		}
		res := e.run(t, e.request("from-oci", source(push(t, "test/bad-src", bad), contract.DefaultMaxSourceBytes)), e.paths(t, nil))
		if res.FailureClass != kilnv1.FailureBadInput || !strings.Contains(res.Message, `"../escape.txt"`) || res.Pushed {
			t.Errorf("got %s: %s", res.FailureClass, res.Message)
		}
	})
	t.Run("missing artifact", func(t *testing.T) {
		missing := e.reg.Addr + "/test/none@sha256:" + strings.Repeat("ab", 32)
		res := e.run(t, e.request("from-oci", source(missing, contract.DefaultMaxSourceBytes)), e.paths(t, nil))
		if res.FailureClass != kilnv1.FailureBadInput || !strings.Contains(res.Message, "no such artifact") {
			t.Errorf("got %s: %s", res.FailureClass, res.Message)
		}
	})
	t.Run("over the size limit", func(t *testing.T) {
		res := e.run(t, e.request("from-oci", source(ref, 16)), e.paths(t, nil))
		if res.FailureClass != kilnv1.FailureBadInput || !strings.Contains(res.Message, ref) {
			t.Errorf("got %s: %s", res.FailureClass, res.Message)
		}
	})
}
