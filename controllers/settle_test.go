package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// Every accepted object settles: these tests give kiln inputs the API server accepts but that
// cannot become a running build, and check that each ends Stalled with its reason, once.

func stalledWith(g Gomega, ib *kilnv1.ImageBuild, reason string, message ...string) {
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		st := condition(cur, kilnv1.ConditionStalled)
		g.Expect(st).NotTo(BeNil(), "not stalled; conditions %+v", cur.Status.Conditions)
		g.Expect(st.Reason).To(Equal(reason))
		for _, m := range message {
			g.Expect(st.Message).To(ContainSubstring(m))
		}
		g.Expect(condition(cur, kilnv1.ConditionReconciling)).To(BeNil())
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseFailed), "a stalled ImageBuild is not Queued, Pending or Building")
		g.Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
	}).Should(Succeed())
}

func TestPodTheAPIServerRefusesStallsOnce(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "refused", func(ib *kilnv1.ImageBuild) { ib.Spec.NodeSelector = map[string]string{"bad key": "x"} })
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	stalledWith(g, ib, string(kilnv1.FailurePodRejected), "the API server refused the build", "nodeSelector")
	cur := getIB(g, ib)
	g.Expect(cur.Status.LastBuild.FailureReason).To(Equal(kilnv1.FailurePodRejected))
	g.Consistently(func(g Gomega) {
		g.Expect(getIB(g, ib).Status.BuildCount).To(Equal(int64(1)), "no new attempts")
		g.Expect(podExists(ns, "refused-build-1")()).To(BeFalse())
	}).Should(Succeed())
	// Fixing the spec builds.
	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Spec.NodeSelector = map[string]string{"pool": "builders"} })
	g.Eventually(podExists(ns, "refused-build-2")).Should(BeTrue())
}

func TestConfigMapSourceIsFollowed(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "follow", func(ib *kilnv1.ImageBuild) { ib.Spec.Source.ConfigMap.Name = "later-src" })
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	stalledWith(g, ib, kilnv1.ReasonSourceNotFound, `ConfigMap "later-src" (spec.source.configMap.name) not found`, "the build starts when it is created")
	g.Expect(podExists(ns, "follow-build-1")()).To(BeFalse())

	// It appears: the build starts, keyed on its content.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "later-src"}, Data: map[string]string{"Dockerfile": "FROM scratch\n"}}
	g.Expect(k8sClient.Create(ctx, cm)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "follow-build-1") }).Should(Succeed())
	want := contract.ConfigMapDigest(map[string][]byte{"Dockerfile": []byte("FROM scratch\n")})
	g.Expect(podKey(pod).PolledRevision).To(Equal(want))
	res := okResult
	res.Revision = want
	finishPod(t, pod, 0, resultJSON(t, res))
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseSucceeded))
		g.Expect(cur.Status.Revision).To(Equal(want), "status says which content was built")
	}).Should(Succeed())

	// Metadata changes build nothing.
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cm), cm)).To(Succeed())
	cm.Labels = map[string]string{"team": "a"}
	g.Expect(k8sClient.Update(ctx, cm)).To(Succeed())
	g.Consistently(podExists(ns, "follow-build-2")).Should(BeFalse())

	// A content change builds, like a Deployment rolls on a template change.
	cm.Data["main.go"] = "package main\n"
	g.Expect(k8sClient.Update(ctx, cm)).To(Succeed())
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "follow-build-2") }).Should(Succeed())
	g.Expect(podKey(pod).PolledRevision).NotTo(Equal(want))

	// The kubelet mounted the old content: kiln builds again once the pod reports it.
	res.Revision = want
	finishPod(t, pod, 0, resultJSON(t, res))
	g.Eventually(podExists(ns, "follow-build-3")).Should(BeTrue())
}

func TestContainerThatCannotStartEndsTheBuild(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "nostart")
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "nostart-build-1") }).Should(Succeed())
	start := metav1.Now()
	pod.Status.Phase, pod.Status.StartTime = corev1.PodPending, &start
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerRunner, Image: "registry.test/kiln:test",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: `secret "x" not found`}}}}
	g.Expect(k8sClient.Status().Update(context.Background(), pod)).To(Succeed())
	stalledWith(g, ib, string(kilnv1.FailurePodStartFailed), "CreateContainerConfigError", `secret "x" not found`)
	g.Eventually(func() bool {
		p := &corev1.Pod{}
		err := k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "nostart-build-1"}, p)
		return apierrors.IsNotFound(err) || p.DeletionTimestamp != nil
	}).Should(BeTrue(), "the pod that cannot start is deleted: it held a slot and the cache")
	g.Consistently(podExists(ns, "nostart-build-2")).Should(BeFalse(), "not retried")
}

