package controllers

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

func quantity(s string) *resource.Quantity { return ptr.To(resource.MustParse(s)) }

// runnerRequest copies every field the runner reads, sizes as bytes, and nothing else.
func TestRunnerRequest(t *testing.T) {
	ib := newImageBuild("team", "app", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Source = kilnv1.Source{Git: &kilnv1.GitSource{
			URL: "http://git.example.com/app.git", Revision: "main", ContextDir: "svc",
			SecretRef: &kilnv1.LocalObjectReference{Name: "git-creds"}, PollInterval: &metav1.Duration{Duration: time.Hour}, Insecure: true,
		}}
		ib.Spec.Dockerfile = kilnv1.Dockerfile{
			Path: "build/Dockerfile", Target: "runtime", Platforms: []string{"linux/amd64", "linux/arm64"}, AllowPlatformMismatch: true,
			BuildArgs: []kilnv1.BuildArg{{Name: "VERSION", Value: "1.2"}, {Name: "EMPTY"}},
			Secrets:   []kilnv1.BuildSecret{{ID: "npm", SecretRef: kilnv1.SecretKeyReference{Name: "npm-token", Key: ".npmrc"}}},
		}
		ib.Spec.Output = kilnv1.Output{
			Image: "registry.example.com/team/app", Tags: []string{"v1", "latest"}, PushSecretRef: &kilnv1.LocalObjectReference{Name: "regcred"},
			Compression: kilnv1.CompressionZstd, Reproducible: true, Insecure: true, Provenance: kilnv1.ProvenanceMin,
		}
		ib.Generation = 4
		ib.Spec.Budget = &kilnv1.Budget{
			MaxImageSize: quantity("50Mi"), MaxLayerSize: quantity("100M"), MaxLayers: ptr.To[int32](12),
			MaxWastedSize: quantity("1500m"), MaxGrowth: quantity("0"), Enforcement: kilnv1.EnforcementWarn,
		}
		ib.Spec.Advice = &kilnv1.AdviceSpec{Ignore: []string{"no-user"}}
		ib.Spec.Cache = kilnv1.Cache{Size: quantity("20Gi"), Registry: &kilnv1.RegistryCache{Image: "registry.example.com/team/app-cache:main"}}
		ib.Spec.NodeSelector = map[string]string{"pool": "builders"}
		ib.Spec.Tolerations = []corev1.Toleration{{Key: "builders", Operator: corev1.TolerationOpExists}}
	})
	got := runnerRequest(ib, 7, true)
	want := contract.Request{
		Namespace: "team", Name: "app", Build: 7, Generation: 4, ResetCache: true,
		Spec: contract.BuildSpec{
			Source: contract.Source{Git: &contract.GitSource{
				URL: "http://git.example.com/app.git", Revision: "main", ContextDir: "svc", SecretRef: &contract.SecretRef{Name: "git-creds"}, Insecure: true,
			}},
			Dockerfile: contract.Dockerfile{
				Path: "build/Dockerfile", Target: "runtime", Platforms: []string{"linux/amd64", "linux/arm64"}, AllowPlatformMismatch: true,
				BuildArgs: []contract.BuildArg{{Name: "VERSION", Value: "1.2"}, {Name: "EMPTY"}},
				Secrets:   []contract.BuildSecret{{ID: "npm", SecretRef: contract.SecretKeyRef{Name: "npm-token", Key: ".npmrc"}}},
			},
			Output: contract.Output{
				Image: "registry.example.com/team/app", Tags: []string{"v1", "latest"}, PushSecretRef: &contract.SecretRef{Name: "regcred"},
				Compression: kilnv1.CompressionZstd, Reproducible: true, Insecure: true, Provenance: kilnv1.ProvenanceMin, SBOM: true,
			},
			Budget: &contract.BudgetSpec{
				MaxImageSize: ptr.To[int64](50 << 20), MaxLayerSize: ptr.To[int64](100_000_000), MaxLayers: ptr.To[int32](12),
				MaxWastedSize: ptr.To[int64](2), // 1.5 bytes, rounded up as Quantity.Value does
				MaxGrowth:     ptr.To[int64](0), Enforcement: kilnv1.EnforcementWarn,
			},
			Advice: &contract.AdviceSpec{Ignore: []string{"no-user"}},
			Cache:  &contract.Cache{Registry: &contract.RegistryCache{Image: "registry.example.com/team/app-cache:main", Mode: kilnv1.RegistryCacheMax}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request\n got %+v\nwant %+v", got, want)
	}

	// The request shares no memory with the ImageBuild.
	got.Spec.Output.Tags[0], got.Spec.Dockerfile.BuildArgs[0].Value, got.Spec.Advice.Ignore[0] = "x", "x", "x"
	*got.Spec.Budget.MaxLayers = 1
	if ib.Spec.Output.Tags[0] != "v1" || ib.Spec.Dockerfile.BuildArgs[0].Value != "1.2" || ib.Spec.Advice.Ignore[0] != "no-user" || *ib.Spec.Budget.MaxLayers != 12 {
		t.Errorf("changing the request changed the ImageBuild: %+v", ib.Spec)
	}

	// What the runner does not read stays out of the request.
	files, err := contract.RequestFiles(runnerRequest(ib, 7, false))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Spec map[string]json.RawMessage }
	if err := json.Unmarshal([]byte(files[contract.RequestFile]), &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range doc.Spec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"advice", "budget", "cache", "dockerfile", "output", "source"}) {
		t.Errorf("the request's spec has %v", keys)
	}
	var cache map[string]json.RawMessage
	if err := json.Unmarshal(doc.Spec["cache"], &cache); err != nil || len(cache) != 1 || cache["registry"] == nil {
		t.Errorf("the request's spec.cache is %s: want the registry cache only, not the claim", doc.Spec["cache"])
	}
}

