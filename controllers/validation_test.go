package controllers

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// TestInvalidManifestsAreRejected applies bad ImageBuilds to the real API server: each must fail
// at admission with a message that names the field at fault.
func TestInvalidManifestsAreRejected(t *testing.T) {
	ns := newNamespace(t)
	const valid = `
source: {configMap: {name: src}}
output: {image: registry.example.com/team/app}
`
	for _, tc := range []struct {
		name string
		spec string
		want []string
	}{
		{"no source", `
source: {}
output: {image: registry.example.com/team/app}`, []string{"spec.source", "exactly one of source.git, source.configMap or source.oci must be set"}},
		{"two sources", `
source: {configMap: {name: src}, git: {url: "https://example.com/a.git"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source", "exactly one of source.git, source.configMap or source.oci must be set"}},
		{"oci source not pinned", `
source: {oci: {image: "registry.example.com/team/app-src:latest"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.oci.image", "must be a repository pinned by digest"}},
		{"oci and git", `
source: {oci: {image: "registry.example.com/team/app-src@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, git: {url: "https://example.com/a.git"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source", "exactly one of source.git, source.configMap or source.oci must be set"}},
		{"image with tag", `
source: {configMap: {name: src}}
output: {image: "registry.example.com/team/app:v1"}`, []string{"spec.output.image", "without tag or digest"}},
		{"image in upper case", `
source: {configMap: {name: src}}
output: {image: "registry.example.com/Team/App"}`, []string{"spec.output.image", "must be an image repository"}},
		{"bad tag", `
source: {configMap: {name: src}}
output: {image: registry.example.com/team/app, tags: ["v1", "-bad tag"]}`, []string{"spec.output.tags", "each tag must be a valid image tag"}},
		{"zero image budget", valid + `
budget: {maxImageSize: "0"}`, []string{"spec.budget.maxImageSize", "must be a positive size"}},
		{"negative layer budget", valid + `
budget: {maxLayerSize: "-5Mi"}`, []string{"spec.budget.maxLayerSize", "must be a positive size"}},
		{"zero layers", valid + `
budget: {maxLayers: 0}`, []string{"spec.budget.maxLayers", "should be greater than or equal to 1"}},
		{"unknown enforcement", valid + `
budget: {enforcement: Block}`, []string{"spec.budget.enforcement", `supported values: "Enforce", "Warn"`}},
		{"claimName and size", valid + `
cache: {claimName: shared, size: 10Gi}`, []string{"spec.cache", "do not set cache.size or cache.storageClassName"}},
		{"registry cache by digest", valid + `
cache: {registry: {image: "registry.example.com/team/app-cache@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}`, []string{"spec.cache.registry.image", "without a digest"}},
		{"registry cache is the image", valid + `
cache: {registry: {image: registry.example.com/team/app}}`, []string{"spec.cache.registry.image", "must not be one of the tags the image is pushed to"}},
		{"registry cache is the image's latest", `
source: {configMap: {name: src}}
output: {image: registry.example.com/team/app, tags: [v1, latest]}
cache: {registry: {image: registry.example.com/team/app}}`, []string{"spec.cache.registry.image", "must not be one of the tags the image is pushed to"}},
		{"registry cache is a pushed tag", `
source: {configMap: {name: src}}
output: {image: registry.example.com/team/app, tags: [v1, main]}
cache: {registry: {image: "registry.example.com/team/app:main"}}`, []string{"spec.cache.registry.image", "must not be one of the tags the image is pushed to"}},
		{"registry cache mode", valid + `
cache: {registry: {image: registry.example.com/team/app-cache, mode: all}}`, []string{"spec.cache.registry.mode", `supported values: "min", "max"`}},
		{"too many build args", valid + `
dockerfile:
  buildArgs: [` + manyArgs(33) + `]`, []string{"spec.dockerfile.buildArgs", "must have at most 32 items"}},
		{"bad platform", valid + `
dockerfile: {platforms: [linux/amd64, "linux"]}`, []string{"spec.dockerfile.platforms", "os/arch or os/arch/variant"}},
		{"path and inline", valid + `
dockerfile: {path: Dockerfile, inline: "FROM scratch"}`, []string{"spec.dockerfile", "set dockerfile.path or dockerfile.inline, not both"}},
		{"context dir escapes", `
source: {git: {url: "https://example.com/a.git", contextDir: "../etc"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.contextDir", "must be a relative path"}},
		{"not a git url", `
source: {git: {url: "ftp://example.com/a.git"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.url", "must be a git URL"}},
		{"git:// without insecure", `
source: {git: {url: "git://example.com/a.git"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git", "http:// and git:// urls need spec.source.git.insecure: true", "in clear"}},
		{"http:// without insecure", `
source: {git: {url: "http://example.com/a.git", insecure: false}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git", "http:// and git:// urls need spec.source.git.insecure: true", "in clear"}},
		{"polled http:// without insecure", `
source: {git: {url: "http://example.com/a.git", pollInterval: 5m}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git", "spec.source.git.insecure: true"}},
		{"tiny cache", valid + `
cache: {size: 1Mi}`, []string{"spec.cache.size", "must be at least 100Mi"}},
		{"poll with credentials", `
source: {git: {url: "https://example.com/a.git", pollInterval: 5m, secretRef: {name: creds}}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git", "pollInterval works only for repositories readable without credentials"}},
		{"poll over ssh", `
source: {git: {url: "ssh://git@example.com/a.git", pollInterval: 5m}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git", "pollInterval needs an https://, http:// or git:// url"}},
		{"poll too often", `
source: {git: {url: "https://example.com/a.git", pollInterval: 10s}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.pollInterval", "must be between 1m and 168h"}},
		{"timeout that is not a duration (issue 10: it stopped every build in the cluster)", valid + `
timeout: banana`, []string{"spec.timeout", "must be a duration such as 30m"}},
		{"timeout under a minute", valid + `
timeout: 500ms`, []string{"spec.timeout", "must be between 1m and 24h"}},
		{"timeout zero, which meant no deadline", valid + `
timeout: 0s`, []string{"spec.timeout", "must be between 1m and 24h"}},
		{"timeout that overflows", valid + `
timeout: 1000000h`, []string{"spec.timeout", "must be between 1m and 24h"}},
		{"poll interval that is not a duration", `
source: {git: {url: "https://example.com/a.git", pollInterval: soon}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.pollInterval", "must be a duration"}},
		{"push secret that is not a name", `
source: {configMap: {name: src}}
output: {image: registry.example.com/team/app, pushSecretRef: {name: Bad_Name}}`, []string{"spec.output.pushSecretRef.name", "must be a lower-case DNS-1123 name"}},
		{"ConfigMap source that is not a name", `
source: {configMap: {name: "src files"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.configMap.name", "must be a lower-case DNS-1123 name"}},
		{"git secret that is not a name", `
source: {git: {url: "https://example.com/a.git", secretRef: {name: "../x"}}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.secretRef.name", "must be a lower-case DNS-1123 name"}},
		{"build secret that is not a name", valid + `
dockerfile: {secrets: [{id: npm, secretRef: {name: NPM, key: token}}]}`, []string{"spec.dockerfile.secrets[0].secretRef.name", "must be a lower-case DNS-1123 name"}},
		{"claim that is not a name", valid + `
cache: {claimName: "Team Cache"}`, []string{"spec.cache.claimName", "must be a lower-case DNS-1123 name"}},
		{"service account that is not a name", valid + `
serviceAccountName: "system:admin"`, []string{"spec.serviceAccountName", "must be a lower-case DNS-1123 name"}},
		{"revision with a colon (BuildKit would read a subdirectory)", `
source: {git: {url: "https://example.com/a.git", revision: "main:sub"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.revision", "as git allows it"}},
		{"revision with ..", `
source: {git: {url: "https://example.com/a.git", revision: "v1..v2"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.revision", "as git allows it"}},
		{"revision that looks like an option", `
source: {git: {url: "https://example.com/a.git", revision: "--upload-pack=x"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.revision", "as git allows it"}},
		{"revision with whitespace", `
source: {git: {url: "https://example.com/a.git", revision: "main branch"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.revision", "as git allows it"}},
		{"git URL with a password", `
source: {git: {url: "https://alice:s3cret@example.com/a.git"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.url", "must not carry credentials", "secretRef"}},
		{"git URL with a token as user", `
source: {git: {url: "https://ghp_abc123@example.com/a.git"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.url", "must not carry credentials"}},
		{"ssh URL with a password", `
source: {git: {url: "ssh://git:pw@example.com/a.git"}}
output: {image: registry.example.com/team/app}`, []string{"spec.source.git.url", "must not carry credentials"}},
		{"no output", `
source: {configMap: {name: src}}`, []string{"spec.output", "Required value"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := map[string]any{}
			if err := yaml.Unmarshal([]byte(tc.spec), &spec); err != nil {
				t.Fatalf("test YAML: %v", err)
			}
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "kiln.dev/v1alpha1", "kind": "ImageBuild",
				"metadata": map[string]any{"namespace": ns, "name": "bad"},
				"spec":     spec,
			}}
			err := k8sClient.Create(context.Background(), u)
			if err == nil {
				t.Fatalf("the API server accepted an invalid ImageBuild (%s)", tc.name)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}

	// A name longer than a label value (kiln labels pods and claims with it) is refused.
	long := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kiln.dev/v1alpha1", "kind": "ImageBuild",
		"metadata": map[string]any{"namespace": ns, "name": strings.Repeat("n", 64)},
		"spec":     map[string]any{"source": map[string]any{"configMap": map[string]any{"name": "src"}}, "output": map[string]any{"image": "registry.example.com/team/app"}},
	}}
	if err := k8sClient.Create(context.Background(), long); err == nil || !strings.Contains(err.Error(), "metadata.name must be at most 63 characters") {
		t.Errorf("a 64-character name: got %v", err)
	}

	// And the valid base is accepted, so the table tests the rules and not a broken base.
	spec := map[string]any{}
	_ = yaml.Unmarshal([]byte(valid), &spec)
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kiln.dev/v1alpha1", "kind": "ImageBuild",
		"metadata": map[string]any{"namespace": ns, "name": "good"}, "spec": spec,
	}}
	if err := k8sClient.Create(context.Background(), u); err != nil {
		t.Fatalf("a valid ImageBuild was rejected: %v", err)
	}
	if got, _, _ := unstructured.NestedSlice(u.Object, "spec", "output", "tags"); len(got) != 1 || got[0] != "latest" {
		t.Errorf("output.tags defaults to [latest], got %v", got)
	}
	if got, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration"); got != -1 {
		t.Errorf("status.observedGeneration defaults to -1, got %d", got)
	}
}

func manyArgs(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("{name: A")
		b.WriteString(strings.Repeat("X", i+1))
		b.WriteString(", value: v}")
	}
	return b.String()
}

// TestSamplesAreAccepted applies every object of config/samples to the real API server (dry run).
func TestSamplesAreAccepted(t *testing.T) {
	ns := newNamespace(t)
	// The samples bring their own ConfigMap source.
	if err := k8sClient.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello-src"}}); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("..", "config", "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found: %v", err)
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(data), "\n---\n") {
			obj := map[string]any{}
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if len(obj) == 0 {
				continue
			}
			u := &unstructured.Unstructured{Object: obj}
			u.SetNamespace(ns)
			if err := k8sClient.Create(context.Background(), u, client.DryRunAll); err != nil {
				t.Errorf("%s: %s %s rejected: %v", f, u.GetKind(), u.GetName(), err)
			}
		}
	}
}

// TestDocsInvalidExamplesAreRejected applies every YAML block in docs/ that starts with
// "# docs-invalid: MESSAGE" and checks that the API server refuses it with that message.
func TestDocsInvalidExamplesAreRejected(t *testing.T) {
	ns := newNamespace(t)
	files, _ := filepath.Glob(filepath.Join("..", "docs", "*.md"))
	found := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		blocks := strings.Split(string(data), "```yaml\n")
		for _, b := range blocks[1:] {
			body, _, _ := strings.Cut(b, "```")
			first, rest, _ := strings.Cut(body, "\n")
			want, ok := strings.CutPrefix(first, "# docs-invalid: ")
			if !ok {
				continue
			}
			found++
			obj := map[string]any{}
			if err := yaml.Unmarshal([]byte(rest), &obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			u := &unstructured.Unstructured{Object: obj}
			u.SetNamespace(ns)
			err := k8sClient.Create(context.Background(), u, client.DryRunAll)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %s: got %v\nwant the message the docs show: %s", f, u.GetName(), err, want)
			}
		}
	}
	if found == 0 {
		t.Fatal("no docs-invalid examples found: the test proves nothing")
	}
}
