package advice

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
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
	base   string // FROM's image or stage name, build args expanded
	line   int
	parent int      // index of the stage this one starts FROM, -1 for an image
	image  imageRef // the image the stage's chain starts from (its own, or its parent's)
	steps  []*step
	envEnd map[string]string // ENV at the end of the stage (a child stage inherits it)
	// workdirEnd is the WORKDIR at the end of the stage.
	workdirEnd string
}

// step is one instruction of a stage.
type step struct {
	stage   int
	line    int
	kind    string // upper-case instruction name: RUN, COPY, ADD, ENV, ARG, USER, WORKDIR…
	cmd     instructions.Command
	sh      []shCmd               // RUN: the script's simple commands
	mounts  []*instructions.Mount // RUN: --mount flags
	workdir string                // WORKDIR in effect
	env     map[string]string     // ENV (inherited and own) and the stage's ARGs in effect
	script  string                // RUN: the shell script, for messages
}

// parseError is a Dockerfile that BuildKit's parser rejects.
type parseError struct {
	line int
	msg  string
}

func (e *parseError) Error() string { return e.msg }

// parse reads a Dockerfile with BuildKit's own parser and builds the model.
func parse(dt []byte, target string) (m *model, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, &parseError{msg: fmt.Sprintf("the Dockerfile parser failed: %v", r)}
			if panicHook != nil {
				panicHook("parse", r)
			}
		}
	}()
	res, err := parser.Parse(bytes.NewReader(dt))
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
	meta := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				meta[kv.Key] = *kv.Value
			} else if _, ok := meta[kv.Key]; !ok {
				meta[kv.Key] = ""
			}
		}
	}
	lex := shell.NewLex(res.EscapeToken)
	m = &model{final: len(stages) - 1}
	for i, s := range stages {
		st := &stage{index: i, name: s.Name, parent: -1, line: firstLine(s.Location)}
		st.base = expand(lex, s.BaseName, meta)
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
		if target != "" && strings.EqualFold(s.Name, target) {
			m.final = i
		}
		st.build(s, m, meta)
	}
	return m, nil
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

// expand substitutes build args in a FROM; a word it cannot expand is returned as written.
func expand(lex *shell.Lex, word string, env map[string]string) string {
	// text/scanner, under the lexer, prints NUL and invalid UTF-8 to stderr: leave such words
	if !strings.Contains(word, "$") || !cleanText(word) {
		return word
	}
	out, _, err := lex.ProcessWord(word, mapEnv(env))
	if err != nil {
		return word
	}
	return out
}

// build fills a stage's steps: their lines, scripts, mounts, WORKDIR and environment.
func (st *stage) build(s instructions.Stage, m *model, meta map[string]string) {
	env := map[string]string{}
	workdir := "/"
	if st.parent >= 0 {
		p := m.stages[st.parent]
		for k, v := range p.envEnd {
			env[k] = v
		}
		workdir = p.workdirEnd
	}
	envOnly := map[string]string{}
	for k, v := range env {
		envOnly[k] = v
	}
	for _, c := range s.Commands {
		sp := &step{stage: st.index, line: firstLine(c.Location()), kind: strings.ToUpper(c.Name()), cmd: c, workdir: workdir, env: copyMap(env)}
		switch cmd := c.(type) {
		case *instructions.RunCommand:
			sp.script = runScript(cmd)
			sp.sh = runCommands(cmd, sp.script)
			if err := cmd.Expand(func(w string) (string, error) { return w, nil }); err == nil {
				sp.mounts = instructions.GetMounts(cmd)
			}
		case *instructions.EnvCommand:
			for _, kv := range cmd.Env {
				env[kv.Key] = kv.Value
				envOnly[kv.Key] = kv.Value
			}
		case *instructions.ArgCommand:
			for _, kv := range cmd.Args {
				switch {
				case kv.Value != nil:
					env[kv.Key] = *kv.Value
				default:
					if v, ok := meta[kv.Key]; ok {
						env[kv.Key] = v
					}
				}
			}
		case *instructions.WorkdirCommand:
			workdir = joinDir(workdir, cmd.Path)
		}
		st.steps = append(st.steps, sp)
	}
	st.envEnd = envOnly
	st.workdirEnd = workdir
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

var bareHeredoc = regexp.MustCompile(`^<<-?["']?[A-Za-z0-9_]+["']?$`)

// runScript returns the shell script a RUN step runs (a heredoc body when the step is only a
// heredoc), or its exec-form arguments joined.
func runScript(r *instructions.RunCommand) string {
	line := strings.Join(r.CmdLine, " ")
	if r.PrependShell && len(r.Files) > 0 && bareHeredoc.MatchString(strings.TrimSpace(line)) {
		body := r.Files[0].Data
		if strings.HasPrefix(body, "#!") {
			first, _, _ := strings.Cut(body, "\n")
			if !strings.Contains(first, "sh") {
				return "" // a script in another language
			}
		}
		return body
	}
	return line
}

// runCommands splits a RUN step into simple commands.
func runCommands(r *instructions.RunCommand, script string) []shCmd {
	if r.PrependShell {
		return splitShell(script)
	}
	args := r.CmdLine
	if len(args) >= 3 && (path.Base(args[0]) == "sh" || path.Base(args[0]) == "bash") && args[1] == "-c" {
		return splitShell(args[2])
	}
	if len(args) == 0 {
		return nil
	}
	return []shCmd{makeCmd(append([]string{}, args...), nil)}
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
