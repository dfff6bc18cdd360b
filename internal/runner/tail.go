package runner

import (
	"bytes"
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

// redact replaces every known secret value in s. Values shorter than 4 bytes are left alone:
// replacing them would garble the log without protecting anything.
func redact(s string, secrets []string) string {
	for _, v := range secrets {
		v = strings.TrimSpace(v)
		if len(v) >= 4 {
			s = strings.ReplaceAll(s, v, "***")
		}
	}
	return s
}
