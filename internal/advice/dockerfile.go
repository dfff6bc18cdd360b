package advice

import (
	"errors"
	"path"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/kiln-dev/kiln/internal/dockerfile"
)

// model is the parsed Dockerfile (dockerfile.File) as the rules see it: each stage's base image
// judged, each RUN's program read into simple commands.
type model struct {
	f      *dockerfile.File
	stages []*stage
	final  int // index of the stage that is built
}

// stage is one FROM and its instructions.
type stage struct {
	*dockerfile.Stage
	image imageRef // the image the stage's chain starts from (Stage.Image)
	steps []*step
}

// step is one instruction of a stage.
type step struct {
	*dockerfile.Step
	script string  // RUN: what it runs, heredocs included, for messages
	sh     []shCmd // RUN: the simple commands of the shell script it runs
}

// parse reads a Dockerfile into the model (dockerfile.Parse). buildArgs are the build's
// --build-arg values: they override ARG defaults, as in BuildKit.
func parse(dt []byte, target string, buildArgs map[string]string) (*model, error) {
	f, err := dockerfile.Parse(dt, target, buildArgs)
	if err != nil {
		var pe *dockerfile.ParseError
		if errors.As(err, &pe) && pe.Panic != nil && panicHook != nil {
			panicHook("parse", pe.Panic)
		}
		return nil, err
	}
	m := &model{f: f, final: f.Target}
	for _, s := range f.Stages {
		st := &stage{Stage: s, image: parseImageRef(s.Image)}
		for _, sp := range s.Steps {
			x := &step{Step: sp}
			if sp.Run != nil {
				x.script, x.sh = runProgram(sp.Run, sp.Shell)
			}
			st.steps = append(st.steps, x)
		}
		m.stages = append(m.stages, st)
	}
	return m, nil
}

// runProgram returns what a RUN step runs (dockerfile.Run) and the simple commands of its shell
// script (none when the script is not POSIX shell):
//   - a RUN that is only a heredoc (RUN <<EOF) runs the document: as a file when it starts
//     with #! (its interpreter decides the language), else with the stage's SHELL;
//   - any other RUN with heredocs (RUN <<EOF bash, RUN bash <<EOF, RUN cat <<EOF > f) is the
//     command line followed by the documents, which the SHELL reads: a document fed to a shell
//     (sh, bash…) on standard input is a script too;
//   - the exec form runs its arguments; sh -c "script" runs the script.
func runProgram(r *dockerfile.Run, shellCmd []string) (string, []shCmd) {
	posix := len(shellCmd) == 0 || isShell(shellCmd[0])
	heredocs := len(r.Docs) > 0
	switch {
	case r.Opaque:
		return r.Script, nil
	case r.Document && strings.HasPrefix(r.Script, "#!"):
		first, _, _ := strings.Cut(r.Script, "\n")
		if !isShell(shebang(first)) {
			return r.Script, nil // a script in another language
		}
		return r.Script, splitShell(r.Script)
	case (r.Document || heredocs) && !posix:
		return r.Script, nil
	case r.Document:
		return r.Script, splitShell(r.Script)
	case heredocs:
		return r.Script, splitShellDocs(r.Args[0], r.Docs, 0)
	case r.Shell && posix:
		return r.Script, splitShell(r.Script)
	case r.Shell, len(r.Args) == 0:
		return r.Script, nil
	}
	if sh, _, ok := shellInvocation(r.Args); ok && sh != "" {
		return sh, splitShell(sh)
	}
	return r.Script, []shCmd{makeCmd(append([]string{}, r.Args...), nil)}
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
	for _, j := range m.f.Chain(i) {
		out = append(out, m.stages[j])
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

// finalSteps returns the steps of the final image's stages.
func (m *model) finalSteps() []*step { return m.chainSteps(m.final) }

// builtSteps returns the steps of every stage BuildKit builds for the target, each once.
func (m *model) builtSteps() []*step {
	var out []*step
	for _, i := range m.f.Built() {
		out = append(out, m.stages[i].steps...)
	}
	return out
}

// hasCacheMount reports whether a RUN step mounts a cache whose target starts with one of
// prefixes (any cache when none is given).
func (sp *step) hasCacheMount(prefixes ...string) bool {
	for _, mt := range sp.Mounts {
		if mt.Type != instructions.MountTypeCache {
			continue
		}
		if len(prefixes) == 0 {
			return true
		}
		t := dockerfile.JoinDir(sp.Workdir, mt.Target)
		for _, p := range prefixes {
			if strings.HasPrefix(t, p) || strings.Contains(t, p) {
				return true
			}
		}
	}
	return false
}

// text is the instruction as written, on one line, for messages.
func (sp *step) text() string { return shorten(sp.Text, 70) }

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
