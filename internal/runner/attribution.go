package runner

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/kiln-dev/kiln/internal/measure"
)

// origin is what created a layer.
type origin struct {
	createdBy string
	line      int
}

// instruction is a layer-making Dockerfile instruction of the final stage's chain.
type instruction struct {
	op string // RUN, COPY, ADD or WORKDIR
	// run is, for RUN, the command as BuildKit records it after the shell: the arguments joined
	// by spaces, heredocs resolved as BuildKit resolves them.
	run string
	// shell is, for a shell-form RUN, the shell BuildKit prepends (SHELL, else /bin/sh -c).
	shell string
	// key is the normalized text, comparable with a normalized history entry; pattern is key
	// with its variable references as wildcards (BuildKit expands them in COPY, ADD and WORKDIR
	// before writing the history), nil when it has none.
	key     string
	pattern *regexp.Regexp
	text    string // as written, for messages
	line    int
}

// process is a RUN's command line as BuildKit runs it (and writes it in history and errors).
func (in instruction) process() string {
	if in.shell == "" {
		return in.run
	}
	return in.shell + " " + in.run
}

// attribute names the instruction that created each layer, knowing no build-arg values.
func attribute(in *inputs, target string, layers []measure.Layer) map[int]origin {
	return attributeWith(in, target, nil, layers)
}

// attributeWith names the instruction that created each layer. BuildKit writes a history entry
// per layer (see parseHistory); the layers of the final stage are matched, from the top, to that
// stage's instructions (and its parent stages' when it starts FROM another stage). Layers left
// over come from the base image. buildArgs are the values the build was given, which help cut
// the ARG prefix of a RUN's entry exactly; no value ever reaches an origin.
func attributeWith(in *inputs, target string, buildArgs map[string]string, layers []measure.Layer) map[int]origin {
	out := map[int]origin{}
	instrs, base := finalChain(in, target)
	known := argValues(in, buildArgs)
	used := make([]bool, len(instrs))
	for i := len(layers) - 1; i >= 0; i-- {
		l := layers[i]
		h := parseHistory(l.CreatedBy, known)
		if j := matchInstruction(h, instrs, used); j >= 0 {
			used[j] = true
			out[l.Index] = origin{createdBy: instrs[j].text, line: instrs[j].line}
			continue
		}
		desc := h.String()
		switch {
		case base != "" && desc != "":
			desc = "base image " + base + ": " + desc
		case base != "":
			desc = "base image " + base
		case desc == "":
			desc = "layer " + l.Digest
		}
		out[l.Index] = origin{createdBy: desc}
	}
	return out
}

// matchInstruction returns the unused instruction, nearest the top, that wrote h; -1 when none.
// A RUN is compared exactly (its command after the shell BuildKit used), then by its command
// alone (a base image may have changed the shell), then as other instructions are: normalized.
func matchInstruction(h history, instrs []instruction, used []bool) int {
	find := func(ok func(in instruction) bool) int {
		for j := len(instrs) - 1; j >= 0; j-- {
			if !used[j] && instrs[j].op == h.op && ok(instrs[j]) {
				return j
			}
		}
		return -1
	}
	if h.op == "" {
		return -1
	}
	if h.op == "RUN" {
		for _, ok := range []func(in instruction) bool{
			func(in instruction) bool { return h.body == in.process() },
			// The ARG prefix cut wrong (a value the build did not give, with spaces): the
			// command still ends the entry.
			func(in instruction) bool { return len(h.args) > 0 && strings.HasSuffix(h.raw, " "+in.process()) },
			func(in instruction) bool { return in.shell != "" && strings.HasSuffix(h.raw, " "+in.run) },
		} {
			if j := find(ok); j >= 0 {
				return j
			}
		}
	}
	key := normalize(h.op + " " + h.body)
	return find(func(in instruction) bool {
		return in.key == key || in.pattern != nil && in.pattern.MatchString(key)
	})
}

// finalChain returns the layer-making instructions of the stage that is built (and of the stages
// it starts FROM), and the image that chain starts from.
func finalChain(in *inputs, target string) ([]instruction, string) {
	if in == nil || len(in.stages) == 0 {
		return nil, ""
	}
	idx := len(in.stages) - 1
	if target != "" {
		for i, s := range in.stages {
			if strings.EqualFold(s.Name, target) {
				idx = i
			}
		}
	}
	return stageChain(in, idx)
}

// stageChain returns the layer-making instructions of stage idx and of the stages it starts
// FROM, and the image that chain starts from.
func stageChain(in *inputs, idx int) ([]instruction, string) {
	var stages []instructions.Stage // from the first FROM to the built stage
	base := ""
	seen := map[int]bool{}
	for idx >= 0 && !seen[idx] {
		seen[idx] = true
		s := in.stages[idx]
		stages = append([]instructions.Stage{s}, stages...)
		parent := -1
		for i := 0; i < idx; i++ {
			if strings.EqualFold(in.stages[i].Name, s.BaseName) {
				parent = i
			}
		}
		if parent < 0 {
			base = s.BaseName
		}
		idx = parent
	}
	if base == "scratch" {
		base = ""
	}
	st := &chainState{shell: "/bin/sh -c", workdir: "/"}
	var chain []instruction
	for _, s := range stages {
		chain = append(chain, st.instructions(s)...)
	}
	return chain, base
}

