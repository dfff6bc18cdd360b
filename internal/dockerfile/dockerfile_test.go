package dockerfile

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

func mustParse(t *testing.T, df, target string, buildArgs map[string]string) *File {
	t.Helper()
	f, err := Parse([]byte(df), target, buildArgs)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f
}

func TestParseErrorLine(t *testing.T) {
	_, err := Parse([]byte("FROM alpine\n\nNOTANINSTRUCTION x\n"), "", nil)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 3 || !strings.Contains(pe.Msg, "unknown instruction") {
		t.Errorf("err = %#v", err)
	}
	if got := Describe("Dockerfile", err); !strings.HasPrefix(got, "Dockerfile:3: unknown instruction") {
		t.Errorf("Describe = %q", got)
	}
	if _, err := Parse([]byte("ARG A=1\n"), "", nil); !errors.Is(err, ErrNoFrom) {
		t.Errorf("a Dockerfile without FROM: %v", err)
	}
	if got := Describe("Dockerfile", ErrNoFrom); got != "Dockerfile: it has no FROM instruction" {
		t.Errorf("Describe(ErrNoFrom) = %q", got)
	}
}

// TestStageGraph checks FROM chains, target selection and the image each chain starts from,
// FROM lines expanded with the global ARGs and build args as BuildKit expands them.
func TestStageGraph(t *testing.T) {
	df := "ARG GO=1.26\nARG BASE=\"alpine:3.20\"\n" +
		"FROM golang:${GO} AS build\n" + // stage 0
		"FROM build AS test\n" + // 1: starts FROM build
		"FROM ${BASE} AS Release\n" + // 2
		"FROM release\n" + // 3: starts FROM Release (names are case-insensitive)
		"COPY --from=build /app /app\n" +
		"FROM scratch AS other\n" // 4
	for _, tc := range []struct {
		name      string
		target    string
		args      map[string]string
		want      int
		images    []string
		built     []int
		finalFrom string
	}{
		{"no target: the last stage", "", nil, 4, []string{"golang:1.26", "golang:1.26", "alpine:3.20", "alpine:3.20", "scratch"}, []int{4}, "scratch"},
		{"a target", "test", nil, 1, []string{"golang:1.26", "golang:1.26", "alpine:3.20", "alpine:3.20", "scratch"}, []int{0, 1}, "build"},
		{"an unknown target: the last", "nope", nil, 4, nil, []int{4}, "scratch"},
		{"build args override global defaults", "", map[string]string{"GO": "1.22", "BASE": "debian"}, 4,
			[]string{"golang:1.22", "golang:1.22", "debian", "debian", "scratch"}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := mustParse(t, df, tc.target, tc.args)
			if f.Target != tc.want {
				t.Errorf("Target = %d, want %d", f.Target, tc.want)
			}
			var images []string
			for _, s := range f.Stages {
				images = append(images, s.Image)
			}
			if tc.images != nil && !reflect.DeepEqual(images, tc.images) {
				t.Errorf("images %q, want %q", images, tc.images)
			}
			if tc.built != nil && !reflect.DeepEqual(f.Built(), tc.built) {
				t.Errorf("Built = %v, want %v", f.Built(), tc.built)
			}
			if tc.finalFrom != "" && f.Stages[f.Target].From != tc.finalFrom {
				t.Errorf("From = %q, want %q", f.Stages[f.Target].From, tc.finalFrom)
			}
		})
	}
	f := mustParse(t, df, "", nil)
	if got := fmt.Sprint(f.Chain(3), f.Chain(1), f.Stages[3].Parent, f.Stages[2].Parent); got != "[2 3] [0 1] 2 -1" {
		t.Errorf("chains and parents: %s", got)
	}
	if got := fmt.Sprint(f.Names()); got != "[build test release other]" {
		t.Errorf("Names = %s", got)
	}
	if f.StageIndex("RELEASE") != 2 || f.StageIndex("") != -1 || f.Select("") != 4 {
		t.Errorf("StageIndex/Select: %d %d %d", f.StageIndex("RELEASE"), f.StageIndex(""), f.Select(""))
	}
	// A stage index is not a target name.
	if got := mustParse(t, df, "3", nil); !reflect.DeepEqual(got.Built(), []int{4}) {
		t.Errorf("target 3 is a name of no stage: Built = %v", got.Built())
	}
	// The last stage starts FROM release and copies from build: both chains are built.
	g := mustParse(t, strings.TrimSuffix(df, "FROM scratch AS other\n"), "", nil)
	if !reflect.DeepEqual(g.Built(), []int{0, 2, 3}) {
		t.Errorf("COPY --from: Built = %v, want [0 2 3]", g.Built())
	}
}

