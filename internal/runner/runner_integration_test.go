package runner

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/budget"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/testenv"
	"k8s.io/utils/ptr"
)

// The runner against real parts: a rootless buildkitd built from source, Debian's registry, and
// base images the harness makes locally. Subtests share one daemon and one registry.

const helloMain = `package main

import "fmt"

func main() { fmt.Println("hello from kiln") }
`

const helloDockerfile = `FROM %s AS build
WORKDIR /src
COPY go.mod ./
RUN go mod download
COPY main.go ./
RUN --mount=type=cache,target=/root/.cache/go-build CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/hello .

FROM scratch
COPY --from=build /out/hello /hello
ENTRYPOINT ["/hello"]
`

type env struct {
	t       *testing.T
	reg     *testenv.Registry
	bk      *testenv.BuildKit
	busybox string
	golang  string
}

func (e *env) paths(t *testing.T, files map[string]string) Paths {
	p := Paths{Context: filepath.Join(t.TempDir(), "none"), Work: t.TempDir(), PushSecret: filepath.Join(t.TempDir(), "none"),
		GitSecret: filepath.Join(t.TempDir(), "none"), BuildSecrets: t.TempDir()}
	if files != nil {
		p.Context = configMapDir(t, files)
	}
	return p
}

func (e *env) request(name string, mutate ...func(*contract.BuildSpec)) contract.Request {
	req := request(func(s *contract.BuildSpec) {
		s.Output.Image = e.reg.Addr + "/test/" + name
		s.Output.Insecure = true
	})
	req.Name = name
	for _, m := range mutate {
		m(&req.Spec)
	}
	return req
}

func (e *env) run(t *testing.T, req contract.Request, p Paths) contract.Result {
	t.Helper()
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res := Run(ctx, Config{Request: req, Addr: e.bk.Addr, Paths: p, ConnectTimeout: 30 * time.Second, PushAttempts: 3, PushBackoff: 200 * time.Millisecond, Out: &log})
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("KILN_TEST_SHOW_LOGS") != "" {
			t.Logf("runner log:\n%s", log.String())
		}
	})
	// Every result must fit the termination message.
	if b, err := res.Encode(); err != nil || len(b) > contract.MaxResultBytes {
		t.Errorf("result does not fit the termination message: %d bytes, %v", len(b), err)
	}
	return res
}

// get fetches ref with a context that outlives the call, so its blobs can be read lazily.
func (e *env) get(t *testing.T, ref string) *remote.Descriptor {
	t.Helper()
	d, err := remote.Get(e.reg.ParseRef(t, ref), e.reg.RemoteOptions(context.Background())...)
	if err != nil {
		t.Fatalf("reading %s from the registry: %v", ref, err)
	}
	return d
}

func helloFiles(golang, message string) map[string]string {
	return map[string]string{
		"go.mod":     "module example.com/hello\n\ngo 1.26\n",
		"main.go":    strings.Replace(helloMain, "hello from kiln", message, 1),
		"Dockerfile": fmt.Sprintf(helloDockerfile, golang),
	}
}

