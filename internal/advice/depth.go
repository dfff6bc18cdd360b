package advice

import (
	"fmt"
)

// LayerDepthLimit is the most layers one overlay mount can stack, so the most layers a build
// step (or a container of the image) can run on: the kernel's overlayfs refuses a mount with
// more than 500 lower directories (OVL_MAX_STACK in fs/overlayfs; "too many lower directories,
// limit is 500"). BuildKit runs each RUN on an overlay mount of every layer below it: the base
// image's layers, then one per RUN, COPY, ADD and WORKDIR before it.
//
// The mount options can give out first: they must fit in one page (4096 bytes). containerd's
// mount helper, which BuildKit's overlay snapshotter uses, then writes each lower directory as
// "<snapshot id>/fs" relative to the snapshots directory (compactLowerdirOption in
// core/mount/mount_linux.go), about 4 bytes plus the id's digits per layer: some 480 layers
// with 4-digit ids, 430 with 5-digit ids, as a BuildKit cache that has made tens of thousands
// of snapshots has.
const LayerDepthLimit = 500

// layerDepthWarn is the depth from which the layer-depth rule warns: below what the mount
// options allow with 5-digit snapshot ids.
const layerDepthWarn = 400

// LayerDepthMessage explains a build that fails, or may fail, because it stacks too many
// layers, in one or two sentences for a failure message or a finding. layers is the depth
// (base image layers included) when known, 0 when not.
func LayerDepthMessage(layers int) string {
	what := "The build stacks more layers than an overlay mount holds"
	if layers > 0 {
		what = fmt.Sprintf("The build stacks %d layers", layers)
	}
	return what + fmt.Sprintf(", and an overlay mount holds at most %d (the kernel's overlayfs limit), fewer on a long-used BuildKit cache (its mount options must fit in 4096 bytes, about 430 layers with 5-digit snapshot ids); "+
		"every RUN, COPY, ADD and WORKDIR adds a layer on top of the base image's: merge consecutive RUN steps into one (joined with && or written as a heredoc), or do the work in a builder stage and COPY --from only its result.",
		LayerDepthLimit)
}

// LayerDepth returns how many layers the build of in stacks at its deepest: for each stage
// BuildKit builds, one layer per RUN, COPY, ADD and WORKDIR (other than /) of its chain of
// stages, plus, for the stage that is built, the base image's layers when in.Image was measured
// (Layer.Base), or all the measured layers when there are more. 0 when the Dockerfile does not
// parse.
func LayerDepth(in Input) int {
	m, err := parse(in.Dockerfile, in.Target, in.BuildArgs)
	if err != nil {
		return 0
	}
	depth := 0
	for _, d := range m.depths(in.Image) {
		depth = max(depth, d.layers)
	}
	return depth
}

// chainDepth is the depth of the chain of stages that ends at one stage.
type chainDepth struct {
	stage  int
	layers int  // own (steps) plus base layers
	steps  int  // layers the Dockerfile's instructions add
	base   int  // the base image's layers, when measured
	known  bool // the base image's layers are known (measured, or scratch)
	line   int  // the instruction that makes layer LayerDepthLimit+1, 0 when none
}

// depths returns the depth of every built chain that is not the start of a longer one.
func (m *model) depths(img *Image) []chainDepth {
	built := m.f.Built() // with the whole chain of each built stage
	parents := map[int]bool{}
	for _, i := range built {
		if p := m.stages[i].Parent; p >= 0 {
			parents[p] = true
		}
	}
	var out []chainDepth
	for _, i := range built {
		if parents[i] {
			continue
		}
		d := chainDepth{stage: i}
		chain := m.chain(i)
		if len(chain) > 0 && chain[0].image.scratch() {
			d.known = true
		}
		if i == m.final && img != nil {
			for _, l := range img.Layers {
				if l.Base {
					d.base++
				}
			}
			d.known = true
		}
		n := d.base
		for _, sp := range m.f.LayerSteps(i) {
			d.steps++
			if n++; n == LayerDepthLimit+1 {
				d.line = sp.Line
			}
		}
		d.layers = d.base + d.steps
		if i == m.final && img != nil && len(img.Layers) > d.layers {
			d.layers = len(img.Layers)
		}
		out = append(out, d)
	}
	return out
}

func checkLayerDepth(a *analysis) {
	if a.m == nil {
		return
	}
	for _, d := range a.m.depths(a.in.Image) {
		if d.layers < layerDepthWarn {
			continue
		}
		st := a.m.stages[d.stage]
		layers := fmt.Sprintf("%d layers (%d from the base image, %d from its RUN, COPY, ADD and WORKDIR steps)", d.layers, d.base, d.layers-d.base)
		switch {
		case !d.known:
			layers = fmt.Sprintf("%d layers of its own (its RUN, COPY, ADD and WORKDIR steps) on top of the base image's", d.layers)
		case d.base == 0:
			layers = fmt.Sprintf("%d layers (its RUN, COPY, ADD and WORKDIR steps)", d.layers)
		}
		where := "This stage"
		if st.Name != "" {
			where = fmt.Sprintf("Stage %s", st.Name)
		}
		limit := fmt.Sprintf("close to the %d", LayerDepthLimit)
		if d.layers > LayerDepthLimit {
			limit = fmt.Sprintf("more than the %d", LayerDepthLimit)
		}
		fails := ""
		if d.line > 0 {
			fails = fmt.Sprintf(" the build fails at line %d, layer %d;", d.line, LayerDepthLimit+1)
		}
		a.add(st.Line, 0, "%s stacks %s, %s an overlay mount holds (the kernel's overlayfs limit; fewer on a long-used BuildKit cache, as mount options must fit in 4096 bytes);%s merge consecutive RUN steps into one (joined with && or written as a heredoc), or do the work in a builder stage and COPY --from only its result.",
			where, layers, limit, fails)
	}
}
