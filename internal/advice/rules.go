package advice

import (
	"bytes"
	"fmt"
	"maps"
	"path"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/kiln-dev/kiln/internal/dockerfile"
	"github.com/kiln-dev/kiln/internal/units"
)

// staticBaseBytes is about what gcr.io/distroless/static weighs, compressed.
const staticBaseBytes = 2 << 20

// rules is every rule, in the order they are checked (final-stage-toolchain before
// base-image-share, which it supersedes).
var rules = []rule{
	{RuleInfo{"final-stage-toolchain", KindSize, "The final stage runs on a toolchain or full-distribution image (golang, node, python, maven, ubuntu…) instead of scratch, distroless, alpine or -slim."}, checkFinalToolchain},
	{RuleInfo{"single-stage-build", KindSize, "The image is built in the stage that compiles it, so compilers, sources and build caches ship with it."}, checkSingleStage},
	{RuleInfo{"copy-before-deps", KindSpeed, "The whole context (or files the step does not need) is copied before the dependency or package download step, so every source change downloads again."}, checkCopyBeforeDeps},
	{RuleInfo{"no-dockerignore", KindSpeed, "The context has no .dockerignore while it holds .git, dependencies or build outputs, or the Dockerfile copies all of it."}, checkNoDockerignore},
	{RuleInfo{"dockerignore-git", KindSpeed, "The .dockerignore does not exclude .git, which the context holds."}, checkDockerignoreGit},
	{RuleInfo{"go-cgo", KindSize, "A Go binary built without CGO_ENABLED=0 ships on scratch, distroless/static or Alpine, where a dynamically linked binary cannot start."}, checkGoCgo},
	{RuleInfo{"go-build-flags", KindSize, "go build without -ldflags=\"-s -w\" or -trimpath keeps debug information and local paths in the binary."}, checkGoBuildFlags},
	{RuleInfo{"apt-no-recommends", KindSize, "apt-get install without --no-install-recommends installs recommended packages the image does not need."}, checkAptRecommends},
	{RuleInfo{"apt-lists", KindSize, "apt-get update without removing /var/lib/apt/lists in the same RUN (or a cache mount) leaves the package lists in the image."}, checkAptLists},
	{RuleInfo{"apk-no-cache", KindSize, "apk add without --no-cache leaves the package index in the image."}, checkApkNoCache},
	{RuleInfo{"pip-no-cache-dir", KindSize, "pip install without --no-cache-dir (or a cache mount on /root/.cache/pip) leaves pip's download cache in the image."}, checkPipNoCacheDir},
	{RuleInfo{"no-cache-mount", KindSpeed, "A package or module download step has no RUN --mount=type=cache, so every rerun downloads everything again."}, checkNoCacheMount},
	{RuleInfo{"add-local", KindSpeed, "ADD of a local file where COPY (or a bind mount) serves; ADD is for URLs, git repositories and unpacking local tar archives."}, checkAddLocal},
	{RuleInfo{"files-deleted-later", KindSize, "Files or packages added in one layer are deleted in a later RUN, so their bytes stay in the image."}, checkDeletedLater},
	{RuleInfo{"base-latest", KindSpeed, "A base image is untagged or :latest, so builds change under you and the cache misses when it moves."}, checkBaseLatest},
	{RuleInfo{"layer-depth", KindBuild, "A stage stacks 400 or more layers (its RUN, COPY, ADD and WORKDIR steps, plus the base image's when measured), near the 500 an overlay mount holds; past it the build fails with an overlay mount error."}, checkLayerDepth},
	{RuleInfo{"no-user", KindSecurity, "The final stage sets no USER (or USER root), so the container runs as root."}, checkNoUser},
	{RuleInfo{"large-layer", KindSize, "Measured: a layer is more than 30% of the image."}, checkLargeLayer},
	{RuleInfo{"wasted-bytes", KindSize, "Measured: files a layer adds are deleted or overwritten by a later layer, and still weigh in the image."}, checkWastedBytes},
	{RuleInfo{"base-image-share", KindSize, "Measured: the base image is more than 60% of the image and the final stage is not scratch or distroless."}, checkBaseShare},
}

// baseBytes sums the compressed bytes of the base image's layers.
func baseBytes(img *Image) int64 {
	var n int64
	for _, l := range img.Layers {
		if l.Base {
			n += l.CompressedBytes
		}
	}
	return n
}

func checkFinalToolchain(a *analysis) {
	if a.m == nil {
		return
	}
	f := a.m.finalStage()
	what := f.image.toolchain()
	if what == "" {
		return
	}
	var saving int64
	extra := ""
	if img := a.in.Image; img != nil {
		if base := baseBytes(img); base > 0 {
			saving = base - staticBaseBytes
			extra = fmt.Sprintf(" Its layers weigh %s of this image.", units.Bytes(base))
		}
	}
	a.add(f.Line, saving, "The final image is built on %s (%s), which the program does not need at run time; build in an earlier stage and COPY --from only the output into scratch or gcr.io/distroless/static (static binaries), or a distroless, -slim or alpine runtime image.%s",
		f.image.raw, what, extra)
}