func TestRunnerStartErrorIsNotRetried(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "execfail")
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "execfail-build-1") }).Should(Succeed())
	start := metav1.Now()
	pod.Status.Phase, pod.Status.StartTime = corev1.PodFailed, &start
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerRunner, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: 128, Reason: "StartError", Message: "exec: \"/kiln\": exec format error", StartedAt: start, FinishedAt: start}}}}
	g.Expect(k8sClient.Status().Update(context.Background(), pod)).To(Succeed())
	stalledWith(g, ib, string(kilnv1.FailurePodStartFailed), "exec format error")
	g.Consistently(podExists(ns, "execfail-build-2")).Should(BeFalse())
}

func TestImageNeverPulledIsRetried(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "nopull", func(ib *kilnv1.ImageBuild) { ib.Spec.Retries = ptr.To[int32](1) })
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "nopull-build-1") }).Should(Succeed())
	start := metav1.NewTime(time.Now().Add(-imagePullGrace - time.Minute))
	pod.Status.Phase, pod.Status.StartTime = corev1.PodPending, &start
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: containerBuildKit, Image: "registry.test/buildkit:rootless",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}
	g.Expect(k8sClient.Status().Update(context.Background(), pod)).To(Succeed())
	g.Eventually(podExists(ns, "nopull-build-2")).Should(BeTrue(), "ImagePullFailed is transient: retried")
	// The pod is created before the status that records its attempt is patched.
	g.Eventually(func(g Gomega) int32 {
		lb := getIB(g, ib).Status.LastBuild
		g.Expect(lb).NotTo(BeNil())
		return lb.Attempt
	}).Should(Equal(int32(2)))
}

func TestPendingClaimWarningHasARequeue(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "wake", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.StorageClassName = ptr.To("no-such-class") })
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	g.Eventually(podExists(ns, "wake-build-1")).Should(BeTrue())
	// envtest binds no claims: it stays Pending, and nothing else will wake the ImageBuild.
	res, err := testReconciler.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(ib)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.RequeueAfter).To(BeNumerically(">", claimPendingWarning-30*time.Second))
	g.Expect(res.RequeueAfter).To(BeNumerically("<=", claimPendingWarning+time.Second))
}

func TestForeignObjectWithTheBuildPodsNameStalls(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	squatter := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "squat-build-1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.test/other:1"}}}}
	g.Expect(k8sClient.Create(ctx, squatter)).To(Succeed())
	ib := newImageBuild(ns, "squat")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	stalledWith(g, ib, string(kilnv1.FailurePodNameTaken), "kiln refused to start the build", `build pod "squat-build-1" already exists`, "kiln did not create it")
}

// TestUndecodableStatusIsReplaced: a status value the schema accepts but Go cannot parse (a
// lower-case RFC 3339 time, written by anyone allowed to patch the status) neither stops the
// manager's list nor stays: kiln replaces the status, and another ImageBuild keeps building.
func TestUndecodableStatusIsReplaced(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	bad := newImageBuild(ns, "badstatus")
	g.Expect(k8sClient.Create(ctx, bad)).To(Succeed())
	g.Eventually(podExists(ns, "badstatus-build-1")).Should(BeTrue())
	patch := []byte(`{"status":{"lastPolledAt":"2026-01-01t00:00:00z"}}`)
	g.Expect(k8sClient.Status().Patch(ctx, bad.DeepCopy(), client.RawPatch(types.MergePatchType, patch))).To(Succeed(), "the schema lets it through")

	other := newImageBuild(ns, "bystander")
	g.Expect(k8sClient.Create(ctx, other)).To(Succeed())
	g.Eventually(podExists(ns, "bystander-build-1")).Should(BeTrue(), "one bad status stops nobody else")

	// No other change is needed: the update that wrote it wakes kiln.
	g.Eventually(func(g Gomega) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(kilnv1.GroupVersion.WithKind("ImageBuild"))
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(bad), u)).To(Succeed())
		v, _, _ := unstructured.NestedString(u.Object, "status", "lastPolledAt")
		g.Expect(v).NotTo(Equal("2026-01-01t00:00:00z"))
		g.Expect(getIB(g, bad).Status.DecodeError).To(BeEmpty())
	}).Should(Succeed())
}

