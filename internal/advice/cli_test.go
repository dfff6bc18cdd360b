package advice

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runMain(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

// writeContext makes a context directory with the given files.
func writeContext(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var naiveGo = L(
	"FROM golang:1.22",
	"WORKDIR /src",
	"COPY . .",
	"RUN go mod download",
	"RUN go build -o /app .",
	`CMD ["/app"]`,
)

func TestMainJSON(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": naiveGo, "go.mod": "module x\n", ".git/HEAD": "ref: refs/heads/main\n"})
	code, out, errs := runMain("--context", dir, "-o", "json")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	var got []Finding
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("-o json does not parse back into []Finding: %v\n%s", err, out)
	}
	want := "copy-before-deps:3 final-stage-toolchain:1 go-build-flags:5 no-cache-mount:4 no-dockerignore:0 no-user:1 single-stage-build:5"
	if g := strings.Join(ruleLines(got), " "); g != want {
		t.Errorf("findings\n got  %s\n want %s", g, want)
	}
	for _, f := range got {
		if f.Doc != DocBase+"#"+f.Rule || f.Kind == "" || f.Message == "" {
			t.Errorf("incomplete finding %+v", f)
		}
		if f.Rule == "no-dockerignore" && !strings.Contains(f.Message, "(here .git)") {
			t.Errorf("no-dockerignore does not name .git: %s", f.Message)
		}
	}
	// the same findings as Analyze on the same input
	direct := Analyze(Input{Dockerfile: []byte(naiveGo), ContextFiles: []string{".git", "Dockerfile", "go.mod"}})
	if strings.Join(ruleLines(direct), " ") != want {
		t.Errorf("Analyze: %v", ruleLines(direct))
	}
}

func TestMainText(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": naiveGo, ".dockerignore": ".git\n"})
	code, out, errs := runMain("--context", dir, "--ignore", "no-user,go-build-flags")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "LINE") || !strings.Contains(lines[0], "RULE") || !strings.Contains(lines[0], "SAVING") {
		t.Errorf("no table header: %q", lines[0])
	}
	for _, want := range []string{"final-stage-toolchain", "single-stage-build", "copy-before-deps", "no-cache-mount", "4 findings in", DocBase} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"no-user", "go-build-flags", "no-dockerignore"} {
		if strings.Contains(out, not) {
			t.Errorf("output has %q:\n%s", not, out)
		}
	}
	// the first data row is the first finding: line 1 final-stage-toolchain (lowest line, no saving)
	if f := strings.Fields(lines[1]); len(f) < 4 || f[0] != "1" || f[1] != "final-stage-toolchain" || f[2] != "size" || f[3] != "-" {
		t.Errorf("first row %q", lines[1])
	}
}

func TestMainCleanDockerfile(t *testing.T) {
	df := L(
		"FROM golang:1.22-alpine AS build",
		"WORKDIR /src",
		"COPY go.mod go.sum ./",
		"RUN --mount=type=cache,target=/go/pkg/mod go mod download",
		"COPY . .",
		`RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /app .`,
		"FROM gcr.io/distroless/static-debian12:nonroot",
		"COPY --from=build /app /app",
		`ENTRYPOINT ["/app"]`,
	)
	dir := writeContext(t, map[string]string{"build.Dockerfile": df, ".dockerignore": "*\n!go.*\n!*.go\n"})
	code, out, errs := runMain("-f", filepath.Join(dir, "build.Dockerfile"), dir)
	if code != 0 || errs != "" || !strings.Contains(out, "no findings") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, _ = runMain("-o", "json", "-f", filepath.Join(dir, "build.Dockerfile"), "--context", dir)
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("json without findings: %d %q", code, out)
	}
}

func TestMainDockerfileDockerignore(t *testing.T) {
	// BuildKit reads <Dockerfile>.dockerignore before the context's .dockerignore
	dir := writeContext(t, map[string]string{"Dockerfile": L("FROM alpine:3.19", "COPY . .", "USER 1"), "Dockerfile.dockerignore": "node_modules\n", ".dockerignore": ".git\n", ".git/HEAD": "x"})
	code, out, _ := runMain("--context", dir, "-o", "json")
	var got []Finding
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || strings.Join(ruleLines(got), " ") != "dockerignore-git:0" {
		t.Errorf("exit %d: %s", code, out)
	}
}

