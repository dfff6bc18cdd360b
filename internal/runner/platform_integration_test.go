package runner

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestPlatformMismatchIsNotPushed (issue 18): two platforms built from a base that exists only
// for amd64 (a single image, as many private bases are) make an "arm64" image of amd64 binaries,
// its RUN executed by the amd64 busybox. The runner refuses it before the push, naming the
// platform, a file, its layer and the base's platforms; allowPlatformMismatch lets it through;
// a base that is an index of both platforms builds.
func TestPlatformMismatchIsNotPushed(t *testing.T) {
	e := newEnv(t)
	two := func(allow bool) func(*contract.BuildSpec) {
		return func(s *contract.BuildSpec) {
			s.Dockerfile.Platforms = []string{"linux/amd64", "linux/arm64"}
			s.Dockerfile.AllowPlatformMismatch = allow
		}
	}
	files := map[string]string{"Dockerfile": "FROM " + e.busybox + "\nRUN echo hi > /x\n"}

	req := e.request("mismatch", two(false))
	res, log, _ := e.runLogged(t, req, e.paths(t, files), 5*time.Minute)
	if res.FailureClass != kilnv1.FailureBadInput || res.Pushed {
		t.Fatalf("got %s (pushed %v): %s\n%s", res.FailureClass, res.Pushed, res.Message, log)
	}
	for _, want := range []string{"the linux/arm64 image holds 1 executable(s) for amd64 (of its 1 ELF executables), not arm64, such as /bin/busybox", "from layer 0 (base image " + e.busybox,
		"base image " + e.busybox + " has only linux/amd64 (a single image", "spec.dockerfile.allowPlatformMismatch: true"} {
		if !strings.Contains(res.Message, want) {
			t.Errorf("message lacks %q:\n%s", want, res.Message)
		}
	}
	if strings.Contains(res.Message, "linux/amd64 image holds") {
		t.Errorf("the amd64 image was refused too: %s", res.Message)
	}
	if tags := e.reg.Tags(t, "test/mismatch"); len(tags) != 0 {
		t.Errorf("pushed %v although refused", tags)
	}

	res, log, _ = e.runLogged(t, e.request("mismatch", two(true)), e.paths(t, files), 5*time.Minute)
	if res.FailureClass != "" || !res.Pushed {
		t.Errorf("with allowPlatformMismatch: %s %s", res.FailureClass, res.Message)
	}
	if strings.Contains(log, "do not match result platforms") {
		t.Errorf("BuildKit warns that the requested platforms do not match: kiln did not tell it which it asked for\n%s", log)
	}

	// A base with both platforms: its arm64 variant holds no amd64 executable.
	base := e.reg.Ref("base/both:1")
	arm := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	arm, err := mutate.ConfigFile(arm, &v1.ConfigFile{OS: "linux", Architecture: "arm64", RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: testenv.NewBusyboxImage(t), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	if err := remote.WriteIndex(e.reg.ParseRef(t, base), idx, e.reg.RemoteOptions(context.Background())...); err != nil {
		t.Fatal(err)
	}
	ok := e.run(t, e.request("both", two(false)), e.paths(t, map[string]string{"Dockerfile": "FROM " + base + "\nCOPY hello.txt /\n", "hello.txt": "hi\n"}))
	if ok.FailureClass != "" || !ok.Pushed || len(ok.Platforms) != 2 {
		t.Errorf("from a base of both platforms: %s %s, %d platforms", ok.FailureClass, ok.Message, len(ok.Platforms))
	}
}
