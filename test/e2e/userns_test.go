//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// TestUserNSProfileBuildsInAGuardedNamespace (issue 14): the seeds' Go service (multi-stage, RUN
// steps with cache mounts) builds and pushes with spec.securityProfile: userns, in a namespace
// whose pods the chart's build namespace guard holds to restricted. buildkitd runs as root of
// the pod's own user namespace, which this machine (the node) shows mapped to an unprivileged
// range; RUN steps run in BuildKit's process sandbox; the cache on the claim (an idmapped
// mount) serves the next build. A tenant's privileged pod in the same namespace is refused.
// make e2e installs kiln with buildPod.allowedSecurityProfiles=[userns] and the guard on
// (hack/install-kiln.sh).
func TestUserNSProfileBuildsInAGuardedNamespace(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "e2e-userns")
	kc(t, "label", "namespace", ns, "kiln.dev/build-namespace=true")
	helloSource(t, ns, "hello-src", "hello from a user namespace")
	ib := imageBuild(ns, "hello", "hello-src", func(ib *kilnv1.ImageBuild) {
		ib.Spec.SecurityProfile = kilnv1.SecurityProfileUserNS
	})
	if err := k8s.Create(ctx, ib); err != nil {
		t.Fatal(err)
	}

	// While the build runs, find buildkitd on the node and read its user namespace's map.
	uidMap := make(chan string, 1)
	go func() { uidMap <- buildKitUIDMap(ns, "hello-build-1", 10*time.Minute) }()
	cold := waitFor(t, ib, 10*time.Minute, "Ready", ready)
	digest, _ := registryDigest(t, ib.Spec.Output.Image+":v1")
	if digest != cold.Status.Digest {
		t.Errorf("status digest %s, registry %s", cold.Status.Digest, digest)
	}
	m := <-uidMap
	t.Logf("buildkitd's /proc/<pid>/uid_map on the node: %s", m)
	f := strings.Fields(m)
	if len(f) != 3 || f[0] != "0" {
		t.Fatalf("buildkitd's uid_map %q: want one line mapping container uid 0", m)
	}
	if host, err := strconv.ParseInt(f[1], 10, 64); err != nil || host < 65536 {
		t.Errorf("container root maps to host uid %s: want an unprivileged uid (>= 65536)", f[1])
	}

	pod := &corev1.Pod{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello-build-1"}, pod); err != nil {
		t.Fatal(err)
	}
	bk := pod.Spec.InitContainers[0]
	if ptr.Deref(pod.Spec.HostUsers, true) || bk.Image != env["BUILDKIT_ROOTFUL_IMAGE"] || strings.Contains(strings.Join(bk.Args, " "), "no-process-sandbox") {
		t.Errorf("build pod: hostUsers %v, buildkitd %s %q", pod.Spec.HostUsers, bk.Image, bk.Args)
	}
	if bkLog := buildKitLog(t, ns, "hello-build-1"); !strings.Contains(bkLog, "kiln: buildkitd has stopped") {
		t.Errorf("buildkitd's log does not end with its expected stop:\n%s", bkLog)
	}

	// The next build finds every step in the cache the first one left on the claim.
	kc(t, "-n", ns, "annotate", "ib/hello", "kiln.dev/rebuild-requested-at="+time.Now().UTC().Format(time.RFC3339), "--overwrite")
	warm := waitFor(t, ib, 5*time.Minute, "rebuilt", func(ib *kilnv1.ImageBuild) bool {
		return ready(ib) && ib.Status.LastBuild.PodName == "hello-build-2"
	})
	if c := warm.Status.Cache; c.CachedSteps == 0 || c.CachedSteps != c.TotalSteps {
		t.Errorf("rebuild cache %+v: want every step cached", c)
	}

	// The guard holds the tenant to restricted in the same namespace.
	tenant := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-privileged"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sh", Image: env["BASE_BUSYBOX"],
			SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}},
	}
	err := k8s.Create(ctx, tenant)
	if err == nil {
		_ = k8s.Delete(ctx, tenant)
		t.Fatal("the build namespace guard admitted a tenant's privileged pod")
	}
	if !strings.Contains(err.Error(), "privileged is not allowed") {
		t.Errorf("refusal of the tenant's privileged pod: %v", err)
	}

	// Nor may anyone reach the build's state: a restricted pod that mounts the cache claim, and
	// kubectl exec into buildkitd, are refused.
	claim := warm.Status.Cache.ClaimName
	mounter := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-mounts-cache"},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "sh", Image: env["BASE_BUSYBOX"], SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
			Volumes: []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		},
	}
	err = k8s.Create(ctx, mounter, client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), "persistentVolumeClaim "+claim+" is not allowed") {
		t.Errorf("a tenant's pod that mounts the cache claim %s: %v", claim, err)
	}
	// kubectl refuses by itself to exec into a finished pod, so ask the API server directly,
	// as kubectl exec would into a running one: admission answers first.
	cfg, err := clientcmd.BuildConfigFromFlags("", env["KUBECONFIG"])
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = cs.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name("hello-build-2").SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "buildkitd", Command: []string{"sh"}, Stdin: true, Stdout: true}, clientgoscheme.ParameterCodec).
		Do(ctx).Error()
	if err == nil || !strings.Contains(err.Error(), "exec into container buildkitd is not allowed") {
		t.Errorf("exec into buildkitd: %v", err)
	}
}

// buildKitUIDMap waits for the buildkitd container of pod ns/name to run on this machine (the
// local cluster's node) and returns the first line of its process's /proc/<pid>/uid_map, or what
// went wrong. The process is found by its name and by the pod's UID in its cgroup path.
func buildKitUIDMap(ns, name string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	var uid types.UID
	for time.Now().Before(deadline) {
		if uid == "" {
			pod := &corev1.Pod{}
			if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, pod); err == nil {
				uid = pod.UID
			}
		}
		if uid != "" {
			if m, ok := findUIDMap("buildkitd", string(uid)); ok {
				return m
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Sprintf("no buildkitd process of pod %s/%s (UID %q) found on the node", ns, name, uid)
}

// findUIDMap looks for a process named comm whose cgroup path names podUID (the kubelet's
// cgroupfs driver writes the UID as it is, its systemd driver with underscores for dashes).
func findUIDMap(comm, podUID string) (string, bool) {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	under := strings.ReplaceAll(podUID, "-", "_")
	for _, p := range procs {
		c, err := os.ReadFile(filepath.Join(p, "comm"))
		if err != nil || strings.TrimSpace(string(c)) != comm {
			continue
		}
		cg, err := os.ReadFile(filepath.Join(p, "cgroup"))
		if err != nil || !(strings.Contains(string(cg), podUID) || strings.Contains(string(cg), under)) {
			continue
		}
		m, err := os.ReadFile(filepath.Join(p, "uid_map"))
		if err != nil {
			continue
		}
		return strings.TrimSpace(strings.SplitN(string(m), "\n", 2)[0]), true
	}
	return "", false
}
