package budget

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

func q(s string) *resource.Quantity { return ptr.To(resource.MustParse(s)) }

var amd64 = kilnv1.PlatformSize{
	Platform: "linux/amd64", CompressedBytes: 64_172_851, Layers: 6, WastedBytes: 10 << 20,
	LargestLayers: []kilnv1.LayerSize{
		{Index: 4, CompressedBytes: 39_845_888, CreatedBy: "RUN apt-get install -y build-essential", Line: 12},
		{Index: 0, CompressedBytes: 20_000_000, CreatedBy: "base image debian:12"},
	},
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name        string
		budget      *kilnv1.Budget
		images      []kilnv1.PlatformSize
		baseline    map[string]int64
		verdict     kilnv1.Verdict
		summary     string
		firstMsg    string
		enforcement kilnv1.Enforcement
	}{
		{name: "no budget", budget: nil, images: []kilnv1.PlatformSize{amd64}, verdict: kilnv1.VerdictWithinBudget, summary: "no budget"},
		{name: "image over, as the design's example",
			budget: &kilnv1.Budget{MaxImageSize: q("50Mi")}, images: []kilnv1.PlatformSize{amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "61.2MiB/50Mi (+11.2MiB)", enforcement: kilnv1.EnforcementEnforce,
			firstMsg: "linux/amd64: 61.2MiB is 11.2MiB over maxImageSize 50Mi; largest layer 38.0MiB from RUN apt-get install -y build-essential (Dockerfile:12)"},
		{name: "image within", budget: &kilnv1.Budget{MaxImageSize: q("100Mi")}, images: []kilnv1.PlatformSize{amd64},
			verdict: kilnv1.VerdictWithinBudget, summary: "61.2MiB/100Mi", firstMsg: "linux/amd64: 61.2MiB is within maxImageSize 100Mi (38.8MiB to spare)"},
		{name: "exactly at the limit is within", budget: &kilnv1.Budget{MaxImageSize: resource.NewQuantity(64_172_851, resource.DecimalSI)}, images: []kilnv1.PlatformSize{amd64},
			verdict: kilnv1.VerdictWithinBudget, summary: "61.2MiB/64172851"},
		{name: "layer over", budget: &kilnv1.Budget{MaxLayerSize: q("20Mi")}, images: []kilnv1.PlatformSize{amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "over maxLayerSize",
			firstMsg: "linux/amd64: layer 4 is 38.0MiB, 18.0MiB over maxLayerSize 20Mi, from RUN apt-get install -y build-essential (Dockerfile:12)"},
		{name: "too many layers", budget: &kilnv1.Budget{MaxLayers: ptr.To[int32](4)}, images: []kilnv1.PlatformSize{amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "over maxLayers", firstMsg: "linux/amd64: 6 layers is 2 over maxLayers 4"},
		{name: "waste over", budget: &kilnv1.Budget{MaxWastedSize: q("1Mi")}, images: []kilnv1.PlatformSize{amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "over maxWastedSize",
			firstMsg: "linux/amd64: 10.0MiB wasted is 9.0MiB over maxWastedSize 1Mi (files a layer adds and a later layer deletes or overwrites)"},
		{name: "growth over", budget: &kilnv1.Budget{MaxGrowth: q("1Mi")}, images: []kilnv1.PlatformSize{amd64}, baseline: map[string]int64{"linux/amd64": 60_000_000},
			verdict: kilnv1.VerdictOverBudget, summary: "over maxGrowth", firstMsg: "linux/amd64: grew 4.0MiB (57.2MiB to 61.2MiB), 3.0MiB over maxGrowth 1Mi"},
		{name: "growth without a previous image is not checked", budget: &kilnv1.Budget{MaxGrowth: q("0")}, images: []kilnv1.PlatformSize{amd64},
			verdict: kilnv1.VerdictWithinBudget, summary: "within budget"},
		{name: "shrinking is within a zero growth budget", budget: &kilnv1.Budget{MaxGrowth: q("0")}, images: []kilnv1.PlatformSize{amd64}, baseline: map[string]int64{"linux/amd64": 70_000_000},
			verdict: kilnv1.VerdictWithinBudget, firstMsg: "linux/amd64: changed by -5.6MiB (66.8MiB to 61.2MiB), within maxGrowth 0"},
		{name: "warn keeps the verdict", budget: &kilnv1.Budget{MaxImageSize: q("50Mi"), Enforcement: kilnv1.EnforcementWarn}, images: []kilnv1.PlatformSize{amd64},
			verdict: kilnv1.VerdictOverBudget, enforcement: kilnv1.EnforcementWarn, summary: "61.2MiB/50Mi (+11.2MiB)"},
		{name: "per platform: the worst platform leads", budget: &kilnv1.Budget{MaxImageSize: q("60Mi")},
			images:  []kilnv1.PlatformSize{{Platform: "linux/arm64", CompressedBytes: 30 << 20}, amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "61.2MiB/60Mi (+1.2MiB)", firstMsg: "linux/amd64: 61.2MiB is 1.2MiB over maxImageSize 60Mi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := Judge(tc.budget, tc.images, tc.baseline)
			if st.Verdict != tc.verdict {
				t.Errorf("verdict %s, want %s (%+v)", st.Verdict, tc.verdict, st.Checks)
			}
			if tc.summary != "" && st.Summary != tc.summary {
				t.Errorf("summary %q, want %q", st.Summary, tc.summary)
			}
			if tc.enforcement != "" && st.Enforcement != tc.enforcement {
				t.Errorf("enforcement %s, want %s", st.Enforcement, tc.enforcement)
			}
			if tc.firstMsg != "" {
				if len(st.Checks) == 0 || !strings.HasPrefix(st.Checks[0].Message, tc.firstMsg) {
					t.Errorf("first check message:\n got %q\nwant %q", first(st), tc.firstMsg)
				}
			}
		})
	}
}

func first(st kilnv1.BudgetStatus) string {
	if len(st.Checks) == 0 {
		return ""
	}
	return st.Checks[0].Message
}
