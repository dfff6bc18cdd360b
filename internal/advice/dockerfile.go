package advice

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// model is a parsed Dockerfile, as the rules see it.
type model struct {
	stages []*stage
	final  int // index of the stage that is built
}

// stage is one FROM and its instructions.
type stage struct {
	index  int
	name   string
	base   string // FROM's image or stage name, build args expanded as BuildKit expands them
	line   int
	parent int      // index of the stage this one starts FROM, -1 for an image
	image  imageRef // the image the stage's chain starts from (its own, or its parent's)
	steps  []*step
	// envEnd is the environment at the end of the stage, ENV and ARG values both: BuildKit
	// starts a stage FROM another one with that stage's state, so a child stage inherits both.
	envEnd map[string]string
	// workdirEnd is the WORKDIR at the end of the stage.
	workdirEnd string
	// shellEnd is the SHELL at the end of the stage (nil: the image's, /bin/sh -c on Linux).
	shellEnd []string
}

// step is one instruction of a stage.
type step struct {
	stage   int
	line    int
	kind    string // upper-case instruction name: RUN, COPY, ADD, ENV, ARG, USER, WORKDIR…
	cmd     instructions.Command
	sh      []shCmd               // RUN: the simple commands of the shell script it runs
	mounts  []*instructions.Mount // RUN: --mount flags
	workdir string                // WORKDIR in effect
	env     map[string]string     // ENV (inherited and own) and the stage's ARGs in effect
	script  string                // RUN: what it runs, heredocs included, for messages
}

// parseError is a Dockerfile that BuildKit's parser rejects.
type parseError struct {
	line int
	msg  string
}

func (e *parseError) Error() string { return e.msg }

// platformArgs are the build args BuildKit defines in the global scope (dockerfile2llb's
// defaultArgs); their values depend on the platforms of the build.
var platformArgs = []string{"BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
	"TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT"}

// parse reads a Dockerfile with BuildKit's own parser and builds the model. buildArgs are the
// build's --build-arg values: they override ARG defaults, as in BuildKit.
func parse(dt []byte, target string, buildArgs map[string]string) (m *model, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, &parseError{msg: fmt.Sprintf("the Dockerfile parser failed: %v", r)}
			if panicHook != nil {
				panicHook("parse", r)
			}
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
		return nil, &parseError{msg: "it has no FROM instruction"}
	}
	m = &model{final: len(stages) - 1}
	for i, s := range stages {
		if target != "" && strings.EqualFold(s.Name, target) {
			m.final = i
		}
	}
	lex := shell.NewLex(res.EscapeToken)
	global := globalArgs(lex, metaArgs, buildArgs, stages[m.final].Name)
	for i, s := range stages {
		st := &stage{index: i, name: s.Name, parent: -1, line: firstLine(s.Location)}
		st.base = expandGlobal(lex, s.BaseName, global)
		for j := i - 1; j >= 0; j-- {
			if stages[j].Name != "" && strings.EqualFold(stages[j].Name, st.base) {
				st.parent = j
				break
			}
		}
		if st.parent >= 0 {
			st.image = m.stages[st.parent].image
		} else {
			st.image = parseImageRef(st.base)
		}
		m.stages = append(m.stages, st)
		st.build(s, m, res.EscapeToken, global, buildArgs)
	}
	return m, nil
}

// heredocSafe replaces NUL bytes and invalid UTF-8 in the lines that may start a heredoc (they
// hold "<<"): BuildKit's parser runs its shell lexer on them, and text/scanner, under it, prints
// such bytes to stderr. Line numbers stay.
func heredocSafe(dt []byte) []byte {
	if !bytes.Contains(dt, []byte("<<")) || cleanText(string(dt)) {
		return dt
	}
	lines := bytes.SplitAfter(dt, []byte("\n"))
	for i, l := range lines {
		if bytes.Contains(l, []byte("<<")) && !cleanText(string(l)) {
			lines[i] = bytes.ReplaceAll(bytes.ToValidUTF8(l, []byte("\uFFFD")), []byte{0}, []byte("\uFFFD"))
		}
	}
	return bytes.Join(lines, nil)
}

