package runner

import (
	"bytes"
	"io"
	"sort"
	"strings"
	"sync"
)

// tailWriter keeps the last lines written to it, for the result's log tail.
type tailWriter struct {
	mu    sync.Mutex
	lines []string
	max   int
	part  bytes.Buffer
}

func newTailWriter(maxLines int) *tailWriter { return &tailWriter{max: maxLines} }

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part.Write(p)
	for {
		line, err := w.part.ReadString('\n')
		if err != nil {
			w.part.Reset()
			w.part.WriteString(line) // an unfinished line waits for its end
			break
		}
		w.lines = append(w.lines, strings.TrimRight(line, "\n"))
		if len(w.lines) > w.max {
			w.lines = w.lines[len(w.lines)-w.max:]
		}
	}
	return len(p), nil
}

// String returns the kept lines, blank ones dropped.
func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, l := range append(append([]string{}, w.lines...), w.part.String()) {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// redactor hides known values in everything the runner writes: the log (stdout, hence the
// result's log tail) through a redactWriter, and the result's free text (failure message, layer
// origins, advice) through String.
//
// It knows two kinds of values. Credentials (build secrets, the git token, registry passwords)
// become "***". Build-arg values are not secrets, but kiln promises never to store them (the
// result becomes ImageBuild status; logs are kept by the cluster): each becomes "${NAME}", so a
// line still reads.
//
// Values are replaced as text only from a minimum length: credentials from 4 bytes, build-arg
// values from 6. Shorter values ("1", "true", "amd64", "3.20") occur in any log by themselves:
// replacing every occurrence would garble the log and hide nothing. The one place a build-arg
// value of any length is certain to appear, the "|N NAME=value" prefix BuildKit writes into a RUN
// step's history, is cut structurally by parseHistory before any origin is written. A value of
// several lines is also replaced line by line, as the log is redacted a line at a time.
type redactor struct {
	mu     sync.Mutex
	values []redaction
	rep    *strings.Replacer
}

type redaction struct{ value, with string }

const (
	minSecretRedacted   = 4
	minBuildArgRedacted = 6
)

// addSecrets adds credential values.
func (r *redactor) addSecrets(values []string) {
	for _, v := range values {
		r.add(v, "***", minSecretRedacted)
	}
}

// addBuildArg adds a build-arg value.
func (r *redactor) addBuildArg(name, value string) {
	r.add(value, "${"+name+"}", minBuildArgRedacted)
}

func (r *redactor) add(v, with string, minLen int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, part := range append([]string{v}, strings.Split(v, "\n")...) {
		if part = strings.TrimSpace(part); len(part) >= minLen {
			r.values = append(r.values, redaction{value: part, with: with})
		}
	}
	r.rep = nil
}

// String returns s with every known value replaced.
func (r *redactor) String(s string) string {
	if r == nil {
		return s
	}
	r.mu.Lock()
	if r.rep == nil && len(r.values) > 0 {
		// Longest first: at each position the Replacer tries its pairs in order, so a value
		// that contains another is replaced whole. Credentials, added first, win ties.
		vals := append([]redaction(nil), r.values...)
		sort.SliceStable(vals, func(i, j int) bool { return len(vals[i].value) > len(vals[j].value) })
		var pairs []string
		for _, v := range vals {
			pairs = append(pairs, v.value, v.with)
		}
		r.rep = strings.NewReplacer(pairs...)
	}
	rep := r.rep
	r.mu.Unlock()
	if rep == nil {
		return s
	}
	return rep.Replace(s)
}

// redactWriter passes what is written to it on through a redactor a whole line at a time, so a
// value split across two writes is still found. An unfinished line waits for its end, for Flush,
// or until it holds maxHeldBytes.
type redactWriter struct {
	mu   sync.Mutex
	w    io.Writer
	red  *redactor
	part []byte
}

const maxHeldBytes = 64 << 10

func (w *redactWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part = append(w.part, p...)
	end := bytes.LastIndexByte(w.part, '\n') + 1
	if end == 0 && len(w.part) >= maxHeldBytes {
		end = len(w.part)
	}
	if end > 0 {
		_, err := io.WriteString(w.w, w.red.String(string(w.part[:end])))
		w.part = append(w.part[:0], w.part[end:]...)
		if err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// Flush writes the unfinished line.
func (w *redactWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.part) > 0 {
		_, _ = io.WriteString(w.w, w.red.String(string(w.part)))
		w.part = w.part[:0]
	}
}
