package budget

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// q is a limit as the manager puts it in the request: the spec's quantity, in bytes.
func q(s string) *int64 {
	v := resource.MustParse(s)
	return ptr.To(v.Value())
}

var amd64 = contract.Platform{
	Platform: "linux/amd64", CompressedBytes: 64_172_851, Layers: 6, WastedBytes: 10 << 20,
	LargestLayers: []contract.Layer{
		{Index: 4, CompressedBytes: 39_845_888, CreatedBy: "RUN apt-get install -y build-essential", Line: 12},
		{Index: 0, CompressedBytes: 20_000_000, CreatedBy: "base image debian:12"},
	},
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name        string
		budget      *contract.BudgetSpec
		images      []contract.Platform
		baseline    map[string]int64
		verdict     kilnv1.Verdict
		summary     string
		firstMsg    string
		enforcement kilnv1.Enforcement
	}{
		{name: "no budget", budget: nil, images: []contract.Platform{amd64}, verdict: kilnv1.VerdictWithinBudget, summary: "no budget"},
		{name: "image over, as the design's example",
			budget: &contract.BudgetSpec{MaxImageSize: q("50Mi")}, images: []contract.Platform{amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "61.2MiB/50Mi (+11.2MiB)", enforcement: kilnv1.EnforcementEnforce,
			firstMsg: "linux/amd64: 61.2MiB is 11.2MiB over maxImageSize 50Mi; largest layer 38.0MiB from RUN apt-get install -y build-essential (Dockerfile:12)"},
		{name: "image within", budget: &contract.BudgetSpec{MaxImageSize: q("100Mi")}, images: []contract.Platform{amd64},
			verdict: kilnv1.VerdictWithinBudget, summary: "61.2MiB/100Mi", firstMsg: "linux/amd64: 61.2MiB is within maxImageSize 100Mi (38.8MiB to spare)"},
		{name: "exactly at the limit is within", budget: &contract.BudgetSpec{MaxImageSize: ptr.To[int64](64_172_851)}, images: []contract.Platform{amd64},
			verdict: kilnv1.VerdictWithinBudget, summary: "61.2MiB/64172851"},
		{name: "layer over", budget: &contract.BudgetSpec{MaxLayerSize: q("20Mi")}, images: []contract.Platform{amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "over maxLayerSize",
			firstMsg: "linux/amd64: layer 4 is 38.0MiB, 18.0MiB over maxLayerSize 20Mi, from RUN apt-get install -y build-essential (Dockerfile:12)"},
		{name: "too many layers", budget: &contract.BudgetSpec{MaxLayers: ptr.To[int32](4)}, images: []contract.Platform{amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "over maxLayers", firstMsg: "linux/amd64: 6 layers is 2 over maxLayers 4"},
		{name: "waste over", budget: &contract.BudgetSpec{MaxWastedSize: q("1Mi")}, images: []contract.Platform{amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "over maxWastedSize",
			firstMsg: "linux/amd64: 10.0MiB wasted is 9.0MiB over maxWastedSize 1Mi (files a layer adds and a later layer deletes or overwrites)"},
		{name: "growth over", budget: &contract.BudgetSpec{MaxGrowth: q("1Mi")}, images: []contract.Platform{amd64}, baseline: map[string]int64{"linux/amd64": 60_000_000},
			verdict: kilnv1.VerdictOverBudget, summary: "over maxGrowth", firstMsg: "linux/amd64: grew 4.0MiB (57.2MiB to 61.2MiB), 3.0MiB over maxGrowth 1Mi"},
		{name: "growth without a previous image is not checked", budget: &contract.BudgetSpec{MaxGrowth: q("0")}, images: []contract.Platform{amd64},
			verdict: kilnv1.VerdictWithinBudget, summary: "within budget"},
		{name: "shrinking is within a zero growth budget", budget: &contract.BudgetSpec{MaxGrowth: q("0")}, images: []contract.Platform{amd64}, baseline: map[string]int64{"linux/amd64": 70_000_000},
			verdict: kilnv1.VerdictWithinBudget, firstMsg: "linux/amd64: changed by -5.6MiB (66.8MiB to 61.2MiB), within maxGrowth 0"},
		{name: "warn keeps the verdict", budget: &contract.BudgetSpec{MaxImageSize: q("50Mi"), Enforcement: kilnv1.EnforcementWarn}, images: []contract.Platform{amd64},
			verdict: kilnv1.VerdictOverBudget, enforcement: kilnv1.EnforcementWarn, summary: "61.2MiB/50Mi (+11.2MiB)"},
		{name: "per platform: the worst platform leads", budget: &contract.BudgetSpec{MaxImageSize: q("60Mi")},
			images:  []contract.Platform{{Platform: "linux/arm64", CompressedBytes: 30 << 20}, amd64},
			verdict: kilnv1.VerdictOverBudget, summary: "61.2MiB/60Mi (+1.2MiB)", firstMsg: "linux/amd64: 61.2MiB is 1.2MiB over maxImageSize 60Mi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := Status(Judge(tc.budget, tc.images, tc.baseline), tc.images)
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

// Broken checks lead by how far they go past their limit relative to it: 6 layers against 4 (50%
// over) is worse than 61.2MiB against 60Mi (2% over), though 2 layers are fewer than 1.2MiB.
// Passed checks follow, the nearest to its limit first; any growth past a maxGrowth of 0 is
// worse than everything.
func TestOrderByRelativeExcess(t *testing.T) {
	b := &contract.BudgetSpec{MaxImageSize: q("60Mi"), MaxLayers: ptr.To[int32](4), MaxWastedSize: q("20Mi"), MaxLayerSize: q("100Mi")}
	arm := contract.Platform{Platform: "linux/arm64", CompressedBytes: 30 << 20, Layers: 4, WastedBytes: 19 << 20}
	got := Judge(b, []contract.Platform{arm, amd64}, nil)
	want := []string{
		"maxLayers linux/amd64", "maxImageSize linux/amd64", // over by 50%, 2%
		"maxLayers linux/arm64", "maxWastedSize linux/arm64", // at 100%, 95%
		"maxImageSize linux/arm64", "maxWastedSize linux/amd64", // 50% each: in Judge's order
		"maxLayerSize linux/amd64", "maxLayerSize linux/arm64", // 38%, 0%
	}
	var order []string
	for _, c := range got.Checks {
		order = append(order, c.Limit+" "+c.Platform)
	}
	if strings.Join(order, ", ") != strings.Join(want, ", ") {
		t.Errorf("order:\n got %s\nwant %s", strings.Join(order, ", "), strings.Join(want, ", "))
	}

	grew := Judge(&contract.BudgetSpec{MaxGrowth: q("0"), MaxLayers: ptr.To[int32](1)}, []contract.Platform{amd64}, map[string]int64{"linux/amd64": 64_172_850})
	if c := grew.Checks[0]; c.Limit != MaxGrowth || !c.Over() {
		t.Errorf("one byte of growth past maxGrowth 0 is not the worst: %+v", grew.Checks)
	}
	st := Status(grew, []contract.Platform{amd64})
	if st.Summary != "over maxGrowth,maxLayers" || !strings.HasPrefix(Message(st), "linux/amd64: grew 1B (61.2MiB to 61.2MiB), 1B over maxGrowth 0; linux/amd64: 6 layers is 5 over maxLayers 1") {
		t.Errorf("summary %q, message %q", st.Summary, Message(st))
	}
}

// Status reads what a runner sent, however it ordered it and whatever it left out.
func TestStatusOfWhatRunnersSend(t *testing.T) {
	// A 1.0 runner sent a budget without enforcement when the spec had none, checks ordered by
	// headroom, and no layers once Fit had dropped them.
	if st := Status(&contract.Budget{}, []contract.Platform{amd64}); st.Summary != "no budget" || st.Verdict != kilnv1.VerdictWithinBudget {
		t.Errorf("a 1.0 runner's budget of no budget: %+v", st)
	}
	noLayers := amd64
	noLayers.LargestLayers = nil
	st := Status(&contract.Budget{Enforcement: kilnv1.EnforcementEnforce, Checks: []contract.Check{
		{Limit: MaxImageSize, Platform: "linux/amd64", LimitValue: 60 << 20, Actual: 64_172_851},
		{Limit: MaxLayerSize, Platform: "linux/amd64", LimitValue: 20 << 20, Actual: 39_845_888},
		{Limit: "maxFutureLimit", Platform: "linux/amd64", LimitValue: 10, Actual: 11},
	}}, []contract.Platform{noLayers})
	want := []string{
		"linux/amd64: a layer is 38.0MiB, 18.0MiB over maxLayerSize 20Mi",
		"linux/amd64: maxFutureLimit is 11, limit 10",
		"linux/amd64: 61.2MiB is 1.2MiB over maxImageSize 60Mi",
	}
	if st.Verdict != kilnv1.VerdictOverBudget || len(st.Checks) != 3 {
		t.Fatalf("status %+v", st)
	}
	for i, c := range st.Checks {
		if c.Message != want[i] || c.Headroom != c.LimitValue-c.Actual {
			t.Errorf("check %d: %q (headroom %d), want %q", i, c.Message, c.Headroom, want[i])
		}
	}
	if st.Summary != "61.2MiB/60Mi (+1.2MiB)" {
		t.Errorf("summary %q", st.Summary)
	}
}

func TestQuantity(t *testing.T) {
	for n, want := range map[int64]string{52_428_800: "50Mi", 100_000_000: "100M", 64_172_851: "64172851", 0: "0", 1_610_612_736: "1536Mi", 5000: "5k",
		512_000: "500Ki", 1 << 30: "1Gi", 1_000_000_000: "1G"} {
		if got := quantity(n); got != want {
			t.Errorf("quantity(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestBrokenLimitsNameTheirLayerAndLine: the waste and growth messages name the layers and the
// Dockerfile lines at fault, and Message says every broken limit, not just the worst (issue 19
// item 3).
func TestBrokenLimitsNameTheirLayerAndLine(t *testing.T) {
	img := amd64
	img.LargestWaste = &contract.Waste{Bytes: 9 << 20, Files: 312, Largest: "/var/cache/apt/archives/gcc-12.deb", Deleted: true,
		Added:   contract.Layer{Index: 3, CreatedBy: "RUN apt-get install -y build-essential", Line: 12},
		Removed: contract.Layer{Index: 4, CreatedBy: "RUN rm -rf /var/cache/apt", Line: 14}}
	b := Judge(&contract.BudgetSpec{MaxWastedSize: q("1Mi"), MaxGrowth: q("1Mi"), MaxLayers: ptr.To[int32](4)},
		[]contract.Platform{img}, map[string]int64{"linux/amd64": 60_000_000})
	for i := range b.Checks {
		if b.Checks[i].Limit == MaxGrowth {
			b.Checks[i].Layer = &img.LargestLayers[0] // what the runner's blameGrowth sets
		}
	}
	st := Status(b, []contract.Platform{img})
	msg := Message(st)
	for _, want := range []string{
		"9.0MiB in 312 files (largest /var/cache/apt/archives/gcc-12.deb), RUN apt-get install -y build-essential (Dockerfile:12) added and RUN rm -rf /var/cache/apt (Dockerfile:14) deleted",
		"the largest layer the current image lacks is 38.0MiB from RUN apt-get install -y build-essential (Dockerfile:12)",
		"6 layers is 2 over maxLayers 4",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message does not say %q:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "; linux/amd64: "); n != 2 {
		t.Errorf("message has %d broken limits after the first, want all three:\n%s", n, msg)
	}
}