// chainState is what a stage inherits from the stage it starts FROM and that changes how
// BuildKit writes history: the shell and the working directory.
type chainState struct {
	shell   string
	workdir string
}

func (st *chainState) instructions(s instructions.Stage) []instruction {
	var out []instruction
	for _, c := range s.Commands {
		var in instruction
		switch cmd := c.(type) {
		case *instructions.ShellCommand:
			st.shell = strings.Join(cmd.Shell, " ")
			continue
		case *instructions.RunCommand:
			in.op = "RUN"
			in.run = runArgs(cmd)
			if cmd.PrependShell {
				in.shell = st.shell
			}
			in.key = normalize("RUN " + in.run)
		case *instructions.CopyCommand:
			in.op = "COPY"
			in.key = normalize("COPY " + copyArgs(cmd.SourcesAndDest))
		case *instructions.AddCommand:
			in.op = "ADD"
			in.key = normalize("ADD " + copyArgs(cmd.SourcesAndDest))
		case *instructions.WorkdirCommand:
			in.op = "WORKDIR"
			wd := cmd.Path
			if !path.IsAbs(wd) && !strings.Contains(wd, "$") && !strings.Contains(st.workdir, "$") {
				wd = path.Join(st.workdir, wd)
			}
			if !strings.Contains(wd, "$") {
				wd = path.Clean(wd)
			}
			st.workdir = wd
			in.key = normalize("WORKDIR " + wd)
		default:
			continue
		}
		in.pattern = keyPattern(in.key)
		if loc := c.Location(); len(loc) > 0 {
			in.line = loc[0].Start.Line
		}
		in.text = in.key
		if s, ok := c.(fmt.Stringer); ok {
			in.text = strings.Join(strings.Fields(s.String()), " ")
		}
		out = append(out, in)
	}
	return out
}

// runArgs is a RUN's command as BuildKit's dockerfile2llb (dispatchRun) passes it to the shell
// and records it in the history: a heredoc alone ("RUN <<EOF") runs its text, or, when it starts
// with "#!", the file BuildKit mounts at /dev/pipes/<name>; other heredoc forms ("RUN <<EOF bash",
// "RUN bash <<EOF") are the command line, then each document and its terminator.
func runArgs(c *instructions.RunCommand) string {
	args := c.CmdLine
	if len(c.Files) > 0 && len(args) == 1 && c.PrependShell {
		if parser.MustParseHeredoc(args[0]) != nil {
			data := c.Files[0].Data
			if c.Files[0].Chomp {
				data = parser.ChompHeredocContent(data)
			}
			if strings.HasPrefix(data, "#!") {
				return "/dev/pipes/" + c.Files[0].Name
			}
			return data
		}
		var b strings.Builder
		b.WriteString(args[0])
		for _, f := range c.Files {
			b.WriteString("\n" + f.Data + f.Name)
		}
		return b.String()
	}
	return strings.Join(args, " ")
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

var varRef = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)

// keyPattern turns the variable references of a normalized key into wildcards; nil when it has none.
func keyPattern(key string) *regexp.Regexp {
	refs := varRef.FindAllStringIndex(key, -1)
	if len(refs) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString(`(?s)^`)
	last := 0
	for _, r := range refs {
		b.WriteString(regexp.QuoteMeta(key[last:r[0]]) + `.*`)
		last = r[1]
	}
	b.WriteString(regexp.QuoteMeta(key[last:]) + `$`)
	return regexp.MustCompile(b.String())
}

// argValues are the values BuildKit may have written for each ARG: the build's own, else the
// defaults the Dockerfile declares, expanded as BuildKit expands them (quotes removed, earlier
// ARGs substituted). ENV values are not followed: an ARG that an ENV overrides is cut by shape.
func argValues(in *inputs, buildArgs map[string]string) map[string]string {
	out := mapEnv{}
	if in != nil {
		lex := shell.NewLex('\\')
		for _, s := range in.stages {
			for _, c := range s.Commands {
				a, ok := c.(*instructions.ArgCommand)
				if !ok {
					continue
				}
				for _, kv := range a.Args {
					if _, given := buildArgs[kv.Key]; given || kv.Value == nil {
						continue
					}
					if v, _, err := lex.ProcessWord(*kv.Value, out); err == nil {
						out[kv.Key] = v
					}
				}
			}
		}
	}
	for k, v := range buildArgs {
		out[k] = v
	}
	return out
}

// mapEnv is a map as the Dockerfile shell lexer reads variables.
type mapEnv map[string]string

func (m mapEnv) Get(k string) (string, bool) {
	v, ok := m[k]
	return v, ok
}

