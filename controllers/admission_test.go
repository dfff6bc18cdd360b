package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// wrongValues are, for each Go type that decodes a JSON string with a decoder of its own,
// strings that decoder refuses. Each must also be refused by the API server wherever the type
// appears in the spec, or one stored object would stop the manager's list of every ImageBuild.
var wrongValues = map[reflect.Type][]string{
	reflect.TypeOf(metav1.Duration{}):   {"banana", "5 minutes", "1h-"},
	reflect.TypeOf(resource.Quantity{}): {"banana", "1e99999999999999999999", "10 Gi"},
	reflect.TypeOf(metav1.Time{}):       {"yesterday"},
}

// decoderPaths walks t (a spec type) and returns the JSON path, as a list of keys ("*" for a
// map value or list item), of every place a type of wrongValues appears.
func decoderPaths(t reflect.Type, path []string, seen map[reflect.Type]bool, out *[][]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if _, ok := wrongValues[t]; ok {
		*out = append(*out, append([]string(nil), path...))
		return
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Map:
		decoderPaths(t.Elem(), append(path, "*"), seen, out)
	case reflect.Struct:
		if seen[t] {
			return
		}
		seen[t] = true
		defer delete(seen, t)
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" { // embedded
				decoderPaths(f.Type, path, seen, out)
				continue
			}
			decoderPaths(f.Type, append(path, name), seen, out)
		}
	}
}

// valueAt builds the JSON value that holds value at path inside a value of type t: a map gets
// the key "x", a list one item.
func valueAt(t reflect.Type, path []string, value any) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if len(path) == 0 {
		return value
	}
	if path[0] == "*" {
		if t.Kind() == reflect.Map {
			return map[string]any{"x": valueAt(t.Elem(), path[1:], value)}
		}
		return []any{valueAt(t.Elem(), path[1:], value)}
	}
	return map[string]any{path[0]: valueAt(typeAt(t, path[:1]), path[1:], value)}
}

// merge copies src into dst, merging maps.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// TestEveryStrictlyDecodedFieldIsRefusedAtAdmission walks the spec's Go types: wherever a type
// with its own decoder appears, a value that decoder refuses must be refused by the API server
// too, naming the field.
func TestEveryStrictlyDecodedFieldIsRefusedAtAdmission(t *testing.T) {
	ns := newNamespace(t)
	var paths [][]string
	decoderPaths(reflect.TypeOf(kilnv1.ImageBuildSpec{}), nil, map[reflect.Type]bool{}, &paths)
	if len(paths) < 8 {
		t.Fatalf("found only %d strictly decoded fields (%v): the walk is broken", len(paths), paths)
	}
	checked := 0
	for _, path := range paths {
		typ := typeAt(reflect.TypeOf(kilnv1.ImageBuildSpec{}), path)
		for _, wrong := range wrongValues[typ] {
			// The value really is one the manager cannot decode.
			if err := json.Unmarshal([]byte(fmt.Sprintf("%q", wrong)), reflect.New(typ).Interface()); err == nil {
				t.Fatalf("%s decodes %q: not a wrong value", typ, wrong)
			}
			name := "spec." + strings.Join(path, ".")
			t.Run(name+"="+wrong, func(t *testing.T) {
				spec := map[string]any{
					"source": map[string]any{"git": map[string]any{"url": "https://example.com/a.git"}},
					"output": map[string]any{"image": "registry.example.com/team/app"},
				}
				merge(spec, valueAt(reflect.TypeOf(kilnv1.ImageBuildSpec{}), path, wrong).(map[string]any))
				u := &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "kiln.dev/v1alpha1", "kind": "ImageBuild",
					"metadata": map[string]any{"namespace": ns, "name": "strict"}, "spec": spec,
				}}
				err := k8sClient.Create(context.Background(), u, client.DryRunAll)
				if err == nil {
					t.Fatalf("the API server accepted %s: %q, which the manager cannot decode", name, wrong)
				}
				field := "spec." + strings.ReplaceAll(strings.Join(path, "."), ".*", "")
				if !strings.Contains(err.Error(), field) {
					t.Errorf("the refusal does not name %s: %v", field, err)
				}
			})
			checked++
		}
	}
	t.Logf("%d strictly decoded fields, %d wrong values refused: %v", len(paths), checked, paths)
}

