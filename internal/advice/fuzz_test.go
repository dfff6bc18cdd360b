package advice

import (
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

// fuzzInput builds an Input from fuzzed Dockerfile text, with a context and, depending on the
// text, a measured image, so that every rule runs.
func fuzzInput(df []byte, target string) Input {
	in := Input{Dockerfile: df, Target: target, ContextFiles: []string{".git", "Dockerfile", "node_modules"}}
	if len(df)%2 == 0 {
		in.Dockerignore = df // any text is a .dockerignore too
	}
	n := int64(len(df))
	in.Image = &Image{
		CompressedBytes: n,
		Layers: []Layer{
			{Index: 0, CompressedBytes: n / 2, Base: true},
			{Index: 1, CompressedBytes: n / 3, Line: len(df) % 7},
			{Index: 2, CompressedBytes: n / 6, Line: -1, CreatedBy: string(df[:min(len(df), 40)])},
		},
		Waste: []Waste{{Path: "/x", Bytes: n, AddedIn: 1, RemovedIn: 2}, {Path: "/y", Bytes: 1, AddedIn: -3, RemovedIn: 99}},
	}
	return in
}

// failOnRecoveredPanics makes the panics Analyze recovers from fail the test: Analyze must
// not panic for users, but the fuzzer must see them.
func failOnRecoveredPanics(t *testing.T) {
	panicHook = func(where string, r any) { t.Fatalf("%s panicked: %v\n%s", where, r, debug.Stack()) }
	t.Cleanup(func() { panicHook = nil })
}

// checkFindings checks the invariants of any Analyze result.
func checkFindings(t *testing.T, in Input, got []Finding) {
	t.Helper()
	if got == nil {
		t.Fatal("Analyze returned nil, want an empty slice")
	}
	for i, f := range got {
		if !KnownRule(f.Rule) || f.Message == "" || f.Doc != DocBase+"#"+f.Rule || f.Kind != kindOf(f.Rule) || f.SavingBytes < 0 || f.Line < 0 {
			t.Fatalf("malformed finding %+v", f)
		}
		if i > 0 && got[i-1].SavingBytes < f.SavingBytes {
			t.Fatalf("findings not ordered by saving: %+v after %+v", f, got[i-1])
		}
		if f.Line > 0 && f.Line > strings.Count(string(in.Dockerfile), "\n")+1 && !measuredRule(f.Rule) {
			t.Fatalf("finding on line %d of a %d-line Dockerfile: %+v", f.Line, strings.Count(string(in.Dockerfile), "\n")+1, f)
		}
	}
}

// mangle returns variants of a Dockerfile: truncated, with lines dropped, duplicated, shuffled
// and with bytes replaced, the kind of input a fuzzer finds first.
func mangle(df string) []string {
	out := []string{df[:len(df)/2], df[:len(df)/3], strings.ReplaceAll(df, "\n", "\\\n"), strings.ReplaceAll(df, " ", ""),
		strings.ReplaceAll(df, "FROM", "FROM --platform=$BUILDPLATFORM"), strings.ReplaceAll(df, "RUN ", "RUN <<EOF\n") + "\nEOF\n",
		strings.ReplaceAll(df, "-", "\x00"), strings.ReplaceAll(df, "\"", ""), strings.ReplaceAll(df, "'", ""),
		strings.ReplaceAll(df, "COPY", "COPY --from=0"), strings.ReplaceAll(df, "RUN", "RUN --mount=type=cache,target="),
		strings.Repeat(df, 3), strings.ToLower(df), "\xef\xbb\xbf" + df, strings.ReplaceAll(df, "\n", "\r\n")}
	lines := strings.Split(df, "\n")
	for i := range lines {
		out = append(out, strings.Join(append(append([]string{}, lines[:i]...), lines[i+1:]...), "\n"))
	}
	rev := make([]string, len(lines))
	for i, l := range lines {
		rev[len(lines)-1-i] = l
	}
	return append(out, strings.Join(rev, "\n"))
}

// oddities are inputs that once looked risky: empty, directives, escapes, heredocs, odd mounts.
var oddities = []string{
	"", "\n", "FROM", "FROM \n", "# syntax=docker/dockerfile:1\n# escape=`\nFROM alpine\nRUN echo `\n  hi\n",
	"FROM scratch AS a\nFROM a AS a\nFROM a\n", "ARG X\nFROM $X\nRUN rm -rf $X/*\n", "FROM alpine\nRUN ['go', 'build']\n",
	"FROM alpine\nRUN [\"sh\", \"-c\", \"apk add curl && go build\"]\n", "FROM alpine\nRUN --mount=type=bind,from=9 go mod download\n",
	"FROM alpine\nCOPY --from=-1 / /\n", "FROM alpine\nUSER\n", "FROM alpine\nWORKDIR ../../..\nRUN cd .. && rm -rf ../*\n",
	"FROM alpine\nRUN curl -o\n", "FROM alpine\nRUN wget -O\n", "FROM alpine\nRUN git clone\n", "FROM alpine\nRUN apk\n",
	"FROM alpine\nRUN apt-get -o\n", "FROM alpine\nRUN go\n", "FROM alpine\nRUN $(\n", "FROM alpine\nRUN `\n", "FROM alpine\nRUN echo \"\\\n",
	"FROM alpine\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n", "FROM alpine\nADD --checksum=sha256:00 https://x/y.tgz /\n",
	"FROM alpine\nENV A=1 B\n", "FROM alpine\nRUN >\n", "FROM alpine\nRUN 2>&1 >&2 <\n", "FROM alpine:latest@sha256:xyz\n",
	"FROM alpine\nRUN pip install -r\n", "FROM alpine\nRUN go build -ldflags\n", "FROM alpine\nRUN CGO_ENABLED= go build\n",
}

func seedCorpus(t testing.TB) []string {
	var out []string
	for _, f := range corpusFiles(t) {
		dt, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(dt))
	}
	for _, tc := range ruleCases {
		out = append(out, tc.df)
	}
	return append(out, oddities...)
}

