package runner

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// phases times the runner's steps for the last line of its log, which hack/bench/warm-path
// reads: "kiln: phases: wait-buildkitd=0.812s solve=0.331s ... total=1.400s", in the order the
// steps ran, each in seconds to the millisecond. A step that did not run is left out.
type phases struct {
	start time.Time
	last  time.Time
	names []string
	took  []time.Duration
}

func newPhases(now time.Time) *phases { return &phases{start: now, last: now} }

// done ends step name at now: it took the time since the previous step ended.
func (p *phases) done(name string, now time.Time) {
	p.names = append(p.names, name)
	p.took = append(p.took, now.Sub(p.last))
	p.last = now
}

// print writes the phases line, with the total since the runner started, to w.
func (p *phases) print(w io.Writer, now time.Time) {
	var b strings.Builder
	b.WriteString("kiln: phases:")
	for i, n := range p.names {
		fmt.Fprintf(&b, " %s=%s", n, seconds(p.took[i]))
	}
	fmt.Fprintf(&b, " total=%s\n", seconds(now.Sub(p.start)))
	_, _ = io.WriteString(w, b.String())
}

func seconds(d time.Duration) string {
	return fmt.Sprintf("%.3fs", d.Seconds())
}