func (m mapEnv) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// history is a layer's history entry ("created by"), as BuildKit's Dockerfile frontend writes it
// (dockerfile2llb: commitToHistory, runCommandString, dispatchCopy):
//
//	RUN /bin/sh -c make all # buildkit                           shell form, and RUN --mount=…: flags are not written
//	RUN make all # buildkit                                      exec form, RUN ["make", "all"]
//	RUN |2 GOOS=linux TOKEN=abc /bin/sh -c make # buildkit       ARGs in scope: how many, then NAME=value each
//	RUN /bin/sh -c /dev/pipes/EOF # buildkit                     RUN <<EOF whose text starts with #!
//	RUN /bin/sh -c echo one\necho two\n # buildkit                RUN <<EOF otherwise: the text itself
//	RUN /bin/sh -c <<EOF bash\necho one\nEOF # buildkit           RUN <<EOF bash (RUN bash <<EOF: "bash <<EOF\n…")
//	COPY --chown=1000 /out/app /app # buildkit                   COPY and ADD, sources expanded
//	COPY <<EOF /etc/motd # buildkit                              COPY of a heredoc
//	WORKDIR /src                                                 the absolute directory, expanded
//
// The ARG prefix lists every ARG declared in the stage (and the stages it starts FROM), with the
// value the build gave, its default, or "" when it has neither; an ENV of the same name replaces
// the value. ENV alone is never listed. Values are written raw, spaces included, so the prefix is
// cut with the values the build knows, then by shape (see stripArgs).
type history struct {
	op   string   // first word: RUN, COPY, ADD, WORKDIR… ("" for an empty entry)
	args []string // a RUN's ARGs in scope, by name: their values are dropped
	body string   // after op and ARGs, without the " # buildkit" marker
	raw  string   // after op, ARGs included: for matching only, never shown
}

const buildkitMarker = " # buildkit"

// parseHistory splits a history entry; known maps ARG names to the values the build may have used.
// Entries of images made by Docker's classic builder ("/bin/sh -c #(nop) ADD …", and
// "|1 A=b /bin/sh -c make" for a RUN with ARGs) are split too, the latter as a RUN.
func parseHistory(s string, known map[string]string) history {
	s = strings.TrimLeft(strings.TrimSuffix(s, buildkitMarker), " ")
	if strings.HasPrefix(s, "|") {
		s = "RUN " + s
	}
	op, body, _ := strings.Cut(s, " ")
	h := history{op: op, body: body, raw: body}
	if h.op == "RUN" && strings.HasPrefix(body, "|") {
		h.args, h.body = stripArgs(body, known)
	}
	return h
}

var argName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// stripArgs cuts BuildKit's "|N NAME=value …" prefix from a RUN's history entry. A value the build
// knows is cut exactly. Another value ends at the first space, except that a value followed by
// more pairs extends to the next " NAME=", and the last one, when the shell follows, to the first
// " /bin/sh -c ". When in doubt it cuts too much rather than too little: a command shown short is
// better than a value shown at all. An entry that does not have the prefix's shape loses its whole
// body.
func stripArgs(s string, known map[string]string) ([]string, string) {
	countStr, rest, ok := strings.Cut(s[1:], " ")
	n, err := strconv.Atoi(countStr)
	if !ok || err != nil || n < 1 {
		return nil, ""
	}
	var names []string
	for i := 0; i < n || argName.MatchString(rest); i++ {
		m := argName.FindString(rest)
		if m == "" {
			return names, ""
		}
		name := m[:len(m)-1]
		names = append(names, name)
		rest = rest[len(m):]
		if v, ok := known[name]; ok && strings.HasPrefix(rest, v) && (len(rest) == len(v) || rest[len(v)] == ' ') {
			rest = strings.TrimPrefix(rest[len(v):], " ")
			continue
		}
		end := strings.IndexByte(rest, ' ')
		switch {
		case end < 0:
			rest = ""
			continue
		case i < n-1:
			for end >= 0 && !argName.MatchString(rest[end+1:]) {
				next := strings.IndexByte(rest[end+1:], ' ')
				if next < 0 {
					end = -1
					break
				}
				end += 1 + next
			}
			if end < 0 {
				return names, ""
			}
		default:
			if sh := strings.Index(rest, " /bin/sh -c "); sh >= 0 {
				end = sh
			}
		}
		rest = rest[end+1:]
	}
	return names, rest
}

// String shortens the entry for humans: its instruction and command, without the shell, the
// ARG prefix or BuildKit's marker.
func (h history) String() string {
	if h.op == "" {
		return ""
	}
	return strings.Join(strings.Fields(strings.Replace(h.op+" "+h.body, "/bin/sh -c ", "", 1)), " ")
}

// normalize makes a history entry and a parsed instruction comparable: no flags, no shell
// prefix, no BuildKit marker, single spaces, no quotes.
func normalize(s string) string {
	s = parseHistory(s, nil).String()
	var words []string
	for _, w := range strings.Fields(s) {
		if strings.HasPrefix(w, "--") {
			continue
		}
		words = append(words, strings.Trim(w, `"'[],`))
	}
	return strings.Join(words, " ")
}
