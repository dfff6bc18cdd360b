package contract

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// worstText is n characters that grow most when written: 4-byte runes, control characters and
// the ones JSON may escape for HTML.
func worstText(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString([]string{"😀", "\x01", "<", "\u2028"}[i%4])
	}
	return b.String()
}

// largestRequest has every field the runner reads at the largest size the CRD lets through.
func largestRequest() Request {
	r := Request{
		Namespace: strings.Repeat("n", 63), Name: strings.Repeat("m", 63), Build: math.MaxInt64, ResetCache: true,
		Spec: BuildSpec{
			Source: Source{Git: &GitSource{
				URL: "https://" + strings.Repeat("p", 2040), Revision: strings.Repeat("r", 255), ContextDir: strings.Repeat("d/", 512),
				SecretRef: &SecretRef{Name: strings.Repeat("s", 253)},
			}},
			Dockerfile: Dockerfile{Inline: worstText(65536), Target: "T" + strings.Repeat("t", 127)},
			Output: Output{
				Image: strings.Repeat("i", 255), PushSecretRef: &SecretRef{Name: strings.Repeat("p", 253)},
				Compression: kilnv1.CompressionEstargz, Reproducible: true, Insecure: true,
			},
			Budget: &BudgetSpec{
				MaxImageSize: ptr.To[int64](math.MaxInt64), MaxLayerSize: ptr.To[int64](1 << 40), MaxLayers: ptr.To[int32](1000),
				MaxWastedSize: ptr.To[int64](1), MaxGrowth: ptr.To[int64](0), Enforcement: kilnv1.EnforcementWarn,
			},
			Advice: &AdviceSpec{},
			Cache:  &Cache{Registry: &RegistryCache{Image: strings.Repeat("c", 384), Mode: kilnv1.RegistryCacheMax}},
		},
	}
	df := &r.Spec.Dockerfile
	for i := 0; i < 32; i++ {
		df.BuildArgs = append(df.BuildArgs, BuildArg{Name: fmt.Sprintf("ARG_%02d_%s", i, strings.Repeat("X", 121)), Value: worstText(4096)})
	}
	for i := 0; i < 16; i++ {
		df.Secrets = append(df.Secrets, BuildSecret{ID: fmt.Sprintf("s%02d%s", i, strings.Repeat("i", 60)), SecretRef: SecretKeyRef{Name: strings.Repeat("n", 253), Key: strings.Repeat("k", 253)}})
		r.Spec.Output.Tags = append(r.Spec.Output.Tags, fmt.Sprintf("t%02d%s", i, strings.Repeat("v", 125)))
	}
	for i := 0; i < 8; i++ {
		df.Platforms = append(df.Platforms, fmt.Sprintf("linux/arch%d/v%d", i, i))
	}
	for i := 0; i < 64; i++ {
		r.Spec.Advice.Ignore = append(r.Spec.Advice.Ignore, fmt.Sprintf("rule-%02d-%s", i, strings.Repeat("x", 55)))
	}
	r.Previous = &PreviousImage{Digest: "sha256:" + strings.Repeat("d", 64)}
	for i := 0; i < 8; i++ {
		p := PreviousPlatform{Platform: df.Platforms[i], UnpackagedBytes: math.MaxInt64}
		for j := 0; j < MaxPackagesPerPlatform; j++ {
			p.LargestPackages = append(p.LargestPackages, PackageSize{Name: strings.Repeat("n", MaxCreatedBy), Type: strings.Repeat("t", 32), Bytes: math.MaxInt64, Files: math.MaxInt32})
		}
		r.Previous.Platforms = append(r.Previous.Platforms, p)
	}
	return r
}

