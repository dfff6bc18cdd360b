package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// forgedPod is a pod a tenant who may create pods makes to pass for build n of ib: kiln's name,
// labels, build annotations and the ImageBuild as its controlling owner.
func forgedPod(g Gomega, ib *kilnv1.ImageBuild, n int64) *corev1.Pod {
	cur := getIB(g, ib)
	real := renderBuildPod(cur, podOptions{Build: n, Attempt: 1, ClaimName: claimName(cur), BuildKitImage: "x", RunnerImage: "x"})
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ib.Namespace, Name: real.Name, Labels: real.Labels, Annotations: real.Annotations, OwnerReferences: real.OwnerReferences},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: containerRunner, Image: "registry.test/forger:1"}}},
	}
}

// forgedResult is what a forger's pod says: pushed, within budget.
var forgedResult = contract.Result{Pushed: true, Digest: "sha256:" + "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0",
	Image: "registry.test/forged@sha256:f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0", Tags: []string{"latest"}}

// TestPreCreatedNextPodIsNotAdopted (issue 12 item 3): a tenant pre-creates the next build pod,
// with the ImageBuild as its owner and kiln's build key, and makes it "succeed". kiln neither
// adopts it nor takes its result: its own build of that number is refused as PodNameTaken.
func TestPreCreatedNextPodIsNotAdopted(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "victim")
	ib.Spec.Suspend = true // let the forger go first
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSuspended)) }).Should(Succeed())

	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = false })
	forged := forgedPod(g, ib, 1)
	g.Expect(k8sClient.Create(ctx, forged)).To(Succeed())
	finishPod(t, forged, 0, resultJSON(t, forgedResult))

	// Two outcomes are safe, and which one comes depends on whether kiln's cache shows the
	// forged pod before kiln tries the name: kiln's create fails and the build ends Stalled
	// (PodNameTaken), or kiln counts the name as taken and builds as victim-build-2. Either way
	// the forged pod's result is never the build's.
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		st := condition(cur, kilnv1.ConditionStalled)
		stalled := st != nil && st.Reason == string(kilnv1.FailurePodNameTaken) && strings.Contains(st.Message, `build pod "victim-build-1" already exists`)
		passed := cur.Status.LastBuild != nil && cur.Status.LastBuild.PodName == "victim-build-2"
		g.Expect(stalled || passed).To(BeTrue(), "neither stalled on the taken name nor built past it: %+v", cur.Status.Conditions)
	}).Should(Succeed())
	g.Consistently(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Digest).To(BeEmpty(), "the forged result is not the build's")
		g.Expect(cur.Status.Image).To(BeEmpty())
		g.Expect(cur.Status.LastBuild.PodUID).NotTo(Equal(forged.UID), "the forged pod was adopted")
	}, "2s").Should(Succeed())
}

// TestForgedPodWithARecordedNameIsNotFollowed: a tenant deletes kiln's running build pod and
// makes one with the same name that "succeeds"; kiln follows the UID it recorded, not the name,
// so the build is lost and retried, and the forged result is never recorded.
func TestForgedPodWithARecordedNameIsNotFollowed(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "swap")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "swap-build-1") }).Should(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.LastBuild.PodUID).To(Equal(pod.UID)) }).Should(Succeed())

	forged := forgedPod(g, ib, 1)
	g.Expect(k8sClient.Delete(ctx, pod)).To(Succeed())
	g.Expect(k8sClient.Create(ctx, forged)).To(Succeed())
	finishPod(t, forged, 0, resultJSON(t, forgedResult))

	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.BuildCount).To(BeNumerically(">=", 2), "the lost build is tried again")
		g.Expect(cur.Status.Digest).To(BeEmpty(), "the forged result is not the build's")
	}).Should(Succeed())
	g.Consistently(func(g Gomega) { g.Expect(getIB(g, ib).Status.Digest).To(BeEmpty()) }).Should(Succeed())
}

// TestForgedRequestConfigMapIsRefused: a tenant pre-creates the next build's request ConfigMap
// with a request of their own (another image, no budget): kiln refuses to start the build
// rather than mount it into the runner.
func TestForgedRequestConfigMapIsRefused(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "req")
	ib.Spec.Suspend = true
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSuspended)) }).Should(Succeed())
	cur := getIB(g, ib)
	real, err := renderRequest(cur, podOptions{Build: 1})
	g.Expect(err).NotTo(HaveOccurred())
	real.Data[contract.RequestFile] = `{"v":"1.0","namespace":"` + ns + `","name":"req","build":1,"spec":{"output":{"image":"evil.example/x"}}}`
	g.Expect(k8sClient.Create(ctx, real)).To(Succeed())

	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = false })
	stalledWith(g, ib, string(kilnv1.FailurePodNameTaken), `the build request ConfigMap "req-build-1-request" already exists`)
	g.Expect(podExists(ns, "req-build-1")()).To(BeFalse(), "no runner reads the forged request")
}

