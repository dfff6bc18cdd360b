//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// docsReplacer puts the local cluster in place of what the docs and samples ask readers to
// replace: their registry (each namespace pushes under a repository path of its own), the
// namespace of docs/first-build.md, Docker Hub's base images, and the commented-out
// `insecure: true` (the local registry speaks plain HTTP).
func docsReplacer(ns string) *strings.Replacer {
	return strings.NewReplacer(
		"registry.example.com/team/", env["REGISTRY"]+"/"+ns+"/",
		"registry.example.com", env["REGISTRY"],
		"team-builds", ns,
		"golang:1.26-alpine", env["BASE_GOLANG"],
		"busybox:1.37", env["BASE_BUSYBOX"],
		"# insecure: true", "insecure: true",
	)
}

// copySamples writes config/samples, with r applied, to dir/config/samples.
func copySamples(t *testing.T, dir string, r *strings.Replacer) string {
	t.Helper()
	dst := filepath.Join(dir, "config", "samples")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in config/samples: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), []byte(r.Replace(string(data))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// mdBlock is a fenced block of a Markdown page.
type mdBlock struct {
	lang string // the fence's info string: sh, dockerfile, "" (an output block), ...
	body string
	line int  // of the opening fence, 1-based
	skip bool // the last non-blank line before it is an HTML comment saying docs-test: skip
}

func fencedBlocks(md string) []mdBlock {
	var blocks []mdBlock
	lines := strings.Split(md, "\n")
	prev := ""
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		info, ok := strings.CutPrefix(l, "```")
		if !ok {
			if strings.TrimSpace(l) != "" {
				prev = strings.TrimSpace(l)
			}
			continue
		}
		b := mdBlock{lang: strings.TrimSpace(info), line: i + 1,
			skip: strings.HasPrefix(prev, "<!--") && strings.Contains(prev, "docs-test: skip")}
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		b.body = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, b)
		prev = "```"
	}
	return blocks
}

// An output block shows what a command prints: a line of its own "..." stands for any number of
// lines, "…" for any text, and sizes (703.4KiB), durations (9.8s, 4m41s) and digests
// (sha256:ec4f2a04…) for any value of their kind. Runs of spaces match any run of spaces.
// Everything else must match exactly, line by line.
var outputToken = regexp.MustCompile(`sha256:[0-9a-f]*…|…|\b\d+(?:\.\d+)?(?:B|KiB|MiB|GiB)\b|\b(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+\b|\s+`)

type wantLine struct {
	text string
	skip bool // "...": any number of lines
	re   *regexp.Regexp
}

func outputPattern(block string) []wantLine {
	var want []wantLine
	for _, l := range outputLines(block) {
		if strings.TrimSpace(l) == "..." {
			want = append(want, wantLine{text: l, skip: true})
			continue
		}
		var re strings.Builder
		re.WriteString("^")
		last := 0
		for _, m := range outputToken.FindAllStringIndex(l, -1) {
			re.WriteString(regexp.QuoteMeta(l[last:m[0]]))
			tok := l[m[0]:m[1]]
			switch {
			case strings.HasPrefix(tok, "sha256:"):
				re.WriteString(`sha256:[0-9a-f]{64}`)
			case tok == "…":
				re.WriteString(`.*`)
			case strings.TrimSpace(tok) == "":
				re.WriteString(`\s+`)
			case strings.HasSuffix(tok, "B"):
				re.WriteString(`\d+(?:\.\d+)?(?:B|KiB|MiB|GiB)`)
			default:
				re.WriteString(`(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+`)
			}
			last = m[1]
		}
		re.WriteString(regexp.QuoteMeta(l[last:]))
		re.WriteString("$")
		want = append(want, wantLine{text: l, re: regexp.MustCompile(re.String())})
	}
	return want
}