func checkSingleStage(a *analysis) {
	if a.m == nil {
		return
	}
	for _, sp := range a.m.finalSteps() {
		for _, c := range sp.sh {
			if what := compileStep(c); what != "" {
				a.add(sp.Line, 0, "This step compiles (%s) in the stage that becomes the image, so the compiler, the sources and the build cache ship with it; compile in a builder stage and COPY --from=builder only the result into a small final stage.", what)
				return
			}
		}
	}
}

// manifests names the files a dependency step needs, to copy before it.
var manifests = map[string]string{
	"go mod download": "go.mod and go.sum", "npm ci": "package.json and package-lock.json", "npm install": "package.json and package-lock.json",
	"yarn install": "package.json and yarn.lock", "pnpm install": "package.json and pnpm-lock.yaml", "pip install -r": "the requirements file",
	"poetry install": "pyproject.toml and poetry.lock", "pipenv install": "Pipfile and Pipfile.lock", "uv sync": "pyproject.toml and uv.lock",
	"bundle install": "Gemfile and Gemfile.lock", "mvn dependency": "pom.xml", "gradle dependencies": "the build.gradle files",
	"cargo fetch": "Cargo.toml and Cargo.lock", "composer install": "composer.json and composer.lock", "dotnet restore": "the project files",
	"mix deps.get": "mix.exs and mix.lock",
}

func checkCopyBeforeDeps(a *analysis) {
	if a.m == nil {
		return
	}
	reported := map[int]bool{}
	for _, idx := range a.m.f.Built() {
		steps := a.m.chainSteps(idx)
		for i, sp := range steps {
			if sp.Stage != idx || sp.Kind != "RUN" {
				continue
			}
			deps, sys := "", ""
			for _, c := range sp.sh {
				if d := depsStep(c); d != "" && deps == "" {
					deps = d
				}
				if s := sysInstall(c); s != "" && sys == "" {
					sys = s
				}
			}
			if deps == "" && sys == "" {
				continue
			}
			if deps != "" && sp.bindsWholeContext() && !reported[sp.Line] {
				reported[sp.Line] = true
				a.add(sp.Line, 0, "This step bind-mounts the whole context and runs %s, so it reruns whenever any file changes; bind only %s for this step.", deps, manifests[deps])
			}
			// A whole-context copy before a dependency download is reported at the copy; a
			// system package install is reported once, at the first context copy before it.
			sysDone := sys == ""
			for _, c := range steps[:i] {
				switch {
				case reported[c.Line]:
					if c.copiesFromContext() {
						sysDone = true
					}
				case deps != "" && c.copiesWholeContext():
					reported[c.Line] = true
					sysDone = true
					a.add(c.Line, 0, "This step copies the whole context before line %d runs %s, so every source change downloads the dependencies again; copy %s first, run %s, then copy the rest.",
						sp.Line, deps, manifests[deps], deps)
				case !sysDone && c.copiesFromContext():
					reported[c.Line] = true
					sysDone = true
					a.add(c.Line, 0, "This step copies files from the context before line %d installs packages (%s), so every change to them installs the packages again; install packages first and copy the files after.",
						sp.Line, sys)
				}
			}
		}
	}
}

// copiesFromContext reports a COPY or ADD of context files (not from a stage, an image, a URL
// or a heredoc), to a destination that is not configuration under /etc.
func (sp *step) copiesFromContext() bool {
	var srcs []string
	dest := ""
	switch c := sp.Command.(type) {
	case *instructions.CopyCommand:
		if c.From != "" {
			return false
		}
		srcs, dest = c.SourcePaths, c.DestPath
	case *instructions.AddCommand:
		for _, s := range c.SourcePaths {
			if !isRemote(s) {
				srcs = append(srcs, s)
			}
		}
		dest = c.DestPath
	default:
		return false
	}
	return len(srcs) > 0 && !strings.HasPrefix(dockerfile.JoinDir(sp.Workdir, dest), "/etc/")
}

// copiesWholeContext reports a COPY or ADD of the whole context ("COPY . .").
func (sp *step) copiesWholeContext() bool {
	var srcs []string
	switch c := sp.Command.(type) {
	case *instructions.CopyCommand:
		if c.From != "" {
			return false
		}
		srcs = c.SourcePaths
	case *instructions.AddCommand:
		srcs = c.SourcePaths
	}
	for _, s := range srcs {
		if wholeContext(s) {
			return true
		}
	}
	return false
}

func wholeContext(s string) bool {
	switch strings.TrimSpace(s) {
	case ".", "./", "*", "./*", "/", "/*", ".*":
		return true
	}
	return false
}