// globalArgs is the global scope FROM lines are expanded in, as dockerfile2llb builds it
// (defaultArgs, then buildMetaArgs): the platform args, TARGETSTAGE, then each ARG before the
// first FROM — its --build-arg value, else its default expanded in the scope so far; an ARG
// with neither is unset. The platform args are unknown here: each stands for itself
// ("${TARGETARCH}"), so a FROM that uses one stays unexpanded and is judged unknown.
func globalArgs(lex *shell.Lex, metaArgs []instructions.ArgCommand, buildArgs map[string]string, target string) map[string]string {
	g := map[string]string{}
	for _, k := range platformArgs {
		g[k] = "${" + k + "}"
		if v, ok := buildArgs[k]; ok {
			g[k] = v
		}
	}
	if target == "" {
		target = "default"
	}
	g["TARGETSTAGE"] = target
	if v, ok := buildArgs["TARGETSTAGE"]; ok {
		g["TARGETSTAGE"] = v
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if v, ok := buildArgs[kv.Key]; ok {
				g[kv.Key] = v
			} else if kv.Value != nil {
				g[kv.Key] = expandGlobal(lex, *kv.Value, g)
			}
		}
	}
	return g
}

func newParseError(err error) *parseError {
	msg := err.Error()
	if i := strings.Index(msg, "dockerfile parse error on line "); i >= 0 {
		if j := strings.Index(msg[i:], ": "); j > 0 {
			msg = msg[:i] + msg[i+j+2:]
		}
	}
	pe := &parseError{msg: msg}
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		pe.line = le.Locations[0][0].Start.Line
	}
	return pe
}

func firstLine(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

// mapEnv adapts a map to the shell lexer.
type mapEnv map[string]string

func (e mapEnv) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e mapEnv) Keys() []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// expandGlobal expands a word of the global scope (FROM, a global ARG's default) exactly as
// BuildKit does: quotes removed, $X and ${X} replaced, ${X:-default} and the other forms of
// its shell lexer applied, an unset variable empty. A word the lexer rejects is returned as
// written.
func expandGlobal(lex *shell.Lex, word string, env map[string]string) string {
	return expandWord(lex, word, env, false)
}

// expandWord runs BuildKit's shell lexer on one word. With keepUnset, a variable the
// environment does not hold stays as written ($X): inside a stage, the base image's ENV,
// which kiln does not know, may hold it.
func expandWord(lex *shell.Lex, word string, env map[string]string, keepUnset bool) string {
	// text/scanner, under the lexer, prints NUL and invalid UTF-8 to stderr: leave such words
	if !cleanText(word) {
		return word
	}
	lex.SkipUnsetEnv = keepUnset
	defer func() { lex.SkipUnsetEnv = false }()
	out, _, err := lex.ProcessWord(word, mapEnv(env))
	if err != nil {
		return word
	}
	return out
}

