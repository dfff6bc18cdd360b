package controllers

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

func getIB(g Gomega, ib *kilnv1.ImageBuild) *kilnv1.ImageBuild {
	out := &kilnv1.ImageBuild{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(ib), out)).To(Succeed())
	return out
}

func getPod(g Gomega, ns, name string) *corev1.Pod {
	pod := &corev1.Pod{}
	g.Expect(k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, pod)).To(Succeed())
	return pod
}

func condition(ib *kilnv1.ImageBuild, typ string) *metav1.Condition {
	return meta.FindStatusCondition(ib.Status.Conditions, typ)
}

// finishPod plays the kubelet: the pod ran, the runner exited with code and wrote msg.
func finishPod(t *testing.T, pod *corev1.Pod, code int32, msg string) {
	t.Helper()
	start := metav1.NewTime(time.Now().Add(-42 * time.Second))
	pod.Status.Phase = corev1.PodSucceeded
	if code != 0 {
		pod.Status.Phase = corev1.PodFailed
	}
	pod.Status.StartTime = &start
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: containerRunner, Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: code, Message: msg, StartedAt: start, FinishedAt: metav1.Now(), Reason: "Completed",
		}},
	}}
	if err := k8sClient.Status().Update(context.Background(), pod); err != nil {
		t.Fatalf("setting pod status: %v", err)
	}
}

// runPod plays the kubelet starting the pod.
func runPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	start := metav1.Now()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.StartTime = &start
	if err := k8sClient.Status().Update(context.Background(), pod); err != nil {
		t.Fatalf("setting pod status: %v", err)
	}
}

