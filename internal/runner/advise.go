package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/advice"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/units"
)

// maxAdviceInResult is how many findings the result carries; the log has all of them.
const maxAdviceInResult = 5

// advise runs kiln's rules on the Dockerfile (when it is local) and on the largest platform
// image, prints every finding, and returns the most valuable ones for the status.
func (r *run) advise(in *inputs, m measure.Index) []kilnv1.Advice {
	spec := r.req.Spec
	ai := advice.Input{Dockerfile: in.dockerfile, DockerfileName: in.dockerfileName, Target: spec.Dockerfile.Target}
	if spec.Advice != nil {
		ai.Ignore = spec.Advice.Ignore
	}
	if len(spec.Dockerfile.BuildArgs) > 0 {
		// the same values solve gives BuildKit, so ARGs expand as in the build
		ai.BuildArgs = make(map[string]string, len(spec.Dockerfile.BuildArgs))
		for _, a := range spec.Dockerfile.BuildArgs {
			ai.BuildArgs[a.Name] = a.Value
		}
	}
	if in.contextDir != "" {
		entries, _ := os.ReadDir(in.contextDir)
		ai.ContextFiles = []string{}
		for _, e := range entries {
			ai.ContextFiles = append(ai.ContextFiles, e.Name())
		}
		if dt, err := os.ReadFile(filepath.Join(in.contextDir, ".dockerignore")); err == nil {
			ai.Dockerignore = dt
		}
	}
	if img, ok := largestImage(m); ok {
		ai.Image = adviceImage(in, spec.Dockerfile.Target, ai.BuildArgs, img)
	}
	findings := append(advice.Analyze(ai), r.checkFindings(ai.Ignore)...)
	if len(findings) == 0 {
		fmt.Fprintln(r.out, "Advice: none")
		return nil
	}
	fmt.Fprintf(r.out, "Advice (%d findings, largest saving first):\n", len(findings))
	var out []kilnv1.Advice
	for _, f := range findings {
		where := ""
		if f.Line > 0 {
			where = fmt.Sprintf(" (%s:%d)", in.dockerfileName, f.Line)
		}
		saving := ""
		if f.SavingBytes > 0 {
			saving = fmt.Sprintf(" [saves ~%s]", units.Bytes(f.SavingBytes))
		}
		fmt.Fprintf(r.out, "  - %s%s%s: %s\n", f.Rule, where, saving, f.Message)
		if len(out) < maxAdviceInResult {
			out = append(out, kilnv1.Advice{Rule: f.Rule, Message: f.Message, Line: int32(f.Line), SavingBytes: f.SavingBytes})
		}
	}
	return out
}

func largestImage(m measure.Index) (measure.Image, bool) {
	if len(m.Images) == 0 {
		return measure.Image{}, false
	}
	big := m.Images[0]
	for _, img := range m.Images[1:] {
		if img.CompressedBytes > big.CompressedBytes {
			big = img
		}
	}
	return big, true
}

// adviceImage is the measured image as the rules see it: layers named by their instruction (with
// the build args, as the result's layers are), and the hidden copies summed per (adding layer,
// hiding layer), exactly.
func adviceImage(in *inputs, target string, buildArgs map[string]string, img measure.Image) *advice.Image {
	origins := in.origins(target, buildArgs, img.Layers)
	out := &advice.Image{CompressedBytes: img.CompressedBytes}
	for i, l := range img.Layers {
		o := origins[i]
		out.Layers = append(out.Layers, advice.Layer{
			Index: l.Index, CompressedBytes: l.CompressedBytes, UncompressedBytes: l.UncompressedBytes,
			CreatedBy: o.CreatedBy, Line: o.Line, Base: o.Base,
		})
	}
	for _, g := range img.WasteGroups {
		path := g.Largest
		if g.Files > 1 {
			path = fmt.Sprintf("%s and %d more files", g.Largest, g.Files-1)
		}
		out.Waste = append(out.Waste, advice.Waste{Path: path, Bytes: g.Bytes, AddedIn: g.AddedIn, RemovedIn: g.RemovedIn, Deleted: g.Deleted})
	}
	return out
}

// checkFindings are BuildKit's Dockerfile check warnings as advice, after kiln's own: rule
// "buildkit-" and the check's name in kebab case (SecretsUsedInArgOrEnv is
// buildkit-secrets-used-in-arg-or-env), the check's message and its URL, its line.
// spec.advice.ignore silences one by that id.
func (r *run) checkFindings(ignore []string) []advice.Finding {
	var out []advice.Finding
	for _, w := range r.warnings {
		short := strings.TrimSpace(string(w.Short))
		check, msg, ok := strings.Cut(short, ": ")
		if !ok || strings.ContainsAny(check, " \t") || w.URL == "" {
			continue // not a Dockerfile check: BuildKit's own notes stay in the log
		}
		rule := "buildkit-" + kebab(check)
		if slices.Contains(ignore, rule) {
			continue
		}
		line := 0
		if len(w.Range) > 0 && w.Range[0] != nil && w.Range[0].Start != nil {
			line = int(w.Range[0].Start.Line)
		}
		out = append(out, advice.Finding{Rule: rule, Message: r.red.String(msg) + " (" + w.URL + ")", Line: line})
	}
	return out
}

// kebab is a CamelCase name in kebab case: JSONArgsRecommended is json-args-recommended.
func kebab(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, c := range rs {
		upper := unicode.IsUpper(c)
		if i > 0 && upper && (!unicode.IsUpper(rs[i-1]) || (i+1 < len(rs) && unicode.IsLower(rs[i+1]))) {
			b.WriteByte('-')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}
