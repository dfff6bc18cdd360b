package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// logLine is one line of a container's log with the CRI's timestamp (nanoseconds, taken on
// this machine: the kubelet runs here).
type logLine struct {
	at   time.Time
	text string
}

// containerLog reads a container's whole log with timestamps.
// logDir, when set (-logs), keeps every container log read, as <pod>.<container>.log.
var logDir string

func containerLog(ctx context.Context, cs kubernetes.Interface, ns, pod, container string) ([]logLine, error) {
	raw, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, Timestamps: true}).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the %s log of pod %s: %w", container, pod, err)
	}
	if logDir != "" {
		if err := os.WriteFile(filepath.Join(logDir, pod+"."+container+".log"), raw, 0o644); err != nil {
			return nil, err
		}
	}
	var lines []logLine
	for l := range strings.SplitSeq(strings.TrimRight(string(raw), "\n"), "\n") {
		ts, text, ok := strings.Cut(l, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil {
			continue
		}
		lines = append(lines, logLine{at: at, text: text})
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("the %s log of pod %s has no timestamped line", container, pod)
	}
	return lines, nil
}

// runnerLog is what the runner's log says about one build.
type runnerLog struct {
	start, end    time.Time
	version       string
	cached, total int
	// phases are the runner's own durations: its "kiln: phases:" line when it prints one (in
	// its order), else what its other lines say ("Built in", "SBOMs made with syft in",
	// "Signed ... in", "Pushed ... in") and what their timestamps leave between them.
	phases   []phase
	fromLine bool // phases come from the "kiln: phases:" line
}

type phase struct {
	name string
	d    time.Duration
}

var (
	reVersion = regexp.MustCompile(`^kiln runner (\S+):`)
	reBuilt   = regexp.MustCompile(`^Built in (\S+): (\d+) of (\d+) steps cached`)
	reSBOM    = regexp.MustCompile(`^SBOMs made with syft in (\S+)$`)
	reSigned  = regexp.MustCompile(`^Signed .* in (\S+)$`)
	rePushed  = regexp.MustCompile(`^Pushed \S+ in (\S+)$`)
	rePhases  = regexp.MustCompile(`kiln: phases: (.*)$`)
)

func parseRunnerLog(lines []logLine) runnerLog {
	r := runnerLog{start: lines[0].at, end: lines[len(lines)-1].at}
	var builtAt time.Time
	var solve, sbom, sign, push time.Duration
	for _, l := range lines {
		if m := reVersion.FindStringSubmatch(l.text); m != nil && r.version == "" {
			r.version = m[1]
		}
		if m := rePhases.FindStringSubmatch(l.text); m != nil {
			r.phases, r.fromLine = parsePhases(m[1]), true
		}
		if m := reBuilt.FindStringSubmatch(l.text); m != nil {
			solve, builtAt = dur(m[1]), l.at
			r.cached, _ = strconv.Atoi(m[2])
			r.total, _ = strconv.Atoi(m[3])
		}
		if m := reSBOM.FindStringSubmatch(l.text); m != nil {
			sbom = dur(m[1])
		}
		if m := reSigned.FindStringSubmatch(l.text); m != nil {
			sign = dur(m[1])
		}
		if m := rePushed.FindStringSubmatch(l.text); m != nil {
			push += dur(m[1])
		}
	}
	if r.fromLine || builtAt.IsZero() {
		return r
	}
	// Without the phases line: the solve started its duration before "Built in"; what is left
	// between the runner's start and the solve is waiting for buildkitd (and reading the
	// request); what is left between "Built in" and the end, once SBOM, signing and push are
	// taken out, is measuring (and the report).
	wait := builtAt.Add(-solve).Sub(r.start)
	measure := r.end.Sub(builtAt) - sbom - sign - push
	r.phases = []phase{{"wait-buildkitd", wait}, {"solve", solve}, {"measure", measure}, {"sbom", sbom}, {"sign", sign}, {"push", push}}
	return r
}

// parsePhases reads "wait-buildkitd=0.812s solve=0.331s ..."; a value that is not a duration
// is left out.
func parsePhases(s string) []phase {
	var ps []phase
	for f := range strings.FieldsSeq(s) {
		k, v, ok := strings.Cut(f, "=")
		if d, err := time.ParseDuration(v); ok && err == nil {
			ps = append(ps, phase{k, d})
		}
	}
	return ps
}

func dur(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// buildkitdLog is when buildkitd started (its first line), was ready ("running server on") and
// last wrote.
type buildkitdLog struct {
	start, ready, end time.Time
}

func parseBuildkitdLog(lines []logLine) buildkitdLog {
	b := buildkitdLog{start: lines[0].at, end: lines[len(lines)-1].at}
	for _, l := range lines {
		if strings.Contains(l.text, "running server on") {
			b.ready = l.at
			break
		}
	}
	return b
}