func TestRunnerWithRealBuildKit(t *testing.T) {
	testenv.SkipUnlessBuildKitPossible(t)
	reg := testenv.StartRegistry(t)
	state := t.TempDir()
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{StateDir: state, InsecureRegistries: []string{reg.Addr}})
	e := &env{t: t, reg: reg, bk: bk, busybox: testenv.BusyboxImage(t, reg), golang: testenv.GoImage(t, reg)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("buildkitd log:\n%s", bk.Log())
		}
	})

	t.Run("go hello world multi-stage to scratch, cached rebuild, source change", func(t *testing.T) { e.testHello(t) })
	t.Run("over budget under Enforce is not pushed", func(t *testing.T) { e.testOverBudgetEnforce(t) })
	t.Run("over budget under Warn is pushed", func(t *testing.T) { e.testOverBudgetWarn(t) })
	t.Run("bad inputs fail clearly and push nothing", func(t *testing.T) { e.testBadInputs(t) })
	t.Run("unreachable registry is retried then fails", func(t *testing.T) { e.testUnreachableRegistry(t) })
	t.Run("build secret never lands in a layer", func(t *testing.T) { e.testBuildSecret(t) })
	t.Run("two platforms push an index", func(t *testing.T) { e.testTwoPlatforms(t) })
	t.Run("wasted bytes", func(t *testing.T) { e.testWaste(t) })
	t.Run("growth names the new layer", func(t *testing.T) { e.testGrowth(t) })
	t.Run("plain HTTP needs output.insecure", func(t *testing.T) { e.testPlainHTTP(t) })
	t.Run("push with credentials", func(t *testing.T) { e.testPushAuth(t) })
	t.Run("git context at a tag with an inline Dockerfile", func(t *testing.T) { e.testGit(t) })
	t.Run("git sources that cannot be fetched", func(t *testing.T) { e.testGitFailures(t) })
	t.Run("credentials never reach the log or the result", func(t *testing.T) { e.testSentinels(t) })
	t.Run("git over ssh checks the host key and keeps the key to itself", func(t *testing.T) { e.testGitSSH(t) })
	t.Run("failed build carries a redacted log tail", func(t *testing.T) { e.testLogTail(t) })
	t.Run("reset cache empties it before the build", func(t *testing.T) { e.testResetCache(t) })
	t.Run("download then delete yields measured advice", func(t *testing.T) { e.testAdvice(t) })
	t.Run("a 64 Ki-character inline Dockerfile travels as request files and builds", func(t *testing.T) { e.testLargeInlineDockerfile(t) })
}

func (e *env) testAdvice(t *testing.T) {
	req := e.request("advised")
	res := e.run(t, req, e.paths(t, map[string]string{"Dockerfile": "FROM " + e.busybox + "\n" +
		"RUN head -c 5000000 /dev/urandom > /tmp/pkg.tar.gz && echo downloaded\n" +
		"RUN rm /tmp/pkg.tar.gz\n"}))
	if res.FailureClass != "" {
		t.Fatalf("build failed: %s", res.Message)
	}
	wasted := res.Platforms[0].WastedBytes
	if wasted != 5_000_000 {
		t.Fatalf("measured waste %d, want the 5000000-byte download", wasted)
	}
	var measured, static *contract.Advice
	for i, a := range res.Advice {
		switch a.Rule {
		case "wasted-bytes":
			measured = &res.Advice[i]
		case "files-deleted-later":
			static = &res.Advice[i]
		}
	}
	if measured == nil || static == nil {
		t.Fatalf("advice lacks wasted-bytes or files-deleted-later: %+v", res.Advice)
	}
	if measured.Line != 2 || !strings.Contains(measured.Message, "3") {
		t.Errorf("wasted-bytes finding should point at the download (line 2) and name the deleting line 3: %+v", *measured)
	}
	if diff := measured.SavingBytes - wasted; diff < -wasted/20 || diff > wasted/20 {
		t.Errorf("saving %d is not within 5%% of the measured waste %d", measured.SavingBytes, wasted)
	}
	if static.Line != 2 {
		t.Errorf("files-deleted-later at line %d, want 2", static.Line)
	}
}

func (e *env) testLogTail(t *testing.T) {
	const value = "tail-secret-93c1d"
	req := e.request("tail", func(s *contract.BuildSpec) {
		s.Dockerfile.Secrets = []contract.BuildSecret{{ID: "token", SecretRef: contract.SecretKeyRef{Name: "api", Key: "token"}}}
	})
	p := e.paths(t, map[string]string{"Dockerfile": "FROM " + e.busybox + "\n" +
		`RUN --mount=type=secret,id=token echo "the token is $(cat /run/secrets/token)" && echo compiling widgets && exit 4` + "\n"})
	_ = os.MkdirAll(filepath.Join(p.BuildSecrets, "token"), 0o755)
	if err := os.WriteFile(filepath.Join(p.BuildSecrets, "token", contract.BuildSecretFile), []byte(value), 0o400); err != nil {
		t.Fatal(err)
	}
	res := e.run(t, req, p)
	if res.FailureClass != kilnv1.FailureBuildFailed {
		t.Fatalf("class %q: %s", res.FailureClass, res.Message)
	}
	if !strings.Contains(res.LogTail, "compiling widgets") || !strings.Contains(res.LogTail, "the token is ***") {
		t.Errorf("log tail lacks the failing step's output:\n%s", res.LogTail)
	}
	if strings.Contains(res.LogTail, value) || strings.Contains(res.Message, value) {
		t.Error("the secret value reached the result")
	}
}

