package runner

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kiln-dev/kiln/internal/contract"
)

// testLargeInlineDockerfile: a 64 Ki-character inline Dockerfile full of the characters JSON
// escapes (issue 10: as one argument it passed the kernel's 128 KiB limit and the runner never
// started) travels as the manager sends it, as request files, and builds.
func (e *env) testLargeInlineDockerfile(t *testing.T) {
	var df strings.Builder
	df.WriteString("FROM " + e.busybox + "\nRUN printf '%s' '<&>' > /angles\n")
	for utf8.RuneCountInString(df.String()) < 65536-200 {
		df.WriteString("# <&> \u2028 ü 😀 \t <script>&amp;</script>\n")
	}
	req := e.request("large-inline", func(s *contract.BuildSpec) {
		s.Source = contract.Source{ConfigMap: &contract.ConfigMapSource{Name: "ctx"}}
		s.Dockerfile.Inline = df.String()
		s.Dockerfile.BuildArgs = []contract.BuildArg{{Name: "NOTE", Value: strings.Repeat("<&>", 1000)}}
	})
	if n := utf8.RuneCountInString(req.Spec.Dockerfile.Inline); n > 65536 {
		t.Fatalf("the Dockerfile has %d characters, more than the API allows", n)
	}
	if arg, _ := json.Marshal(req); len(arg) <= 128<<10 {
		t.Fatalf("the request encodes to %d bytes as an argument: not over the kernel's 128 KiB, so this proves nothing", len(arg))
	}

	// What the manager writes into the request ConfigMap, and the runner reads from its mount.
	files, err := contract.RequestFiles(req)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readRequest(dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Dockerfile.Inline != req.Spec.Dockerfile.Inline || got.Spec.Dockerfile.BuildArgs[0].Value != req.Spec.Dockerfile.BuildArgs[0].Value {
		t.Fatal("the request read from its files differs from the one written")
	}
	res := e.run(t, got, e.paths(t, map[string]string{"README": "context\n"}))
	if res.FailureClass != "" || !res.Pushed {
		t.Fatalf("the build failed: %s: %s", res.FailureClass, res.Message)
	}
	if want := contract.ConfigMapDigest(map[string][]byte{"README": []byte("context\n")}); res.Revision != want {
		t.Errorf("a ConfigMap build reports the content it built as its revision, got %q", res.Revision)
	}
}
