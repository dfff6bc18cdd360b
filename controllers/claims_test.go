package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// The manager is a shared resource: it caches only kiln's own claims and Leases, and owns each
// cache Lease by its claim.

func claim(ns, name string, labels map[string]string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

// TestForeignClaimsAndLeasesStayOutOfTheCache: a tenant's claim or Lease is not in the manager's
// cache, while a shared claim (a tenant's, without kiln's label) still builds, wakes the
// ImageBuilds that wait for it when it appears, and a tenant's claim that takes the owned
// claim's name is still found.
func TestForeignClaimsAndLeasesStayOutOfTheCache(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	mgrClient := testReconciler.Client // reads the manager's cache
	kilns := map[string]string{LabelManagedBy: "kiln"}

	foreign := claim(ns, "team-cache", map[string]string{LabelSharedCache: "true"}) // a tenant's, marked for sharing
	g.Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
	foreignLease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "someone-elses"}}
	g.Expect(k8sClient.Create(ctx, foreignLease)).To(Succeed())
	// Made after the foreign ones: once the cache shows these, it has seen the others' events.
	g.Expect(k8sClient.Create(ctx, claim(ns, "labelled", kilns))).To(Succeed())
	g.Expect(k8sClient.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kiln-cache-labelled", Labels: kilns}})).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(mgrClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "labelled"}, &corev1.PersistentVolumeClaim{})).To(Succeed())
		g.Expect(mgrClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "kiln-cache-labelled"}, &coordinationv1.Lease{})).To(Succeed())
	}).Should(Succeed())
	err := mgrClient.Get(ctx, client.ObjectKeyFromObject(foreign), &corev1.PersistentVolumeClaim{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a tenant's claim is in the manager's cache: %v", err)
	err = mgrClient.Get(ctx, client.ObjectKeyFromObject(foreignLease), &coordinationv1.Lease{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a tenant's Lease is in the manager's cache: %v", err)

	// The shared claim builds, read around the cache; its Lease is owned by it.
	shared := newImageBuild(ns, "shared", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.ClaimName = "team-cache" })
	g.Expect(k8sClient.Create(ctx, shared)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "shared-build-1") }).Should(Succeed())
	g.Expect(pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName).To(Equal("team-cache"))
	lease := &coordinationv1.Lease{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "kiln-cache-team-cache"}, lease)).To(Succeed())
	g.Expect(lease.OwnerReferences).To(ConsistOf(metav1.OwnerReference{APIVersion: "v1", Kind: "PersistentVolumeClaim", Name: "team-cache", UID: foreign.UID}))
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), foreign)).To(Succeed())
	g.Expect(foreign.OwnerReferences).To(BeEmpty(), "kiln never owns a shared claim")

	// A shared claim that appears later wakes the ImageBuild stalled for it: a stall has no
	// requeue, so only the watch on claim names can.
	late := newImageBuild(ns, "late", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.ClaimName = "later-cache" })
	g.Expect(k8sClient.Create(ctx, late)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(conditionOf(g, getIB(g, late), kilnv1.ConditionStalled).Reason).To(Equal(kilnv1.ReasonClaimNotFound))
	}).Should(Succeed())
	g.Expect(k8sClient.Create(ctx, claim(ns, "later-cache", map[string]string{LabelSharedCache: "true"}))).To(Succeed())
	g.Eventually(func(g Gomega) { getPod(g, ns, "late-build-1") }).Should(Succeed())

	// A tenant's claim named like the owned one is not in the cache, and is not taken for kiln's.
	g.Expect(k8sClient.Create(ctx, claim(ns, "taken-cache", nil))).To(Succeed())
	taken := newImageBuild(ns, "taken")
	g.Expect(k8sClient.Create(ctx, taken)).To(Succeed())
	g.Eventually(func(g Gomega) {
		st := conditionOf(g, getIB(g, taken), kilnv1.ConditionStalled)
		g.Expect(st.Reason).To(Equal(kilnv1.ReasonClaimNotFound))
		g.Expect(st.Message).To(ContainSubstring(`a PersistentVolumeClaim named "taken-cache" already exists and is not this ImageBuild's`))
	}).Should(Succeed())
	g.Expect(podExists(ns, "taken-build-1")()).To(BeFalse())
}