// TestPodCarriesTheRequestDigest: the build pod names the digest of the request kiln wrote, so
// that the runner builds no request put in the ConfigMap's place later (the pod's spec cannot
// change; the ConfigMap can be deleted and made again).
func TestPodCarriesTheRequestDigest(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "digest")
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "digest-build-1") }).Should(Succeed())
	cm := &corev1.ConfigMap{}
	g.Expect(k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "digest-build-1-request"}, cm)).To(Succeed())
	g.Expect(pod.Spec.Containers[0].Env).To(ContainElement(corev1.EnvVar{Name: contract.RequestDigestEnv, Value: contract.RequestFilesDigest(cm.Data)}))
}

// TestStaleReadAfterAQuickBuildStartsNoSecond: a build pod that finishes moments after kiln
// created it wakes a reconcile that may read the ImageBuild from before the patch that recorded
// the pod. The pod then looks like nobody's and its claim is free; kiln must not start build 2
// on that read (a clean-clone CI run saw build 2 start and the ImageBuild stay Pending).
func TestStaleReadAfterAQuickBuildStartsNoSecond(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "quick")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	stale := ib.DeepCopy() // as created: no status, the creation's resourceVersion
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "quick-build-1") }).Should(Succeed())
	finishPod(t, pod, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSucceeded)) }).Should(Succeed())

	// A second reconciler on the manager's cache, once that shows the end: only the stale copy lags.
	r := &ImageBuildReconciler{Client: testReconciler.Client, APIReader: k8sClient, Scheme: scheme, Recorder: testReconciler.Recorder,
		BuildKitImage: "x", RunnerImage: "x", DefaultCacheSize: testReconciler.DefaultCacheSize, Now: time.Now}
	st := &buildState{}
	g.Expect(r.reconcileBuild(ctx, stale, cacheClaim{Name: claimName(stale), Bytes: 5 << 30}, st)).To(Succeed())
	g.Expect(st.requeue).To(Equal(time.Second), "looks again once the cache catches up")
	g.Expect(podExists(ns, "quick-build-2")()).To(BeFalse(), "a second build started on a stale read")
}

// TestBuildPodWithoutItsLabelsIsStillFollowed: someone who may edit pods takes kiln's labels
// off a running build pod. The cache no longer shows it, but it is the pod kiln recorded (its
// UID): kiln follows it by reading it, records its result, and frees the claim's Lease, rather
// than wait for it forever.
func TestBuildPodWithoutItsLabelsIsStillFollowed(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "stripped")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) {
		pod = getPod(g, ns, "stripped-build-1")
		lb := getIB(g, ib).Status.LastBuild
		g.Expect(lb).NotTo(BeNil())
		g.Expect(lb.SecurityProfile).To(Equal(kilnv1.SecurityProfileRootless), "status names the pod's profile")
	}).Should(Succeed())
	runPod(t, pod)
	delete(pod.Labels, LabelManagedBy)
	delete(pod.Labels, LabelImageBuild)
	g.Expect(k8sClient.Update(ctx, pod)).To(Succeed())

	finishPod(t, pod, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseSucceeded))
		g.Expect(cur.Status.Digest).To(Equal(okResult.Digest))
	}).Should(Succeed())
	lease := &coordinationv1.Lease{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: leaseName("stripped-cache")}, lease)).To(Succeed())
	g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(BeEmpty(), "the claim's Lease is released")
}

// TestForgedBuildNumberIsNotTrusted: a tenant makes a pod with the ImageBuild as its controller
// and a build annotation of the largest int64, so that the next build number would overflow
// (a negative pod name, which the build namespace guard's exec rule did not know). kiln takes
// build numbers only from its own records: the next build is number 2.
func TestForgedBuildNumberIsNotTrusted(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "counted")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "counted-build-1") }).Should(Succeed())
	runPod(t, pod)
	finishPod(t, getPod(g, ns, pod.Name), 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSucceeded)) }).Should(Succeed())

	forged := forgedPod(g, ib, 9)
	forged.Name = "zz-forged"
	forged.Annotations[AnnotationBuild] = "9223372036854775807"
	g.Expect(k8sClient.Create(ctx, forged)).To(Succeed())
	finishPod(t, forged, 0, resultJSON(t, forgedResult))
	update(g, ib, func(ib *kilnv1.ImageBuild) {
		ib.Annotations = map[string]string{kilnv1.AnnotationRebuildRequestedAt: time.Now().UTC().Format(time.RFC3339)}
	})
	g.Eventually(podExists(ns, "counted-build-2")).Should(BeTrue(), "the next build is number 2")
	g.Consistently(func(g Gomega) { g.Expect(getIB(g, ib).Status.BuildCount).To(Equal(int64(2))) }).Should(Succeed())
}