// TestArgs checks the value each ARG takes and the expansion of the words of instructions, as
// BuildKit's dispatch does it.
func TestArgs(t *testing.T) {
	df := "ARG REG=registry.example\nARG NOVAL\n" +
		"FROM ${REG}/base:1\n" +
		"ENV HOME=/home/app\n" +
		"ARG REG\n" + // 5: the global value
		"ARG DIR=\"$HOME/src\"\n" + // 6: default expanded in the stage, quotes removed
		"ARG TOKEN=default\n" + // 7: overridden by a build arg
		"ARG NOVAL\n" + // 8: neither default nor build arg nor global value
		"WORKDIR $DIR\n" + // 9
		"COPY app-${TOKEN}.tar $UNSET/\n" + // 10: a variable nobody set stays as written
		"USER ${USERNAME:-app}\n" // 11: the base image may set USERNAME: kept as written
	f := mustParse(t, df, "", map[string]string{"TOKEN": "tok"})
	if f.Stages[0].Base != "registry.example/base:1" || f.Stages[0].From != "${REG}/base:1" {
		t.Errorf("FROM: base %q from %q", f.Stages[0].Base, f.Stages[0].From)
	}
	steps := f.Stages[0].Steps
	args := map[string]string{}
	for _, sp := range steps {
		if a, ok := sp.Command.(*instructions.ArgCommand); ok {
			for _, kv := range a.Args {
				args[kv.Key] = fmt.Sprintf("%s %v", kv.ValueString(), kv.Value != nil)
			}
		}
	}
	want := map[string]string{"REG": "registry.example true", "DIR": "/home/app/src true", "TOKEN": "tok true", "NOVAL": " false"}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("ARG values %q, want %q", args, want)
	}
	wd := steps[5]
	if c := wd.Command.(*instructions.WorkdirCommand); c.Path != "/home/app/src" || wd.Env["DIR"] != "/home/app/src" || wd.Env["HOME"] != "/home/app" {
		t.Errorf("WORKDIR %q, env %v", c.Path, wd.Env)
	}
	cp := steps[6]
	if c := cp.Command.(*instructions.CopyCommand); fmt.Sprintf("%s %s", c.SourcePaths, c.DestPath) != "[app-tok.tar] $UNSET/" || cp.Workdir != "/home/app/src" {
		t.Errorf("COPY %q %q in %q", c.SourcePaths, c.DestPath, cp.Workdir)
	}
	if cp.Text != "COPY app-${TOKEN}.tar $UNSET/" {
		t.Errorf("Text %q: the instruction as written", cp.Text)
	}
	if u := steps[7].Command.(*instructions.UserCommand).User; u != "${USERNAME:-app}" {
		t.Errorf("USER %q", u)
	}
}