// bindsWholeContext reports a RUN that bind-mounts the whole context.
func (sp *step) bindsWholeContext() bool {
	for _, mt := range sp.Mounts {
		if mt.Type == instructions.MountTypeBind && mt.From == "" && (mt.Source == "" || wholeContext(mt.Source)) {
			return true
		}
	}
	return false
}

// junkNames are context entries a .dockerignore usually excludes.
var junkNames = []string{".git", ".hg", ".svn", ".jj", "node_modules", ".venv", "venv", "__pycache__", "target", "dist", "build", "bin", "obj", ".idea", ".vscode", ".env", "coverage"}

func checkNoDockerignore(a *analysis) {
	files := a.in.ContextFiles
	if files == nil || a.in.Dockerignore != nil || hasName(files, ".dockerignore") {
		return
	}
	var junk []string
	for _, n := range junkNames {
		if hasName(files, n) {
			junk = append(junk, n)
		}
	}
	if len(junk) == 0 && !a.usesWholeContext() {
		return // a small context used file by file (a ConfigMap) needs no .dockerignore
	}
	which := ""
	if len(junk) > 0 {
		which = " (here " + strings.Join(junk, ", ") + ")"
	}
	a.add(0, 0, "The context has no .dockerignore (nor %s.dockerignore), so builds send all of it to BuildKit and a COPY . puts all of it in the image; add a .dockerignore that excludes .git, dependencies and build outputs%s.", a.name, which)
}

// usesWholeContext reports a built step that copies or bind-mounts the whole context.
func (a *analysis) usesWholeContext() bool {
	if a.m == nil {
		return false
	}
	for _, sp := range a.m.builtSteps() {
		if sp.copiesWholeContext() || sp.bindsWholeContext() {
			return true
		}
	}
	return false
}

func hasName(files []string, name string) bool {
	for _, f := range files {
		if strings.Trim(path.Clean("/"+f), "/") == name {
			return true
		}
	}
	return false
}

func checkDockerignoreGit(a *analysis) {
	if a.in.ContextFiles == nil || a.in.Dockerignore == nil || !hasName(a.in.ContextFiles, ".git") {
		return
	}
	patterns, err := ignorefile.ReadAll(bytes.NewReader(a.in.Dockerignore))
	if err != nil {
		return
	}
	var clean []string
	for _, p := range patterns {
		if dockerfile.CleanText(p) { // text/scanner, under the matcher, prints NUL and invalid UTF-8 to stderr
			clean = append(clean, p)
		}
	}
	pm, err := patternmatcher.New(clean)
	if err != nil {
		return
	}
	if ok, err := pm.MatchesOrParentMatches(".git/HEAD"); err != nil || ok {
		return
	}
	a.add(0, 0, "The .dockerignore does not exclude .git, so the repository's history is sent with every build (and copied by COPY .); add a line \".git\".")
}

// goCmds returns the go build and local go install commands of a step, with their arguments
// after the subcommand.
func goBuilds(sp *step) []goBuild {
	var out []goBuild
	runEnv := map[string]string{}
	for _, c := range sp.sh {
		if c.name() == "export" {
			for _, a := range c.args[1:] {
				if k, v, ok := strings.Cut(a, "="); ok {
					runEnv[k] = shellValue(v, sp.Env)
				}
			}
			continue
		}
		if len(c.args) == 0 || c.name() == "echo" || c.name() == "printf" {
			continue
		}
		for i := 0; i+1 < len(c.args); i++ {
			if path.Base(c.args[i]) != "go" {
				continue
			}
			sub, rest := c.args[i+1], c.args[i+2:]
			if sub == "install" {
				local := true
				for _, p := range positional(rest) {
					if strings.Contains(p, "@") {
						local = false
					}
				}
				if !local {
					break
				}
			} else if sub != "build" {
				break
			}
			env := maps.Clone(sp.Env)
			for k, v := range runEnv {
				env[k] = v
			}
			for k, v := range c.env {
				env[k] = shellValue(v, env)
			}
			out = append(out, goBuild{sub: sub, args: rest, env: env})
			break
		}
	}
	return out
}

// shellValue resolves a value that is only a variable ($CGO, ${CGO}) from the ARG and ENV
// values the shell runs with; any other value is returned as written.
func shellValue(v string, env map[string]string) string {
	name, ok := strings.CutPrefix(v, "$")
	if !ok {
		return v
	}
	if inner, ok := strings.CutPrefix(name, "{"); ok {
		if name, ok = strings.CutSuffix(inner, "}"); !ok {
			return v
		}
	}
	if x, ok := env[name]; ok {
		return x
	}
	return v
}

type goBuild struct {
	sub  string
	args []string
	env  map[string]string
}

