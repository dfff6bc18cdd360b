package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// buildSlots admits new build pods up to --max-concurrent-builds, the oldest waiting ImageBuild
// first. Admission and pod creation happen under one lock, and pods created moments ago count
// even before the cache shows them, so parallel workers never overshoot the limit.
type buildSlots struct {
	mu     sync.Mutex
	recent map[types.NamespacedName]slot
}

// slot is a build pod that holds a slot before the cache shows it: reserved, then created.
type slot struct {
	at      time.Time
	created bool
}

// recentGrace is how long a created pod counts while the cache has not shown it yet.
const recentGrace = time.Minute

// admission is the answer of admit.
type admission struct {
	ok       bool
	running  int
	position int // 1-based place in the queue when not admitted
	queued   int
}

// admit says whether ib may start a build pod now. The caller holds s.mu.
func (r *ImageBuildReconciler) admit(ctx context.Context, ib *kilnv1.ImageBuild) (admission, error) {
	running, err := r.runningBuilds(ctx)
	if err != nil {
		return admission{}, err
	}
	list := &kilnv1.ImageBuildList{}
	if err := r.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return admission{}, fmt.Errorf("listing queued ImageBuilds: %w", err)
	}
	ahead, queued := 0, 1
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID == ib.UID || o.Status.Phase != kilnv1.PhaseQueued || o.Spec.Suspend || !o.DeletionTimestamp.IsZero() {
			continue
		}
		queued++
		if olderThan(o, ib) {
			ahead++
		}
	}
	a := admission{running: running, position: ahead + 1, queued: queued}
	a.ok = running+ahead < r.MaxConcurrentBuilds
	return a, nil
}

// olderThan orders the queue: creation time, then namespace and name, so the order is total.
func olderThan(a, b *kilnv1.ImageBuild) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// runningBuilds counts build pods that have not finished, in every namespace, plus pods created
// moments ago that the cache does not show yet.
func (r *ImageBuildReconciler) runningBuilds(ctx context.Context) (int, error) {
	list := &corev1.PodList{}
	if err := r.List(ctx, list, client.MatchingLabels{LabelManagedBy: "kiln"}, client.HasLabels{LabelImageBuild}, client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("counting running builds: %w", err)
	}
	n := 0
	seen := map[types.NamespacedName]bool{}
	for i := range list.Items {
		p := &list.Items[i]
		seen[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = true
		if !podFinished(p) {
			n++
		}
	}
	now := r.now()
	for key, sl := range r.slots.recent {
		if seen[key] || now.Sub(sl.at) > recentGrace {
			delete(r.slots.recent, key)
			continue
		}
		if !sl.created {
			n++ // reserved: its pod is being created
			continue
		}
		// Not in the cache yet: ask the API server, since it may already be gone again.
		pod := &corev1.Pod{}
		err := r.APIReader.Get(ctx, key, pod)
		switch {
		case apierrors.IsNotFound(err), err == nil && podFinished(pod):
			delete(r.slots.recent, key)
		case err != nil:
			return 0, fmt.Errorf("reading build pod %s: %w", key, err)
		default:
			n++
		}
	}
	return n, nil
}

// reserve holds a slot for a pod about to be created. The caller holds s.mu.
func (s *buildSlots) reserve(key types.NamespacedName, at time.Time) {
	if s.recent == nil {
		s.recent = map[types.NamespacedName]slot{}
	}
	s.recent[key] = slot{at: at}
}

// settle marks a reserved slot's pod created, or frees the slot when no pod was made.
func (s *buildSlots) settle(key types.NamespacedName, created bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, ok := s.recent[key]
	switch {
	case !ok:
	case created:
		sl.created = true
		s.recent[key] = sl
	default:
		delete(s.recent, key)
	}
}
