package runner

import (
	"strings"
	"testing"
	"time"
)

func TestPhasesLine(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	p := newPhases(t0)
	p.done("wait-buildkitd", t0.Add(812*time.Millisecond))
	p.done("solve", t0.Add(1143*time.Millisecond))
	var b strings.Builder
	p.print(&b, t0.Add(1400*time.Millisecond))
	if got, want := b.String(), "kiln: phases: wait-buildkitd=0.812s solve=0.331s total=1.400s\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
