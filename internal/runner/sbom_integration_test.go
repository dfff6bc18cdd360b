package runner

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestSBOMWithRealBuildKit (issue 15): the runner attaches an SPDX SBOM per platform image,
// made with syft from the exported image (no scanner image), in the image's attestation
// manifest beside BuildKit's provenance, or in one of its own without provenance. The SBOM of
// the busybox-based image lists busybox, that of the Go hello build its Go module.
func TestSBOMWithRealBuildKit(t *testing.T) {
	e := newEnv(t)
	e.golang = testenv.GoImage(t, e.reg)
	build := func(t *testing.T, img string, files map[string]string, mode kilnv1.ProvenanceMode) (contract.Result, map[string]any) {
		t.Helper()
		req := e.request(img, func(s *contract.BuildSpec) { s.Output.Provenance, s.Output.SBOM = mode, true })
		res, log, _ := e.runLogged(t, req, e.paths(t, files), 10*time.Minute)
		if res.FailureClass != "" {
			t.Fatalf("build failed: %s: %s", res.FailureClass, res.Message)
		}
		if !strings.Contains(log, "SBOM linux/amd64: ") {
			t.Errorf("the log does not report the SBOM")
		}
		if len(res.Attestations) != 1 || res.Attestations[0].SBOM == "" || (res.Attestations[0].Provenance != "") != (mode != kilnv1.ProvenanceNone) {
			t.Fatalf("result attestations %+v", res.Attestations)
		}
		idx, err := e.get(t, req.Spec.Output.Image+"@"+res.Digest).ImageIndex()
		if err != nil {
			t.Fatalf("the pushed image is no index: %v", err)
		}
		a := res.Attestations[0]
		att, err := idx.Image(v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(a.Manifest, "sha256:")})
		if err != nil {
			t.Fatalf("attestation manifest %s: %v", a.Manifest, err)
		}
		layers, _ := att.Layers()
		var st struct {
			PredicateType string `json:"predicateType"`
			Subject       []struct {
				Digest map[string]string `json:"digest"`
			} `json:"subject"`
			Predicate map[string]any `json:"predicate"`
		}
		for _, l := range layers {
			if dg, _ := l.Digest(); dg.String() == a.SBOM {
				rc, err := l.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(rc)
				_ = rc.Close()
				if err := json.Unmarshal(raw, &st); err != nil {
					t.Fatal(err)
				}
			}
		}
		im, _ := idx.IndexManifest()
		var image string
		for _, m := range im.Manifests {
			if m.Annotations["vnd.docker.reference.type"] == "" {
				image = m.Digest.Hex
			}
		}
		if st.PredicateType != "https://spdx.dev/Document" || len(st.Subject) != 1 || st.Subject[0].Digest["sha256"] != image {
			t.Errorf("SBOM statement %s about %+v: want SPDX about the image %s", st.PredicateType, st.Subject, image)
		}
		return res, st.Predicate
	}
	names := func(doc map[string]any) []string {
		var out []string
		pkgs, _ := doc["packages"].([]any)
		for _, p := range pkgs {
			if m, ok := p.(map[string]any); ok {
				out = append(out, m["name"].(string))
			}
		}
		return out
	}
	busybox := map[string]string{"Dockerfile": "FROM " + e.busybox + "\nCOPY hello.txt /\n", "hello.txt": "hi\n"}

	t.Run("busybox, with provenance; sizes by package add up", func(t *testing.T) {
		res, doc := build(t, "sbom-busybox", busybox, kilnv1.ProvenanceMax)
		if n := names(doc); !containsFold(n, "busybox") {
			t.Errorf("the SBOM's packages %v do not list busybox", n)
		}
		// The measured final filesystem of the pushed image, read back from the registry.
		idx, err := e.get(t, e.reg.Addr+"/test/sbom-busybox@"+res.Digest).ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		m, err := measure.MeasureIndex(idx)
		if err != nil || len(m.Images) != 1 {
			t.Fatalf("measuring the pushed image: %v", err)
		}
		var total int64
		seen := map[int]bool{}
		for _, f := range m.Images[0].Files {
			if !seen[f.Data] {
				seen[f.Data] = true
				total += f.Size
			}
		}
		p := res.Platforms[0]
		var packaged int64
		for _, k := range p.LargestPackages {
			packaged += k.Bytes
		}
		if len(p.LargestPackages) != 1 || !strings.HasPrefix(p.LargestPackages[0].Name, "busybox") ||
			p.LargestPackages[0].Bytes != m.Images[0].Files["bin/busybox"].Size || packaged+p.UnpackagedBytes != total {
			t.Errorf("packages %+v and %d unpackaged bytes: want busybox with the size of bin/busybox (%d), adding up to the files' %d bytes",
				p.LargestPackages, p.UnpackagedBytes, m.Images[0].Files["bin/busybox"].Size, total)
		}
	})
	t.Run("busybox, without provenance", func(t *testing.T) { build(t, "sbom-alone", busybox, kilnv1.ProvenanceNone) })
	t.Run("an image pushed before keeps its SBOM", func(t *testing.T) {
		first, _ := build(t, "sbom-reuse", busybox, kilnv1.ProvenanceMax)
		prev := &contract.PreviousImage{Digest: first.Digest, Platforms: []contract.PreviousPlatform{{
			Platform: "linux/amd64", LargestPackages: first.Platforms[0].LargestPackages, UnpackagedBytes: first.Platforms[0].UnpackagedBytes}}}
		again := func(files map[string]string, prev *contract.PreviousImage) (contract.Result, string) {
			req := e.request("sbom-reuse", func(s *contract.BuildSpec) { s.Output.Provenance, s.Output.SBOM = kilnv1.ProvenanceMax, true })
			req.Previous = prev
			res, log, _ := e.runLogged(t, req, e.paths(t, files), 10*time.Minute)
			if res.FailureClass != "" || len(res.Attestations) != 1 {
				t.Fatalf("build failed: %s: %s (attestations %+v)", res.FailureClass, res.Message, res.Attestations)
			}
			return res, log
		}
		res, log := again(busybox, prev)
		if !strings.Contains(log, "its SBOM is reused") || !strings.Contains(log, "SBOMs reused from the last pushed image") {
			t.Errorf("the unchanged image was scanned again:\n%s", log)
		}
		if res.Attestations[0].SBOM != first.Attestations[0].SBOM {
			t.Errorf("SBOM statement %s, the first build's %s: want the same statement", res.Attestations[0].SBOM, first.Attestations[0].SBOM)
		}
		if got, want := res.Platforms[0].LargestPackages, first.Platforms[0].LargestPackages; len(got) != len(want) || got[0] != want[0] || res.Platforms[0].UnpackagedBytes != first.Platforms[0].UnpackagedBytes {
			t.Errorf("package sizes %+v, the first build's %+v", got, want)
		}

		changed := map[string]string{"Dockerfile": busybox["Dockerfile"], "hello.txt": "changed\n"}
		res, log = again(changed, prev)
		if strings.Contains(log, "its SBOM is reused") || res.Attestations[0].SBOM == first.Attestations[0].SBOM {
			t.Errorf("a changed image kept the SBOM of another:\n%s", log)
		}
		bogus := &contract.PreviousImage{Digest: "sha256:" + strings.Repeat("0", 64)}
		if _, log = again(busybox, bogus); !strings.Contains(log, "Cannot reuse the SBOMs of") || !strings.Contains(log, "SBOMs made with syft") {
			t.Errorf("a previous image that cannot be read: want the SBOM made anew, and why:\n%s", log)
		}
	})
	t.Run("Go hello", func(t *testing.T) {
		res, doc := build(t, "sbom-hello", helloFiles(e.golang, "hello, SBOM"), kilnv1.ProvenanceMax)
		if n := names(doc); !containsFold(n, "example.com/hello") {
			t.Errorf("the SBOM's packages %v do not list the Go module example.com/hello", n)
		}
		// The binary's modules own one file together: one group, the whole binary.
		if pk := res.Platforms[0].LargestPackages; len(pk) != 1 || !strings.Contains(pk[0].Name, "example.com/hello") || pk[0].Files != 1 || pk[0].Type != "go-module" {
			t.Errorf("packages %+v: want the Go modules of /hello as one group", pk)
		}
	})
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