func (e *env) testResetCache(t *testing.T) {
	files := helloFiles(e.golang, "hello from kiln")
	req := e.request("hello", func(s *contract.BuildSpec) { s.Output.Tags = []string{"reset"} })
	if first := e.run(t, req, e.paths(t, files)); first.FailureClass != "" {
		t.Fatalf("first build: %s", first.Message)
	}
	warm := e.run(t, req, e.paths(t, files))
	if warm.FailureClass != "" || warm.CachedSteps == 0 {
		t.Fatalf("warm build: %s %q, %d of %d cached", warm.FailureClass, warm.Message, warm.CachedSteps, warm.TotalSteps)
	}
	req.ResetCache = true
	cold := e.run(t, req, e.paths(t, files))
	if cold.FailureClass != "" {
		t.Fatalf("build after reset failed: %s", cold.Message)
	}
	if cold.CachedSteps != 0 {
		t.Errorf("after a cache reset %d of %d steps were cached", cold.CachedSteps, cold.TotalSteps)
	}
}

func (e *env) testHello(t *testing.T) {
	budget := &contract.BudgetSpec{MaxImageSize: ptr.To[int64](5 << 20), MaxLayers: ptr.To[int32](2)}
	req := e.request("hello", func(s *contract.BuildSpec) {
		s.Output.Tags = []string{"v1", "latest"}
		s.Output.Reproducible = true
		s.Budget = budget
	})
	files := helloFiles(e.golang, "hello from kiln")
	res := e.run(t, req, e.paths(t, files))
	if res.FailureClass != "" {
		t.Fatalf("build failed: %s: %s", res.FailureClass, res.Message)
	}
	if !res.Pushed || res.Digest == "" || res.Image != req.Spec.Output.Image+"@"+res.Digest {
		t.Fatalf("result %+v", res)
	}
	// The sizes in the result equal the registry's manifest, byte for byte.
	desc := e.get(t, req.Spec.Output.Image+":v1")
	if desc.Digest.String() != res.Digest {
		t.Errorf("registry has %s at v1, result says %s", desc.Digest, res.Digest)
	}
	if got := e.reg.Digest(t, req.Spec.Output.Image+":latest"); got != res.Digest {
		t.Errorf("latest is %s, want %s", got, res.Digest)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	want := measure.ManifestSize(m)
	if len(res.Platforms) != 1 || res.Platforms[0].CompressedBytes != want {
		t.Fatalf("result platforms %+v; registry manifest totals %d", res.Platforms, want)
	}
	p := res.Platforms[0]
	if p.Layers != int32(len(m.Layers)) || p.Layers != 1 {
		t.Errorf("layers %d, manifest has %d; want the binary's one layer", p.Layers, len(m.Layers))
	}
	if len(p.LargestLayers) != 1 || p.LargestLayers[0].Line != 9 || !strings.HasPrefix(p.LargestLayers[0].CreatedBy, "COPY --from=build /out/hello /hello") {
		t.Errorf("largest layer not attributed to Dockerfile:9: %+v", p.LargestLayers)
	}
	if res.Budget == nil || res.Budget.Over() || len(res.Budget.Checks) != 2 {
		t.Errorf("budget %+v", res.Budget)
	}
	// The image holds nothing but the binary.
	files1 := layerFiles(t, img)
	if len(files1) != 1 || files1[0] != "hello" {
		t.Errorf("image files %v, want only hello", files1)
	}
	if res.TotalSteps != 6 || res.CachedSteps != 0 {
		t.Errorf("first build: %d of %d steps cached; want 0 of 6 (WORKDIR, COPY, RUN, COPY, RUN, COPY)", res.CachedSteps, res.TotalSteps)
	}

	// Rebuild, same state, nothing changed: every step cached, same digest (reproducible).
	res2 := e.run(t, req, e.paths(t, files))
	if res2.FailureClass != "" {
		t.Fatalf("rebuild failed: %s", res2.Message)
	}
	if res2.CachedSteps != res2.TotalSteps || res2.TotalSteps != res.TotalSteps {
		t.Errorf("rebuild cached %d of %d steps (first build had %d); want all cached", res2.CachedSteps, res2.TotalSteps, res.TotalSteps)
	}
	if res2.Digest != res.Digest {
		t.Errorf("reproducible rebuild changed the digest: %s then %s", res.Digest, res2.Digest)
	}

	// A one-line source change: only the source copy, the build and the final copy run again.
	res3 := e.run(t, req, e.paths(t, helloFiles(e.golang, "hello again")))
	if res3.FailureClass != "" {
		t.Fatalf("changed build failed: %s", res3.Message)
	}
	if ran := res3.TotalSteps - res3.CachedSteps; ran != 3 {
		t.Errorf("after a one-line change %d steps ran (cached %d of %d); want 3: COPY main.go, RUN go build, COPY --from=build", ran, res3.CachedSteps, res3.TotalSteps)
	}
	if res3.Digest == res.Digest {
		t.Error("a source change kept the digest")
	}
}

func (e *env) testOverBudgetEnforce(t *testing.T) {
	req := e.request("fat", func(s *contract.BuildSpec) {
		s.Budget = &contract.BudgetSpec{MaxImageSize: ptr.To[int64](100 << 10)}
	})
	res := e.run(t, req, e.paths(t, map[string]string{"Dockerfile": "FROM " + e.busybox + "\nRUN echo fat > /fat\n"}))
	if res.FailureClass != kilnv1.FailureOverBudget || contract.ExitCode(res.FailureClass) != contract.ExitOverBudget {
		t.Fatalf("class %q (%s), want OverBudget", res.FailureClass, res.Message)
	}
	if res.Message != "" || !res.Budget.Over() || !strings.Contains(budget.Message(budget.Status(res.Budget, res.Platforms)), "over maxImageSize 100Ki") {
		t.Errorf("an over-budget result says it in numbers, which the manager words: message %q, budget %+v", res.Message, res.Budget)
	}
	if res.Pushed || !strings.HasPrefix(res.Digest, "sha256:") || res.Image != req.Spec.Output.Image+"@"+res.Digest {
		t.Errorf("an over-budget image is named (digest %q, image %q) but not pushed (pushed %v)", res.Digest, res.Image, res.Pushed)
	}
	for _, r := range e.reg.Repositories(t) {
		if r == "test/fat" {
			t.Fatalf("the registry has repository test/fat (tags %v) after an enforced budget failure", e.reg.Tags(t, r))
		}
	}
}

func (e *env) testOverBudgetWarn(t *testing.T) {
	req := e.request("warned", func(s *contract.BuildSpec) {
		s.Budget = &contract.BudgetSpec{MaxImageSize: ptr.To[int64](100 << 10), Enforcement: kilnv1.EnforcementWarn}
	})
	res := e.run(t, req, e.paths(t, map[string]string{"Dockerfile": "FROM " + e.busybox + "\nRUN echo fat > /fat\n"}))
	if res.FailureClass != "" || !res.Pushed {
		t.Fatalf("under Warn the image is pushed: %s %s", res.FailureClass, res.Message)
	}
	if !res.Budget.Over() || res.Budget.Enforcement != kilnv1.EnforcementWarn {
		t.Errorf("budget %+v", res.Budget)
	}
	if got := e.reg.Digest(t, req.Spec.Output.Image+":v1"); got != res.Digest {
		t.Errorf("registry %s, result %s", got, res.Digest)
	}
}

func (e *env) testBadInputs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		files  map[string]string
		spec   func(*contract.BuildSpec)
		class  kilnv1.FailureClass
		expect string
	}{
		{"syntax error", map[string]string{"Dockerfile": "FROM " + e.busybox + "\nCOPY\n"}, nil, kilnv1.FailureBadInput, "Dockerfile:2:"},
		{"missing base image", map[string]string{"Dockerfile": "FROM " + e.reg.Addr + "/base/nope:1\nRUN true\n"}, nil, kilnv1.FailureBadInput, "base/nope:1"},
		{"unknown target", map[string]string{"Dockerfile": "FROM " + e.busybox + " AS one\n"}, func(s *contract.BuildSpec) { s.Dockerfile.Target = "two" },
			kilnv1.FailureBadInput, `spec.dockerfile.target "two" is not a stage`},
		{"missing build secret", map[string]string{"Dockerfile": "FROM " + e.busybox + "\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n"}, func(s *contract.BuildSpec) {
			s.Dockerfile.Secrets = []contract.BuildSecret{{ID: "tok", SecretRef: contract.SecretKeyRef{Name: "api-token", Key: "token"}}}
		}, kilnv1.FailureBadInput, `Secret "api-token" in namespace "team" is missing or has no key "token"`},
		{"failing RUN step", map[string]string{"Dockerfile": "FROM " + e.busybox + "\nRUN echo about to fail && exit 3\n"}, nil, kilnv1.FailureBuildFailed, "exit code: 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := e.request("bad-"+strings.ToLower(strings.ReplaceAll(tc.name, " ", "-")), func(s *contract.BuildSpec) {
				if tc.spec != nil {
					tc.spec(s)
				}
			})
			res := e.run(t, req, e.paths(t, tc.files))
			if res.FailureClass != tc.class || !strings.Contains(res.Message, tc.expect) {
				t.Errorf("got %s %q\nwant %s containing %q", res.FailureClass, res.Message, tc.class, tc.expect)
			}
			if res.Pushed {
				t.Error("pushed after a failure")
			}
			if tags := e.reg.Tags(t, "test/"+req.Name); len(tags) > 0 {
				t.Errorf("registry has tags %v", tags)
			}
		})
	}
}