// TestRunForms checks what a RUN runs and how BuildKit writes it, heredocs included, with the
// SHELL in effect inherited from the stage a stage starts FROM.
func TestRunForms(t *testing.T) {
	df := strings.Join([]string{
		"FROM alpine AS base",
		"RUN make all",           // 2
		`RUN ["make", "all"]`,    // 3
		"RUN <<EOF", "#!/bin/sh", // 4
		"echo script", "EOF",
		"RUN <<-EOF", "\techo one", "EOF", // 8
		"RUN <<EOF bash", "echo two", "EOF", // 11
		`SHELL ["/bin/bash", "-o", "pipefail", "-c"]`, // 14
		"FROM base",
		"RUN --mount=type=secret,id=npm --mount=type=secret,target=/run/secrets/pip.conf --mount=type=ssh true", // 16
		"RUN --mount=type=ssh,id=deploy,required true && true",                                                  // 17
		"RUN --mount=type=ssh true", // 18
	}, "\n")
	f := mustParse(t, df, "", nil)
	steps := f.ChainSteps(1)
	for _, tc := range []struct {
		line                    int
		script, history, proces string
		document                bool
		docs                    []string
	}{
		{2, "make all", "make all", "/bin/sh -c make all", false, nil},
		{3, "make all", "make all", "make all", false, nil},
		{4, "#!/bin/sh\necho script\n", "/dev/pipes/EOF", "/bin/sh -c /dev/pipes/EOF", true, nil},
		{8, "echo one\n", "echo one\n", "/bin/sh -c echo one\n", true, nil},
		{11, "<<EOF bash\necho two\nEOF", "<<EOF bash\necho two\nEOF", "/bin/sh -c <<EOF bash\necho two\nEOF", false, []string{"echo two\n"}},
		{16, "true", "true", "/bin/bash -o pipefail -c true", false, nil},
	} {
		var sp *Step
		for _, s := range steps {
			if s.Line == tc.line {
				sp = s
			}
		}
		if sp == nil || sp.Run == nil {
			t.Fatalf("no RUN at line %d", tc.line)
		}
		r := sp.Run
		if r.Script != tc.script || r.History != tc.history || sp.Process() != tc.proces || r.Document != tc.document || !reflect.DeepEqual(r.Docs, tc.docs) {
			t.Errorf("line %d: script %q history %q process %q document %v docs %q", tc.line, r.Script, r.History, sp.Process(), r.Document, r.Docs)
		}
	}
	if got := f.Secrets(); !reflect.DeepEqual(got, map[string]int{"npm": 16, "pip.conf": 16}) {
		t.Errorf("Secrets = %v", got)
	}
	if got := f.SSH(); !reflect.DeepEqual(got, map[string]int{"default": 16, "deploy": 17}) {
		t.Errorf("SSH = %v", got)
	}
	if n := len(steps[len(steps)-3].Mounts); n != 3 {
		t.Errorf("%d mounts, want 3 (secret, secret, ssh)", n)
	}
}

func TestLayerSteps(t *testing.T) {
	f := mustParse(t, "FROM alpine AS a\nWORKDIR /\nENV A=1\nRUN true\nFROM a\nWORKDIR app\nCOPY x .\nUSER 1\n", "", nil)
	var got []string
	for _, sp := range f.LayerSteps(1) {
		got = append(got, fmt.Sprint(sp.Kind, sp.Line))
	}
	if want := []string{"RUN4", "WORKDIR6", "COPY7"}; !reflect.DeepEqual(got, want) {
		t.Errorf("LayerSteps = %v, want %v (WORKDIR / adds no layer)", got, want)
	}
}

func TestAttribute(t *testing.T) {
	df := "FROM golang:1.26 AS build\nWORKDIR /src\nCOPY . .\nRUN go build -o /out/app .\n\n" +
		"FROM alpine:3.20\nARG VERSION=1.0\nWORKDIR app\nRUN apk add --no-cache ca-certificates\nCOPY --from=build /out/app /app\n"
	f := mustParse(t, df, "", nil)
	layers := []Layer{
		{CreatedBy: "ADD alpine-minirootfs-3.20.3-x86_64.tar.gz / # buildkit", Digest: "sha256:a"},
		{CreatedBy: "WORKDIR /app", Digest: "sha256:b"},
		{CreatedBy: "RUN |1 VERSION=1.0 /bin/sh -c apk add --no-cache ca-certificates # buildkit", Digest: "sha256:c"},
		{CreatedBy: "COPY /out/app /app # buildkit", Digest: "sha256:d"},
	}
	want := []Origin{
		{CreatedBy: "base image alpine:3.20: ADD alpine-minirootfs-3.20.3-x86_64.tar.gz /", Base: true},
		{CreatedBy: "WORKDIR app", Line: 8},
		{CreatedBy: "RUN apk add --no-cache ca-certificates", Line: 9},
		{CreatedBy: "COPY --from=build /out/app /app", Line: 10},
	}
	if got := Attribute(f, f.Target, nil, layers); !reflect.DeepEqual(got, want) {
		t.Errorf("Attribute\n got %+v\nwant %+v", got, want)
	}
	// Without the Dockerfile every entry is shortened; an empty one is named by its digest.
	got := Attribute(nil, -1, nil, append(layers, Layer{Digest: "sha256:e"}))
	if got[2].CreatedBy != "RUN apk add --no-cache ca-certificates" || got[2].Line != 0 || got[4].CreatedBy != "layer sha256:e" || got[0].Base {
		t.Errorf("without a Dockerfile: %+v", got)
	}
}