// TestUnschedulableBuildEndsAndFreesItsSlot (issue 10 item 2, found on the local cluster): a
// build pod no node can take never starts its activeDeadlineSeconds; after --max-pending it
// fails as Unschedulable with the scheduler's message, and its slot goes to the next build.
func TestUnschedulableBuildEndsAndFreesItsSlot(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "nowhere", func(ib *kilnv1.ImageBuild) { ib.Spec.NodeSelector = map[string]string{"kiln.test/nowhere": "true"} })
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "nowhere-build-1") }).Should(Succeed())
	// The scheduler's verdict, as the real one writes it; 11 minutes ago.
	since := metav1.NewTime(time.Now().Add(-defaultMaxPending - time.Minute))
	pod.Status.Phase = corev1.PodPending
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
		Message: "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.", LastTransitionTime: since}}
	g.Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	stalledWith(g, ib, string(kilnv1.FailureUnschedulable), "could not be scheduled for more than 10m0s", "didn't match Pod's node affinity/selector")
	g.Consistently(podExists(ns, "nowhere-build-2")).Should(BeFalse(), "not retried: the spec must change")
	// Its pod is gone and its claim's Lease given back.
	g.Eventually(podExists(ns, "nowhere-build-1")).Should(BeFalse())
	g.Eventually(func(g Gomega) {
		lease := &coordinationv1.Lease{}
		g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "kiln-cache-nowhere-cache"}, lease)).To(Succeed())
		g.Expect(lease.Spec.HolderIdentity).To(BeNil())
	}).Should(Succeed())

	// Until then, the wait says why and when it ends.
	young := newImageBuild(ns, "young", func(ib *kilnv1.ImageBuild) { ib.Spec.NodeSelector = map[string]string{"kiln.test/nowhere": "true"} })
	g.Expect(k8sClient.Create(ctx, young)).To(Succeed())
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "young-build-1") }).Should(Succeed())
	pod.Status.Phase = corev1.PodPending
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
		Message: "0/1 nodes are available: insufficient cpu.", LastTransitionTime: metav1.Now()}}
	g.Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(conditionOf(g, getIB(g, young), kilnv1.ConditionReconciling).Message).To(ContainSubstring("not scheduled: 0/1 nodes are available: insufficient cpu."))
	}).Should(Succeed())
	class, _, left := testReconciler.unschedulable(pod)
	g.Expect(class).To(BeEmpty())
	g.Expect(left).To(BeNumerically(">", defaultMaxPending-time.Minute), "observeRunning requeues for when --max-pending runs out")
}

// TestOOMKilledBuildKitIsNotRetried: buildkitd killed for memory makes the runner report BuildKit
// gone (transient); the pod says OOMKilled, and that is what the build failed of.
func TestOOMKilledBuildKitIsNotRetried(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "oom", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Resources = &kilnv1.BuildKitResources{Limits: map[corev1.ResourceName]resource.Quantity{corev1.ResourceMemory: resource.MustParse("20Mi")}}
		ib.Spec.Retries = ptr.To[int32](2)
	})
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "oom-build-1") }).Should(Succeed())
	lost := contract.Result{FailureClass: kilnv1.FailureBuildKitNotUp, Message: "lost buildkitd during the build: EOF"}
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: containerBuildKit, LastTerminationState: corev1.ContainerState{
		Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}}}
	finishPod(t, pod, 6, resultJSON(t, lost))
	stalledWith(g, ib, string(kilnv1.FailureBuildFailed), "OOMKilled", "memory limit 20Mi from spec.resources.limits.memory")
	g.Consistently(podExists(ns, "oom-build-2")).Should(BeFalse())
}