func (e *env) testUnreachableRegistry(t *testing.T) {
	other := testenv.StartRegistry(t)
	req := e.request("unreachable", func(s *contract.BuildSpec) { s.Output.Image = other.Addr + "/test/unreachable" })
	other.Stop()
	res := e.run(t, req, e.paths(t, map[string]string{"Dockerfile": "FROM " + e.busybox + "\nRUN echo x > /x\n"}))
	if res.FailureClass != kilnv1.FailurePushFailed || contract.ExitCode(res.FailureClass) != contract.ExitPushFailed {
		t.Fatalf("class %q (%s), want PushFailed", res.FailureClass, res.Message)
	}
	if !strings.Contains(res.Message, "after 3 attempts") || !strings.Contains(res.Message, other.Addr) {
		t.Errorf("message %q", res.Message)
	}
	if !kilnv1.Transient(res.FailureClass) {
		t.Error("a push failure is transient: the manager retries the build")
	}
	other.Restart(t)
	if tags := other.Tags(t, "test/unreachable"); len(tags) > 0 {
		t.Errorf("registry has tags %v", tags)
	}
}

func (e *env) testBuildSecret(t *testing.T) {
	const value = "s3cr3t-kiln-value-7f3a"
	req := e.request("secret", func(s *contract.BuildSpec) {
		s.Dockerfile.Secrets = []contract.BuildSecret{{ID: "token", SecretRef: contract.SecretKeyRef{Name: "api", Key: "token"}}}
	})
	// The Dockerfile checks the secret by its hash, so that its text does not hold the value.
	sum := sha256.Sum256([]byte(value))
	p := e.paths(t, map[string]string{"Dockerfile": "FROM " + e.busybox + "\n" +
		`RUN --mount=type=secret,id=token sha256sum /run/secrets/token | grep -q ` + hex.EncodeToString(sum[:]) + ` && echo used > /used` + "\n"})
	_ = os.MkdirAll(filepath.Join(p.BuildSecrets, "token"), 0o755)
	if err := os.WriteFile(filepath.Join(p.BuildSecrets, "token", contract.BuildSecretFile), []byte(value), 0o400); err != nil {
		t.Fatal(err)
	}
	res := e.run(t, req, p)
	if res.FailureClass != "" {
		t.Fatalf("build failed (was the secret offered?): %s", res.Message)
	}
	img, err := e.get(t, req.Spec.Output.Image+":v1").Image()
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	found := false
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		if bytes.Contains(data, []byte(value)) {
			t.Errorf("layer %d contains the secret", i)
		}
		found = found || bytes.Contains(data, []byte("used\n"))
	}
	if !found {
		t.Error("the RUN step that used the secret left no /used file: the test proves nothing")
	}
	cfg, _ := img.RawConfigFile()
	if bytes.Contains(cfg, []byte(value)) {
		t.Error("the image config contains the secret")
	}
}

