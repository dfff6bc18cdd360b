package controllers

import (
	"context"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// TestFairOrder: namespaces take turns; within one, the oldest goes first.
func TestFairOrder(t *testing.T) {
	at := func(ns, name string, minute int) *kilnv1.ImageBuild {
		ib := &kilnv1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name),
			CreationTimestamp: metav1.NewTime(time.Date(2026, 11, 30, 12, minute, 0, 0, time.UTC))}}
		return ib
	}
	queue := []*kilnv1.ImageBuild{at("a", "a3", 3), at("b", "b1", 10), at("a", "a1", 1), at("a", "a2", 2), at("c", "c1", 11), at("b", "b2", 12)}
	names := func() []string {
		var out []string
		for _, ib := range queue {
			out = append(out, ib.Name)
		}
		return out
	}
	fairOrder(queue, nil)
	if got, want := names(), []string{"a1", "b1", "c1", "a2", "b2", "a3"}; !equal(got, want) {
		t.Errorf("nothing running: %v, want %v", got, want)
	}
	fairOrder(queue, map[string]int{"a": 2, "b": 1})
	if got, want := names(), []string{"c1", "b1", "a1", "b2", "a2", "a3"}; !equal(got, want) {
		t.Errorf("a runs 2, b runs 1: %v, want %v", got, want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// clearOrphanBuildPods removes unfinished build pods whose ImageBuild is gone (envtest has no
// garbage collector), so that earlier tests' pods hold no slot.
func clearOrphanBuildPods(g Gomega) {
	ctx := context.Background()
	g.Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		g.Expect(k8sClient.List(ctx, pods, client.HasLabels{LabelImageBuild})).To(Succeed())
		for i := range pods.Items {
			p := &pods.Items[i]
			owner := &kilnv1.ImageBuild{}
			err := k8sClient.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Labels[LabelImageBuild]}, owner)
			if !podFinished(p) && (err != nil || len(p.OwnerReferences) == 0 || owner.UID != p.OwnerReferences[0].UID) {
				_ = k8sClient.Delete(ctx, p, client.GracePeriodSeconds(0))
				g.Expect(err).NotTo(HaveOccurred(), "orphaned build pod %s/%s", p.Namespace, p.Name)
			}
		}
	}).Should(Succeed())
}

// quiesceOthers suspends every ImageBuild outside the given namespaces (earlier tests' builds
// never end by themselves: envtest has no kubelet) and waits until no build slot is taken, so
// that a test of the slot limit sees only its own builds.
func quiesceOthers(g Gomega, keep ...string) {
	ctx := context.Background()
	clearOrphanBuildPods(g)
	g.Eventually(func(g Gomega) {
		list := &kilnv1.ImageBuildList{}
		g.Expect(k8sClient.List(ctx, list)).To(Succeed())
		for i := range list.Items {
			ib := &list.Items[i]
			if ib.Spec.Suspend || slices.Contains(keep, ib.Namespace) {
				continue
			}
			ib.Spec.Suspend = true
			g.Expect(client.IgnoreNotFound(k8sClient.Update(ctx, ib))).To(Succeed())
		}
		g.Expect(slotsInUse(g)).To(Equal(0))
	}).Should(Succeed())
	// The manager also counts slots it reserved for pods its cache has not shown yet (they end
	// when it does, or after recentGrace): wait until none is left either.
	g.Eventually(func() int {
		testReconciler.slots.mu.Lock()
		defer testReconciler.slots.mu.Unlock()
		return len(testReconciler.slots.recent)
	}, recentGrace+30*time.Second).Should(Equal(0))
}