// writeRequestDir writes the files of req's request ConfigMap into a directory, as the kubelet
// mounts them.
func writeRequestDir(t *testing.T, req Request) (string, map[string]string) {
	t.Helper()
	files, err := RequestFiles(req)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

// The largest request the API server lets through reaches the runner whole, in a ConfigMap far
// below its 1 MiB, with the Dockerfile and the build-arg values out of the JSON.
func TestLargestRequestRoundTrip(t *testing.T) {
	req := largestRequest()
	dir, files := writeRequestDir(t, req)
	size := 0
	for name, content := range files {
		size += len(name) + len(content)
	}
	if size > 1<<20*3/4 {
		t.Errorf("the request ConfigMap holds %d bytes, too near a ConfigMap's 1 MiB", size)
	}
	t.Logf("the largest request takes %d bytes, %d of them in %s", size, len(files[RequestFile]), RequestFile)
	if strings.Contains(files[RequestFile], "😀") || strings.Contains(files[RequestFile], `\u003c`) || len(files[RequestFile]) > 64<<10 {
		t.Errorf("%s holds the Dockerfile or a build-arg value, or escapes HTML: %d bytes", RequestFile, len(files[RequestFile]))
	}
	if req.Spec.Dockerfile.BuildArgs[0].Value == "" || req.Spec.Dockerfile.Inline == "" {
		t.Error("RequestFiles emptied its caller's request")
	}
	got, err := ReadRequestDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := largestRequest()
	want.Version = Version
	if !reflect.DeepEqual(got, want) {
		t.Error("the request read back differs from the one written")
	}
}

// request11 is the request as a runner of contract 1.1 decoded it: the CRD's spec under "spec".
type request11 struct {
	Version          string                `json:"v,omitempty"`
	Namespace        string                `json:"namespace"`
	Name             string                `json:"name"`
	Build            int64                 `json:"build"`
	Spec             kilnv1.ImageBuildSpec `json:"spec"`
	ResetCache       bool                  `json:"resetCache,omitempty"`
	InlineDockerfile bool                  `json:"inlineDockerfile,omitempty"`
}

// readRequestDir11 reads a request directory as the 1.1 runner's ReadRequestDir did.
func readRequestDir11(t *testing.T, dir string) request11 {
	t.Helper()
	read := func(name string) string {
		dt, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(dt)
	}
	var req request11
	if err := json.Unmarshal([]byte(read(RequestFile)), &req); err != nil || req.Spec.DecodeError != "" {
		t.Fatalf("a 1.1 runner cannot decode the request: %v %s", err, req.Spec.DecodeError)
	}
	if req.InlineDockerfile {
		req.Spec.Dockerfile.Inline, req.InlineDockerfile = read(InlineDockerfileFile), false
	}
	for i, a := range req.Spec.Dockerfile.BuildArgs {
		req.Spec.Dockerfile.BuildArgs[i].Value = read(BuildArgFilePrefix + a.Name)
	}
	return req
}

// seen11 is what the 1.1 runner used of its request, in this contract's types: every field its
// code read, and the budget's limits as its budget.Judge took them (Quantity.Value).
func seen11(r request11) Request {
	s := r.Spec
	out := Request{Version: r.Version, Namespace: r.Namespace, Name: r.Name, Build: r.Build, ResetCache: r.ResetCache}
	if g := s.Source.Git; g != nil {
		out.Spec.Source.Git = &GitSource{URL: g.URL, Revision: g.Revision, ContextDir: g.ContextDir}
		if g.SecretRef != nil {
			out.Spec.Source.Git.SecretRef = &SecretRef{Name: g.SecretRef.Name}
		}
	}
	if cm := s.Source.ConfigMap; cm != nil {
		out.Spec.Source.ConfigMap = &ConfigMapSource{Name: cm.Name}
	}
	df := s.Dockerfile
	out.Spec.Dockerfile = Dockerfile{Path: df.Path, Inline: df.Inline, Target: df.Target, Platforms: df.Platforms}
	for _, a := range df.BuildArgs {
		out.Spec.Dockerfile.BuildArgs = append(out.Spec.Dockerfile.BuildArgs, BuildArg{Name: a.Name, Value: a.Value})
	}
	for _, sec := range df.Secrets {
		out.Spec.Dockerfile.Secrets = append(out.Spec.Dockerfile.Secrets, BuildSecret{ID: sec.ID, SecretRef: SecretKeyRef{Name: sec.SecretRef.Name, Key: sec.SecretRef.Key}})
	}
	o := s.Output
	out.Spec.Output = Output{Image: o.Image, Tags: o.Tags, Compression: o.Compression, Reproducible: o.Reproducible, Insecure: o.Insecure}
	if o.PushSecretRef != nil {
		out.Spec.Output.PushSecretRef = &SecretRef{Name: o.PushSecretRef.Name}
	}
	if b := s.Budget; b != nil {
		value := func(q *resource.Quantity) *int64 {
			if q == nil {
				return nil
			}
			return ptr.To(q.Value())
		}
		out.Spec.Budget = &BudgetSpec{
			MaxImageSize: value(b.MaxImageSize), MaxLayerSize: value(b.MaxLayerSize), MaxLayers: b.MaxLayers,
			MaxWastedSize: value(b.MaxWastedSize), MaxGrowth: value(b.MaxGrowth), Enforcement: b.Enforcement,
		}
	}
	if s.Advice != nil {
		out.Spec.Advice = &AdviceSpec{Ignore: s.Advice.Ignore}
	}
	return out
}

// A runner one minor version older than the manager reads the request the manager writes now:
// every field it used has the value this runner reads, its budget limits included.
func TestOlderRunnerReadsRequest(t *testing.T) {
	req := largestRequest()
	dir, _ := writeRequestDir(t, req)
	req.Version = Version
	req.Spec.Cache, req.Previous = nil, nil // since 1.4: a 1.1 runner builds without them
	if got := seen11(readRequestDir11(t, dir)); !reflect.DeepEqual(got, req) {
		t.Errorf("a 1.1 runner reads another request:\n got %+v\nwant %+v", got.Spec.Budget, req.Spec.Budget)
	}
}

// This runner reads the request of a manager one minor version older, as that manager's own
// runner read it. testdata/request-1.1 is what RequestFiles of contract 1.1 wrote for a spec
// with every field set, byte for byte: the whole CRD spec, sizes as quantity strings.
func TestReadOlderMinorRequest(t *testing.T) {
	dir := filepath.Join("testdata", "request-1.1")
	got, err := ReadRequestDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := seen11(readRequestDir11(t, dir)); !reflect.DeepEqual(got, want) {
		t.Errorf("this runner and a 1.1 runner read the 1.1 request differently:\n got %+v\nwant %+v", got, want)
	}
	b := got.Spec.Budget
	if got.Version != "1.1" || *b.MaxImageSize != 50<<20 || *b.MaxLayerSize != 20_000_000 || *b.MaxWastedSize != 1536<<10 || *b.MaxGrowth != 0 || *b.MaxLayers != 12 || b.Enforcement != kilnv1.EnforcementWarn {
		t.Errorf("budget %+v", b)
	}
	df := got.Spec.Dockerfile
	if !strings.HasPrefix(df.Inline, "# syntax=docker/dockerfile:1\n") || len(df.BuildArgs) != 3 || df.BuildArgs[1].Value != "a \"quoted\" <value> & more\nsecond line" ||
		df.BuildArgs[2] != (BuildArg{Name: "EMPTY"}) || got.Spec.Source.Git.SecretRef.Name != "git-credentials" || got.Spec.Output.PushSecretRef.Name != "registry-credentials" {
		t.Errorf("%+v", got.Spec)
	}
}

// TestCheckRequestDir: the runner takes the request files the manager wrote, and refuses them
// once the ConfigMap behind them was replaced (issue 13, a request swapped after creation).
func TestCheckRequestDir(t *testing.T) {
	files, err := RequestFiles(Request{Namespace: "team", Name: "app", Build: 1, Spec: BuildSpec{Output: Output{Image: "registry.example.com/team/app"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := RequestFilesDigest(files)
	dir := t.TempDir()
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(".", filepath.Join(dir, "..data")); err != nil { // as a ConfigMap volume has
		t.Fatal(err)
	}
	if err := CheckRequestDir(dir, want); err != nil {
		t.Fatalf("the request as written is refused: %v", err)
	}
	forged := strings.Replace(files[RequestFile], "registry.example.com/team/app", "evil.example/x", 1)
	if err := os.WriteFile(filepath.Join(dir, RequestFile), []byte(forged), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckRequestDir(dir, want); err == nil || !strings.Contains(err.Error(), "its ConfigMap was replaced after kiln created it") {
		t.Errorf("a replaced request is taken: %v", err)
	}
}