// flagValues returns the values of a Go flag (-ldflags=v, -ldflags v, --ldflags…), GOFLAGS
// included.
func (g goBuild) flagValues(name string) []string {
	var out []string
	args := append(strings.Fields(g.env["GOFLAGS"]), g.args...)
	for i := 0; i < len(args); i++ {
		a := strings.TrimPrefix(args[i], "-")
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		a = strings.TrimPrefix(a, "-")
		if a == name && i+1 < len(args) {
			out = append(out, args[i+1])
			i++
		} else if v, ok := strings.CutPrefix(a, name+"="); ok {
			out = append(out, v)
		} else if a == name {
			out = append(out, "true")
		}
	}
	return out
}

func (g goBuild) stripped() bool {
	for _, v := range g.flagValues("ldflags") {
		for _, f := range strings.Fields(strings.Trim(v, `"'`)) {
			if f == "-s" || f == "-w" {
				return true
			}
		}
	}
	return false
}

func (g goBuild) trimpath() bool {
	for _, v := range g.flagValues("trimpath") {
		if v != "false" {
			return true
		}
	}
	return false
}

// staticLink reports a cgo build linked statically (-extldflags -static).
func (g goBuild) staticLink() bool {
	for _, v := range g.flagValues("ldflags") {
		if strings.Contains(v, "extldflags") && strings.Contains(v, "static") {
			return true
		}
	}
	return false
}

func checkGoCgo(a *analysis) {
	if a.m == nil {
		return
	}
	final := a.m.finalStage().image
	if final.unknown() || !final.static() && !final.musl() {
		return
	}
	goEnvOff := false // an earlier `go env -w CGO_ENABLED=0`
	for _, idx := range a.m.f.Built() {
		builder := a.m.stages[idx].image
		for _, sp := range a.m.stages[idx].steps {
			if sp.Kind != "RUN" {
				continue
			}
			if strings.Contains(sp.script, "go env -w") && strings.Contains(sp.script, "CGO_ENABLED=0") {
				goEnvOff = true
			}
			for _, g := range goBuilds(sp) {
				if g.env["CGO_ENABLED"] == "0" || goEnvOff || g.staticLink() {
					continue
				}
				if final.static() {
					a.add(sp.Line, 0, "go %s runs without CGO_ENABLED=0 and the binary ships on %s, which has no libc: a cgo binary is linked dynamically and fails there with \"no such file or directory\"; set CGO_ENABLED=0 (ENV, ARG or inline) for a static binary.", g.sub, final.raw)
				} else if !builder.unknown() && !builder.musl() && !builder.scratch() {
					a.add(sp.Line, 0, "go %s runs on %s (glibc) without CGO_ENABLED=0 and the binary ships on %s (musl), where a dynamically linked glibc binary fails to start; set CGO_ENABLED=0, or build FROM an -alpine image.", g.sub, builder.raw, final.raw)
				}
				break
			}
		}
	}
}

func checkGoBuildFlags(a *analysis) {
	if a.m == nil {
		return
	}
	for _, idx := range a.m.f.Built() {
		for _, sp := range a.m.stages[idx].steps {
			for _, g := range goBuilds(sp) {
				if g.sub != "build" || g.stripped() || g.trimpath() {
					continue
				}
				a.add(sp.Line, 0, "go build has neither -ldflags=\"-s -w\" nor -trimpath: -s -w drops the symbol table and DWARF debug information (often a quarter of the binary), -trimpath drops the builder's file paths; add them.")
				break
			}
		}
	}
}

// aptFlags take a value before apt-get's subcommand.
var aptFlags = []string{"-o", "-c", "-t", "--option", "--config-file", "--target-release", "--default-release"}

func isApt(c shCmd) bool { return c.name() == "apt-get" || c.name() == "apt" }

func checkAptRecommends(a *analysis) {
	if a.m == nil {
		return
	}
	configured := false // an apt.conf setting Install-Recommends
	for _, sp := range a.m.finalSteps() {
		if strings.Contains(sp.script, "Install-Recommends") {
			configured = true
		}
		if c, ok := sp.Command.(*instructions.CopyCommand); ok && strings.HasPrefix(dockerfile.JoinDir(sp.Workdir, c.DestPath), "/etc/apt/apt.conf") {
			configured = true
		}
		if configured {
			continue
		}
		for _, c := range sp.sh {
			if !isApt(c) {
				continue
			}
			if _, ok := c.subIs(aptFlags, "install"); ok && !c.hasPrefix("--no-install-recommends") {
				a.add(sp.Line, 0, "%s install runs without --no-install-recommends, so it also installs every recommended package; add --no-install-recommends and name what you need.", c.name())
				break
			}
		}
	}
}

func checkAptLists(a *analysis) {
	if a.m == nil {
		return
	}
	for _, sp := range a.m.finalSteps() {
		updates := false
		for _, c := range sp.sh {
			if _, ok := c.subIs(aptFlags, "update"); ok && isApt(c) {
				updates = true
			}
		}
		if !updates || sp.hasCacheMount("/var/lib/apt") || sp.removes("/var/lib/apt/lists") {
			continue
		}
		a.add(sp.Line, 0, "apt-get update writes the package lists (tens of MiB) into this layer; end the same RUN with rm -rf /var/lib/apt/lists/*, or mount caches on /var/lib/apt and /var/cache/apt.")
	}
}