// slotsInUse counts the build slots taken now, as the manager's census does: unfinished build
// pods whose ImageBuild exists and controls them, one per ImageBuild.
func slotsInUse(g Gomega) int {
	ctx := context.Background()
	pods := &corev1.PodList{}
	g.Expect(k8sClient.List(ctx, pods, client.HasLabels{LabelImageBuild})).To(Succeed())
	owners := map[types.UID]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		ref := metav1.GetControllerOf(p)
		if podFinished(p) || ref == nil || owners[ref.UID] {
			continue
		}
		owner := &kilnv1.ImageBuild{}
		if k8sClient.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: ref.Name}, owner) == nil && owner.UID == ref.UID {
			owners[ref.UID] = true
		}
	}
	return len(owners)
}

// TestNamespacesTakeTurns (issue 12 item 2): one namespace that queues many builds does not take
// every slot before another namespace's first build: a slot that frees goes to the namespace
// that runs fewer builds.
func TestNamespacesTakeTurns(t *testing.T) {
	g := eventually(t)
	g.SetDefaultEventuallyTimeout(60 * time.Second)
	ctx := context.Background()
	busy, quiet := newNamespace(t), newNamespace(t)
	quiesceOthers(g, busy, quiet)
	testReconciler.SetMaxConcurrentBuilds(2)
	t.Cleanup(func() { testReconciler.SetMaxConcurrentBuilds(0) })

	for _, n := range []string{"a1", "a2", "a3", "a4"} {
		g.Expect(k8sClient.Create(ctx, newImageBuild(busy, n))).To(Succeed())
	}
	var a1 *corev1.Pod
	g.Eventually(func(g Gomega) {
		a1 = getPod(g, busy, "a1-build-1")
		g.Expect(podExists(busy, "a2-build-1")()).To(BeTrue(), "a2: %s; %d slots in use", conditionOf(g, getIB(g, newImageBuild(busy, "a2")), kilnv1.ConditionReady).Message, slotsInUse(g))
	}).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(getIB(g, newImageBuild(busy, "a3")).Status.Phase).To(Equal(kilnv1.PhaseQueued))
	}).Should(Succeed())

	g.Expect(k8sClient.Create(ctx, newImageBuild(quiet, "b1"))).To(Succeed())
	g.Eventually(func(g Gomega) {
		cur := getIB(g, newImageBuild(quiet, "b1"))
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseQueued))
		g.Expect(conditionOf(g, cur, kilnv1.ConditionReady).Message).To(ContainSubstring("position 1 of 3"), "b1 goes before the older a3 and a4")
	}).Should(Succeed())

	finishPod(t, a1, 0, resultJSON(t, okResult))
	g.Eventually(podExists(quiet, "b1-build-1")).Should(BeTrue(), "the freed slot goes to the namespace that runs nothing")
	g.Consistently(podExists(busy, "a3-build-1"), 3*time.Second).Should(BeFalse())
}

// TestPerNamespaceLimit: --max-concurrent-builds-per-namespace holds a namespace's further
// builds, saying so, and the end of one of its builds starts the next.
func TestPerNamespaceLimit(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	testReconciler.SetMaxConcurrentBuildsPerNamespace(1)
	t.Cleanup(func() { testReconciler.SetMaxConcurrentBuildsPerNamespace(0) })

	g.Expect(k8sClient.Create(ctx, newImageBuild(ns, "one"))).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "one-build-1") }).Should(Succeed())
	g.Expect(k8sClient.Create(ctx, newImageBuild(ns, "two"))).To(Succeed())
	g.Eventually(func(g Gomega) {
		cur := getIB(g, newImageBuild(ns, "two"))
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseQueued))
		g.Expect(conditionOf(g, cur, kilnv1.ConditionReady).Message).To(ContainSubstring("namespace " + ns + " runs 1 builds, its limit (--max-concurrent-builds-per-namespace)"))
	}).Should(Succeed())
	g.Expect(podExists(ns, "two-build-1")()).To(BeFalse())

	finishPod(t, pod, 0, resultJSON(t, okResult))
	g.Eventually(podExists(ns, "two-build-1"), 10*time.Second).Should(BeTrue(), "the end of its build starts the next")
}
