package runner

import (
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/kiln-dev/kiln/internal/measure"
)

// origin is what created a layer.
type origin struct {
	createdBy string
	line      int
}

// instruction is a layer-making Dockerfile instruction of the final stage's chain.
type instruction struct {
	key  string // normalized text, comparable with a history entry
	text string // as written, for messages
	line int
}

// attribute names the instruction that created each layer. BuildKit writes a history entry per
// layer ("RUN /bin/sh -c make # buildkit", "COPY /out/app /app # buildkit"); the layers of the
// final stage are matched, from the top, to that stage's instructions (and its parent stages'
// when it starts FROM another stage). Layers left over come from the base image.
func attribute(in *inputs, target string, layers []measure.Layer) map[int]origin {
	out := map[int]origin{}
	instrs, base := finalChain(in, target)
	used := make([]bool, len(instrs))
	for i := len(layers) - 1; i >= 0; i-- {
		l := layers[i]
		key := normalize(l.CreatedBy)
		matched := false
		for j := len(instrs) - 1; j >= 0; j-- {
			if !used[j] && key != "" && instrs[j].key == key {
				used[j] = true
				out[l.Index] = origin{createdBy: instrs[j].text, line: instrs[j].line}
				matched = true
				break
			}
		}
		if matched {
			continue
		}
		desc := cleanHistory(l.CreatedBy)
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
	var chain []instruction
	base := ""
	seen := map[int]bool{}
	for idx >= 0 && !seen[idx] {
		seen[idx] = true
		s := in.stages[idx]
		chain = append(stageInstructions(s), chain...)
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
	return chain, base
}

func stageInstructions(s instructions.Stage) []instruction {
	var out []instruction
	for _, c := range s.Commands {
		var key string
		switch cmd := c.(type) {
		case *instructions.RunCommand:
			key = "RUN " + strings.Join(cmd.CmdLine, " ")
		case *instructions.CopyCommand:
			key = "COPY " + strings.Join(append(append([]string{}, cmd.SourcePaths...), cmd.DestPath), " ")
		case *instructions.AddCommand:
			key = "ADD " + strings.Join(append(append([]string{}, cmd.SourcePaths...), cmd.DestPath), " ")
		case *instructions.WorkdirCommand:
			key = "WORKDIR " + cmd.Path
		default:
			continue
		}
		line := 0
		if loc := c.Location(); len(loc) > 0 {
			line = loc[0].Start.Line
		}
		text := key
		if st, ok := c.(fmt.Stringer); ok {
			text = strings.Join(strings.Fields(st.String()), " ")
		}
		out = append(out, instruction{key: normalize(key), text: text, line: line})
	}
	return out
}

// cleanHistory shortens a history entry for humans.
func cleanHistory(s string) string {
	s = strings.TrimSuffix(strings.TrimSpace(s), "# buildkit")
	s = strings.Replace(s, "/bin/sh -c ", "", 1)
	return strings.Join(strings.Fields(s), " ")
}

// normalize makes a history entry and a parsed instruction comparable: no flags, no shell
// prefix, no BuildKit marker, single spaces, no quotes.
func normalize(s string) string {
	s = cleanHistory(s)
	var words []string
	for _, w := range strings.Fields(s) {
		if strings.HasPrefix(w, "--") {
			continue
		}
		words = append(words, strings.Trim(w, `"'[],`))
	}
	return strings.Join(words, " ")
}