func resultJSON(t *testing.T, r contract.Result) string {
	t.Helper()
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var okResult = contract.Result{
	Digest: "sha256:4a5b0e1b9d0f7c2e3a1d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b",
	Image:  "registry.example.com/team/hello@sha256:4a5b0e1b9d0f7c2e3a1d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b",
	Tags:   []string{"v1"}, Pushed: true,
	Platforms: []contract.Platform{{Platform: "linux/amd64", CompressedBytes: 1_234_567, UncompressedBytes: 2_500_000, Layers: 1,
		LargestLayers:   []contract.Layer{{Index: 0, CompressedBytes: 1_234_000, CreatedBy: "COPY --from=build /out/hello /hello", Line: 9}},
		LargestPackages: []contract.PackageSize{{Name: "example.com/hello, stdlib go1.26.8", Type: "go-module", Bytes: 2_499_000, Files: 1}}, UnpackagedBytes: 1000}},
	Budget: &contract.Budget{Enforcement: kilnv1.EnforcementEnforce,
		Checks: []contract.Check{{Limit: "maxImageSize", Platform: "linux/amd64", LimitValue: 5 << 20, Actual: 1_234_567}}},
	CachedSteps: 3, TotalSteps: 7,
	Attestations: []contract.Attestation{{Platform: "linux/amd64", Manifest: "sha256:" + strings.Repeat("1a", 32), Provenance: "sha256:" + strings.Repeat("2b", 32)}},
	Signature:    &contract.Signature{Signature: "registry.example.com/team/hello:sha256-4a5b0e1b9d0f7c2e3a1d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b.sig", KeyID: strings.Repeat("0f", 32)},
}

func TestCreatesClaimAndBuildPod(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "hello", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Cache.Size = ptr.To(resource.MustParse("2Gi"))
		ib.Spec.Output.PushSecretRef = &kilnv1.LocalObjectReference{Name: "regcred"}
		ib.Spec.Dockerfile.Secrets = []kilnv1.BuildSecret{{ID: "npmrc", SecretRef: kilnv1.SecretKeyReference{Name: "npm", Key: ".npmrc"}}}
		ib.Spec.Output.Signing = &kilnv1.Signing{SecretRef: kilnv1.LocalObjectReference{Name: "cosign"}}
	})
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())

	pvc := &corev1.PersistentVolumeClaim{}
	g.Eventually(func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello-cache"}, pvc)
	}).Should(Succeed())
	g.Expect(pvc.Spec.Resources.Requests.Storage().String()).To(Equal("2Gi"))
	g.Expect(metav1.IsControlledBy(pvc, getIB(g, ib))).To(BeTrue())

	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "hello-build-1") }).Should(Succeed())
	g.Expect(metav1.IsControlledBy(pod, getIB(g, ib))).To(BeTrue())
	g.Expect(pod.Spec.AutomountServiceAccountToken).To(Equal(ptr.To(false)))
	g.Expect(pod.Spec.RestartPolicy).To(Equal(corev1.RestartPolicyNever))
	g.Expect(pod.Spec.ActiveDeadlineSeconds).To(Equal(ptr.To[int64](1800)), "spec.timeout defaults to 30m")

	g.Expect(pod.Spec.InitContainers).To(HaveLen(1))
	bk := pod.Spec.InitContainers[0]
	g.Expect(bk.Name).To(Equal("buildkitd"))
	g.Expect(bk.RestartPolicy).To(Equal(ptr.To(corev1.ContainerRestartPolicyAlways)), "buildkitd is a native sidecar")
	g.Expect(bk.StartupProbe).To(BeNil(), "the runner waits for buildkitd itself, not a probe period")
	g.Expect(bk.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeUnconfined))
	g.Expect(bk.SecurityContext.RunAsUser).To(Equal(ptr.To[int64](1000)))
	g.Expect(bk.Args).To(ContainElement("--oci-worker-no-process-sandbox"))
	g.Expect(bk.Command).To(Equal([]string{"rootlesskit", "sh", "-c", buildKitStop, "buildkitd"}), "buildkitd under rootlesskit, stopped with one SIGTERM")
	g.Expect(bk.Args).To(ContainElement("--oci-worker-gc-keepstorage=214,0,1717"), "GC from the 2Gi claim, in MB")
	g.Expect(bk.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "cache", MountPath: contract.BuildKitStateDir}))

	g.Expect(pod.Spec.Containers).To(HaveLen(1))
	run := pod.Spec.Containers[0]
	g.Expect(run.Name).To(Equal("runner"))
	g.Expect(run.Image).To(Equal("registry.test/kiln:test"))
	g.Expect(run.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
	g.Expect(run.SecurityContext.Capabilities.Drop).To(ConsistOf(corev1.Capability("ALL")))
	g.Expect(run.SecurityContext.AllowPrivilegeEscalation).To(Equal(ptr.To(false)))
	g.Expect(run.SecurityContext.RunAsNonRoot).To(Equal(ptr.To(true)))
	mounts := map[string]string{}
	for _, m := range run.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	g.Expect(mounts).To(HaveKeyWithValue("push-secret", contract.PushSecretDir))
	g.Expect(mounts).To(HaveKeyWithValue("signing-secret", contract.SigningSecretDir))
	g.Expect(mounts).To(HaveKeyWithValue("build-secret-0", contract.BuildSecretsDir+"/npmrc"))
	g.Expect(mounts).To(HaveKeyWithValue("context", contract.ContextDir))
	for _, m := range bk.VolumeMounts {
		g.Expect(m.Name).NotTo(ContainSubstring("secret"), "buildkitd never mounts Secrets")
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	g.Expect(vols["cache"].PersistentVolumeClaim.ClaimName).To(Equal("hello-cache"))
	g.Expect(vols["buildkit-run"].EmptyDir).NotTo(BeNil())
	g.Expect(vols["build-secret-0"].Secret.Items).To(Equal([]corev1.KeyToPath{{Key: ".npmrc", Path: "value"}}))
	g.Expect(vols["signing-secret"].Secret.SecretName).To(Equal("cosign"), "a Secret volume: memory-backed")

	// The runner's request carries the spec, not Secret values.
	req := requestOf(g, pod)
	g.Expect(req.Spec.Output.Image).To(Equal("registry.example.com/team/hello"))
	g.Expect(req.Build).To(Equal(int64(1)))
	g.Expect(req.Generation).To(Equal(ib.Generation))
	g.Expect(req.Spec.Output.Provenance).To(Equal(kilnv1.ProvenanceMax), "provenance max by default")
	g.Expect(req.Spec.Output.Signing).To(Equal(&contract.Signing{SecretRef: contract.SecretRef{Name: "cosign"}}))

	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhasePending))
		g.Expect(conditionOf(g, cur, kilnv1.ConditionReconciling).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(cur.Status.ObservedGeneration).To(Equal(int64(-1)), "not final yet")
	}).Should(Succeed())
}

