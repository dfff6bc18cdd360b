//go:build e2e

// Package e2e drives kiln through a real single-node cluster (hack/local-cluster): real kubelet,
// containerd, rootless BuildKit in build pods, a real registry. Run with `make e2e`.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/testenv"
)

var (
	k8s     client.Client
	env     map[string]string
	kubectl string
	root    string
)

func TestMain(m *testing.M) {
	wd, _ := os.Getwd()
	root = filepath.Join(wd, "..", "..")
	data, err := os.ReadFile(filepath.Join(root, ".kiln", "local-cluster", "env"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e needs the local cluster: run `make e2e`, which brings it up and installs kiln")
		os.Exit(1)
	}
	env = map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			env[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	kubectl = env["KUBECTL"]
	cfg, err := clientcmd.BuildConfigFromFlags("", env["KUBECONFIG"])
	if err != nil {
		panic(err)
	}
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = kilnv1.AddToScheme(s)
	if k8s, err = client.New(cfg, client.Options{Scheme: s}); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

func kc(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env["KUBECONFIG"])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// namespace makes the test's namespace afresh (deleting one a kept failure left) and deletes it
// when the test ends, with its claims and their volumes, so that tests do not pile up claims on
// the cluster. KILN_E2E_KEEP=1 keeps the namespace of a failed test for inspection.
func namespace(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}}}
	if err := deleteNamespace(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("KILN_E2E_KEEP") == "1" {
			t.Logf("KILN_E2E_KEEP=1: keeping namespace %s of the failed test (kubectl delete namespace %s when done)", name, name)
			return
		}
		if err := deleteNamespace(ctx, name); err != nil {
			t.Error(err)
		}
	})
	return name
}

// deleteNamespace deletes the namespace and waits until it is gone and so are the volumes its
// claims were bound to (the local cluster's provisioner deletes them once the claims are gone).
func deleteNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting namespace %s: %w", name, err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for k8s.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{}) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s is not gone 3m after its deletion", name)
		}
		time.Sleep(time.Second)
	}
	deadline = time.Now().Add(time.Minute)
	for {
		pvs := &corev1.PersistentVolumeList{}
		if err := k8s.List(ctx, pvs); err != nil {
			return err
		}
		var left []string
		for _, pv := range pvs.Items {
			if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == name && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete {
				left = append(left, pv.Name+" ("+string(pv.Status.Phase)+")")
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s is gone but not the volumes of its claims: %s", name, strings.Join(left, ", "))
		}
		time.Sleep(time.Second)
	}
}

const helloDockerfile = `FROM %s AS build
WORKDIR /src
COPY go.mod ./
RUN --mount=type=cache,target=/root/.cache/go-mod go mod download
COPY main.go ./
RUN --mount=type=cache,target=/root/.cache/go-build CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/hello .

FROM scratch
COPY --from=build /out/hello /hello
USER 65532:65532
ENTRYPOINT ["/hello"]
`

func helloSource(t *testing.T, ns, name, greeting string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string]string{
		"go.mod":     "module example.com/hello\n\ngo 1.26\n",
		"main.go":    fmt.Sprintf("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(%q) }\n", greeting),
		"Dockerfile": fmt.Sprintf(helloDockerfile, env["BASE_GOLANG"]),
	}}
	err := k8s.Create(context.Background(), cm)
	if apierrors.IsAlreadyExists(err) {
		err = k8s.Update(context.Background(), cm)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func imageBuild(ns, name, src string, mutate ...func(*kilnv1.ImageBuild)) *kilnv1.ImageBuild {
	ib := &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kilnv1.ImageBuildSpec{
			Source: kilnv1.Source{ConfigMap: &kilnv1.ConfigMapSource{Name: src}},
			Output: kilnv1.Output{Image: env["REGISTRY"] + "/e2e/" + ns + "-" + name, Tags: []string{"v1"}, Insecure: true},
			Cache:  kilnv1.Cache{Size: ptr.To(resource.MustParse("2Gi"))},
		},
	}
	for _, m := range mutate {
		m(ib)
	}
	return ib
}

