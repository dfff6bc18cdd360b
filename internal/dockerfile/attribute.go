package dockerfile

import (
	"maps"
	"path"
	"regexp"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// Layer is one layer of a built image, in manifest order.
type Layer struct {
	CreatedBy string // its history entry; "" when the image has none
	Digest    string
}

// Origin is what made a layer.
type Origin struct {
	// CreatedBy names it for humans: the instruction as written, on one line; for a layer of
	// the base image, "base image <its FROM as written>: <history entry, shortened>"; for any
	// other, the history entry shortened (History.String), or "layer <digest>". It never holds
	// the value of a RUN's ARG prefix.
	CreatedBy string
	Line      int  // the instruction's line; 0 when the layer was not made by this Dockerfile
	Base      bool // the layer comes from the image the built chain of stages starts from
}

// Attribute names what made each layer (the result is in the order of layers) of the image
// built from stage (an index of f.Stages, usually f.Target). f is nil when the Dockerfile is not
// known (BuildKit read it from git): every layer then gets its history entry, shortened.
// BuildKit writes a history entry per layer (see History); the layers are matched, from the
// top, to the layer-making steps of the stage's chain (LayerSteps). Layers left over come from
// the base image. buildArgs are the values the build was given, which help cut the ARG prefix of
// a RUN's entry exactly; no value ever reaches an origin.
func Attribute(f *File, stage int, buildArgs map[string]string, layers []Layer) []Origin {
	out := make([]Origin, len(layers))
	instrs, base := f.instructions(stage)
	known := f.argValues(buildArgs)
	used := make([]bool, len(instrs))
	for i := len(layers) - 1; i >= 0; i-- {
		h := ParseHistory(layers[i].CreatedBy, known)
		if j := matchInstruction(h, instrs, used); j >= 0 {
			used[j] = true
			out[i] = Origin{CreatedBy: instrs[j].text, Line: instrs[j].line}
			continue
		}
		desc := h.String()
		switch {
		case base != "" && desc != "":
			desc = "base image " + base + ": " + desc
		case base != "":
			desc = "base image " + base
		case desc == "":
			desc = "layer " + layers[i].Digest
		}
		out[i] = Origin{CreatedBy: desc, Base: base != ""}
	}
	return out
}

// instruction is a layer-making step as its history entry is matched.
type instruction struct {
	op string // RUN, COPY, ADD or WORKDIR
	// run is, for RUN, the command as BuildKit records it after the shell (Run.History);
	// process adds the shell BuildKit prepends to a shell-form RUN (Step.Process).
	run, process string
	shellForm    bool
	// key is the normalized text, comparable with a normalized history entry; pattern is key
	// with its variable references as wildcards (BuildKit expands them in COPY, ADD and WORKDIR
	// before writing the history), nil when it has none.
	key     string
	pattern *regexp.Regexp
	text    string // as written, for messages
	line    int
}

// instructions returns the layer-making instructions of stage's chain, and the image the chain
// starts from as written ("" for scratch, or when f is nil).
func (f *File) instructions(stage int) ([]instruction, string) {
	if f == nil || stage < 0 || stage >= len(f.Stages) {
		return nil, ""
	}
	root := f.Stages[f.Chain(stage)[0]]
	base := root.From
	if root.Base == "scratch" {
		base = ""
	}
	var out []instruction
	workdir := "/" // as written: variables stay, as in the key
	for _, sp := range f.ChainSteps(stage) {
		in := instruction{op: sp.Kind, text: sp.Text, line: sp.Line}
		switch sp.Command.(type) {
		case *instructions.RunCommand:
			in.run, in.process, in.shellForm = sp.Run.History, sp.Process(), sp.Run.Shell
			in.key = normalize("RUN " + in.run)
		case *instructions.CopyCommand, *instructions.AddCommand:
			in.key = normalize(sp.Kind + " " + sp.written)
		case *instructions.WorkdirCommand:
			workdir = writtenDir(workdir, sp.written)
			in.key = normalize("WORKDIR " + workdir)
		}
		if in.key == "" || !sp.MakesLayer() {
			continue
		}
		in.pattern = keyPattern(in.key)
		out = append(out, in)
	}
	return out, base
}

// writtenDir joins a WORKDIR as written to the one before it, as BuildKit does once both are
// expanded; a path with a variable is kept apart, since its value may be absolute.
func writtenDir(dir, p string) string {
	if !path.IsAbs(p) && !strings.Contains(p, "$") && !strings.Contains(dir, "$") {
		p = path.Join(dir, p)
	}
	if !strings.Contains(p, "$") {
		p = path.Clean(p)
	}
	return p
}

// matchInstruction returns the unused instruction, nearest the top, that wrote h; -1 when none.
// A RUN is compared exactly (its command after the shell BuildKit used), then by its command
// alone (a base image may have changed the shell), then as other instructions are: normalized.
func matchInstruction(h History, instrs []instruction, used []bool) int {
	find := func(ok func(in instruction) bool) int {
		for j := len(instrs) - 1; j >= 0; j-- {
			if !used[j] && instrs[j].op == h.Op && ok(instrs[j]) {
				return j
			}
		}
		return -1
	}
	if h.Op == "" {
		return -1
	}
	if h.Op == "RUN" {
		for _, ok := range []func(in instruction) bool{
			func(in instruction) bool { return h.Body == in.process },
			// The ARG prefix cut wrong (a value the build did not give, with spaces): the
			// command still ends the entry.
			func(in instruction) bool { return len(h.Args) > 0 && strings.HasSuffix(h.raw, " "+in.process) },
			func(in instruction) bool { return in.shellForm && strings.HasSuffix(h.raw, " "+in.run) },
		} {
			if j := find(ok); j >= 0 {
				return j
			}
		}
	}
	key := normalize(h.Op + " " + h.Body)
	return find(func(in instruction) bool {
		return in.key == key || in.pattern != nil && in.pattern.MatchString(key)
	})
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

// argValues are the values BuildKit may have written for each ARG in a RUN's prefix: the
// build's own, else the value each ARG of f takes (its default expanded as BuildKit expands it,
// or the global ARG's). ENV values are not followed: an ARG that an ENV overrides is cut by shape.
func (f *File) argValues(buildArgs map[string]string) map[string]string {
	out := map[string]string{}
	if f != nil {
		for _, st := range f.Stages {
			for _, sp := range st.Steps {
				a, ok := sp.Command.(*instructions.ArgCommand)
				if !ok {
					continue
				}
				for _, kv := range a.Args {
					if kv.Value != nil {
						out[kv.Key] = *kv.Value
					}
				}
			}
		}
	}
	maps.Copy(out, buildArgs)
	return out
}

// MakesLayer reports a step that adds a layer: RUN, COPY, ADD, and a WORKDIR other than /
// (BuildKit creates the directory: dispatchWorkdir).
func (s *Step) MakesLayer() bool {
	switch c := s.Command.(type) {
	case *instructions.RunCommand, *instructions.CopyCommand, *instructions.AddCommand:
		return true
	case *instructions.WorkdirCommand:
		return JoinDir(s.Workdir, c.Path) != "/"
	}
	return false
}

// LayerSteps returns the steps of the chain of stage i that add a layer, oldest first.
func (f *File) LayerSteps(i int) []*Step {
	var out []*Step
	for _, sp := range f.ChainSteps(i) {
		if sp.MakesLayer() {
			out = append(out, sp)
		}
	}
	return out
}
