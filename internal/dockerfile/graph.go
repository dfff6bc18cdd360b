package dockerfile

import (
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// StageIndex returns the index of the stage a build of target makes: the last stage of that
// name (case-insensitive); -1 when no stage has it.
func (f *File) StageIndex(target string) int {
	idx := -1
	for i, s := range f.Stages {
		if target != "" && strings.EqualFold(s.Name, target) {
			idx = i
		}
	}
	return idx
}

// Select is StageIndex, with the last stage for "" or a name of no stage, as BuildKit builds
// the last stage when no target is given.
func (f *File) Select(target string) int {
	if i := f.StageIndex(target); i >= 0 {
		return i
	}
	return len(f.Stages) - 1
}

// Names lists the named stages, in order.
func (f *File) Names() []string {
	var out []string
	for _, s := range f.Stages {
		if s.Name != "" {
			out = append(out, s.Name)
		}
	}
	return out
}

// Chain returns the indexes of the stages an image built from stage i is made of: the stage
// and those it starts FROM, oldest first.
func (f *File) Chain(i int) []int {
	var out []int
	for n := 0; i >= 0 && i < len(f.Stages) && n <= len(f.Stages); n++ {
		out = append(out, i)
		i = f.Stages[i].Parent
	}
	for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
		out[l], out[r] = out[r], out[l]
	}
	return out
}

// ChainSteps returns the steps of the chain of stage i, oldest first.
func (f *File) ChainSteps(i int) []*Step {
	var out []*Step
	for _, j := range f.Chain(i) {
		out = append(out, f.Stages[j].Steps...)
	}
	return out
}

// StageRef resolves COPY --from and RUN --mount from=: a stage name or index before stage at;
// -1 for an image.
func (f *File) StageRef(ref string, at int) int {
	if ref == "" {
		return -1
	}
	if n, err := strconv.Atoi(ref); err == nil {
		if n >= 0 && n < at && n < len(f.Stages) {
			return n
		}
		return -1
	}
	for j := min(at, len(f.Stages)) - 1; j >= 0; j-- {
		if f.Stages[j].Name != "" && strings.EqualFold(f.Stages[j].Name, ref) {
			return j
		}
	}
	return -1
}

// Built returns, in order, the stages a build of f.Target reaches, whose files can end up in
// the image: the target's chain and, transitively, the chains it copies or mounts files from.
func (f *File) Built() []int {
	seen := map[int]bool{}
	var visit func(i int)
	visit = func(i int) {
		for _, j := range f.Chain(i) {
			if seen[j] {
				continue
			}
			seen[j] = true
			for _, sp := range f.Stages[j].Steps {
				for _, ref := range sp.FromRefs() {
					if k := f.StageRef(ref, j); k >= 0 {
						visit(k)
					}
				}
			}
		}
	}
	visit(f.Target)
	out := make([]int, 0, len(seen))
	for i := range seen {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

// FromRefs lists the stages or images a step reads files from: COPY --from, RUN --mount from=.
func (s *Step) FromRefs() []string {
	var out []string
	switch c := s.Command.(type) {
	case *instructions.CopyCommand:
		if c.From != "" {
			out = append(out, c.From)
		}
	case *instructions.RunCommand:
		for _, mt := range s.Mounts {
			if mt.From != "" {
				out = append(out, mt.From)
			}
		}
	}
	return out
}

// Secrets returns the ids of the secrets the RUN steps of every stage mount
// (--mount=type=secret: its id, else the base name of its target), each with the line of its
// first use.
func (f *File) Secrets() map[string]int {
	return f.mountIDs(instructions.MountTypeSecret, func(m *instructions.Mount) string { return filepath.Base(m.Target) })
}

// secretID is the id BuildKit takes for a secret mount (dockerfile2llb's convert_secrets): its
// source when set, else its id, else the base name of its target.
func secretID(m *instructions.Mount) string {
	switch {
	case m.Source != "":
		return m.Source
	case m.CacheID != "":
		return m.CacheID
	}
	return filepath.Base(m.Target)
}

// SSH returns the ids of the SSH agents the RUN steps of every stage mount
// (--mount=type=ssh: its id, else "default", as dockerfile2llb names it), each with the line of
// its first use.
func (f *File) SSH() map[string]int {
	return f.mountIDs(instructions.MountTypeSSH, func(*instructions.Mount) string { return "default" })
}

// mountIDs returns the ids of the mounts of type typ in the RUN steps of every stage (an id a
// mount does not set is defaultID's), each with the line of its first use.
func (f *File) mountIDs(typ instructions.MountType, defaultID func(*instructions.Mount) string) map[string]int {
	uses := map[string]int{}
	for _, st := range f.Stages {
		for _, sp := range st.Steps {
			for _, m := range sp.Mounts {
				if m.Type != typ {
					continue
				}
				id := m.CacheID
				if typ == instructions.MountTypeSecret {
					id = secretID(m)
				}
				if id == "" {
					id = defaultID(m)
				}
				if _, seen := uses[id]; !seen && sp.Line > 0 {
					uses[id] = sp.Line
				}
			}
		}
	}
	return uses
}
