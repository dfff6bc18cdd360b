package runner

import (
	"strings"

	"github.com/kiln-dev/kiln/internal/contract"
	"testing"
	"time"
)

// BuildKit's Dockerfile checks reach the runner's log, with their line: progressui returns the
// warnings instead of printing them, and kiln used to drop them.
func TestBuildKitWarningsReachTheLog(t *testing.T) {
	e := newEnv(t)
	req := e.request("warned")
	res, log, _ := e.runLogged(t, req, e.paths(t, map[string]string{"Dockerfile": "FROM " + e.busybox + " as base\nRUN true\n"}), 5*time.Minute)
	if res.FailureClass != "" {
		t.Fatalf("build failed: %s: %s", res.FailureClass, res.Message)
	}
	if !strings.Contains(log, "BuildKit warned (") || !strings.Contains(log, "FromAsCasing") || !strings.Contains(log, "(line 1)") {
		t.Errorf("the log does not show BuildKit's FromAsCasing warning on line 1:\n%s", log)
	}
	var found bool
	for _, a := range res.Advice {
		found = found || (a.Rule == "buildkit-from-as-casing" && a.Line == 1 && strings.Contains(a.Message, "casing do not match"))
	}
	if !found {
		t.Errorf("advice %+v: want BuildKit's check as buildkit-from-as-casing on line 1", res.Advice)
	}

	// spec.advice.ignore silences it by that id.
	req.Spec.Advice = &contract.AdviceSpec{Ignore: []string{"buildkit-from-as-casing"}}
	res = e.run(t, req, e.paths(t, map[string]string{"Dockerfile": "FROM " + e.busybox + " as base\nRUN true\n"}))
	for _, a := range res.Advice {
		if a.Rule == "buildkit-from-as-casing" {
			t.Errorf("an ignored check is still advised: %+v", a)
		}
	}
}