func (e *env) testTwoPlatforms(t *testing.T) {
	req := e.request("multi", func(s *contract.BuildSpec) {
		s.Dockerfile.Platforms = []string{"linux/amd64", "linux/arm64"}
		s.Budget = &contract.BudgetSpec{MaxImageSize: ptr.To[int64](1 << 20)}
	})
	res := e.run(t, req, e.paths(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY hello.txt /\n", "hello.txt": "hello\n"}))
	if res.FailureClass != "" {
		t.Fatalf("build failed: %s", res.Message)
	}
	desc := e.get(t, req.Spec.Output.Image+":v1")
	if !desc.MediaType.IsIndex() {
		t.Fatalf("pushed %s, want an index", desc.MediaType)
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	platforms := map[string]int64{}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.OS != "unknown" {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			platforms[d.Platform.OS+"/"+d.Platform.Architecture] = measure.ManifestSize(m)
		}
	}
	if len(platforms) != 2 || len(res.Platforms) != 2 {
		t.Fatalf("index platforms %v, result %+v", platforms, res.Platforms)
	}
	for _, p := range res.Platforms {
		if platforms[p.Platform] != p.CompressedBytes {
			t.Errorf("%s: result %d bytes, registry %d", p.Platform, p.CompressedBytes, platforms[p.Platform])
		}
	}
	if n := len(res.Budget.Checks); n != 2 {
		t.Errorf("budget checked %d platform images, want 2", n)
	}
}

func (e *env) testWaste(t *testing.T) {
	req := e.request("waste", func(s *contract.BuildSpec) {
		s.Budget = &contract.BudgetSpec{MaxWastedSize: ptr.To[int64](1 << 20), Enforcement: kilnv1.EnforcementWarn}
	})
	res := e.run(t, req, e.paths(t, map[string]string{"Dockerfile": "FROM " + e.busybox + "\n" +
		"RUN dd if=/dev/urandom of=/big bs=1048576 count=10\nRUN rm /big\n"}))
	if res.FailureClass != "" {
		t.Fatalf("build failed: %s", res.Message)
	}
	if w := res.Platforms[0].WastedBytes; w != 10<<20 {
		t.Errorf("wasted %d bytes, want %d (the deleted 10 MiB file)", w, 10<<20)
	}
	if st := budget.Status(res.Budget, res.Platforms); st.Verdict != kilnv1.VerdictOverBudget || !strings.Contains(st.Checks[0].Message, "10.0MiB wasted is 9.0MiB over maxWastedSize 1Mi") ||
		!strings.Contains(st.Checks[0].Message, "10.0MiB in 1 file, /big, RUN dd if=/dev/urandom of=/big bs=1048576 count=10 (Dockerfile:2) added and RUN rm /big (Dockerfile:3) deleted") {
		t.Errorf("the waste message does not name the file and the two steps: %+v", st.Checks)
	}
}

// testGrowth: a broken maxGrowth names the new layer that grew the image, and its line.
func (e *env) testGrowth(t *testing.T) {
	files := map[string]string{"Dockerfile": "FROM " + e.busybox + "\nRUN echo small > /small\n"}
	req := e.request("growth", func(s *contract.BuildSpec) {
		s.Budget = &contract.BudgetSpec{MaxGrowth: ptr.To[int64](100 << 10)}
	})
	if res := e.run(t, req, e.paths(t, files)); res.FailureClass != "" {
		t.Fatalf("first build failed: %s", res.Message)
	}
	files["Dockerfile"] += "RUN dd if=/dev/urandom of=/big bs=1048576 count=2\n"
	res := e.run(t, req, e.paths(t, files))
	if res.FailureClass != kilnv1.FailureOverBudget {
		t.Fatalf("class %q (%s), want OverBudget", res.FailureClass, res.Message)
	}
	msg := budget.Message(budget.Status(res.Budget, res.Platforms))
	if !strings.Contains(msg, "over maxGrowth 100Ki; the largest layer the current image lacks is 2.0MiB from RUN dd if=/dev/urandom of=/big bs=1048576 count=2 (Dockerfile:3)") {
		t.Errorf("the growth message does not name the new layer and its line:\n%s", msg)
	}
}

func (e *env) testPushAuth(t *testing.T) {
	private := testenv.StartRegistry(t, testenv.WithBasicAuth("kiln", "right-password"))
	for _, tc := range []struct {
		password string
		class    kilnv1.FailureClass
	}{{"right-password", ""}, {"wrong-password", kilnv1.FailureBadInput}} {
		req := e.request("private", func(s *contract.BuildSpec) {
			s.Output.Image = private.Addr + "/test/private"
			s.Output.PushSecretRef = &contract.SecretRef{Name: "regcred"}
		})
		p := e.paths(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY a /\n", "a": "a"})
		cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{private.Addr: map[string]string{
			"auth": base64.StdEncoding.EncodeToString([]byte("kiln:" + tc.password))}}})
		_ = os.MkdirAll(p.PushSecret, 0o755)
		if err := os.WriteFile(filepath.Join(p.PushSecret, ".dockerconfigjson"), cfg, 0o400); err != nil {
			t.Fatal(err)
		}
		res := e.run(t, req, p)
		if res.FailureClass != tc.class {
			t.Errorf("password %s: class %q (%s), want %q", tc.password, res.FailureClass, res.Message, tc.class)
		}
		if tc.class != "" && !strings.Contains(res.Message, `check push Secret "regcred"`) {
			t.Errorf("message %q does not name the push Secret", res.Message)
		}
		if strings.Contains(res.Message, tc.password) {
			t.Error("the message shows the password")
		}
	}
	if got := private.Tags(t, "test/private"); len(got) != 1 || got[0] != "v1" {
		t.Errorf("private registry tags %v", got)
	}
}

func (e *env) testGit(t *testing.T) {
	work, git := testenv.GitRepo(t, map[string]string{"app/hello.txt": "from git\n"})
	git("tag", "v1")
	commit := git("rev-parse", "HEAD")
	repo := filepath.Join(t.TempDir(), "app.git")
	git("clone", "-q", "--bare", work, repo)
	addr := testenv.StartGitDaemon(t, filepath.Dir(repo))

	req := e.request("fromgit", func(s *contract.BuildSpec) {
		s.Source = contract.Source{Git: &contract.GitSource{URL: "git://" + addr + "/app.git", Revision: "v1", ContextDir: "app", Insecure: true}}
		s.Dockerfile.Inline = "FROM scratch\nCOPY hello.txt /\n"
		s.Output.Reproducible = true
	})
	res := e.run(t, req, e.paths(t, nil))
	if res.FailureClass != "" {
		t.Fatalf("git build failed: %s", res.Message)
	}
	if res.Revision != commit {
		t.Errorf("revision %q, want the tag's commit %s", res.Revision, commit)
	}
	img, err := e.get(t, req.Spec.Output.Image+":v1").Image()
	if err != nil {
		t.Fatal(err)
	}
	if f := layerFiles(t, img); len(f) != 1 || f[0] != "hello.txt" {
		t.Errorf("image files %v", f)
	}
	cf, _ := img.ConfigFile()
	if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); !cf.Created.Equal(want) {
		t.Errorf("created %s, want the commit time %s (SOURCE_DATE_EPOCH from git)", cf.Created.Time, want)
	}
}