// removes reports whether a RUN step runs rm on dir or a path under it.
func (sp *step) removes(dir string) bool {
	removed := false
	sp.eachCommand(func(c shCmd, cwd string) {
		for _, rm := range rmPaths(c, cwd) {
			removed = removed || rm.path == dir || strings.HasPrefix(rm.path, dir+"/")
		}
	})
	return removed
}

// eachCommand calls f with each command of a RUN step and the directory it runs in: a cd moves
// the commands after it, and is given the directory it moves to.
func (sp *step) eachCommand(f func(c shCmd, cwd string)) {
	cwd := sp.Workdir
	for _, c := range sp.sh {
		if c.name() == "cd" && len(c.args) > 1 {
			cwd = dockerfile.JoinDir(cwd, c.args[1])
		}
		f(c, cwd)
	}
}

// rmPath is one path an rm command removes: the argument as written, and the path it names from
// the command's directory.
type rmPath struct{ arg, path string }

// rmPaths returns the paths c removes when it is an rm run in cwd, none otherwise.
func rmPaths(c shCmd, cwd string) []rmPath {
	if c.name() != "rm" {
		return nil
	}
	var out []rmPath
	for _, p := range positional(c.args[1:]) {
		out = append(out, rmPath{arg: p, path: dockerfile.JoinDir(cwd, p)})
	}
	return out
}

// apkFlags take a value before apk's subcommand.
var apkFlags = []string{"-X", "--repository", "-p", "--root", "--arch", "--cache-dir", "--keys-dir", "--repositories-file"}

func checkApkNoCache(a *analysis) {
	if a.m == nil {
		return
	}
	for _, sp := range a.m.finalSteps() {
		if sp.hasCacheMount("/var/cache/apk", "/etc/apk/cache") || sp.removes("/var/cache/apk") {
			continue
		}
		for _, c := range sp.sh {
			if c.name() != "apk" || c.has("--no-cache") {
				continue
			}
			if _, ok := c.subIs(apkFlags, "add", "update"); ok {
				a.add(sp.Line, 0, "apk %s runs without --no-cache, so the package index stays in this layer; use apk add --no-cache.", c.args[c.sub(apkFlags...)])
				break
			}
		}
	}
}

func isPip(c shCmd) bool {
	n := c.name()
	return n == "pip" || strings.HasPrefix(n, "pip3")
}

func checkPipNoCacheDir(a *analysis) {
	if a.m == nil {
		return
	}
	for _, sp := range a.m.finalSteps() {
		if _, ok := sp.Env["PIP_NO_CACHE_DIR"]; ok || sp.hasCacheMount(".cache/pip") ||
			(sp.Env["PIP_CACHE_DIR"] != "" && sp.hasCacheMount(sp.Env["PIP_CACHE_DIR"])) {
			continue
		}
		for _, c := range sp.sh {
			if !isPip(c) || c.has("--no-cache-dir") || c.env["PIP_NO_CACHE_DIR"] != "" {
				continue
			}
			if _, ok := c.subIs([]string{"--cache-dir", "--log", "--proxy"}, "install"); ok {
				a.add(sp.Line, 0, "%s install keeps its download cache (/root/.cache/pip) in this layer; add --no-cache-dir, or mount a cache on /root/.cache/pip.", c.name())
				break
			}
		}
	}
}

// cacheTargets suggests where a tool's download cache lives.
var cacheTargets = map[string]string{
	"go": "/go/pkg/mod", "npm": "/root/.npm", "yarn": "/usr/local/share/.cache/yarn", "pnpm": "/root/.local/share/pnpm/store",
	"pip": "/root/.cache/pip", "poetry": "/root/.cache/pypoetry", "pipenv": "/root/.cache/pipenv", "uv": "/root/.cache/uv",
	"apt-get": "/var/cache/apt and /var/lib/apt (sharing=locked)", "apt": "/var/cache/apt and /var/lib/apt (sharing=locked)",
	"cargo": "/usr/local/cargo/registry (and the target directory)", "mvn": "/root/.m2", "gradle": "/root/.gradle",
	"bundle": "/usr/local/bundle/cache", "composer": "/root/.composer/cache", "dotnet": "/root/.nuget/packages",
	"dnf": "/var/cache/dnf", "yum": "/var/cache/yum", "mix": "/root/.hex", "gem": "/usr/local/bundle/cache",
}