// waitFor polls the ImageBuild until done says so, or fails after timeout with its status.
func waitFor(t *testing.T, ib *kilnv1.ImageBuild, timeout time.Duration, what string, done func(*kilnv1.ImageBuild) bool) *kilnv1.ImageBuild {
	t.Helper()
	deadline := time.Now().Add(timeout)
	cur := &kilnv1.ImageBuild{}
	for {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ib), cur); err == nil && done(cur) {
			return cur
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s: not %s after %s; status: %+v", ib.Namespace, ib.Name, what, timeout, cur.Status)
		}
		time.Sleep(time.Second)
	}
}

func ready(ib *kilnv1.ImageBuild) bool {
	return ib.Status.ObservedGeneration == ib.Generation && meta.IsStatusConditionTrue(ib.Status.Conditions, kilnv1.ConditionReady)
}

func registryDigest(t *testing.T, ref string) (string, int64) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(r)
	if err != nil {
		return "", 0
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return desc.Digest.String(), measure.ManifestSize(m)
}

// buildKitLog is the log of a build pod's buildkitd once the pod has finished: kiln records a
// build as soon as its runner ends, while buildkitd still stops.
func buildKitLog(t *testing.T, ns, pod string) string {
	t.Helper()
	kc(t, "-n", ns, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/"+pod, "--timeout=60s")
	return kc(t, "-n", ns, "logs", pod, "-c", "buildkitd")
}

func buildSeconds(t *testing.T, ib *kilnv1.ImageBuild) float64 {
	t.Helper()
	d, err := time.ParseDuration(ib.Status.LastBuild.Duration)
	if err != nil {
		t.Fatalf("lastBuild.duration %q: %v", ib.Status.LastBuild.Duration, err)
	}
	return d.Seconds()
}

func TestColdBuildThenCachedRebuild(t *testing.T) {
	ns := namespace(t, "e2e-hello")
	helloSource(t, ns, "hello-src", "hello from kiln e2e")
	ib := imageBuild(ns, "hello", "hello-src", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Budget = &kilnv1.Budget{MaxImageSize: ptr.To(resource.MustParse("5Mi"))}
		// This test is about BuildKit's cache on the claim: without the supply chain's fixed
		// cost (about 1 s for the SBOM, hack/bench/runner.sh TestBenchSupplyChain), which the
		// cache cannot shorten and which TestSignedBuildVerifies covers.
		ib.Spec.Output.Provenance, ib.Spec.Output.SBOM = kilnv1.ProvenanceNone, ptr.To(false)
	})
	if err := k8s.Create(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	cold := waitFor(t, ib, 10*time.Minute, "Ready", ready)
	digest, size := registryDigest(t, ib.Spec.Output.Image+":v1")
	if digest != cold.Status.Digest {
		t.Errorf("status digest %s, registry %s", cold.Status.Digest, digest)
	}
	if len(cold.Status.Size.Platforms) != 1 || cold.Status.Size.Platforms[0].CompressedBytes != size {
		t.Errorf("status sizes %+v, registry manifest %d", cold.Status.Size, size)
	}
	kc(t, "-n", ns, "wait", "--for=condition=Ready", "ib/hello", "--timeout=10s")

	// The build pod ran rootless, as non-root, with no service-account token.
	pod := &corev1.Pod{}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "hello-build-1"}, pod); err != nil {
		t.Fatal(err)
	}
	if ptr.Deref(pod.Spec.AutomountServiceAccountToken, true) {
		t.Error("the build pod mounts a service-account token")
	}
	for _, v := range pod.Spec.Volumes {
		if v.Projected != nil {
			t.Errorf("the build pod has a projected volume %s (a token?)", v.Name)
		}
	}
	if log := kc(t, "-n", ns, "logs", "hello-build-1", "-c", "runner"); !strings.Contains(log, "as uid 1000") {
		t.Errorf("the runner did not run as uid 1000:\n%s", log)
	}
	// buildkitd's stop at the end of the build says that it was expected, and ends without an
	// error from rootlesskit (issue 19 item 4).
	bkLog := buildKitLog(t, ns, "hello-build-1")
	if !strings.Contains(bkLog, "this stop is expected") || !strings.Contains(bkLog, "kiln: buildkitd has stopped") ||
		strings.Contains(bkLog, "[rootlesskit:parent] error") {
		t.Errorf("buildkitd's stop does not read as expected:\n%s", bkLog)
	}

	// A rebuild: new pod, same claim, every step cached, much faster.
	kc(t, "-n", ns, "annotate", "ib/hello", "kiln.dev/rebuild-requested-at="+time.Now().UTC().Format(time.RFC3339), "--overwrite")
	warm := waitFor(t, ib, 5*time.Minute, "rebuilt", func(ib *kilnv1.ImageBuild) bool {
		return ready(ib) && ib.Status.LastBuild.PodName == "hello-build-2"
	})
	if warm.Status.Cache.ClaimName != "hello-cache" || warm.Status.Cache.CachedSteps != warm.Status.Cache.TotalSteps {
		t.Errorf("rebuild cache %+v: want every step cached on hello-cache", warm.Status.Cache)
	}
	c, w := buildSeconds(t, cold), buildSeconds(t, warm)
	t.Logf("cold build %.1fs, cached rebuild %.1fs", c, w)
	if w*5 > c {
		t.Errorf("cached rebuild %.1fs is not 5x faster than the cold build %.1fs", w, c)
	}
}