func TestSucceededBuildIsReadyAndCurrent(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "hello", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Budget = &kilnv1.Budget{MaxImageSize: ptr.To(resource.MustParse("5Mi"))}
	})
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "hello-build-1") }).Should(Succeed())
	runPod(t, pod)
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseBuilding)) }).Should(Succeed())

	finishPod(t, getPod(g, ns, pod.Name), 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseSucceeded))
		g.Expect(meta.IsStatusConditionTrue(cur.Status.Conditions, kilnv1.ConditionReady)).To(BeTrue())
	}).Should(Succeed())

	cur := getIB(g, ib)
	g.Expect(cur.Status.Digest).To(Equal(okResult.Digest))
	g.Expect(cur.Status.Image).To(Equal(okResult.Image))
	g.Expect(cur.Status.Tags).To(Equal([]string{"v1"}))
	g.Expect(cur.Status.Attestations).To(Equal([]kilnv1.AttestationStatus{{Platform: "linux/amd64", Manifest: okResult.Attestations[0].Manifest, Provenance: okResult.Attestations[0].Provenance}}))
	g.Expect(cur.Status.Signature).To(Equal(&kilnv1.SignatureStatus{Signature: okResult.Signature.Signature, KeyID: okResult.Signature.KeyID}))
	g.Expect(cur.Status.Size.Compressed).To(Equal("1.2MiB"))
	g.Expect(cur.Status.Size.Platforms[0].CompressedBytes).To(Equal(int64(1_234_567)))
	g.Expect(cur.Status.Size.Platforms[0].LargestPackages).To(Equal([]kilnv1.PackageSize{{Name: "example.com/hello, stdlib go1.26.8", Type: "go-module", Bytes: 2_499_000, Files: 1}}))
	g.Expect(cur.Status.Size.Platforms[0].UnpackagedBytes).To(Equal(int64(1000)))
	g.Expect(cur.Status.Cache).To(Equal(&kilnv1.CacheStatus{ClaimName: "hello-cache", CachedSteps: 3, TotalSteps: 7}))
	g.Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
	g.Expect(condition(cur, kilnv1.ConditionReconciling)).To(BeNil())
	g.Expect(condition(cur, kilnv1.ConditionStalled)).To(BeNil())
	g.Expect(conditionOf(g, cur, kilnv1.ConditionSizeBudget).Reason).To(Equal("WithinBudget"))
	g.Expect(condition(cur, kilnv1.ConditionReady).ObservedGeneration).To(Equal(cur.Generation))
	g.Expect(cur.Status.LastBuild.Duration).NotTo(BeEmpty())

	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cur)
	g.Expect(err).NotTo(HaveOccurred())
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Status).To(Equal(status.CurrentStatus), res.Message)

	// The cache Lease is released once the build is recorded: it has no holder.
	g.Eventually(func(g Gomega) {
		lease := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}}
		g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "kiln-cache-hello-cache"}, lease)).To(Succeed())
		g.Expect(lease.Object["spec"]).NotTo(HaveKey("holderIdentity"))
	}).Should(Succeed())
	// Nothing more is started for the same generation.
	g.Consistently(func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello-build-2"}, &corev1.Pod{})
	}).Should(Satisfy(apierrors.IsNotFound))
}