func checkNoCacheMount(a *analysis) {
	if a.m == nil {
		return
	}
	for _, sp := range a.m.builtSteps() {
		if sp.Kind != "RUN" || sp.hasCacheMount() {
			continue
		}
		var what, targets []string
		seen := map[string]bool{}
		for _, c := range sp.sh {
			d, tool := downloadStep(c)
			if d == "" || seen[d] {
				continue
			}
			seen[d] = true
			what = append(what, d)
			if t := cacheTargets[tool]; t != "" && !seen["t:"+t] {
				seen["t:"+t] = true
				targets = append(targets, t)
			}
		}
		if len(what) == 0 {
			continue
		}
		verb := "downloads"
		if len(what) > 1 {
			verb = "download"
		}
		a.add(sp.Line, 0, "%s %s everything again whenever this step reruns; mount a cache (RUN --mount=type=cache,target=…) on %s so reruns fetch only what changed.",
			joinAnd(what), verb, strings.Join(targets, "; "))
	}
}

// tarSuffixes are archives ADD unpacks.
var tarSuffixes = []string{".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar.lz", ".tar.lzma"}

func isRemote(s string) bool {
	return strings.Contains(s, "://") || strings.HasPrefix(s, "git@")
}

func checkAddLocal(a *analysis) {
	if a.m == nil {
		return
	}
	for _, sp := range a.m.builtSteps() {
		c, ok := sp.Command.(*instructions.AddCommand)
		if !ok {
			continue
		}
		for _, src := range c.SourcePaths {
			if isRemote(src) || isTar(src) {
				continue
			}
			a.add(sp.Line, 0, "ADD copies a local file here (%s); use COPY, or RUN --mount=type=bind if the file is only needed during the build. ADD is for URLs, git repositories and unpacking a local tar archive, its one special case for local files.", src)
			break
		}
	}
}

func isTar(s string) bool {
	s = strings.ToLower(s)
	for _, suf := range tarSuffixes {
		if strings.HasSuffix(s, suf) {
			return true
		}
	}
	return false
}

func checkBaseLatest(a *analysis) {
	if a.m == nil {
		return
	}
	for _, i := range a.m.f.Built() {
		s := a.m.stages[i]
		if s.Parent >= 0 || s.image.unknown() || s.image.scratch() || s.image.digest {
			continue
		}
		if s.image.tag == "" || s.image.tag == "latest" {
			a.add(s.Line, 0, "%s is not pinned to a version: \"latest\" moves, so builds change under you and the cache misses when it does; pin a version tag (and a digest for reproducible builds).", s.image.raw)
		}
	}
}

func checkNoUser(a *analysis) {
	if a.m == nil {
		return
	}
	f := a.m.finalStage()
	var last *step
	for _, sp := range a.m.finalSteps() {
		if sp.Kind == "USER" {
			last = sp
		}
	}
	if last == nil {
		if f.image.nonRoot() || f.image.unknown() {
			return
		}
		a.add(f.Line, 0, "The final stage sets no USER, so the container runs as root; add a non-root USER (USER 65534:65534 on scratch, a :nonroot distroless tag, or adduser then USER on alpine/debian).")
		return
	}
	u := last.Command.(*instructions.UserCommand).User
	name, _, _ := strings.Cut(u, ":")
	if name == "root" || name == "0" {
		a.add(last.Line, 0, "USER %s makes the container run as root; switch to a non-root user for the final stage.", u)
	}
}

// created is a file or directory an instruction writes.
type created struct {
	path string
	line int
}

func checkDeletedLater(a *analysis) {
	if a.m == nil {
		return
	}
	var made []created
	installed := map[string]int{} // package → line that installed it
	files := map[int]*removal{}
	pkgs := map[int]*removal{}
	note := func(set map[int]*removal, at int, what string, line int) {
		r := set[at]
		if r == nil {
			r = &removal{}
			set[at] = r
		}
		if !contains(r.what, what) {
			r.what = append(r.what, what)
		}
		if !containsInt(r.lines, line) {
			r.lines = append(r.lines, line)
		}
	}
	for _, sp := range a.m.finalSteps() {
		switch c := sp.Command.(type) {
		case *instructions.CopyCommand:
			made = append(made, copyDests(sp.Workdir, copySources(c.SourcesAndDest), c.DestPath, sp.Line)...)
		case *instructions.AddCommand:
			made = append(made, copyDests(sp.Workdir, copySources(c.SourcesAndDest), c.DestPath, sp.Line)...)
		}
		if sp.Kind != "RUN" {
			continue
		}
		var mine []created
		sp.eachCommand(func(c shCmd, cwd string) {
			for _, rm := range rmPaths(c, cwd) {
				if strings.Contains(rm.arg, "$") {
					continue
				}
				rp := newRemoval(rm.path)
				for _, m := range made {
					if rp.removes(m.path) {
						note(files, m.line, m.path, sp.Line)
					}
				}
			}
			for _, p := range removedPackages(c) {
				if at, ok := installed[p]; ok && at != sp.Line {
					note(pkgs, at, p, sp.Line)
				}
			}
			for _, p := range writes(c, cwd) {
				mine = append(mine, created{path: p, line: sp.Line})
			}
			for _, p := range installedPackages(c) {
				if _, ok := installed[p]; !ok {
					installed[p] = sp.Line
				}
			}
		})
		made = append(made, mine...)
	}
	for _, at := range sortedKeys(files) {
		r := files[at]
		a.add(at, 0, "Files created here (%s) are deleted by a later RUN (%s), so their bytes stay in this layer of the image; create, use and delete them in one RUN, or use a bind or cache mount or a builder stage.",
			listShort(r.what), linesText(r.lines))
	}
	for _, at := range sortedKeys(pkgs) {
		r := pkgs[at]
		a.add(at, 0, "Packages installed here (%s) are removed by a later RUN (%s), so their bytes stay in this layer of the image; install, use and remove them in one RUN, or build in a builder stage.",
			listShort(r.what), linesText(r.lines))
	}
}