// outputLines splits s into lines without trailing spaces, dropping empty lines at the end.
func outputLines(s string) []string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " \t\r")
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// matchOutput reports whether got matches want and, when it does not, the furthest line of want
// that some way of matching reached.
func matchOutput(want []wantLine, got []string) (bool, int) {
	furthest := 0
	memo := map[[2]int]bool{}
	var match func(i, j int) bool
	match = func(i, j int) bool {
		furthest = max(furthest, i)
		if i == len(want) {
			return j == len(got)
		}
		k := [2]int{i, j}
		if v, ok := memo[k]; ok {
			return v
		}
		var ok bool
		if want[i].skip {
			for jj := j; jj <= len(got) && !ok; jj++ {
				ok = match(i+1, jj)
			}
		} else {
			ok = j < len(got) && want[i].re.MatchString(got[j]) && match(i+1, j+1)
		}
		memo[k] = ok
		return ok
	}
	return match(0, 0), furthest
}

// TestDocsFirstBuild follows docs/first-build.md as a reader would: it runs every sh block in
// order, in a fresh namespace and a directory holding the samples, and compares what each block
// prints with the output block that follows it. The page's Dockerfile must be the sample's.
func TestDocsFirstBuild(t *testing.T) {
	const ns = "e2e-docs"
	ctx := context.Background()
	r := docsReplacer(ns)
	md, err := os.ReadFile(filepath.Join(root, "docs", "first-build.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := fencedBlocks(r.Replace(string(md)))

	// The page creates the namespace itself; delete what an earlier run left, and clean up after.
	if err := deleteNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("KILN_E2E_KEEP") == "1" {
			t.Logf("KILN_E2E_KEEP=1: keeping namespace %s of the failed test (kubectl delete namespace %s when done)", ns, ns)
			return
		}
		if err := deleteNamespace(ctx, ns); err != nil {
			t.Error(err)
		}
	})

	// The reader's shell: kubectl on the PATH, a kubeconfig of its own (the page sets its
	// namespace), a checkout's samples in the working directory.
	work := t.TempDir()
	samples := copySamples(t, work, r)
	bin := filepath.Join(work, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(kubectl, filepath.Join(bin, "kubectl")); err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := os.ReadFile(env["KUBECONFIG"])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "kubeconfig"), kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	var shellEnv []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") && !strings.HasPrefix(kv, "PATH=") {
			shellEnv = append(shellEnv, kv)
		}
	}
	shellEnv = append(shellEnv, "KUBECONFIG="+filepath.Join(work, "kubeconfig"), "PATH="+bin+":"+os.Getenv("PATH"))

	ran, checked := 0, 0
	for i, b := range blocks {
		switch {
		case b.lang == "dockerfile":
			want := sampleDockerfile(t, filepath.Join(samples, "go-service.yaml"))
			if strings.TrimRight(b.body, "\n") != strings.TrimRight(want, "\n") {
				t.Errorf("docs/first-build.md:%d: the Dockerfile differs from config/samples/go-service.yaml's:\n%s\nthe sample's:\n%s", b.line, b.body, want)
			}
		case b.lang == "" && (i == 0 || blocks[i-1].lang != "sh"):
			t.Errorf("docs/first-build.md:%d: an output block that follows no sh block: nothing checks it", b.line)
		case b.lang != "sh" || b.skip:
			continue
		default:
			start := time.Now()
			stdout, stderr, err := runShell(ctx, work, shellEnv, b.body)
			t.Logf("docs/first-build.md:%d (%s):\n%s", b.line, time.Since(start).Round(100*time.Millisecond), b.body)
			if err != nil {
				t.Fatalf("docs/first-build.md:%d: %v\nstdout:\n%s\nstderr:\n%s\n%s", b.line, err, stdout, stderr, describeNamespace(ns))
			}
			ran++
			if i+1 >= len(blocks) || blocks[i+1].lang != "" {
				continue
			}
			checked++
			want := outputPattern(blocks[i+1].body)
			if ok, at := matchOutput(want, outputLines(stdout)); !ok {
				t.Errorf("docs/first-build.md:%d: the output differs from the page's (from line %d on: %q)\nthe page:\n%s\nprinted:\n%s\nstderr:\n%s",
					blocks[i+1].line, blocks[i+1].line+1+min(at, len(want)-1), want[min(at, len(want)-1)].text, blocks[i+1].body, stdout, stderr)
			}
		}
	}
	if ran < 5 || checked < 5 {
		t.Fatalf("ran %d sh blocks and checked %d outputs of docs/first-build.md: the page lost its commands?", ran, checked)
	}
	t.Logf("ran %d blocks, checked %d outputs", ran, checked)
}