func typeAt(t reflect.Type, path []string) reflect.Type {
	for _, k := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if k == "*" {
			t = t.Elem()
			continue
		}
		for i := 0; i < t.NumField(); i++ {
			if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name == k {
				t = t.Field(i).Type
				break
			}
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// TestStoredUndecodableSpecDoesNotBreakTheList: an object stored before the CRD refused its value
// decodes, through the manager's own codec, as an empty spec that says why, so the list of every
// ImageBuild still decodes and only that object stalls.
func TestStoredUndecodableSpecDoesNotBreakTheList(t *testing.T) {
	list := []byte(`{"apiVersion":"kiln.dev/v1alpha1","kind":"ImageBuildList","items":[
		{"apiVersion":"kiln.dev/v1alpha1","kind":"ImageBuild","metadata":{"name":"typo","namespace":"a"},"spec":{"timeout":"banana","output":{"image":"r/x"}}},
		{"apiVersion":"kiln.dev/v1alpha1","kind":"ImageBuild","metadata":{"name":"fine","namespace":"b"},"spec":{"timeout":"5m","output":{"image":"r/y"}}}]}`)
	got := &kilnv1.ImageBuildList{}
	codecs := serializer.NewCodecFactory(scheme)
	if _, _, err := codecs.UniversalDeserializer().Decode(list, nil, got); err != nil {
		t.Fatalf("the list does not decode: %v", err)
	}
	if len(got.Items) != 2 {
		t.Fatalf("%d items", len(got.Items))
	}
	if e := got.Items[0].Spec.DecodeError; !strings.Contains(e, "banana") {
		t.Errorf("the bad object's DecodeError is %q", e)
	}
	if got.Items[1].Spec.DecodeError != "" || got.Items[1].Spec.Timeout.Duration.String() != "5m0s" || got.Items[1].Spec.Output.Image != "r/y" {
		t.Errorf("the good object changed: %+v", got.Items[1].Spec)
	}
}

// TestAcceptedSourcesStayAccepted: the new URL and revision rules refuse what they must and no
// more (http:// and git:// with insecure: true; TestInvalidManifestsAreRejected has them
// without).
func TestAcceptedSourcesStayAccepted(t *testing.T) {
	ns := newNamespace(t)
	for _, git := range []map[string]any{
		{"url": "git@github.com:org/repo.git", "revision": "main"},
		{"url": "ssh://git@example.com:2222/org/repo.git", "revision": "release/v1.2"},
		{"url": "https://example.com/org/repo.git", "revision": "v3.26.0"},
		{"url": "https://example.com/org/repo.git", "revision": "0123456789abcdef0123456789abcdef01234567"},
		{"url": "git://example.com/repo.git", "revision": "feature_x-1", "insecure": true},
		{"url": "http://example.com/repo.git", "insecure": true, "pollInterval": "5m"},
		{"url": "https://example.com/org/repo.git", "insecure": true},
	} {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "kiln.dev/v1alpha1", "kind": "ImageBuild",
			"metadata": map[string]any{"namespace": ns, "name": "ok"},
			"spec":     map[string]any{"source": map[string]any{"git": git}, "output": map[string]any{"image": "registry.example.com/team/app"}},
		}}
		if err := k8sClient.Create(context.Background(), u, client.DryRunAll); err != nil {
			t.Errorf("%v refused: %v", git, err)
		}
	}
}

