package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Helm is the helm binary for chart tests: $HELM (the Makefile exports it), else the newest
// helm-* under binDir (the repository's bin/, where `make` installs it); "" when there is none.
func Helm(binDir string) string {
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	matches, _ := filepath.Glob(filepath.Join(binDir, "helm-*"))
	if len(matches) == 0 {
		return ""
	}
	return matches[len(matches)-1]
}

// HelmTemplate renders chart as release "kiln" in namespace kiln-system with the given values
// (YAML), by running `helm template`, and returns its objects; the error carries helm's
// message, as a values schema refusal reads.
func HelmTemplate(t testing.TB, helm, chart, values string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helm, "template", "kiln", chart, "--namespace", "kiln-system", "-f", f)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, stderr.String())
	}
	var objs []*unstructured.Unstructured
	for _, doc := range strings.Split(string(out), "\n---") {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs, nil
}