// TestFuzzSeedsDoNotPanic runs the corpus, the rule cases and mangled versions of them through
// Analyze, as `go test -fuzz=FuzzAnalyze` starts from them.
func TestFuzzSeedsDoNotPanic(t *testing.T) {
	failOnRecoveredPanics(t)
	n := 0
	for _, df := range seedCorpus(t) {
		for _, v := range append([]string{df}, mangle(df)...) {
			for _, target := range []string{"", "builder", "0"} {
				in := fuzzInput([]byte(v), target)
				checkFindings(t, in, Analyze(in))
				n++
			}
		}
	}
	if n < 1000 {
		t.Errorf("only %d inputs", n)
	}
	t.Logf("%d inputs", n)
}

// FuzzAnalyze checks that Analyze never panics and always returns well-formed, ordered
// findings. Run it for a bounded time:
//
//	go test -run='^$' -fuzz=FuzzAnalyze -fuzztime=60s ./internal/advice/
func FuzzAnalyze(f *testing.F) {
	for _, df := range seedCorpus(f) {
		f.Add([]byte(df), "")
	}
	f.Add([]byte("FROM golang AS builder\nRUN go build\nFROM scratch\n"), "builder")
	f.Fuzz(func(t *testing.T, df []byte, target string) {
		failOnRecoveredPanics(t)
		in := fuzzInput(df, target)
		checkFindings(t, in, Analyze(in))
	})
}

// TestAnalyzeRecovers checks that a rule that panics loses its own findings, not the others',
// and that Analyze returns normally.
func TestAnalyzeRecovers(t *testing.T) {
	saved := rules
	defer func() { rules = saved }()
	rules = append(append([]rule{}, saved...), rule{RuleInfo{"boom", KindSize, "panics"}, func(a *analysis) {
		a.add(1, 0, "half done")
		panic("boom")
	}})
	var recovered []string
	panicHook = func(where string, r any) { recovered = append(recovered, where) }
	defer func() { panicHook = nil }()
	got := Analyze(Input{Dockerfile: []byte(L("FROM alpine", "COPY app /app"))})
	if strings.Join(ruleLines(got), " ") != "base-latest:1 no-user:1" || strings.Join(recovered, ",") != "boom" {
		t.Errorf("findings %v, recovered %v", ruleLines(got), recovered)
	}
}