// layerFiles lists the regular files of every layer of img, in layer order.
func layerFiles(t *testing.T, img v1.Image) []string {
	t.Helper()
	var files []string
	eachLayerFile(t, img, func(name string, _ io.Reader) { files = append(files, strings.TrimPrefix(name, "/")) })
	return files
}

// eachLayerFile calls fn with the name and content of each regular file of every layer of img,
// in layer order.
func eachLayerFile(t *testing.T, img v1.Image, fn func(name string, content io.Reader)) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				fn(h.Name, tr)
			}
		}
		rc.Close()
	}
}

// testPlainHTTP: a registry that speaks only plain HTTP (here on 127.0.0.1, which
// go-containerregistry would use over HTTP on its own) is refused without spec.output.insecure,
// naming the field, and nothing is pushed (issue 19 item 10).
func (e *env) testPlainHTTP(t *testing.T) {
	req := e.request("plain", func(s *contract.BuildSpec) { s.Output.Insecure = false })
	res := e.run(t, req, e.paths(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY a /\n", "a": "a"}))
	if res.FailureClass != kilnv1.FailureBadInput || res.Pushed || !strings.Contains(res.Message, "set spec.output.insecure: true") {
		t.Errorf("class %q, pushed %v: %s", res.FailureClass, res.Pushed, res.Message)
	}
	for _, r := range e.reg.Repositories(t) {
		if r == "test/plain" {
			t.Errorf("the registry has test/plain after a refused plain-HTTP push")
		}
	}
}