// build fills a stage's steps: their lines, scripts, mounts, WORKDIR, SHELL and environment.
// It expands each instruction's words as dockerfile2llb's dispatch does (the instructions
// that support expansion, with the ARG and ENV values in effect), and gives each ARG its
// value as dispatchArg does: the --build-arg value, else its default expanded, else the
// global ARG of the same name.
func (st *stage) build(s instructions.Stage, m *model, escape rune, global, buildArgs map[string]string) {
	env := map[string]string{}
	workdir := "/"
	var shellCmd []string
	if st.parent >= 0 {
		p := m.stages[st.parent]
		env = copyMap(p.envEnd)
		workdir = p.workdirEnd
		shellCmd = p.shellEnd
	}
	lex := shell.NewLex(escape)
	expander := func(word string) (string, error) { return expandWord(lex, word, env, true), nil }
	for _, c := range s.Commands {
		sp := &step{stage: st.index, line: firstLine(c.Location()), kind: strings.ToUpper(c.Name()), cmd: c, workdir: workdir, env: copyMap(env)}
		a, isArg := c.(*instructions.ArgCommand)
		if isArg {
			for i, kv := range a.Args {
				switch v, given := buildArgs[kv.Key]; {
				case given:
					kv.Value = &v
				case kv.Value != nil:
					x := expandWord(lex, *kv.Value, env, true)
					kv.Value = &x
				default:
					if g, ok := global[kv.Key]; ok {
						kv.Value = &g
					}
				}
				a.Args[i] = kv
				if kv.Value != nil {
					env[kv.Key] = *kv.Value
				}
			}
		}
		var expandErr error
		if ex, ok := c.(instructions.SupportsSingleWordExpansion); ok && !isArg {
			expandErr = ex.Expand(expander) // an error leaves the words as written
		}
		switch cmd := c.(type) {
		case *instructions.RunCommand:
			sp.script, sp.sh = runProgram(cmd, shellCmd)
			if expandErr == nil {
				sp.mounts = instructions.GetMounts(cmd)
			}
		case *instructions.EnvCommand:
			for _, kv := range cmd.Env {
				env[kv.Key] = kv.Value
			}
		case *instructions.WorkdirCommand:
			workdir = joinDir(workdir, cmd.Path)
		case *instructions.ShellCommand:
			shellCmd = cmd.Shell
		}
		st.steps = append(st.steps, sp)
	}
	st.envEnd = env
	st.workdirEnd = workdir
	st.shellEnd = shellCmd
}

// cleanText reports valid UTF-8 without NUL bytes.
func cleanText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func joinDir(dir, p string) string {
	if p == "" {
		return dir
	}
	if strings.HasPrefix(p, "/") {
		return path.Clean(p)
	}
	return path.Join(dir, p)
}

// runProgram returns what a RUN step runs, as dockerfile2llb's dispatchRun builds it, and the
// simple commands of its shell script (none when the script is not POSIX shell):
//   - a RUN that is only a heredoc (RUN <<EOF) runs the document: as a file when it starts
//     with #! (its interpreter decides the language), else with the stage's SHELL;
//   - any other RUN with heredocs (RUN <<EOF bash, RUN bash <<EOF, RUN cat <<EOF > f) is the
//     command line followed by the documents, which the SHELL reads: a document fed to a shell
//     (sh, bash…) on standard input is a script too;
//   - the exec form runs its arguments; sh -c "script" runs the script.
//
// The documents come from BuildKit's parser (RunCommand.Files); the command line is
// ShellDependantCmdLine.CmdLine.
func runProgram(r *instructions.RunCommand, shellCmd []string) (string, []shCmd) {
	args := r.CmdLine
	posix := len(shellCmd) == 0 || isShell(shellCmd[0])
	if len(r.Files) > 0 && len(args) == 1 && r.PrependShell {
		if !cleanText(args[0]) {
			return args[0], nil // the lexer under MustParseHeredoc prints NUL to stderr
		}
		if parser.MustParseHeredoc(args[0]) != nil {
			data := docData(r.Files[0])
			if strings.HasPrefix(data, "#!") {
				first, _, _ := strings.Cut(data, "\n")
				if !isShell(shebang(first)) {
					return data, nil // a script in another language
				}
				return data, splitShell(data)
			}
			if !posix {
				return data, nil
			}
			return data, splitShell(data)
		}
		var b strings.Builder
		b.WriteString(args[0])
		docs := make([]string, 0, len(r.Files))
		for _, f := range r.Files {
			b.WriteString("\n" + f.Data + f.Name)
			docs = append(docs, docData(f))
		}
		if !posix {
			return b.String(), nil
		}
		return b.String(), splitShellDocs(args[0], docs, 0)
	}
	script := strings.Join(args, " ")
	switch {
	case r.PrependShell && posix:
		return script, splitShell(script)
	case r.PrependShell:
		return script, nil
	case len(args) == 0:
		return script, nil
	}
	if sh, _, ok := shellInvocation(args); ok && sh != "" {
		return sh, splitShell(sh)
	}
	return script, []shCmd{makeCmd(append([]string{}, args...), nil)}
}

// docData is a heredoc's content as the command receives it (<<- drops leading tabs).
func docData(f instructions.ShellInlineFile) string {
	if f.Chomp {
		return parser.ChompHeredocContent(f.Data)
	}
	return f.Data
}