// TestPodsWithKilnsLabelsTakeNoSlot: anyone who may create pods can put kiln's labels on them,
// and name an ImageBuild of the namespace as their controller; such pods take no build slot:
// only pods kiln created (by UID) do.
func TestPodsWithKilnsLabelsTakeNoSlot(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	testReconciler.SetMaxConcurrentBuilds(1)
	t.Cleanup(func() { testReconciler.SetMaxConcurrentBuilds(0) })
	ghost := metav1.OwnerReference{APIVersion: kilnv1.GroupVersion.String(), Kind: "ImageBuild", Name: "gone", UID: "00000000-0000-0000-0000-000000000000", Controller: ptr.To(true)}
	held := newImageBuild(ns, "held", func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = true })
	g.Expect(k8sClient.Create(ctx, held)).To(Succeed())
	forged := metav1.OwnerReference{APIVersion: kilnv1.GroupVersion.String(), Kind: "ImageBuild", Name: held.Name, UID: held.UID, Controller: ptr.To(true)}
	for i, refs := range [][]metav1.OwnerReference{nil, nil, {ghost}, {forged}} {
		fake := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("fake-%d", i), OwnerReferences: refs,
			Labels: map[string]string{LabelManagedBy: "kiln", LabelImageBuild: "gone"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.test/other:1"}}}}
		g.Expect(k8sClient.Create(ctx, fake)).To(Succeed())
	}
	time.Sleep(2 * time.Second) // the manager's cache has the fakes: counted, they would fill the one slot
	other := newImageBuild(ns, "other")
	g.Expect(k8sClient.Create(ctx, other)).To(Succeed())
	g.Eventually(podExists(ns, "other-build-1")).Should(BeTrue(), "labelled pods that kiln did not create take no slot")
}

// TestUserNSPodOnANodeWithoutSupportStalls (issue 14): a userns build pod bound to a node whose
// runtime reports no user-namespace support would only be retried by the kubelet until the
// build's deadline; kiln ends it PodStartFailed at once, naming the node and what to do. On a
// node that supports user namespaces the same pod just waits to start.
func TestUserNSPodOnANodeWithoutSupportStalls(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	node := func(name string, userns bool) string {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s", ns, name)}}
		g.Expect(k8sClient.Create(ctx, n)).To(Succeed())
		t.Cleanup(func() { _ = k8sClient.Delete(ctx, n) })
		n.Status.RuntimeHandlers = []corev1.NodeRuntimeHandler{{Name: "", Features: &corev1.NodeRuntimeHandlerFeatures{UserNamespaces: ptr.To(userns)}}}
		g.Expect(k8sClient.Status().Update(ctx, n)).To(Succeed())
		return n.Name
	}
	bind := func(ib *kilnv1.ImageBuild, nodeName string) {
		var pod *corev1.Pod
		g.Eventually(func(g Gomega) { pod = getPod(g, ns, ib.Name+"-build-1") }).Should(Succeed())
		g.Expect(ptr.Deref(pod.Spec.HostUsers, true)).To(BeFalse())
		binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod.Name}, Target: corev1.ObjectReference{Kind: "Node", Name: nodeName}}
		g.Expect(k8sClient.SubResource("binding").Create(ctx, pod, binding)).To(Succeed())
	}
	old, ready := node("old-runc", false), node("userns-ready", true)

	ib := newImageBuild(ns, "userns", func(ib *kilnv1.ImageBuild) { ib.Spec.SecurityProfile = kilnv1.SecurityProfileUserNS })
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	bind(ib, old)
	stalledWith(g, ib, string(kilnv1.FailurePodStartFailed), "node "+old+" cannot run build pod userns-build-1 of the userns security profile",
		"does not support user namespaces", "use the rootless profile (spec.securityProfile)")

	fine := newImageBuild(ns, "fine", func(ib *kilnv1.ImageBuild) { ib.Spec.SecurityProfile = kilnv1.SecurityProfileUserNS })
	g.Expect(k8sClient.Create(ctx, fine)).To(Succeed())
	bind(fine, ready)
	g.Consistently(func(g Gomega) {
		cur := getIB(g, fine)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhasePending))
		g.Expect(condition(cur, kilnv1.ConditionStalled)).To(BeNil())
		g.Expect(cur.Status.LastBuild.SecurityProfile).To(Equal(kilnv1.SecurityProfileUserNS), "status names the pod's profile")
	}).Should(Succeed())
}

// TestUnsignedResultOfASignedBuildFails (issue 15): a runner of contract 1.2 ignores
// spec.output.signing and pushes the image unsigned; kiln does not call that a success.
func TestUnsignedResultOfASignedBuildFails(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "signed", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Output.Signing = &kilnv1.Signing{SecretRef: kilnv1.LocalObjectReference{Name: "cosign"}}
	})
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "signed-build-1") }).Should(Succeed())
	runPod(t, pod)
	unsigned := okResult
	unsigned.Signature = nil
	finishPod(t, getPod(g, ns, pod.Name), 0, resultJSON(t, unsigned))
	stalledWith(g, ib, string(kilnv1.FailureInternal), "the runner pushed the image without signing it", "--runner-image")
}