// A spec without a budget, advice or Secrets gives a request without them, and a ConfigMap source
// stays one.
func TestRunnerRequestOfAMinimalSpec(t *testing.T) {
	ib := newImageBuild("team", "min")
	got := runnerRequest(ib, 1, false).Spec
	if got.Budget != nil || got.Advice != nil || got.Output.PushSecretRef != nil || got.Dockerfile.BuildArgs != nil || got.Dockerfile.Secrets != nil {
		t.Errorf("%+v", got)
	}
	if got.Source.Git != nil || got.Source.ConfigMap == nil || got.Source.ConfigMap.Name != "hello-src" {
		t.Errorf("source %+v", got.Source)
	}
	if got.Output.Provenance != kilnv1.ProvenanceMax || !got.Output.SBOM {
		t.Errorf("provenance %q, SBOM %v for a spec without them (stored before the CRD defaulted them): want max and true", got.Output.Provenance, got.Output.SBOM)
	}
}

// The request names the image pushed last and its package sizes, when status.size describes it,
// so that the runner may reuse the SBOM of an unchanged platform image.
func TestRunnerRequestNamesThePreviousImage(t *testing.T) {
	ib := newImageBuild("team", "app")
	if p := runnerRequest(ib, 1, false).Previous; p != nil {
		t.Errorf("previous %+v before anything was pushed", p)
	}
	image := "registry.example.com/team/app@sha256:" + strings.Repeat("a", 64)
	ib.Status.Digest, ib.Status.Image = "sha256:"+strings.Repeat("a", 64), image
	pkgs := []kilnv1.PackageSize{{Name: "busybox 1.36", Type: "binary", Bytes: 1 << 20, Files: 1}}
	ib.Status.Size = &kilnv1.ImageSize{Image: image, Pushed: true, Platforms: []kilnv1.PlatformSize{{Platform: "linux/amd64", LargestPackages: pkgs, UnpackagedBytes: 42}}}
	want := &contract.PreviousImage{Digest: ib.Status.Digest, Platforms: []contract.PreviousPlatform{{
		Platform: "linux/amd64", LargestPackages: []contract.PackageSize{{Name: "busybox 1.36", Type: "binary", Bytes: 1 << 20, Files: 1}}, UnpackagedBytes: 42}}}
	if got := runnerRequest(ib, 2, false).Previous; !reflect.DeepEqual(got, want) {
		t.Errorf("previous %+v, want %+v", got, want)
	}
	// The last measured image was refused by its budget: status.size is not the pushed image.
	ib.Status.Size.Pushed, ib.Status.Size.Image = false, "registry.example.com/team/app@sha256:"+strings.Repeat("b", 64)
	if p := runnerRequest(ib, 3, false).Previous; p == nil || p.Digest != ib.Status.Digest || p.Platforms != nil {
		t.Errorf("previous %+v: want the pushed digest without sizes (status.size describes an image that was not pushed)", p)
	}
}