// maximalImageBuild has every field at the limit its schema allows, with the characters that
// grow most when encoded.
func maximalImageBuild(ns string) *kilnv1.ImageBuild {
	worst := func(n int) string { // 4-byte runes, control characters and HTML-escaped ones
		var b strings.Builder
		for i := 0; b.Len() < 4*n && i < n; i++ {
			switch i % 4 {
			case 0:
				b.WriteString("😀")
			case 1:
				b.WriteByte(0x01)
			case 2:
				b.WriteString("<")
			default:
				b.WriteString("\u2028")
			}
		}
		return b.String()
	}
	ib := &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: strings.Repeat("m", 63)},
		Spec: kilnv1.ImageBuildSpec{
			Source: kilnv1.Source{Git: &kilnv1.GitSource{
				URL: "https://" + strings.Repeat("h", 60) + ".example.com/" + strings.Repeat("p", 1900) + ".git", Revision: strings.Repeat("r", 255),
				ContextDir: strings.Repeat("d/", 500), SecretRef: &kilnv1.LocalObjectReference{Name: strings.Repeat("s", 253)},
			}},
			Dockerfile: kilnv1.Dockerfile{
				Inline: worst(65536), Target: "T" + strings.Repeat("t", 127),
				Platforms: []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/386", "linux/ppc64le", "linux/s390x", "linux/riscv64"},
			},
			Output: kilnv1.Output{
				Image:         strings.Repeat("r", 60) + ".example.com:5000/" + strings.Repeat("a", 150),
				PushSecretRef: &kilnv1.LocalObjectReference{Name: strings.Repeat("p", 253)},
				Compression:   kilnv1.CompressionZstd, Reproducible: true, Insecure: true,
			},
			Cache:              kilnv1.Cache{Size: ptr.To(resource.MustParse("1Ti")), StorageClassName: ptr.To(strings.Repeat("c", 253))},
			Timeout:            &metav1.Duration{Duration: 24 * 60 * 60 * 1e9},
			Retries:            ptr.To[int32](10),
			HistoryLimit:       ptr.To[int32](50),
			PriorityClassName:  strings.Repeat("q", 253),
			ServiceAccountName: strings.Repeat("a", 253),
			NodeSelector:       map[string]string{"kiln.dev/pool": "builders"},
			Tolerations:        []corev1.Toleration{{Key: "builders", Operator: corev1.TolerationOpExists}},
			Resources:          &kilnv1.BuildKitResources{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Gi")}},
			Advice:             &kilnv1.AdviceSpec{Ignore: []string{"apt-no-recommends"}},
			Budget: &kilnv1.Budget{
				MaxImageSize: ptr.To(resource.MustParse("1Ti")), MaxLayerSize: ptr.To(resource.MustParse("1Ti")), MaxLayers: ptr.To[int32](1000),
				MaxWastedSize: ptr.To(resource.MustParse("1Ti")), MaxGrowth: ptr.To(resource.MustParse("1Ti")), Enforcement: kilnv1.EnforcementWarn,
			},
		},
	}
	for i := 0; i < 32; i++ {
		ib.Spec.Dockerfile.BuildArgs = append(ib.Spec.Dockerfile.BuildArgs, kilnv1.BuildArg{Name: fmt.Sprintf("ARG_%02d_%s", i, strings.Repeat("X", 121)), Value: worst(4096)})
	}
	for i := 0; i < 16; i++ {
		ib.Spec.Dockerfile.Secrets = append(ib.Spec.Dockerfile.Secrets, kilnv1.BuildSecret{
			ID: fmt.Sprintf("s%02d%s", i, strings.Repeat("i", 60)), SecretRef: kilnv1.SecretKeyReference{Name: fmt.Sprintf("sec%02d%s", i, strings.Repeat("n", 248)), Key: strings.Repeat("k", 253)},
		})
		ib.Spec.Output.Tags = append(ib.Spec.Output.Tags, fmt.Sprintf("t%02d%s", i, strings.Repeat("v", 125)))
	}
	return ib
}

// TestMaximalSpecYieldsObjectsTheAPIServerAccepts: the largest ImageBuild the API server accepts
// renders a claim, a request ConfigMap and a build pod that the API server accepts too, and the
// request reaches the runner whole.
func TestMaximalSpecYieldsObjectsTheAPIServerAccepts(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	ib := maximalImageBuild(ns)
	pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: ib.Spec.PriorityClassName}, Value: 1000}
	if err := k8sClient.Create(ctx, pc); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, pc) })
	if err := k8sClient.Create(ctx, ib); err != nil {
		t.Fatalf("the maximal ImageBuild is refused, so it is not the maximal one: %v", err)
	}
	// The controller may already be working on it; render our own copies under other names.
	opts := podOptions{BuildKitImage: "registry.test/buildkit:rootless", RunnerImage: "registry.test/kiln:test", Build: 1 << 40, Attempt: 11, ClaimName: claimName(ib), CacheBytes: 1 << 40, ResetCache: true}
	req, err := renderRequest(ib, opts)
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for k, v := range req.Data {
		size += len(k) + len(v)
	}
	t.Logf("request ConfigMap of the maximal spec: %d bytes of the 1 MiB a ConfigMap may hold", size)
	pod := renderBuildPod(ib, opts)
	claim := (&ImageBuildReconciler{DefaultCacheSize: resource.MustParse("10Gi")}).renderCacheClaim(ib, claimName(ib)+"x")
	for _, obj := range []client.Object{claim, req, pod} {
		if err := k8sClient.Create(ctx, obj, client.DryRunAll); err != nil {
			t.Errorf("the API server refuses the %T kiln renders for the maximal spec: %v", obj, err)
		}
	}
	dir := t.TempDir()
	for k, v := range req.Data {
		writeFile(t, dir, k, v)
	}
	got, err := contract.ReadRequestDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := runnerRequest(ib, opts.Build, opts.ResetCache)
	want.Version = contract.Version
	if !reflect.DeepEqual(got, want) {
		t.Error("the request read back differs from the one written")
	}
	df := got.Spec.Dockerfile
	if df.Inline != ib.Spec.Dockerfile.Inline || len(df.BuildArgs) != 32 || df.BuildArgs[31].Value != ib.Spec.Dockerfile.BuildArgs[31].Value ||
		*got.Spec.Budget.MaxImageSize != 1<<40 || len(got.Spec.Output.Tags) != 16 || len(df.Secrets) != 16 {
		t.Error("the request read back lost some of the spec")
	}
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