// TestCacheLeaseIsOwnedByItsClaimAndReleasedInPlace: the Lease of an owned claim names the claim
// as its owner (the garbage collector deletes it with the claim; envtest runs none), and a
// finished build frees it by clearing its holder: the manager deletes no Lease.
func TestCacheLeaseIsOwnedByItsClaimAndReleasedInPlace(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "own")
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "own-build-1") }).Should(Succeed())
	pvc := &corev1.PersistentVolumeClaim{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "own-cache"}, pvc)).To(Succeed())
	key := types.NamespacedName{Namespace: ns, Name: "kiln-cache-own-cache"}
	lease := &coordinationv1.Lease{}
	g.Expect(k8sClient.Get(ctx, key, lease)).To(Succeed())
	g.Expect(lease.OwnerReferences).To(ConsistOf(metav1.OwnerReference{APIVersion: "v1", Kind: "PersistentVolumeClaim", Name: "own-cache", UID: pvc.UID}))
	g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal("own-build-1"))

	finishPod(t, pod, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, key, lease)).To(Succeed(), "a released Lease stays with its claim")
		g.Expect(lease.Spec.HolderIdentity).To(BeNil())
		g.Expect(lease.Annotations).NotTo(HaveKey(annotationHolderCreated))
	}).Should(Succeed())
	g.Expect(lease.OwnerReferences).To(HaveLen(1))

	// The next build takes the free Lease.
	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Spec.Output.Tags = []string{"v2"} })
	g.Eventually(func(g Gomega) { getPod(g, ns, "own-build-2") }).Should(Succeed())
	g.Expect(k8sClient.Get(ctx, key, lease)).To(Succeed())
	g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal("own-build-2"))
}

// TestSharedClaimsByConsent (issue 13 item 3): spec.cache.claimName may name only a claim marked
// for sharing (kiln.dev/cache: "true") that no object controls: not another ImageBuild's own
// cache, not an unmarked volume. Marking it later starts the build.
func TestSharedClaimsByConsent(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)

	// Another ImageBuild's own cache, even if someone adds the label to it.
	owner := newImageBuild(ns, "owner")
	g.Expect(k8sClient.Create(ctx, owner)).To(Succeed())
	g.Eventually(func(g Gomega) { getPod(g, ns, "owner-build-1") }).Should(Succeed())
	owned := &corev1.PersistentVolumeClaim{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "owner-cache"}, owned)).To(Succeed())
	owned.Labels[LabelSharedCache] = "true"
	g.Expect(k8sClient.Update(ctx, owned)).To(Succeed())
	thief := newImageBuild(ns, "thief", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.ClaimName = "owner-cache" })
	g.Expect(k8sClient.Create(ctx, thief)).To(Succeed())
	stalledWith(g, thief, kilnv1.ReasonClaimNotShared, `cache claim "owner-cache" (spec.cache.claimName) is controlled by ImageBuild "owner" and cannot be shared`)

	// An unmarked claim (say, a database's volume).
	g.Expect(k8sClient.Create(ctx, claim(ns, "db-data", nil))).To(Succeed())
	db := newImageBuild(ns, "db", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.ClaimName = "db-data" })
	g.Expect(k8sClient.Create(ctx, db)).To(Succeed())
	stalledWith(g, db, kilnv1.ReasonClaimNotShared, `cache claim "db-data" (spec.cache.claimName) is not marked for sharing`, "kubectl label pvc db-data -n "+ns+" kiln.dev/cache=true")
	g.Consistently(podExists(ns, "db-build-1"), 2*time.Second).Should(BeFalse())

	// Marked: the watch on claims wakes the stalled ImageBuild, and it builds.
	pvc := &corev1.PersistentVolumeClaim{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "db-data"}, pvc)).To(Succeed())
	pvc.Labels = map[string]string{LabelSharedCache: "true"}
	g.Expect(k8sClient.Update(ctx, pvc)).To(Succeed())
	g.Eventually(podExists(ns, "db-build-1")).Should(BeTrue())
}
