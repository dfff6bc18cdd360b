package runner

import (
	"github.com/kiln-dev/kiln/internal/dockerfile"
	"github.com/kiln-dev/kiln/internal/measure"
)

// origin is what created a layer, as the result reports it.
type origin struct {
	createdBy string
	line      int
}

// attributeWith names the instruction that created each layer, by layer index: the layers of
// the image built from target are matched to that stage's chain of instructions by
// dockerfile.Attribute. buildArgs are the values the build was given, which help cut the ARG
// prefix of a RUN's entry exactly; no value ever reaches an origin.
func attributeWith(in *inputs, target string, buildArgs map[string]string, layers []measure.Layer) map[int]origin {
	out := map[int]origin{}
	for i, o := range in.origins(target, buildArgs, layers) {
		out[layers[i].Index] = origin{createdBy: o.CreatedBy, line: o.Line}
	}
	return out
}

// origins is dockerfile.Attribute on the local Dockerfile, if any, for the image built from
// target: one origin per layer, in the order of layers.
func (in *inputs) origins(target string, buildArgs map[string]string, layers []measure.Layer) []dockerfile.Origin {
	var f *dockerfile.File
	stage := -1
	if in != nil && in.file != nil {
		f, stage = in.file, in.file.Select(target)
	}
	ls := make([]dockerfile.Layer, len(layers))
	for i, l := range layers {
		ls[i] = dockerfile.Layer{CreatedBy: l.CreatedBy, Digest: l.Digest}
	}
	return dockerfile.Attribute(f, stage, buildArgs, ls)
}

// instruction is a layer-making step as failingStep (solve.go) reads it.
type instruction struct {
	op      string // RUN, COPY, ADD or WORKDIR
	line    int
	command string // Step.Process
}

// process is a RUN's command line as BuildKit runs it (and writes it in history and errors).
func (i instruction) process() string { return i.command }

// stageChain returns the layer-making steps of stage idx and of the stages it starts FROM
// (dockerfile.File.LayerSteps), and the image that chain starts from.
func stageChain(in *inputs, idx int) ([]instruction, string) {
	var out []instruction
	for _, sp := range in.file.LayerSteps(idx) {
		out = append(out, instruction{op: sp.Kind, line: sp.Line, command: sp.Process()})
	}
	return out, in.file.Stages[idx].Image
}