func TestOverBudgetIsNotPushed(t *testing.T) {
	ns := namespace(t, "e2e-fat")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fat-src"}, Data: map[string]string{
		"Dockerfile": "FROM " + env["BASE_BUSYBOX"] + "\nRUN head -c 3000000 /dev/urandom > /blob\n",
	}}
	if err := k8s.Create(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	ib := imageBuild(ns, "fat", "fat-src", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Budget = &kilnv1.Budget{MaxImageSize: ptr.To(resource.MustParse("2Mi"))}
	})
	if err := k8s.Create(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	cur := waitFor(t, ib, 10*time.Minute, "BudgetExceeded", func(ib *kilnv1.ImageBuild) bool { return ib.Status.Phase == kilnv1.PhaseBudgetExceeded })
	if c := meta.FindStatusCondition(cur.Status.Conditions, kilnv1.ConditionSizeBudget); c == nil || !strings.Contains(c.Message, "over maxImageSize 2Mi") {
		t.Errorf("SizeBudget %+v", c)
	}
	if d, _ := registryDigest(t, ib.Spec.Output.Image+":v1"); d != "" {
		t.Errorf("the registry has %s:v1 (%s) after an enforced budget failure", ib.Spec.Output.Image, d)
	}
}

func TestGitSourceAtATagWithInlineDockerfile(t *testing.T) {
	ns := namespace(t, "e2e-git")
	work, git := testenv.GitRepo(t, map[string]string{"app/hello.txt": "from git\n"})
	git("tag", "v1")
	commit := git("rev-parse", "HEAD")
	base := t.TempDir()
	git("clone", "-q", "--bare", work, filepath.Join(base, "app.git"))
	gw, _, _ := strings.Cut(env["REGISTRY"], ":") // the bridge gateway: pods reach it
	addr := testenv.StartGitDaemonOn(t, base, gw)

	ib := imageBuild(ns, "fromgit", "", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Source = kilnv1.Source{Git: &kilnv1.GitSource{URL: "git://" + addr + "/app.git", Revision: "v1", ContextDir: "app", Insecure: true}}
		ib.Spec.Dockerfile.Inline = "FROM scratch\nCOPY hello.txt /\n"
	})
	if err := k8s.Create(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	cur := waitFor(t, ib, 10*time.Minute, "Ready", ready)
	if cur.Status.Revision != commit {
		t.Errorf("revision %q, want %s", cur.Status.Revision, commit)
	}
}