func TestFailedBuildStallsWithClassAndMessage(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "broken")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "broken-build-1") }).Should(Succeed())
	msg := "Dockerfile:3: unknown instruction: RUNN (did you mean RUN?)"
	finishPod(t, pod, contract.ExitBuildFailed, resultJSON(t, contract.Result{FailureClass: kilnv1.FailureBuildFailed, Message: msg}))

	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseFailed))
		g.Expect(meta.IsStatusConditionTrue(cur.Status.Conditions, kilnv1.ConditionStalled)).To(BeTrue())
	}).Should(Succeed())
	cur := getIB(g, ib)
	ready := condition(cur, kilnv1.ConditionReady)
	g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(ready.Message).To(ContainSubstring(msg))
	g.Expect(conditionOf(g, cur, kilnv1.ConditionStalled).Reason).To(Equal(string(kilnv1.FailureBuildFailed)))
	g.Expect(cur.Status.LastBuild.FailureReason).To(Equal(kilnv1.FailureBuildFailed))
	g.Expect(cur.Status.LastBuild.Message).To(Equal(msg))
	g.Expect(conditionOf(g, cur, kilnv1.ConditionSizeBudget).Reason).To(Equal("NotMeasured"))
	g.Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
	// A bad Dockerfile is not retried.
	g.Consistently(func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "broken-build-2"}, &corev1.Pod{})
	}).Should(Satisfy(apierrors.IsNotFound))
}