// removal is what later RUN steps delete of what one step created.
type removal struct {
	what  []string
	lines []int
}

func sortedKeys(m map[int]*removal) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// copySources lists a COPY's or ADD's sources: its paths, and the names of its heredocs
// (COPY <<EOF /etc/x), which BuildKit's parser keeps apart in SourceContents.
func copySources(sd instructions.SourcesAndDest) []string {
	srcs := append([]string{}, sd.SourcePaths...)
	for _, c := range sd.SourceContents {
		srcs = append(srcs, c.Path)
	}
	return srcs
}

// copyDests lists what a COPY or ADD writes.
func copyDests(workdir string, srcs []string, dest string, line int) []created {
	d := dockerfile.JoinDir(workdir, dest)
	var out []created
	if len(srcs) == 1 && !strings.HasSuffix(dest, "/") && dest != "." && !wholeContext(srcs[0]) {
		return []created{{path: d, line: line}}
	}
	for _, s := range srcs {
		if wholeContext(s) {
			continue // the context's files, unknown here
		}
		b := path.Base(strings.TrimRight(s, "/"))
		if b == "." || b == "/" || strings.ContainsAny(b, "*?[") {
			continue
		}
		out = append(out, created{path: path.Join(d, b), line: line})
	}
	return out
}

// removalPath is an rm argument, ready to be matched against many created paths.
type removalPath struct {
	del  string
	glob int    // index of the first glob character, -1 for none
	lit  string // the literal part before it
}

func newRemoval(del string) removalPath {
	r := removalPath{del: del, glob: strings.IndexAny(del, "*?[")}
	if r.glob >= 0 {
		r.lit = del[:r.glob]
	}
	return r
}

func (r removalPath) removes(made string) bool {
	del := r.del
	if del == "/" || made == "/" || del == "" || made == "" {
		return false
	}
	if r.glob < 0 {
		return del == made || underDir(made, del) || underDir(del, made)
	}
	if underDir(r.lit, made) {
		return true // the glob deletes part of made
	}
	if !strings.HasPrefix(made, r.lit) {
		return false
	}
	for p := made; p != "/" && p != "." && p != ""; p = path.Dir(p) {
		if ok, _ := path.Match(del, p); ok {
			return true
		}
		if len(p) < len(r.lit) {
			break
		}
	}
	return false
}

// underDir reports whether p is strictly under directory dir.
func underDir(p, dir string) bool {
	return len(p) > len(dir) && p[len(dir)] == '/' && p[:len(dir)] == dir
}

// writes lists the files a command downloads or writes.
func writes(c shCmd, cwd string) []string {
	var out []string
	add := func(p string) {
		if p == "" || p == "-" || strings.HasPrefix(p, "/dev/") || strings.Contains(p, "$") {
			return
		}
		out = append(out, dockerfile.JoinDir(cwd, p))
	}
	for _, o := range c.out {
		add(o)
	}
	args := c.args
	url := ""
	for _, p := range positional(args[min(1, len(args)):]) {
		if strings.Contains(p, "://") {
			url = p
			break
		}
	}
	remoteName := func() string {
		u, _, _ := strings.Cut(url, "?")
		u = strings.TrimRight(u, "/")
		if i := strings.LastIndex(u, "/"); i >= 0 && !strings.HasSuffix(u[:i], ":/") {
			return u[i+1:]
		}
		return ""
	}
	switch c.name() {
	case "curl":
		o := options(args[1:], "oHdXuAeFmwxTbcCEKrYyzUQPt", []string{"--output", "--header", "--data", "--user", "--request", "--user-agent", "--max-time", "--proxy", "--retry"})
		if v := first(o, "-o", "--output"); v != "" {
			add(v)
		}
		if _, ok := o["-O"]; ok {
			add(remoteName())
		} else if _, ok := o["--remote-name"]; ok {
			add(remoteName())
		}
	case "wget":
		o := options(args[1:], "OPoaetTwUiBlARDIXQ", []string{"--output-document", "--directory-prefix", "--output-file", "--tries", "--timeout", "--user-agent", "--header"})
		file, dir := first(o, "-O", "--output-document"), first(o, "-P", "--directory-prefix")
		switch {
		case file != "":
			add(file)
		case url != "":
			if n := remoteName(); n != "" {
				add(path.Join(dir, n))
			}
		}
	case "git":
		if len(args) > 2 && args[1] == "clone" {
			pos := positional(args[2:])
			switch {
			case len(pos) >= 2:
				add(pos[1])
			case len(pos) == 1:
				add(strings.TrimSuffix(path.Base(pos[0]), ".git"))
			}
		}
	case "cp", "mv":
		if pos := positional(args[1:]); len(pos) >= 2 {
			add(pos[len(pos)-1])
		}
	}
	return out
}

