package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// holdFinalizer keeps a deleted pod in the API server, terminating, as a kubelet does while the
// pod's containers stop (envtest has no kubelet: a pod without it would vanish at once).
const holdFinalizer = "test.kiln.dev/hold"

// holdOnDelete makes pod stay terminating when it is deleted, until release is called.
func holdOnDelete(t *testing.T, g Gomega, pod *corev1.Pod) (release func()) {
	t.Helper()
	ctx := context.Background()
	g.Eventually(func() error {
		cur := &corev1.Pod{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
			return err
		}
		cur.Finalizers = append(cur.Finalizers, holdFinalizer)
		return k8sClient.Update(ctx, cur)
	}).Should(Succeed())
	release = func() {
		g.Eventually(func() error {
			cur := &corev1.Pod{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
				return client.IgnoreNotFound(err)
			}
			cur.Finalizers = nil
			return k8sClient.Update(ctx, cur)
		}).Should(Succeed())
	}
	t.Cleanup(release)
	return release
}

// TestDeletedPodIsLostAtOnce: a build pod someone deletes ends its build as PodLost as soon as it
// is terminating, not when it is gone; the retry waits for that pod, saying so, not as if another
// build held the cache (issue 19 item 6).
func TestDeletedPodIsLostAtOnce(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "del", func(ib *kilnv1.ImageBuild) { ib.Spec.Retries = ptr.To[int32](1) })
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "del-build-1") }).Should(Succeed())
	runPod(t, pod)
	release := holdOnDelete(t, g, pod)
	g.Eventually(func(g Gomega) {
		g.Expect(conditionOf(g, getIB(g, ib), kilnv1.ConditionReady).Message).To(ContainSubstring("is running"))
	}).Should(Succeed())

	g.Expect(k8sClient.Delete(ctx, pod)).To(Succeed())
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.LastBuild.PodName).To(Equal("del-build-1"))
		g.Expect(cur.Status.LastBuild.FailureReason).To(Equal(kilnv1.FailurePodLost))
		g.Expect(cur.Status.LastBuild.Message).To(ContainSubstring("build pod del-build-1 was deleted at"))
	}).Should(Succeed())
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhasePending), "its own pod is no contention")
		g.Expect(conditionOf(g, cur, kilnv1.ConditionReady).Message).To(And(
			ContainSubstring("this ImageBuild's earlier build pod del-build-1 is stopping"), ContainSubstring("cache claim del-cache")))
	}).Should(Succeed())
	g.Expect(podExists(ns, "del-build-2")()).To(BeFalse(), "no second buildkitd on the claim while the first stops")

	release()
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "del-build-2") }).Should(Succeed())
	g.Expect(pod.Annotations[AnnotationAttempt]).To(Equal("2"), "a lost build is retried")
}

// TestSuspendFollowsTheStoppingPod: suspending a build in progress says Suspended at once, names
// the pod that is still stopping, and on resume waits for it as this ImageBuild's own pod.
func TestSuspendFollowsTheStoppingPod(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "sus")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "sus-build-1") }).Should(Succeed())
	runPod(t, pod)
	release := holdOnDelete(t, g, pod)
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseBuilding)) }).Should(Succeed())

	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = true })
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseSuspended))
		g.Expect(conditionOf(g, cur, kilnv1.ConditionReady).Message).To(ContainSubstring("build pod sus-build-1 is stopping"))
	}).Should(Succeed())

	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = false })
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhasePending))
		g.Expect(conditionOf(g, cur, kilnv1.ConditionReady).Message).To(ContainSubstring("this ImageBuild's earlier build pod sus-build-1 is stopping"))
	}).Should(Succeed())
	release()
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "sus-build-2") }).Should(Succeed())
	g.Expect(pod.Annotations[AnnotationAttempt]).To(Equal("1"), "a resumed build is not a retry")
}

// TestGarbageCollectionIsSizedFromTheClaimsRequest: a volume bound with more capacity than the
// claim asks for does not let BuildKit's cache grow into the extra room.
func TestGarbageCollectionIsSizedFromTheClaimsRequest(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "shared", Namespace: ns, Labels: map[string]string{LabelSharedCache: "true"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("2Gi")}},
		},
	}
	g.Expect(k8sClient.Create(ctx, pvc)).To(Succeed())
	pvc.Status.Phase = corev1.ClaimBound
	pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("100Gi")}
	g.Expect(k8sClient.Status().Update(ctx, pvc)).To(Succeed())
	g.Eventually(func(g Gomega) {
		cur := &corev1.PersistentVolumeClaim{}
		g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "shared"}, cur)).To(Succeed())
		g.Expect(cur.Status.Capacity.Storage().String()).To(Equal("100Gi"))
	}).Should(Succeed())

	ib := newImageBuild(ns, "gc", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.ClaimName = "shared" })
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "gc-build-1") }).Should(Succeed())
	g.Expect(pod.Spec.InitContainers[0].Args).To(ContainElement("--oci-worker-gc-keepstorage=214,0,1717"), "GC from the 2Gi request, not the 100Gi volume")
}