func TestOverBudgetIsBudgetExceededAndStalled(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "fat", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Budget = &kilnv1.Budget{MaxImageSize: ptr.To(resource.MustParse("50Mi"))}
	})
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "fat-build-1") }).Should(Succeed())
	msg := "linux/amd64: 61.2MiB is 11.2MiB over maxImageSize 50Mi; largest layer 38.0MiB from RUN apt-get install -y build-essential (Dockerfile:12)"
	over := contract.Result{ // numbers only: the manager words them
		FailureClass: kilnv1.FailureOverBudget,
		Platforms: []contract.Platform{{Platform: "linux/amd64", CompressedBytes: 64_172_851, UncompressedBytes: 190_000_000, Layers: 6,
			LargestLayers: []contract.Layer{{Index: 4, CompressedBytes: 39_845_888, CreatedBy: "RUN apt-get install -y build-essential", Line: 12}}}},
		Budget: &contract.Budget{Enforcement: kilnv1.EnforcementEnforce,
			Checks: []contract.Check{{Limit: "maxImageSize", Platform: "linux/amd64", LimitValue: 52_428_800, Actual: 64_172_851}}},
	}
	finishPod(t, pod, contract.ExitOverBudget, resultJSON(t, over))

	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseBudgetExceeded)) }).Should(Succeed())
	cur := getIB(g, ib)
	g.Expect(conditionOf(g, cur, kilnv1.ConditionSizeBudget).Status).To(Equal(metav1.ConditionFalse))
	g.Expect(conditionOf(g, cur, kilnv1.ConditionSizeBudget).Reason).To(Equal("OverBudget"))
	g.Expect(conditionOf(g, cur, kilnv1.ConditionSizeBudget).Message).To(Equal(msg))
	g.Expect(conditionOf(g, cur, kilnv1.ConditionStalled).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(conditionOf(g, cur, kilnv1.ConditionStalled).Reason).To(Equal(kilnv1.ReasonBudgetExceeded))
	g.Expect(conditionOf(g, cur, kilnv1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
	g.Expect(cur.Status.Digest).To(BeEmpty(), "nothing was pushed")
	g.Expect(cur.Status.Budget.Summary).To(Equal("61.2MiB/50Mi (+11.2MiB)"))
	g.Expect(cur.Status.Size.Compressed).To(Equal("61.2MiB"))
	g.Expect(cur.Status.LastBuild.Message).To(Equal(msg + "; not pushed (budget enforcement is Enforce)"))
}

func TestSharedClaimRunsOneBuildAtATime(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	shared := createSharedClaim(g, ns, "team-cache")

	// Watch for the whole test: never two unfinished build pods on the claim.
	var mu sync.Mutex
	maxActive := 0
	stop := make(chan struct{})
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			pods := &corev1.PodList{}
			if err := k8sClient.List(ctx, pods, client.InNamespace(ns)); err != nil {
				continue
			}
			active := 0
			for i := range pods.Items {
				if !podFinished(&pods.Items[i]) {
					active++
				}
			}
			mu.Lock()
			maxActive = max(maxActive, active)
			mu.Unlock()
		}
	}()

	share := func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.ClaimName = "team-cache" }
	a, b := newImageBuild(ns, "a", share), newImageBuild(ns, "b", share)
	g.Expect(k8sClient.Create(ctx, a)).To(Succeed())
	g.Expect(k8sClient.Create(ctx, b)).To(Succeed())

	// One of them builds, the other waits for the cache.
	var first, second *kilnv1.ImageBuild
	g.Eventually(func(g Gomega) {
		ca, cb := getIB(g, a), getIB(g, b)
		phases := []kilnv1.Phase{ca.Status.Phase, cb.Status.Phase}
		g.Expect(phases).To(ConsistOf(kilnv1.PhasePending, kilnv1.PhaseWaitingForCache))
		first, second = ca, cb
		if ca.Status.Phase == kilnv1.PhaseWaitingForCache {
			first, second = cb, ca
		}
	}).Should(Succeed())
	g.Expect(conditionOf(g, second, kilnv1.ConditionReady).Message).To(ContainSubstring("cache claim team-cache is in use by build pod " + first.Name + "-build-1"))
	g.Consistently(func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: second.Name + "-build-1"}, &corev1.Pod{})
	}).Should(Satisfy(apierrors.IsNotFound))

	finishPod(t, getPod(g, ns, first.Name+"-build-1"), 0, resultJSON(t, okResult))
	var pod2 *corev1.Pod
	g.Eventually(func(g Gomega) { pod2 = getPod(g, ns, second.Name+"-build-1") }).Should(Succeed())
	g.Expect(pod2.Spec.Volumes[0].PersistentVolumeClaim.ClaimName).To(Equal("team-cache"))
	finishPod(t, pod2, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) {
		g.Expect(getIB(g, a).Status.Phase).To(Equal(kilnv1.PhaseSucceeded))
		g.Expect(getIB(g, b).Status.Phase).To(Equal(kilnv1.PhaseSucceeded))
	}).Should(Succeed())
	close(stop)
	<-watching
	g.Expect(maxActive).To(Equal(1), "two build pods ran on one cache claim")

	// kiln never deletes a shared claim, and never owns it.
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(shared), shared)).To(Succeed())
	g.Expect(shared.OwnerReferences).To(BeEmpty())
}

func TestMissingSharedClaimStalls(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "orphan", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.ClaimName = "nope" })
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	g.Eventually(func(g Gomega) {
		st := condition(getIB(g, ib), kilnv1.ConditionStalled)
		g.Expect(st).NotTo(BeNil())
		g.Expect(st.Reason).To(Equal(kilnv1.ReasonClaimNotFound))
		g.Expect(st.Message).To(ContainSubstring(`cache claim "nope" (spec.cache.claimName) does not exist`))
	}).Should(Succeed())
}