// shebang returns the interpreter a #! line names: "#!/usr/bin/env bash" → "bash".
func shebang(line string) string {
	f := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(f) == 0 {
		return ""
	}
	if path.Base(f[0]) == "env" {
		for _, a := range f[1:] {
			if !strings.HasPrefix(a, "-") && !strings.Contains(a, "=") {
				return a
			}
		}
		return ""
	}
	return f[0]
}

// chain returns the stages an image built from stage i is made of, oldest first.
func (m *model) chain(i int) []*stage {
	var out []*stage
	for n := 0; i >= 0 && i < len(m.stages) && n <= len(m.stages); n++ {
		out = append(out, m.stages[i])
		i = m.stages[i].parent
	}
	for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
		out[l], out[r] = out[r], out[l]
	}
	return out
}

// chainSteps returns the steps of the chain of stage i, oldest first.
func (m *model) chainSteps(i int) []*step {
	var out []*step
	for _, s := range m.chain(i) {
		out = append(out, s.steps...)
	}
	return out
}

// finalStage is the stage that is built.
func (m *model) finalStage() *stage { return m.stages[m.final] }

// stageRef resolves COPY --from / RUN --mount from=: a stage name or index before stage at;
// -1 for an image.
func (m *model) stageRef(ref string, at int) int {
	if ref == "" {
		return -1
	}
	if n, err := strconv.Atoi(ref); err == nil {
		if n >= 0 && n < at && n < len(m.stages) {
			return n
		}
		return -1
	}
	for j := min(at, len(m.stages)) - 1; j >= 0; j-- {
		if m.stages[j].name != "" && strings.EqualFold(m.stages[j].name, ref) {
			return j
		}
	}
	return -1
}

// shipping returns the stages whose files can end up in the built image: the final chain and,
// transitively, the chains it copies or mounts files from.
func (m *model) shipping() map[int]bool {
	out := map[int]bool{}
	var visit func(i int)
	visit = func(i int) {
		for _, s := range m.chain(i) {
			if out[s.index] {
				continue
			}
			out[s.index] = true
			for _, sp := range s.steps {
				for _, ref := range sp.fromRefs() {
					if j := m.stageRef(ref, s.index); j >= 0 {
						visit(j)
					}
				}
			}
		}
	}
	visit(m.final)
	return out
}

// finalChain returns the stage indexes of the final image's chain.
func (m *model) finalChain() map[int]bool {
	out := map[int]bool{}
	for _, s := range m.chain(m.final) {
		out[s.index] = true
	}
	return out
}

// fromRefs lists the stages or images a step reads files from.
func (sp *step) fromRefs() []string {
	var out []string
	switch c := sp.cmd.(type) {
	case *instructions.CopyCommand:
		if c.From != "" {
			out = append(out, c.From)
		}
	case *instructions.RunCommand:
		for _, mt := range sp.mounts {
			if mt.From != "" {
				out = append(out, mt.From)
			}
		}
	}
	return out
}

// hasCacheMount reports whether a RUN step mounts a cache whose target starts with one of
// prefixes (any cache when none is given).
func (sp *step) hasCacheMount(prefixes ...string) bool {
	for _, mt := range sp.mounts {
		if mt.Type != instructions.MountTypeCache {
			continue
		}
		if len(prefixes) == 0 {
			return true
		}
		t := joinDir(sp.workdir, mt.Target)
		for _, p := range prefixes {
			if strings.HasPrefix(t, p) || strings.Contains(t, p) {
				return true
			}
		}
	}
	return false
}

