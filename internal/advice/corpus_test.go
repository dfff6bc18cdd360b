package advice

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// expectation is one entry of testdata/expectations.json.
type expectation struct {
	Seed           string            `json:"seed"`
	Version        string            `json:"version"` // naive, optimized or example
	Findings       []string          `json:"findings"`
	SizeExceptions map[string]string `json:"sizeExceptions"`
}

func loadExpectations(t testing.TB) map[string]expectation {
	t.Helper()
	dt, err := os.ReadFile("testdata/expectations.json")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(dt, &raw); err != nil {
		t.Fatal(err)
	}
	out := map[string]expectation{}
	for k, v := range raw {
		if strings.HasPrefix(k, "_") {
			continue
		}
		var e expectation
		if err := json.Unmarshal(v, &e); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[k] = e
	}
	return out
}

func corpusFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/*.Dockerfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	return files
}

// ruleLines renders findings as a sorted "rule:line" list.
func ruleLines(fs []Finding) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s:%d", f.Rule, f.Line))
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

func kindOf(id string) string {
	for _, r := range Rules() {
		if r.ID == id {
			return r.Kind
		}
	}
	return ""
}

// TestCorpus checks every Dockerfile of the seeds against its exact expected findings; the
// optimized versions get no size finding (but the listed, explained exceptions), the naive
// versions get at least one.
func TestCorpus(t *testing.T) {
	exps := loadExpectations(t)
	files := corpusFiles(t)
	if len(files) != len(exps) {
		t.Errorf("%d corpus files but %d expectations", len(files), len(exps))
	}
	counts := map[string]int{}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			e, ok := exps[name]
			if !ok {
				t.Fatalf("no expectation for %s in testdata/expectations.json", name)
			}
			if !strings.HasSuffix(name, "-"+e.Version+".Dockerfile") {
				t.Errorf("version %q does not match the file name", e.Version)
			}
			counts[e.Version]++
			dt, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parse(dt, "", nil); err != nil {
				t.Fatalf("the corpus file does not parse: %v", err)
			}
			got := Analyze(Input{Dockerfile: dt, DockerfileName: name})
			if g, w := strings.Join(ruleLines(got), " "), strings.Join(sorted(e.Findings), " "); g != w {
				t.Errorf("findings:\n got  %s\n want %s", g, w)
				for _, f := range got {
					t.Logf("  %d %s: %s", f.Line, f.Rule, f.Message)
				}
			}
			switch e.Version {
			case "optimized":
				for _, f := range got {
					if f.Kind == KindSize {
						if why, ok := e.SizeExceptions[f.Rule]; ok && why != "" {
							continue
						}
						t.Errorf("an optimized Dockerfile gets the size finding %s:%d: %s", f.Rule, f.Line, f.Message)
					}
				}
			case "naive":
				if len(got) == 0 {
					t.Error("a naive Dockerfile gets no finding")
				}
			case "example":
			default:
				t.Errorf("unknown version %q", e.Version)
			}
			for _, f := range got {
				if f.Kind != kindOf(f.Rule) || f.Doc != DocBase+"#"+f.Rule || f.Message == "" {
					t.Errorf("malformed finding %+v", f)
				}
			}
		})
	}
	if counts["naive"] == 0 || counts["optimized"] == 0 {
		t.Errorf("the corpus needs naive and optimized versions: %v", counts)
	}
}

// TestCorpusWithSeedDockerignore runs the corpus with a context holding .git and the
// .dockerignore of seed 000 (".*" excludes .git): no context finding.
func TestCorpusWithSeedDockerignore(t *testing.T) {
	ignore, err := os.ReadFile("testdata/seed000-dockerignore.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range corpusFiles(t) {
		dt, _ := os.ReadFile(f)
		in := Input{Dockerfile: dt, ContextFiles: []string{".git", "Dockerfile", "go.mod", "main.go"}, Dockerignore: ignore}
		for _, fd := range Analyze(in) {
			if fd.Rule == "no-dockerignore" || fd.Rule == "dockerignore-git" {
				t.Errorf("%s: %s", f, fd.Message)
			}
		}
		in.Dockerignore = nil
		if !hasRule(Analyze(in), "no-dockerignore") {
			t.Errorf("%s: no no-dockerignore finding without a .dockerignore", f)
		}
	}
}

func hasRule(fs []Finding, id string) bool {
	for _, f := range fs {
		if f.Rule == id {
			return true
		}
	}
	return false
}