func runShell(ctx context.Context, dir string, env []string, script string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// describeNamespace is what a failed step leaves to look at.
func describeNamespace(ns string) string {
	var b strings.Builder
	for _, args := range [][]string{{"get", "ib,pods,pvc", "-o", "wide"}, {"get", "ib", "-o", "yaml"}, {"get", "events", "--sort-by=.lastTimestamp"}} {
		cmd := exec.Command(kubectl, append([]string{"-n", ns}, args...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+env["KUBECONFIG"])
		out, _ := cmd.CombinedOutput()
		fmt.Fprintf(&b, "$ kubectl -n %s %s\n%s\n", ns, strings.Join(args, " "), out)
	}
	return b.String()
}

// sampleDockerfile is the Dockerfile of the sample's ConfigMap.
func sampleDockerfile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		cm := corev1.ConfigMap{}
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if cm.Kind == "ConfigMap" && cm.Data["Dockerfile"] != "" {
			return cm.Data["Dockerfile"]
		}
	}
	t.Fatalf("%s has no ConfigMap with a Dockerfile", path)
	return ""
}

// TestDocsSamples applies config/samples as its kustomization says (`kubectl apply -k`), with
// the local registry and bases in place of the lines marked REPLACE: every ImageBuild it makes
// builds and is pushed, and the claims it makes are the two small ones it promises.
func TestDocsSamples(t *testing.T) {
	ns := namespace(t, "e2e-samples")
	ctx := context.Background()
	samples := copySamples(t, t.TempDir(), docsReplacer(ns))
	kc(t, "-n", ns, "create", "secret", "docker-registry", "regcred", "--docker-server="+env["REGISTRY"],
		"--docker-username=e2e", "--docker-password=e2e")
	kc(t, "-n", ns, "apply", "-k", samples)
	kc(t, "-n", ns, "wait", "--for=condition=Ready", "ib", "--all", "--timeout=10m")

	ibs := &kilnv1.ImageBuildList{}
	if err := k8s.List(ctx, ibs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ib := range ibs.Items {
		names = append(names, ib.Name)
		if d, _ := registryDigest(t, ib.Spec.Output.Image+":v1"); d == "" || d != ib.Status.Digest {
			t.Errorf("%s: the registry has %q for %s:v1, status says %q", ib.Name, d, ib.Spec.Output.Image, ib.Status.Digest)
		}
	}
	if got := strings.Join(names, ","); got != "api,hello,worker" {
		t.Errorf("kubectl apply -k config/samples made the ImageBuilds %s; its kustomization promises api, hello and worker", got)
	}
	pvcs := &corev1.PersistentVolumeClaimList{}
	if err := k8s.List(ctx, pvcs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	claims := map[string]string{}
	total := resource.Quantity{}
	for _, pvc := range pvcs.Items {
		q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		claims[pvc.Name] = q.String()
		total.Add(q)
	}
	if len(claims) != 2 || claims["hello-cache"] != "2Gi" || claims["team-buildkit-cache"] != "2Gi" {
		t.Errorf("claims %v: the kustomization promises two of 2Gi (hello-cache, team-buildkit-cache)", claims)
	}
	t.Logf("claims %v, %s in all", claims, total.String())
}
