// Package dockerfile is kiln's one model of a Dockerfile, shared by the runner (attribution of
// layers, secret checks, failing steps), the advice engine and `kiln advise`. It reads the file
// with BuildKit's own parser and instructions packages
// (github.com/moby/buildkit/frontend/dockerfile/{parser,instructions,shell}) and resolves what
// BuildKit's Dockerfile frontend (dockerfile2llb) resolves before it builds:
//
//   - the stage graph: which stage starts FROM which (a FROM naming an earlier stage), the
//     stage a target builds, the image each chain of stages starts from, and the stages a
//     build reaches through COPY --from and RUN --mount=from (graph.go);
//   - ARG expansion as BuildKit does it: the global scope (platform args, TARGETSTAGE, ARGs
//     before the first FROM, build args overriding defaults) for FROM lines, then each stage's
//     ARG and ENV values for the words of the instructions that support expansion, quotes
//     removed (expand.go);
//   - what each RUN runs, heredocs included, its --mount flags (secret, ssh, cache, bind) and
//     the SHELL in effect, inherited from the stage it starts FROM (run.go);
//   - which instruction made each layer of a built image, from the image's history (history.go,
//     attribute.go).
package dockerfile

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"path"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// File is a parsed Dockerfile: its stages in order, each with its steps.
type File struct {
	Stages []*Stage // one per FROM; Stages[i].Index is i
	// Target is the index of the stage a build makes (Select of the target Parse was given).
	Target int
}

// Stage is one FROM and its instructions.
type Stage struct {
	Index int    // its place in File.Stages
	Name  string // after AS, lower-case as BuildKit keeps it; "" when none
	From  string // FROM's image or stage name as written
	Base  string // From, the global ARGs expanded as BuildKit expands them
	Line  int    // FROM's line
	// Parent is the index of the earlier stage this one starts FROM; -1 when it starts from
	// an image.
	Parent int
	// Image is the image the stage's chain starts from: Base of the first stage of the chain
	// ("scratch" included).
	Image string
	Steps []*Step
	end   state // what a stage starting FROM this one inherits
}

// Step is one instruction of a stage.
type Step struct {
	Stage int    // index of its stage in File.Stages
	Line  int    // first line, 0 when unknown
	Kind  string // upper-case instruction name: RUN, COPY, ADD, ENV, ARG, USER, WORKDIR…
	// Command is BuildKit's parsed instruction, its words expanded as dockerfile2llb's dispatch
	// expands them (the ARG and ENV values in effect; a variable this model does not know, set
	// in the base image perhaps, stays as written). An ArgCommand holds the value each ARG
	// takes: the build arg, else its default expanded, else the global ARG of the same name.
	Command instructions.Command
	Text    string            // the instruction as written, on one line, for messages
	Workdir string            // WORKDIR in effect (before this step's own)
	Env     map[string]string // ENV (inherited and own) and the stage's ARG values in effect
	Shell   []string          // SHELL in effect; nil: the image's (/bin/sh -c on Linux)
	// Mounts are a RUN's --mount flags (cache, bind, secret, ssh, tmpfs), expanded; nil when
	// they do not expand.
	Mounts []*instructions.Mount
	Run    *Run // what a RUN runs; nil for other instructions
	// written is, for COPY and ADD, the sources and destination as written, and for WORKDIR
	// the path as written: BuildKit writes them expanded into the history, which attribution
	// matches with the variable references as wildcards.
	written string
}

// state is what a stage inherits from the stage it starts FROM: BuildKit starts it with that
// stage's image state.
type state struct {
	env     map[string]string // ENV and ARG values
	workdir string
	shell   []string
}

// ParseError is a Dockerfile that BuildKit's parser rejects.
type ParseError struct {
	Line int    // 0 when the parser names none
	Msg  string // the parser's message, without its "dockerfile parse error on line N" prefix
	// Panic is what the parser panicked with, when it did (kiln recovers; tests want to know).
	Panic any
}

func (e *ParseError) Error() string { return e.Msg }

// Describe renders a Parse error for a Dockerfile called name: "Dockerfile:3: message" when
// the parser names the line, else "Dockerfile: message".
func Describe(name string, err error) string {
	var pe *ParseError
	if errors.As(err, &pe) && pe.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", name, pe.Line, pe.Msg)
	}
	return fmt.Sprintf("%s: %s", name, err)
}

// ErrNoFrom is a Dockerfile without a FROM instruction.
var ErrNoFrom = errors.New("it has no FROM instruction")

// Parse reads a Dockerfile with BuildKit's own parser and resolves its stages. target names the
// stage that is built ("" or a name of no stage: the last); buildArgs are the build's
// --build-arg values, which override ARG defaults as in BuildKit. Errors are a *ParseError or
// ErrNoFrom. Parse never panics.
func Parse(dt []byte, target string, buildArgs map[string]string) (f *File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, &ParseError{Msg: fmt.Sprintf("the Dockerfile parser failed: %v", r), Panic: r}
		}
	}()
	res, err := parser.Parse(bytes.NewReader(heredocSafe(dt)))
	if err != nil {
		return nil, newParseError(err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, newParseError(err)
	}
	if len(stages) == 0 {
		return nil, ErrNoFrom
	}
	f = &File{}
	for i, s := range stages {
		f.Stages = append(f.Stages, &Stage{Index: i, Name: s.Name})
	}
	f.Target = f.Select(target)
	lex := shell.NewLex(res.EscapeToken)
	global := globalArgs(lex, metaArgs, buildArgs, stages[f.Target].Name)
	for i, s := range stages {
		f.Stages[i].resolve(f, s, lex, global)
		f.Stages[i].build(s, f, lex, global, buildArgs)
	}
	return f, nil
}

