//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/cli"
)

// TestKilnBuildFollow (issue 17): `kiln build DIR --image REPO --follow` of a local directory on
// the local cluster exits 0 and prints the digest the registry has; with a budget the image
// breaks (set on the ImageBuild with kubectl, which kiln build leaves alone) it exits 2 and
// nothing is pushed.
func TestKilnBuildFollow(t *testing.T) {
	ns := namespace(t, "e2e-cli")
	dir := filepath.Join(t.TempDir(), "hello")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"Dockerfile": fmt.Sprintf(helloDockerfile, env["BASE_GOLANG"]),
		"go.mod":     "module example.com/hello\n\ngo 1.26\n",
		"main.go":    "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from kiln build\") }\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repo := env["REGISTRY"] + "/e2e/" + ns + "-hello"
	kilnBuild := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := cli.Main("build", append([]string{"--kubeconfig", env["KUBECONFIG"], "-n", ns, "--insecure", "--follow", "--image", repo}, args...), &out, &out)
		t.Logf("kiln build %s: exit %d\n%s", strings.Join(args, " "), code, out.String())
		return code, out.String()
	}

	code, out := kilnBuild(dir)
	if code != cli.ExitPushed {
		t.Fatalf("exit %d, want 0", code)
	}
	m := regexp.MustCompile(`Image:\s+(\S+@sha256:[0-9a-f]{64}) \(pushed\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no pushed image in the summary")
	}
	digest, _ := registryDigest(t, repo+":latest")
	if !strings.HasSuffix(m[1], "@"+digest) {
		t.Errorf("the summary says %s, the registry has %s", m[1], digest)
	}
	for _, want := range []string{"Uploaded", "Built in", "kiln: phases:"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q (the runner's log, streamed)", want)
		}
	}

	// A budget the image breaks, set with kubectl; kiln build keeps it: exit 2, nothing pushed.
	kc(t, "-n", ns, "patch", "ib/hello", "--type=merge", "-p", `{"spec":{"budget":{"maxImageSize":"1Ki"}}}`)
	code, out = kilnBuild("--name", "hello", dir)
	if code != cli.ExitOverBudget {
		t.Errorf("over budget: exit %d, want %d", code, cli.ExitOverBudget)
	}
	if !strings.Contains(out, "OverBudget") {
		t.Errorf("the summary does not say OverBudget")
	}
	if after, _ := registryDigest(t, repo+":latest"); after != digest {
		t.Errorf("the tag moved to %s although the budget refused the image", after)
	}
}
