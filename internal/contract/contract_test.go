package contract

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// worstCase is a result as large as a real build can make one: two platforms with many layers
// whose instructions are long, every budget limit broken, a long failure message, many tags and
// findings.
func worstCase() Result {
	long := strings.Repeat("RUN apt-get update && apt-get install -y build-essential ca-certificates curl git ", 8)
	r := Result{
		Digest: "sha256:" + strings.Repeat("ab", 32),
		Image:  "registry.example.com/some-team/some-very-long-application-name@sha256:" + strings.Repeat("ab", 32),
		Pushed: true, Revision: strings.Repeat("0123456789", 4),
		AttestationBytes: 12_345, CachedSteps: 120, TotalSteps: 130,
		FailureClass: kilnv1.FailureOverBudget, Message: strings.Repeat("ünïcödé message ", 400),
		LogTail: strings.Repeat("#12 0.123 some build output line\n", 200),
	}
	for i := 0; i < 16; i++ {
		r.Tags = append(r.Tags, fmt.Sprintf("release-2026.11.%02d-%s", i, strings.Repeat("x", 100)))
	}
	r.Budget = &Budget{Enforcement: kilnv1.EnforcementEnforce}
	for _, p := range []string{"linux/amd64", "linux/arm64/v8"} {
		ps := Platform{Platform: p, CompressedBytes: 64_172_851, UncompressedBytes: 190_000_000, Layers: 40, WastedBytes: 10 << 20}
		for i := 0; i < 10; i++ {
			ps.LargestLayers = append(ps.LargestLayers, Layer{Index: int32(i), CompressedBytes: int64(40-i) << 20, CreatedBy: long, Line: int32(10 + i)})
			ps.LargestPackages = append(ps.LargestPackages, PackageSize{Name: long, Type: "deb", Bytes: int64(40-i) << 20, Files: 100})
		}
		r.Platforms = append(r.Platforms, ps)
		r.Attestations = append(r.Attestations, Attestation{Platform: p, Manifest: "sha256:" + strings.Repeat("1a", 32),
			Provenance: "sha256:" + strings.Repeat("2b", 32), SBOM: "sha256:" + strings.Repeat("3c", 32)})
		for _, l := range []string{"maxImageSize", "maxLayerSize", "maxLayers", "maxWastedSize", "maxGrowth"} {
			r.Budget.Checks = append(r.Budget.Checks, Check{Limit: l, Platform: p, LimitValue: 52_428_800, Actual: 64_172_851})
		}
	}
	for i := 0; i < 20; i++ {
		r.Advice = append(r.Advice, Advice{Rule: "apt-no-recommends", Message: long, Line: int32(i), SavingBytes: int64(i) << 20})
	}
	return r
}

func TestWorstCaseFitsTerminationMessage(t *testing.T) {
	b, err := worstCase().Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxResultBytes {
		t.Fatalf("encoded result is %d bytes, over %d", len(b), MaxResultBytes)
	}
	got, err := Decode(string(b))
	if err != nil {
		t.Fatal(err)
	}
	want := worstCase()
	// The most valuable fields survive whole.
	if got.Digest != want.Digest || got.Image != want.Image || got.FailureClass != want.FailureClass || got.Revision != want.Revision {
		t.Errorf("identity fields changed: %+v", got)
	}
	if len(got.Platforms) != 2 {
		t.Fatalf("platforms %d, want 2", len(got.Platforms))
	}
	for i, p := range got.Platforms {
		w := want.Platforms[i]
		if p.Platform != w.Platform || p.CompressedBytes != w.CompressedBytes || p.UncompressedBytes != w.UncompressedBytes || p.Layers != w.Layers || p.WastedBytes != w.WastedBytes {
			t.Errorf("platform %d sizes changed: %+v", i, p)
		}
	}
	if !got.Budget.Over() || got.Budget.Enforcement != want.Budget.Enforcement || got.Budget.Checks[0] != want.Budget.Checks[0] {
		t.Errorf("budget verdict lost: %+v", got.Budget)
	}
	if got.Version != Version {
		t.Errorf("version %q, want %q", got.Version, Version)
	}
	if got.CachedSteps != 120 || got.TotalSteps != 130 || got.Message == "" {
		t.Errorf("steps or message lost: %d/%d %q", got.CachedSteps, got.TotalSteps, got.Message)
	}
	if !json.Valid(b) {
		t.Error("not valid JSON after truncation")
	}
	t.Logf("worst case encodes in %d bytes", len(b))
}