// resolve expands a stage's FROM in the global scope and finds the earlier stage it names.
func (st *Stage) resolve(f *File, s instructions.Stage, lex *shell.Lex, global map[string]string) {
	st.From, st.Line, st.Parent = s.BaseName, firstLine(s.Location), -1
	st.Base = expandWord(lex, s.BaseName, global, false)
	for j := st.Index - 1; j >= 0; j-- {
		if f.Stages[j].Name != "" && strings.EqualFold(f.Stages[j].Name, st.Base) {
			st.Parent = j
			break
		}
	}
	st.Image = st.Base
	st.end = state{env: map[string]string{}, workdir: "/"}
	if st.Parent >= 0 {
		p := f.Stages[st.Parent]
		st.Image = p.Image
		st.end = state{env: maps.Clone(p.end.env), workdir: p.end.workdir, shell: p.end.shell}
	}
}

// build fills a stage's steps: their lines, programs, mounts, WORKDIR, SHELL and environment.
// It expands each instruction's words as dockerfile2llb's dispatch does (the instructions that
// support expansion, with the ARG and ENV values in effect), and gives each ARG its value as
// dispatchArg does.
func (st *Stage) build(s instructions.Stage, f *File, lex *shell.Lex, global, buildArgs map[string]string) {
	cur := &st.end
	expander := func(word string) (string, error) { return expandWord(lex, word, cur.env, true), nil }
	for _, c := range s.Commands {
		sp := &Step{Stage: st.Index, Line: firstLine(c.Location()), Kind: strings.ToUpper(c.Name()), Command: c,
			Text: oneLine(c), Workdir: cur.workdir, Env: maps.Clone(cur.env), Shell: cur.shell}
		sp.written = writtenWords(c)
		if a, ok := c.(*instructions.ArgCommand); ok {
			setArgs(a, lex, cur.env, global, buildArgs)
		} else if ex, ok := c.(instructions.SupportsSingleWordExpansion); ok {
			_ = ex.Expand(expander) // an error leaves the words as written
		}
		switch cmd := c.(type) {
		case *instructions.RunCommand:
			sp.Run = newRun(cmd)
			// Mounts as parsed even when expansion failed: the checks of the ids a step mounts
			// (the git credentials' among them) must see every mount.
			sp.Mounts = instructions.GetMounts(cmd)
		case *instructions.OnbuildCommand:
			// A stage built FROM this one runs the trigger as its own step (dockerfile2llb's
			// dispatchOnBuildTriggers): its mounts count as this step's, for those checks.
			sp.Mounts = onbuildMounts(cmd.Expression)
		case *instructions.EnvCommand:
			for _, kv := range cmd.Env {
				cur.env[kv.Key] = kv.Value
			}
		case *instructions.WorkdirCommand:
			cur.workdir = JoinDir(cur.workdir, cmd.Path)
		case *instructions.ShellCommand:
			cur.shell = cmd.Shell
		}
		st.Steps = append(st.Steps, sp)
	}
}

// writtenWords is what attribution compares with the history for COPY, ADD and WORKDIR, taken
// before the words are expanded.
func writtenWords(c instructions.Command) string {
	switch cmd := c.(type) {
	case *instructions.CopyCommand:
		return copyArgs(cmd.SourcesAndDest)
	case *instructions.AddCommand:
		return copyArgs(cmd.SourcesAndDest)
	case *instructions.WorkdirCommand:
		return cmd.Path
	}
	return ""
}

// copyArgs is a COPY's or ADD's sources and destination as BuildKit records them (its flags,
// which BuildKit records only in part, are left out: normalize drops them from the history).
func copyArgs(sd instructions.SourcesAndDest) string {
	words := append([]string{}, sd.SourcePaths...)
	for _, c := range sd.SourceContents {
		words = append(words, "<<"+c.Path)
	}
	return strings.Join(append(words, sd.DestPath), " ")
}

// oneLine is an instruction as written, on one line.
func oneLine(c instructions.Command) string {
	if s, ok := c.(fmt.Stringer); ok {
		return strings.Join(strings.Fields(s.String()), " ")
	}
	return ""
}

func newParseError(err error) *ParseError {
	msg := err.Error()
	if i := strings.Index(msg, "dockerfile parse error on line "); i >= 0 {
		if j := strings.Index(msg[i:], ": "); j > 0 {
			msg = msg[:i] + msg[i+j+2:]
		}
	}
	pe := &ParseError{Msg: msg}
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		pe.Line = le.Locations[0][0].Start.Line
	}
	return pe
}

func firstLine(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

// JoinDir resolves p against the directory dir, as WORKDIR and the paths of COPY and RUN are
// resolved against the WORKDIR in effect: "" is dir, an absolute p is p cleaned.
func JoinDir(dir, p string) string {
	if p == "" {
		return dir
	}
	if strings.HasPrefix(p, "/") {
		return path.Clean(p)
	}
	return path.Join(dir, p)
}

// onbuildMounts are the mounts of the RUN an ONBUILD trigger holds (none for another
// instruction, or one that does not parse).
func onbuildMounts(expression string) []*instructions.Mount {
	res, err := parser.Parse(strings.NewReader(expression + "\n"))
	if err != nil || len(res.AST.Children) == 0 {
		return nil
	}
	cmd, err := instructions.ParseInstruction(res.AST.Children[0])
	if err != nil {
		return nil
	}
	run, ok := cmd.(*instructions.RunCommand)
	if !ok {
		return nil
	}
	// The mounts' options are read as the RUN's words are expanded; the trigger's words are
	// taken as written (they are expanded in the stage that runs them).
	_ = run.Expand(func(word string) (string, error) { return word, nil })
	return instructions.GetMounts(run)
}
