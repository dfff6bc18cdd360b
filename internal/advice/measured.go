package advice

import (
	"fmt"
	"strings"

	"github.com/kiln-dev/kiln/internal/dockerfile"
	"github.com/kiln-dev/kiln/internal/units"
)

// Thresholds of the measured rules.
const (
	largeLayerShare = 0.30
	baseImageShare  = 0.60
)

// layerByIndex finds a measured layer.
func (img *Image) layerByIndex(i int) (Layer, bool) {
	for _, l := range img.Layers {
		if l.Index == i {
			return l, true
		}
	}
	return Layer{}, false
}

// stepAt returns the instruction that starts at a line.
func (a *analysis) stepAt(line int) *step {
	if a.m == nil || line <= 0 {
		return nil
	}
	for _, s := range a.m.stages {
		for _, sp := range s.steps {
			if sp.Line == line {
				return sp
			}
		}
	}
	return nil
}

// baseName names the final image's base, for messages.
func (a *analysis) baseName() string {
	if a.m != nil {
		if r := a.m.finalStage().image; r.raw != "" {
			return r.raw
		}
	}
	return ""
}

// describeLayer says what made a layer: "line 5 (RUN apt-get …)", "the base image (alpine:3.19)".
func (a *analysis) describeLayer(l Layer) string {
	if l.Base {
		if b := a.baseName(); b != "" {
			return fmt.Sprintf("the base image (%s)", b)
		}
		return "the base image"
	}
	text := ""
	if sp := a.stepAt(l.Line); sp != nil {
		text = sp.text()
	} else if l.CreatedBy != "" {
		text = shorten(dockerfile.ParseHistory(strings.TrimSpace(l.CreatedBy), nil).String(), 70)
	}
	switch {
	case l.Line > 0 && text != "":
		return fmt.Sprintf("line %d (%s)", l.Line, text)
	case l.Line > 0:
		return fmt.Sprintf("line %d", l.Line)
	case text != "":
		return fmt.Sprintf("layer %d (%s)", l.Index, text)
	}
	return fmt.Sprintf("layer %d", l.Index)
}

// finalFromLine is the line of the final stage's FROM, 0 when unknown.
func (a *analysis) finalFromLine() int {
	if a.m == nil {
		return 0
	}
	return a.m.finalStage().Line
}

func checkLargeLayer(a *analysis) {
	img := a.in.Image
	if img == nil || img.CompressedBytes <= 0 || len(img.Layers) < 2 {
		return
	}
	for _, l := range img.Layers {
		share := float64(l.CompressedBytes) / float64(img.CompressedBytes)
		if share <= largeLayerShare {
			continue
		}
		line := l.Line
		hint := "it is where shrinking this image pays most"
		if l.Base {
			line = a.finalFromLine()
			hint = "a smaller base image is where shrinking this image pays most"
		}
		a.add(line, 0, "Layer %d, from %s, is %.0f%% of the image (%s compressed, %s uncompressed); %s.",
			l.Index, a.describeLayer(l), share*100, units.Bytes(l.CompressedBytes), units.Bytes(l.UncompressedBytes), hint)
	}
}

// wasteGroup is the waste one layer adds and a later one hides.
type wasteGroup struct {
	added, removed     int
	bytes              int64
	paths              []string
	deleted, overwrote bool
}

// groupWaste groups waste by (layer that added, layer that removed), in the order of the
// largest item of each group.
func groupWaste(ws []Waste) []*wasteGroup {
	var out []*wasteGroup
	byKey := map[[2]int]*wasteGroup{}
	for _, w := range ws {
		if w.Bytes <= 0 {
			continue
		}
		k := [2]int{w.AddedIn, w.RemovedIn}
		g := byKey[k]
		if g == nil {
			g = &wasteGroup{added: w.AddedIn, removed: w.RemovedIn}
			byKey[k] = g
			out = append(out, g)
		}
		g.bytes += w.Bytes
		g.paths = append(g.paths, w.Path)
		if w.Deleted {
			g.deleted = true
		} else {
			g.overwrote = true
		}
	}
	return out
}

func checkWastedBytes(a *analysis) {
	img := a.in.Image
	if img == nil {
		return
	}
	for _, g := range groupWaste(img.Waste) {
		added, okA := img.layerByIndex(g.added)
		removed, okR := img.layerByIndex(g.removed)
		if !okA {
			added = Layer{Index: g.added}
		}
		if !okR {
			removed = Layer{Index: g.removed}
		}
		verb := "deleted"
		switch {
		case g.deleted && g.overwrote:
			verb = "deleted or overwritten"
		case g.overwrote:
			verb = "overwritten"
		}
		files := fmt.Sprintf("%d files, e.g. %s", len(g.paths), listShort(g.paths[:min(3, len(g.paths))]))
		if len(g.paths) == 1 {
			files = g.paths[0]
		}
		fix := "create, use and delete them in one RUN, or use a bind or cache mount or a builder stage"
		if added.Base {
			fix = "the base image ships these files: start from a base that already has what you need (a newer tag, or a smaller image) instead of changing its files"
		}
		line := added.Line
		if added.Base || line == 0 {
			line = removed.Line
		}
		are, weigh := "are", "weigh"
		if len(g.paths) == 1 {
			are, weigh = "is", "weighs"
		}
		a.add(line, g.bytes, "%s (%s) added by %s %s %s by %s, yet still %s in the image's lower layer; %s.",
			units.Bytes(g.bytes), files, a.describeLayer(added), are, verb, a.describeLayer(removed), weigh, fix)
	}
}

func checkBaseShare(a *analysis) {
	img := a.in.Image
	if img == nil || img.CompressedBytes <= 0 || a.fired["final-stage-toolchain"] {
		return
	}
	if a.m != nil {
		if r := a.m.finalStage().image; r.static() || r.distroless() {
			return
		}
	}
	base := baseBytes(img)
	share := float64(base) / float64(img.CompressedBytes)
	if base == 0 || share <= baseImageShare {
		return
	}
	name := a.baseName()
	if name == "" {
		name = "the base image"
	}
	saving := base - staticBaseBytes
	a.add(a.finalFromLine(), saving, "The base image (%s) is %.0f%% of the image (%s of %s compressed), your own layers the rest; if the program is a static binary, gcr.io/distroless/static or scratch would save about %s, otherwise look for a -slim or alpine variant.",
		name, share*100, units.Bytes(base), units.Bytes(img.CompressedBytes), units.Bytes(max(saving, 0)))
}