func TestSharedClaimOneBuildAtATime(t *testing.T) {
	ns := namespace(t, "e2e-shared")
	ctx := context.Background()
	helloSource(t, ns, "src", "shared")
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "team-cache", Labels: map[string]string{"kiln.dev/cache": "true"}}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("2Gi")}},
	}}
	if err := k8s.Create(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	maxRunning := 0
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			pods := &corev1.PodList{}
			if k8s.List(ctx, pods, client.InNamespace(ns)) != nil {
				continue
			}
			n := 0
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodPending {
					n++
				}
			}
			mu.Lock()
			maxRunning = max(maxRunning, n)
			mu.Unlock()
		}
	}()
	share := func(ib *kilnv1.ImageBuild) { ib.Spec.Cache = kilnv1.Cache{ClaimName: "team-cache"} }
	a, b := imageBuild(ns, "a", "src", share), imageBuild(ns, "b", "src", share)
	for _, ib := range []*kilnv1.ImageBuild{a, b} {
		if err := k8s.Create(ctx, ib); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, a, 10*time.Minute, "Ready", ready)
	waitFor(t, b, 10*time.Minute, "Ready", ready)
	close(stop)
	mu.Lock()
	defer mu.Unlock()
	if maxRunning != 1 {
		t.Errorf("%d build pods ran at once on one cache claim", maxRunning)
	}
}

func TestDeletedBuildPodIsRetried(t *testing.T) {
	ns := namespace(t, "e2e-retry")
	helloSource(t, ns, "src", "retried")
	ib := imageBuild(ns, "retry", "src")
	if err := k8s.Create(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ib, 5*time.Minute, "building", func(ib *kilnv1.ImageBuild) bool { return ib.Status.Phase == kilnv1.PhaseBuilding })
	kc(t, "-n", ns, "delete", "pod", "retry-build-1", "--wait=false")
	cur := waitFor(t, ib, 10*time.Minute, "Ready after a retry", ready)
	if cur.Status.LastBuild.Attempt != 2 || cur.Status.LastBuild.PodName != "retry-build-2" {
		t.Errorf("lastBuild %+v: want attempt 2 in retry-build-2", cur.Status.LastBuild)
	}
}

func TestManagerRestartMidBuild(t *testing.T) {
	ns := namespace(t, "e2e-restart")
	helloSource(t, ns, "src", "restarted")
	ib := imageBuild(ns, "restart", "src")
	if err := k8s.Create(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ib, 5*time.Minute, "building", func(ib *kilnv1.ImageBuild) bool { return ib.Status.Phase == kilnv1.PhaseBuilding })
	kc(t, "-n", "kiln-system", "delete", "pod", "-l", "app.kubernetes.io/name=kiln", "--wait=false")
	cur := waitFor(t, ib, 10*time.Minute, "Ready", ready)
	if cur.Status.LastBuild.PodName != "restart-build-1" || cur.Status.Digest == "" {
		t.Errorf("after the manager restarted: lastBuild %+v digest %q; want the first build's result", cur.Status.LastBuild, cur.Status.Digest)
	}
}

func TestUnreachableRegistryIsRetriedThenFails(t *testing.T) {
	ns := namespace(t, "e2e-noreg")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "src"}, Data: map[string]string{
		"Dockerfile": "FROM scratch\nCOPY a /\n", "a": "a",
	}}
	if err := k8s.Create(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	gw, _, _ := strings.Cut(env["REGISTRY"], ":")
	ib := imageBuild(ns, "noreg", "src", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Output.Image = gw + ":5999/e2e/noreg" // nothing listens there
		ib.Spec.Retries = ptr.To[int32](1)
	})
	if err := k8s.Create(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	cur := waitFor(t, ib, 15*time.Minute, "Stalled", func(ib *kilnv1.ImageBuild) bool {
		return meta.IsStatusConditionTrue(ib.Status.Conditions, kilnv1.ConditionStalled)
	})
	st := meta.FindStatusCondition(cur.Status.Conditions, kilnv1.ConditionStalled)
	if st.Reason != string(kilnv1.FailurePushFailed) || !strings.Contains(st.Message, "gave up after 2 attempts") || cur.Status.LastBuild.Attempt != 2 {
		t.Errorf("stalled %+v, lastBuild %+v", st, cur.Status.LastBuild)
	}
}