func TestSpecEditReplacesRunningPod(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "edit")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "edit-build-1") }).Should(Succeed())
	runPod(t, pod)

	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		cur.Spec.Output.Tags = []string{"v2"}
		g.Expect(k8sClient.Update(ctx, cur)).To(Succeed())
	}).Should(Succeed())

	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "edit-build-1"}, &corev1.Pod{}))
	}).Should(BeTrue(), "the old generation's pod is deleted")
	var pod2 *corev1.Pod
	g.Eventually(func(g Gomega) { pod2 = getPod(g, ns, "edit-build-2") }).Should(Succeed())
	g.Expect(podKey(pod2).Generation).To(Equal(int64(2)))
	req := requestOf(g, pod2)
	g.Expect(req.Spec.Output.Tags).To(Equal([]string{"v2"}))
	g.Expect(getIB(g, ib).Status.LastBuild.Generation).To(Equal(int64(2)))
	g.Eventually(func(g Gomega) {
		g.Expect(eventNotes(g, ns, kilnv1.ReasonBuildCancelled)).To(ContainElement("Cancelled build pod edit-build-1: the spec changed (generation 2, was 1)"))
	}).Should(Succeed())

	// A newer rebuild request cancels the running build too, and says so.
	runPod(t, pod2)
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		cur.Annotations = map[string]string{kilnv1.AnnotationRebuildRequestedAt: "again"}
		g.Expect(k8sClient.Update(ctx, cur)).To(Succeed())
	}).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(eventNotes(g, ns, kilnv1.ReasonBuildCancelled)).To(ContainElement(`Cancelled build pod edit-build-2: a newer rebuild was requested (kiln.dev/rebuild-requested-at "again")`))
	}).Should(Succeed())
}

func TestDeletedPodIsRetried(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "lost")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "lost-build-1") }).Should(Succeed())
	runPod(t, pod)
	g.Expect(k8sClient.Delete(ctx, pod)).To(Succeed())

	var pod2 *corev1.Pod
	g.Eventually(func(g Gomega) { pod2 = getPod(g, ns, "lost-build-2") }).Should(Succeed())
	g.Expect(pod2.Annotations[AnnotationAttempt]).To(Equal("2"))
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.LastBuild.Attempt).To(Equal(int32(2))) }).Should(Succeed())
	finishPod(t, pod2, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSucceeded)) }).Should(Succeed())
}

// conditionOf is ib's condition typ, failing g (not panicking) while it is absent.
func conditionOf(g Gomega, ib *kilnv1.ImageBuild, typ string) *metav1.Condition {
	c := condition(ib, typ)
	g.Expect(c).NotTo(BeNil(), "no %s condition; conditions %+v", typ, ib.Status.Conditions)
	if c == nil {
		return &metav1.Condition{}
	}
	return c
}

// TestResultIsRecordedWhenTheRunnerEnds: the build is recorded as soon as the runner has written
// its result, while buildkitd still stops; the claim stays held until the pod has finished.
func TestResultIsRecordedWhenTheRunnerEnds(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	createSharedClaim(g, ns, "team-cache")
	share := func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.ClaimName = "team-cache" }
	a := newImageBuild(ns, "a", share)
	g.Expect(k8sClient.Create(ctx, a)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "a-build-1") }).Should(Succeed())
	b := newImageBuild(ns, "b", share)
	g.Expect(k8sClient.Create(ctx, b)).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, b).Status.Phase).To(Equal(kilnv1.PhaseWaitingForCache)) }).Should(Succeed())

	// The kubelet reports the runner terminated while the pod still runs buildkitd.
	start := metav1.NewTime(time.Now().Add(-3 * time.Second))
	pod.Status.Phase, pod.Status.StartTime = corev1.PodRunning, &start
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: containerBuildKit, Image: pod.Spec.InitContainers[0].Image,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: start}}, Started: ptr.To(true)}}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerRunner, Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 0, Message: resultJSON(t, okResult), StartedAt: start, FinishedAt: metav1.Now(), Reason: "Completed",
		}}}}
	g.Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	g.Eventually(func(g Gomega) {
		cur := getIB(g, a)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseSucceeded))
		g.Expect(meta.IsStatusConditionTrue(cur.Status.Conditions, kilnv1.ConditionReady)).To(BeTrue())
		g.Expect(cur.Status.Digest).To(Equal(okResult.Digest))
	}).Should(Succeed())

	// buildkitd still holds the claim: b waits, and a's pod keeps the Lease.
	g.Consistently(func(g Gomega) {
		g.Expect(getIB(g, b).Status.Phase).To(Equal(kilnv1.PhaseWaitingForCache))
		err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "b-build-1"}, &corev1.Pod{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "b's build started while a's buildkitd still ran on the claim")
	}, "2s").Should(Succeed())
	lease := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "kiln-cache-team-cache"}, lease)).To(Succeed())
	g.Expect(lease.Object["spec"]).To(HaveKeyWithValue("holderIdentity", "a-build-1"))

	// Once the pod has finished, b builds.
	pod = getPod(g, ns, "a-build-1")
	pod.Status.Phase = corev1.PodSucceeded
	pod.Status.InitContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: start, FinishedAt: metav1.Now()}}
	g.Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	g.Eventually(func(g Gomega) { getPod(g, ns, "b-build-1") }).Should(Succeed())
	g.Expect(getIB(g, a).Status.LastBuild.CompletionTime).NotTo(BeNil())
	g.Expect(getIB(g, a).Status.Phase).To(Equal(kilnv1.PhaseSucceeded), "the pod's end changes nothing in a recorded build")
}