func TestMainErrors(t *testing.T) {
	empty := t.TempDir()
	good := writeContext(t, map[string]string{"Dockerfile": L("FROM alpine:3.19", "USER 1")})
	bad := writeContext(t, map[string]string{"Dockerfile": L("FROM alpine:3.19", "", "COPPY . .")})
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"missing Dockerfile", []string{"--context", empty}, 2, "cannot read the Dockerfile " + filepath.Join(empty, "Dockerfile") + ": no such file or directory (name it with -f)"},
		{"missing -f", []string{"--context", good, "-f", filepath.Join(good, "nope.Dockerfile")}, 2, "nope.Dockerfile: no such file or directory"},
		{"missing context", []string{"--context", filepath.Join(empty, "nope")}, 2, "is not a readable directory"},
		{"bad output", []string{"--context", good, "-o", "yaml"}, 2, "-o must be text or json"},
		{"unknown flag", []string{"--bogus"}, 2, "flag provided but not defined"},
		{"two arguments", []string{good, good}, 2, "unexpected argument"},
		{"unknown target", []string{"--context", good, "--target", "nope"}, 2, `--target "nope" is not a stage`},
		{"parse error", []string{"--context", bad}, 1, filepath.Join(bad, "Dockerfile") + ":3: unknown instruction: COPPY"},
		{"unknown ignore id warns", []string{"--context", good, "--ignore", "nope"}, 0, "--ignore nope: no such rule"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runMain(tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.stderr) {
				t.Errorf("exit %d (want %d), stderr %q (want %q)", code, tc.code, errs, tc.stderr)
			}
		})
	}
}

func TestMainRules(t *testing.T) {
	code, out, _ := runMain("--rules")
	if code != 0 {
		t.Fatal(code)
	}
	for _, r := range Rules() {
		if !strings.Contains(out, r.ID) {
			t.Errorf("--rules lacks %s", r.ID)
		}
	}
	code, out, _ = runMain("--rules", "-o", "json")
	var rs []struct{ ID, Kind, Summary, Doc string }
	if code != 0 || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != len(Rules()) || rs[0].Doc != DocBase+"#"+rs[0].ID {
		t.Errorf("--rules -o json: %d %s", code, out)
	}
	if code, _, errs := runMain("-h"); code != 0 || !strings.Contains(errs, "Usage: kiln advise") {
		t.Errorf("-h: %d %q", code, errs)
	}
}

// TestRulesDoc checks docs/advice.md documents every rule under a "## <rule-id>" heading with its
// parts.
func TestRulesDoc(t *testing.T) {
	dt, err := os.ReadFile(filepath.Join("..", "..", "docs", "advice.md"))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	for _, part := range strings.Split(string(dt), "\n## ")[1:] {
		id, body, _ := strings.Cut(part, "\n")
		sections[strings.TrimSpace(id)] = body
	}
	for _, r := range Rules() {
		body, ok := sections[r.ID]
		if !ok {
			t.Errorf("docs/advice.md has no \"## %s\" section", r.ID)
			continue
		}
		for _, want := range []string{"**What.**", "**Why.**", "**Fix.**", "```"} {
			if !strings.Contains(body, want) {
				t.Errorf("docs/advice.md %s lacks %s", r.ID, want)
			}
		}
	}
	if len(sections) != len(Rules()) {
		t.Errorf("docs/advice.md has %d rule sections, there are %d rules", len(sections), len(Rules()))
	}
}

// TestMainBuildArg checks that --build-arg values override ARG defaults, as in docker build.
func TestMainBuildArg(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": L("ARG BASE=alpine:3.19", "FROM ${BASE}", "USER 65534", "COPY app /app"), ".dockerignore": ".git\n"})
	t.Setenv("KILN_TEST_BASE", "node:20")
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{nil, "", 0},
		{[]string{"--build-arg", "BASE=golang:1.22"}, "final-stage-toolchain:2", 0},
		{[]string{"--build-arg", "BASE=golang:1.22", "--build-arg", "BASE=alpine:3.20"}, "", 0}, // the last one wins
		{[]string{"--build-arg", "KILN_TEST_BASE"}, "", 0},                                      // an ARG the Dockerfile does not declare
		{[]string{"--build-arg", "=x"}, "", 2},
	} {
		code, out, errs := runMain(append([]string{"--context", dir, "-o", "json"}, tc.args...)...)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, errs)
			continue
		}
		if code != 0 {
			continue
		}
		var got []Finding
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if g := strings.Join(ruleLines(got), " "); g != tc.want {
			t.Errorf("%v: findings %q, want %q", tc.args, g, tc.want)
		}
	}
	// NAME alone takes the environment's value
	dir = writeContext(t, map[string]string{"Dockerfile": L("ARG KILN_TEST_BASE=alpine:3.19", "FROM ${KILN_TEST_BASE}", "USER 65534", "COPY app /app"), ".dockerignore": ".git\n"})
	code, out, _ := runMain("--context", dir, "-o", "json", "--build-arg", "KILN_TEST_BASE")
	if code != 0 || !strings.Contains(out, "final-stage-toolchain") {
		t.Errorf("--build-arg NAME from the environment: exit %d, %s", code, out)
	}
}
