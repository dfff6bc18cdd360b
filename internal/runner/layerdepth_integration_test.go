package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// runSteps is a Dockerfile of n RUN steps on the one-layer busybox image.
func runSteps(base string, n int) string {
	var b strings.Builder
	b.WriteString("FROM " + base + "\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "RUN echo %d > /f%d\n", i, i)
	}
	return b.String()
}

// Issue 10 item 7: a Dockerfile with ~500 RUN steps failed with a raw overlay mount error.
func TestLayerDepthFailure(t *testing.T) {
	testenv.SkipUnlessBuildKitPossible(t)

	// Subtest names become part of buildkitd's state path: a "," or ":" in it makes overlay
	// mount options unusable, and buildkitd falls back to the native snapshotter.
	t.Run("500 steps build and the 501st is explained", func(t *testing.T) {
		e := newEnv(t)
		skipUnlessOverlay(t, e.bk)
		req := e.request("depth")
		res, _, _ := e.runLogged(t, req, e.paths(t, map[string]string{"Dockerfile": runSteps(e.busybox, 500)}), 10*time.Minute)
		if res.FailureClass != "" {
			t.Fatalf("500 RUN steps on a one-layer base (500 lower layers at the last step) failed: %s: %s", res.FailureClass, res.Message)
		}
		res, _, _ = e.runLogged(t, req, e.paths(t, map[string]string{"Dockerfile": runSteps(e.busybox, 501)}), 10*time.Minute)
		if res.FailureClass != kilnv1.FailureBadInput {
			t.Fatalf("501 RUN steps: %s: %s", res.FailureClass, res.Message)
		}
		for _, want := range []string{"Dockerfile:502: too many layers", "on 501 stacked layers", "at most 500 layers", "Merge RUN steps", "COPY --from"} {
			if !strings.Contains(res.Message, want) {
				t.Errorf("message lacks %q: %s", want, res.Message)
			}
		}
		if strings.Contains(res.Message, "lowerdir") {
			t.Errorf("message still carries the raw mount error: %s", res.Message)
		}
		t.Logf("message: %s", res.Message)
	})

	t.Run("long layer paths overflow the mount options", func(t *testing.T) {
		// Long snapshot paths (a long-lived cache numbers its snapshots in the tens of thousands)
		// fill the 4 KiB of mount options before the kernel's limit; a long state directory does
		// the same sooner.
		reg := testenv.StartRegistry(t)
		state := filepath.Join(t.TempDir(), strings.Repeat("s", 200), strings.Repeat("t", 200), strings.Repeat("u", 200))
		if err := os.MkdirAll(state, 0o755); err != nil {
			t.Fatal(err)
		}
		bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{StateDir: state, InsecureRegistries: []string{reg.Addr}})
		skipUnlessOverlay(t, bk)
		e := &env{t: t, reg: reg, bk: bk, busybox: testenv.BusyboxImage(t, reg)}
		res, _, _ := e.runLogged(t, e.request("longpaths"), e.paths(t, map[string]string{"Dockerfile": runSteps(e.busybox, 450)}), 10*time.Minute)
		if res.FailureClass != kilnv1.FailureBadInput {
			t.Fatalf("450 RUN steps under a 600-byte state path: %s: %s", res.FailureClass, res.Message)
		}
		// Over 4096 bytes of options containerd refuses the mount; at exactly 4096 the kernel
		// cuts the last path: which one happens depends on this path's length.
		for _, want := range []string{": too many layers: this step runs on ", " layers", "Merge RUN steps"} {
			if !strings.Contains(res.Message, want) {
				t.Errorf("message lacks %q: %s", want, res.Message)
			}
		}
		if strings.Contains(res.Message, "lowerdir") {
			t.Errorf("message still carries the raw mount error: %s", res.Message)
		}
		t.Logf("message: %s", res.Message)
	})
}

// skipUnlessOverlay skips a test of the overlay snapshotter's limits when buildkitd chose another
// (in CI it fails instead: the overlay snapshotter is one of the parts CI must have).
func skipUnlessOverlay(t *testing.T, bk *testenv.BuildKit) {
	t.Helper()
	if bk.Snapshotter != "overlayfs" {
		testenv.SkipOrFail(t, "buildkitd uses the %q snapshotter here; the layer limit is the overlayfs snapshotter's", bk.Snapshotter)
	}
}
