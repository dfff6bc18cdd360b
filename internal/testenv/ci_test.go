package testenv_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// outcome records what SkipOrFail asked of its test.
type outcome struct {
	testing.TB
	fatal, skip string
}

func (o *outcome) Helper()                           {}
func (o *outcome) Fatalf(format string, args ...any) { o.fatal = fmt.Sprintf(format, args...) }
func (o *outcome) Skipf(format string, args ...any)  { o.skip = fmt.Sprintf(format, args...) }

func TestSkipOrFailFailsInCI(t *testing.T) {
	for _, tc := range []struct {
		ci       string
		wantFail bool
	}{
		{"", false},
		{"false", false},
		{"0", false},
		{"true", true},
		{"1", true},
		{"yes", true},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			if got := testenv.InCI(); got != tc.wantFail {
				t.Errorf("InCI() = %v, want %v", got, tc.wantFail)
			}
			o := &outcome{TB: t}
			testenv.SkipOrFail(o, "rootlesskit not in %s", "PATH")
			switch {
			case tc.wantFail && (o.skip != "" || !strings.Contains(o.fatal, "CI is set, so this test fails") || !strings.Contains(o.fatal, "rootlesskit not in PATH")):
				t.Errorf("with CI=%q: fatal %q, skip %q; want a failure that names what is missing", tc.ci, o.fatal, o.skip)
			case !tc.wantFail && (o.fatal != "" || !strings.Contains(o.skip, "rootlesskit not in PATH")):
				t.Errorf("with CI=%q: fatal %q, skip %q; want a skip that names what is missing", tc.ci, o.fatal, o.skip)
			}
		})
	}
}