// TestClaimBeingDeletedStartsNoBuild: a build never starts on a claim being deleted (the
// scheduler would never place its pod); once the claim is gone, the build starts on a new one.
func TestClaimBeingDeletedStartsNoBuild(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "hello")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "hello-build-1") }).Should(Succeed())
	finishPod(t, pod, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSucceeded)) }).Should(Succeed())

	// The claim is deleted while something still holds it (here a finalizer of the test's).
	pvc := &corev1.PersistentVolumeClaim{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello-cache"}, pvc)).To(Succeed())
	oldUID := pvc.UID
	pvc.Finalizers = append(pvc.Finalizers, "kiln.dev/test-hold")
	g.Expect(k8sClient.Update(ctx, pvc)).To(Succeed())
	g.Expect(k8sClient.Delete(ctx, pvc)).To(Succeed())
	cur := getIB(g, ib)
	cur.Annotations = map[string]string{kilnv1.AnnotationRebuildRequestedAt: "now"}
	g.Expect(k8sClient.Update(ctx, cur)).To(Succeed())
	g.Eventually(func(g Gomega) {
		c := getIB(g, ib)
		g.Expect(c.Status.Phase).To(Equal(kilnv1.PhaseWaitingForCache))
		g.Expect(conditionOf(g, c, kilnv1.ConditionReady).Message).To(ContainSubstring("cache claim hello-cache is being deleted"))
	}).Should(Succeed())
	g.Consistently(func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello-build-2"}, &corev1.Pod{})
	}, "2s").Should(Satisfy(apierrors.IsNotFound))
	// The finished pod that used it would keep it forever (a claim goes only once no pod that
	// was scheduled with it exists): kiln deletes it, and says so.
	g.Eventually(func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello-build-1"}, &corev1.Pod{})
	}).Should(Satisfy(apierrors.IsNotFound))
	g.Eventually(func(g Gomega) {
		g.Expect(eventNotes(g, ns, kilnv1.ReasonClaimReleased)).To(ContainElement(ContainSubstring("Deleted finished build pods hello-build-1 (and their logs): cache claim hello-cache is being deleted")))
	}).Should(Succeed())

	// Gone: a new claim, and the build on it.
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello-cache"}, pvc)).To(Succeed())
	pvc.Finalizers = nil
	g.Expect(k8sClient.Update(ctx, pvc)).To(Succeed())
	g.Eventually(func(g Gomega) { getPod(g, ns, "hello-build-2") }).Should(Succeed())
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello-cache"}, pvc)).To(Succeed())
	g.Expect(pvc.UID).NotTo(Equal(oldUID))
	g.Expect(pvc.DeletionTimestamp).To(BeNil())
}

// createSharedClaim creates a claim labelled for sharing (kiln.dev/cache=true) in ns.
func createSharedClaim(g Gomega, ns, name string) *corev1.PersistentVolumeClaim {
	shared := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{LabelSharedCache: "true"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("20Gi")}},
		},
	}
	g.Expect(k8sClient.Create(context.Background(), shared)).To(Succeed())
	return shared
}