// options parses a command's options: long ones (--name=value, or --name value for the names
// in longValue) and clusters of short ones ("-fsSLo file", "-qO-"), where a letter of
// shortValue takes the rest of the cluster, or the next argument, as its value.
func options(args []string, shortValue string, longValue []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return out
		case strings.HasPrefix(a, "--"):
			if k, v, ok := strings.Cut(a, "="); ok {
				out[k] = v
			} else if contains(longValue, a) && i+1 < len(args) {
				out[a] = args[i+1]
				i++
			} else {
				out[a] = ""
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				f := "-" + string(a[j])
				if !strings.ContainsRune(shortValue, rune(a[j])) {
					out[f] = ""
					continue
				}
				if j+1 < len(a) {
					out[f] = a[j+1:]
				} else if i+1 < len(args) {
					out[f] = args[i+1]
					i++
				}
				break
			}
		}
	}
	return out
}

// first returns the first non-empty value of the named options.
func first(o map[string]string, names ...string) string {
	for _, n := range names {
		if v := o[n]; v != "" {
			return v
		}
	}
	return ""
}

// packageCommand returns which package manager c runs (apk, apt or pip) and the arguments after
// its subcommand, when the subcommand is one of those given for that manager.
func packageCommand(c shCmd, apk, apt, pip []string) (manager string, rest []string, ok bool) {
	switch {
	case c.name() == "apk":
		rest, ok = c.subIs(apkFlags, apk...)
		return "apk", rest, ok
	case isApt(c):
		rest, ok = c.subIs(aptFlags, apt...)
		return "apt", rest, ok
	case isPip(c):
		rest, ok = c.subIs(nil, pip...)
		return "pip", rest, ok
	}
	return "", nil, false
}

// installedPackages lists the packages (or apk virtual packages) a command installs.
func installedPackages(c shCmd) []string {
	manager, rest, ok := packageCommand(c, []string{"add"}, []string{"install"}, []string{"install"})
	if !ok {
		return nil
	}
	var out []string
	for i := 0; i < len(rest); i++ {
		x := rest[i]
		switch manager {
		case "apk":
			if (x == "-t" || x == "--virtual") && i+1 < len(rest) {
				out = append(out, rest[i+1])
				i++
				continue
			}
			if (x == "-X" || x == "--repository") && i+1 < len(rest) {
				i++
				continue
			}
		case "pip":
			if x == "-r" || x == "--requirement" || x == "-c" || x == "-e" || x == "-i" || x == "--index-url" {
				i++
				continue
			}
			if x == "." {
				continue
			}
		default:
			if x == "-o" || x == "-t" {
				i++
				continue
			}
		}
		if !strings.HasPrefix(x, "-") {
			out = append(out, pkgName(x))
		}
	}
	return out
}

// removedPackages lists the packages a command removes.
func removedPackages(c shCmd) []string {
	_, rest, ok := packageCommand(c, []string{"del"}, []string{"purge", "remove", "autoremove"}, []string{"uninstall"})
	if !ok {
		return nil
	}
	var out []string
	for _, p := range positional(rest) {
		out = append(out, pkgName(p))
	}
	return out
}

// pkgName drops a version: "curl=7.88*" → "curl", "flask==3.0" → "flask".
func pkgName(s string) string {
	if i := strings.IndexAny(s, "=<>~!"); i > 0 {
		s = s[:i]
	}
	return strings.ToLower(s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func containsInt(list []int, n int) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

func listShort(items []string) string {
	if len(items) > 4 {
		return strings.Join(items[:4], ", ") + fmt.Sprintf(" and %d more", len(items)-4)
	}
	return strings.Join(items, ", ")
}

func linesText(lines []int) string {
	sort.Ints(lines)
	parts := make([]string, len(lines))
	for i, l := range lines {
		parts[i] = fmt.Sprint(l)
	}
	if len(parts) == 1 {
		return "line " + parts[0]
	}
	return "lines " + strings.Join(parts, ", ")
}

func joinAnd(items []string) string {
	if len(items) <= 1 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}