func TestSmallResultIsNotShortened(t *testing.T) {
	r := Result{Digest: "sha256:00", Tags: []string{"v1"}, Advice: []Advice{{Rule: "a", Message: "m"}, {Rule: "b", Message: "m"}, {Rule: "c", Message: "m"}, {Rule: "d", Message: "m"}}}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := Decode(string(b))
	if len(got.Advice) != 4 {
		t.Errorf("advice shortened to %d though the result is small", len(got.Advice))
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdefghij", 8, "abcde…"},
		{"ééééé", 7, "éé…"},
	} {
		if got := Truncate(tc.in, tc.n); got != tc.want || len(got) > tc.n {
			t.Errorf("Truncate(%q, %d) = %q", tc.in, tc.n, got)
		}
	}
	if got := TruncateStart("line1\nline2\nline3", 9); got != "…\nline3" || len(got) > 9 {
		t.Errorf("TruncateStart = %q", got)
	}
}

func TestExitCodes(t *testing.T) {
	seen := map[int]kilnv1.FailureClass{}
	for _, c := range []kilnv1.FailureClass{"", kilnv1.FailureBadInput, kilnv1.FailureBuildFailed, kilnv1.FailureOverBudget, kilnv1.FailurePushFailed, kilnv1.FailureBuildKitNotUp, kilnv1.FailureInternal} {
		code := ExitCode(c)
		if other, dup := seen[code]; dup {
			t.Errorf("classes %q and %q share exit code %d", c, other, code)
		}
		seen[code] = c
	}
}

// TestFitKeepsAttestationManifests: eight platforms, each with its attestation manifest, its
// provenance and SBOM statements and its largest layers, and ten long tags, do not fit whole;
// the layers go, then the statements' digests, and the attestation manifests and the tags stay.
func TestFitKeepsAttestationManifests(t *testing.T) {
	r := Result{Digest: "sha256:" + strings.Repeat("ab", 32), Image: "registry.example.com/team/app@sha256:" + strings.Repeat("ab", 32), Pushed: true}
	for i := range 10 {
		r.Tags = append(r.Tags, fmt.Sprintf("release-%02d-%s", i, strings.Repeat("x", 80)))
	}
	for i := range 8 {
		p := fmt.Sprintf("linux/arch%d", i)
		ps := Platform{Platform: p, CompressedBytes: 64_172_851, UncompressedBytes: 190_000_000, Layers: 40}
		for j := range 5 {
			ps.LargestLayers = append(ps.LargestLayers, Layer{Index: int32(j), CompressedBytes: 1 << 20, CreatedBy: strings.Repeat("RUN x ", 20), Line: int32(j)})
		}
		r.Platforms = append(r.Platforms, ps)
		r.Attestations = append(r.Attestations, Attestation{Platform: p, Manifest: fmt.Sprintf("sha256:%064d", i),
			Provenance: "sha256:" + strings.Repeat("2b", 32), SBOM: "sha256:" + strings.Repeat("3c", 32)})
	}
	b, err := r.Encode()
	if err != nil || len(b) > MaxResultBytes {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	got, err := Decode(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Tags) != 10 || len(got.Platforms[0].LargestLayers) != 0 {
		t.Errorf("%d tags and %d layers kept, want 10 and 0", len(got.Tags), len(got.Platforms[0].LargestLayers))
	}
	if len(got.Attestations) != 8 {
		t.Fatalf("%d attestations kept, want 8", len(got.Attestations))
	}
	for i, a := range got.Attestations {
		if a.Manifest != r.Attestations[i].Manifest || a.Platform != r.Attestations[i].Platform || a.Provenance != "" || a.SBOM != "" {
			t.Errorf("attestation %d: %+v, want the manifest and platform without statement digests", i, a)
		}
	}
	t.Logf("encodes in %d bytes", len(b))
}
