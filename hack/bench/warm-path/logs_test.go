package main

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func lines(t *testing.T, s string) []logLine {
	t.Helper()
	var ls []logLine
	for l := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		ts, text, _ := strings.Cut(strings.TrimSpace(l), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, logLine{at: at, text: text})
	}
	return ls
}

func TestParseRunnerLog(t *testing.T) {
	const head = `2026-12-01T04:56:44.000000000Z kiln runner v0.1.0-dev: building ns/warm-path (build 9) into r/x:v1, as uid 1000
		2026-12-01T04:56:44.100000000Z #1 [internal] resolve git revision
		2026-12-01T04:56:44.600000000Z Built in 500ms: 6 of 6 steps cached
		2026-12-01T04:56:45.500000000Z SBOMs made with syft in 800ms
		2026-12-01T04:56:45.550000000Z Pushed r/x:v1 in 40ms
		2026-12-01T04:56:45.600000000Z Image: r/x@sha256:0`
	ms := time.Millisecond
	for _, tc := range []struct {
		name     string
		log      string
		phases   []phase
		fromLine bool
	}{
		{"from the other lines and timestamps", head, []phase{
			{"wait-buildkitd", 100 * ms}, {"solve", 500 * ms}, {"measure", 160 * ms}, {"sbom", 800 * ms}, {"sign", 0}, {"push", 40 * ms},
		}, false},
		{"from the phases line, unknown keys kept, bad values left out", head +
			"\n2026-12-01T04:56:45.700000000Z kiln: phases: wait-buildkitd=0.812s solve=0.331s cache-export=0.2s bad=x total=1.4s",
			[]phase{{"wait-buildkitd", 812 * ms}, {"solve", 331 * ms}, {"cache-export", 200 * ms}, {"total", 1400 * ms}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := parseRunnerLog(lines(t, tc.log))
			if !reflect.DeepEqual(r.phases, tc.phases) || r.fromLine != tc.fromLine {
				t.Errorf("phases %v (from the line: %v), want %v (%v)", r.phases, r.fromLine, tc.phases, tc.fromLine)
			}
			if r.version != "v0.1.0-dev" || r.cached != 6 || r.total != 6 {
				t.Errorf("version %q, %d of %d cached", r.version, r.cached, r.total)
			}
		})
	}
}

func TestParseBuildkitdLog(t *testing.T) {
	b := parseBuildkitdLog(lines(t, `2026-12-01T04:56:43.000000000Z rootlesskit starting
		2026-12-01T04:56:43.080000000Z time="2026-12-01T04:56:43Z" level=info msg="running server on /run/buildkit/buildkitd.sock"
		2026-12-01T04:56:46.300000000Z kiln: buildkitd has stopped`))
	if got := b.ready.Sub(b.start); got != 80*time.Millisecond {
		t.Errorf("start → ready %s, want 80ms", got)
	}
	if got := b.end.Sub(b.start); got != 3300*time.Millisecond {
		t.Errorf("start → end %s, want 3.3s", got)
	}
}
