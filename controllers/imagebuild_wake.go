package controllers

import (
	"context"
	"slices"
	"sort"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// Waiting is woken by watches, not polled: a build slot that frees wakes the oldest queued
// ImageBuild, and each admission wakes the next; a released cache Lease wakes the ImageBuilds
// waiting for that claim; a claim that appears wakes those that named it. The requeues left on
// waiting states are a slow safety net, not the mechanism; they also refresh the queue position
// a waiting ImageBuild shows (ImageBuildReconciler.WaitRefresh).

// defaultWaitRefresh is how often a waiting ImageBuild looks again by itself.
const defaultWaitRefresh = time.Minute

func (r *ImageBuildReconciler) waitRefresh() time.Duration {
	if r.WaitRefresh > 0 {
		return r.WaitRefresh
	}
	return defaultWaitRefresh
}

const (
	// indexPhase indexes ImageBuilds by status.phase (to find the queue without a full list).
	indexPhase = "status.phase"
	// indexClaim indexes ImageBuilds by the cache claim they build on.
	indexClaim = "cacheClaim"
)

// indexNoPhase is the phase index's value for an ImageBuild with no status.phase yet: a new one,
// whose first reconcile may be asking for a slot right now.
const indexNoPhase = "-"

func phaseOf(obj client.Object) []string {
	ib, ok := obj.(*kilnv1.ImageBuild)
	switch {
	case !ok:
		return nil
	case ib.Status.Phase == "":
		return []string{indexNoPhase}
	}
	return []string{string(ib.Status.Phase)}
}

func claimOf(obj client.Object) []string {
	if ib, ok := obj.(*kilnv1.ImageBuild); ok && ib.Spec.DecodeError == "" {
		return []string{claimName(ib)}
	}
	return nil
}

// queued lists the ImageBuilds waiting for a build slot, oldest first, from the cache: those
// Queued, and the new ones (no phase yet), which wait from their creation. Counting the new ones
// keeps a burst in order: parallel workers reconcile the first builds of a, b and c at once,
// and c must not take the slot that b, older and not Queued yet, is about to ask for. A new
// ImageBuild that holds a slot already is left out by admit (holders).
func (r *ImageBuildReconciler) queued(ctx context.Context) ([]*kilnv1.ImageBuild, error) {
	var out []*kilnv1.ImageBuild
	for _, phase := range []string{string(kilnv1.PhaseQueued), indexNoPhase} {
		list := &kilnv1.ImageBuildList{}
		if err := r.List(ctx, list, client.MatchingFields{indexPhase: phase}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for i := range list.Items {
			o := &list.Items[i]
			if !o.Spec.Suspend && o.DeletionTimestamp.IsZero() && o.Spec.DecodeError == "" && (o.Status.Phase != "" || o.Status.LastBuild == nil) &&
				!meta.IsStatusConditionTrue(o.Status.Conditions, kilnv1.ConditionStalled) {
				out = append(out, o)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return olderThan(out[i], out[j]) })
	return out, nil
}

// nextInQueue lists the queued ImageBuilds in the order they get slots (fairOrder), without
// those of a namespace at --max-concurrent-builds-per-namespace: the end of one of that
// namespace's builds wakes them (wakeQueue).
func (r *ImageBuildReconciler) nextInQueue(ctx context.Context) ([]*kilnv1.ImageBuild, error) {
	list, err := r.queued(ctx)
	if err != nil || len(list) == 0 {
		return list, err
	}
	pods, err := r.buildPodCensus(ctx)
	if err != nil {
		return nil, err
	}
	list = slices.DeleteFunc(list, func(o *kilnv1.ImageBuild) bool { return pods.holders[o.UID] || r.slots.holds(o.UID) })
	fairOrder(list, pods.byNamespace)
	if limit := r.namespaceLimit(); limit > 0 {
		list = slices.DeleteFunc(list, func(o *kilnv1.ImageBuild) bool { return pods.byNamespace[o.Namespace] >= limit })
	}
	return list, nil
}

// wakeQueue wakes the queued ImageBuild whose turn it is, and with a per-namespace limit the
// next one of namespace (whose build just ended), which may be the only one that may start.
func (r *ImageBuildReconciler) wakeQueue(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], namespace string) {
	list, err := r.nextInQueue(ctx)
	if err != nil {
		return
	}
	for _, o := range list {
		q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
		if o.Status.Phase == kilnv1.PhaseQueued {
			break // the new ones before it are on their way to the queue, or to a slot
		}
	}
	if r.namespaceLimit() == 0 {
		return
	}
	for _, o := range list {
		if o.Namespace == namespace {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
			return
		}
	}
}

// buildPodEvents is the handler for build pods beyond Owns: the cache showing a pod ends its
// slot reservation (the census counts it from then on), and a pod that stops holding a slot (it
// finished, or it is gone) wakes the queued ImageBuild whose turn it is and those waiting for its claim.
func (r *ImageBuildReconciler) buildPodEvents() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.slots.shown(client.ObjectKeyFromObject(e.Object))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.slots.shown(client.ObjectKeyFromObject(e.ObjectNew))
			oldPod, ok1 := e.ObjectOld.(*corev1.Pod)
			newPod, ok2 := e.ObjectNew.(*corev1.Pod)
			if ok1 && ok2 && !podFinished(oldPod) && podFinished(newPod) {
				r.wakeQueue(ctx, q, newPod.Namespace)
				r.wakeClaimWaiters(ctx, newPod, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.slots.shown(client.ObjectKeyFromObject(e.Object))
			if pod, ok := e.Object.(*corev1.Pod); ok && !podFinished(pod) {
				r.wakeQueue(ctx, q, pod.Namespace)
				r.wakeClaimWaiters(ctx, pod, q)
			}
		},
	}
}

// wakeClaimWaiters wakes the ImageBuilds that build on the cache claim of a build pod that
// stopped: the claim's Lease may be free now even if nobody released it.
func (r *ImageBuildReconciler) wakeClaimWaiters(ctx context.Context, pod *corev1.Pod, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	claim := pod.Annotations[AnnotationCacheClaim]
	if claim == "" {
		return
	}
	pvc := &corev1.PersistentVolumeClaim{}
	pvc.Name, pvc.Namespace = claim, pod.Namespace
	for _, req := range r.claimWaiters(ctx, pvc) {
		q.Add(req)
	}
}

// claimWaiters maps a cache claim or its Lease to the ImageBuilds of that namespace that build
// on the claim: those waiting for the Lease, or for a shared claim to exist.
func (r *ImageBuildReconciler) claimWaiters(ctx context.Context, obj client.Object) []reconcile.Request {
	claim := obj.GetName()
	if _, isLease := obj.(*coordinationv1.Lease); isLease {
		claim = obj.GetAnnotations()[AnnotationCacheClaim]
	}
	if claim == "" {
		return nil
	}
	list := &kilnv1.ImageBuildList{}
	if err := r.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{indexClaim: claim}); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// wakeNext wakes the next queued ImageBuild other than ib, after ib took a slot: if another
// slot is free, it takes it; if not, it reports its new place in the queue.
func (r *ImageBuildReconciler) wakeNext(ctx context.Context, ib *kilnv1.ImageBuild) {
	if r.wake == nil {
		return
	}
	list, err := r.nextInQueue(ctx)
	if err != nil {
		return
	}
	for _, o := range list {
		if o.UID == ib.UID {
			continue
		}
		select {
		case r.wake <- event.GenericEvent{Object: o.DeepCopy()}:
		default: // the channel is full: enough wake-ups are on their way
			return
		}
		if o.Status.Phase == kilnv1.PhaseQueued {
			return // the new ones before it are on their way to the queue, or to a slot
		}
	}
}