// text is the instruction as written, on one line, for messages.
func (sp *step) text() string {
	s := ""
	if st, ok := sp.cmd.(fmt.Stringer); ok {
		s = st.String()
	}
	s = strings.Join(strings.Fields(s), " ")
	return shorten(s, 70)
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// imageRef is a parsed image reference.
type imageRef struct {
	raw    string
	repo   string // lower-case, without docker.io/library/
	name   string // last path element of repo
	tag    string
	digest bool
}

func parseImageRef(s string) imageRef {
	r := imageRef{raw: s}
	s = strings.ToLower(strings.TrimSpace(s))
	if i := strings.Index(s, "@"); i >= 0 {
		r.digest = true
		s = s[:i]
	}
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		r.tag = s[i+1:]
		s = s[:i]
	}
	s = strings.TrimPrefix(s, "docker.io/")
	s = strings.TrimPrefix(s, "index.docker.io/")
	s = strings.TrimPrefix(s, "library/")
	r.repo = s
	r.name = path.Base(s)
	return r
}

func (r imageRef) scratch() bool { return r.repo == "scratch" }

// unknown reports a reference kiln cannot judge (empty, or a build arg left unexpanded).
func (r imageRef) unknown() bool { return r.repo == "" || strings.Contains(r.raw, "$") }

func (r imageRef) distroless() bool {
	return strings.Contains(r.repo, "distroless") || strings.HasPrefix(r.repo, "cgr.dev/chainguard/")
}

// static reports an image that holds no libc: a binary on it must be statically linked.
func (r imageRef) static() bool {
	return r.scratch() || strings.Contains(r.repo, "distroless/static") || r.repo == "cgr.dev/chainguard/static"
}

// musl reports an Alpine-based image.
func (r imageRef) musl() bool {
	return r.name == "alpine" || strings.Contains(r.tag, "alpine")
}

// nonRoot reports an image that runs as a non-root user unless told otherwise.
func (r imageRef) nonRoot() bool {
	return (r.distroless() && strings.Contains(r.tag, "nonroot")) || strings.HasPrefix(r.repo, "cgr.dev/chainguard/")
}

// toolchains are images that carry a compiler or build tool: a final image never needs them.
var toolchains = map[string]string{
	"golang": "the Go toolchain", "rust": "the Rust toolchain", "gcc": "the GNU compiler collection",
	"maven": "Maven and a JDK", "gradle": "Gradle and a JDK", "buildpack-deps": "compilers and development headers",
	"openjdk": "a JDK", "eclipse-temurin": "a JDK", "amazoncorretto": "a JDK", "sbt": "sbt and a JDK",
	"clojure": "Clojure build tools and a JDK", "haskell": "GHC and cabal", "swift": "the Swift toolchain",
	"sdk": "the .NET SDK", "clang": "the Clang compiler",
}

// fullImages are complete distributions or language images built on buildpack-deps; their
// -slim and -alpine variants are fine.
var fullImages = map[string]string{
	"ubuntu": "a full Ubuntu", "debian": "a full Debian", "python": "Python on buildpack-deps (compilers and headers included)",
	"node": "Node.js on buildpack-deps (compilers and headers included)", "ruby": "Ruby on buildpack-deps (compilers and headers included)",
	"php": "a full PHP image", "perl": "Perl on buildpack-deps", "centos": "a full CentOS", "fedora": "a full Fedora",
	"rockylinux": "a full Rocky Linux", "almalinux": "a full AlmaLinux", "amazonlinux": "a full Amazon Linux",
	"oraclelinux": "a full Oracle Linux", "archlinux": "a full Arch Linux", "ubi8": "a full UBI", "ubi9": "a full UBI",
	"leap": "a full openSUSE", "tumbleweed": "a full openSUSE", "elixir": "Elixir and Erlang build tools",
}

// toolchain describes what a heavy final base image carries, "" when the image is fine.
func (r imageRef) toolchain() string {
	if r.unknown() || r.scratch() || r.distroless() {
		return ""
	}
	slim := strings.Contains(r.tag, "slim") || strings.Contains(r.tag, "alpine") || strings.Contains(r.tag, "minimal") ||
		strings.Contains(r.name, "minimal") || strings.Contains(r.name, "micro")
	if what, ok := toolchains[r.name]; ok {
		if r.name == "sdk" && !strings.Contains(r.repo, "dotnet") {
			return ""
		}
		if strings.Contains(r.tag, "jre") { // a Java runtime, not a JDK
			return ""
		}
		return what
	}
	if what, ok := fullImages[r.name]; ok && !slim {
		return what
	}
	return ""
}
