package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// buildSlots admits new build pods up to --max-concurrent-builds (and, per namespace, up to
// --max-concurrent-builds-per-namespace), in fairOrder. A worker that is admitted reserves its
// slot under the lock, and reserved or just created pods count until the cache shows them, so
// parallel workers never overshoot the limit.
type buildSlots struct {
	mu     sync.Mutex
	recent map[types.NamespacedName]slot
	// made is the UIDs of the build pods this manager created, with when: with the UID in
	// status.lastBuild.podUID (which outlives a restart), kiln's own record of its pods.
	made map[types.UID]time.Time
}

// madeForget is how long kiln remembers a pod it created whose end the census has not seen (a
// pod deleted while running). The status keeps the UID of each ImageBuild's current pod.
const madeForget = 24 * time.Hour

// recordMade remembers that kiln created the pod with uid.
func (s *buildSlots) recordMade(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.made == nil {
		s.made = map[types.UID]time.Time{}
	}
	for u, at := range s.made {
		if time.Since(at) > madeForget {
			delete(s.made, u)
		}
	}
	s.made[uid] = time.Now()
}

// createdPod reports whether this manager created the pod with uid (and the census has not yet seen
// it finish).
func (s *buildSlots) createdPod(uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.made[uid]
	return ok
}

// madeByKiln reports whether this manager created pod key with uid, or holds a slot for it
// (created a moment ago, its UID not recorded yet); finished is the census seeing it finished,
// which ends the record.
func (s *buildSlots) madeByKiln(key types.NamespacedName, uid types.UID, finished bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.made[uid]
	if finished {
		delete(s.made, uid)
	}
	_, reserved := s.recent[key]
	return ok || reserved
}

// slot is a build pod that holds a slot before the cache shows it: reserved, then created.
type slot struct {
	at      time.Time
	created bool
	// owner is the ImageBuild the pod is for.
	owner types.UID
}

// recentGrace is how long a created pod counts while the cache has not shown it yet.
const recentGrace = time.Minute

// admission is the answer of admit.
type admission struct {
	ok       bool
	limit    int // --max-concurrent-builds when admit looked; 0 means no limit
	running  int
	position int // 1-based place in the queue when not admitted
	queued   int
	// nsLimit is --max-concurrent-builds-per-namespace (0: none), and nsRunning the builds ib's
	// namespace runs; nsFull says that they hold back ib.
	nsLimit, nsRunning int
	nsFull             bool
}

// admit says whether ib may start build pod slot now, and reserves the slot when it may. It
// reads the cache (running pods, the queue) before taking the lock, so that workers never wait
// on each other's reads; under the lock it only counts the slots reserved in memory.
func (r *ImageBuildReconciler) admit(ctx context.Context, ib *kilnv1.ImageBuild, slot types.NamespacedName) (admission, error) {
	pods, err := r.buildPodCensus(ctx)
	if err != nil {
		return admission{}, err
	}
	queue, err := r.queued(ctx)
	if err != nil {
		return admission{}, fmt.Errorf("listing queued ImageBuilds: %w", err)
	}
	r.slots.mu.Lock()
	defer r.slots.mu.Unlock()
	unseen := r.slots.unseen(pods.seen)
	running := maps.Clone(pods.byNamespace)
	for key := range unseen {
		running[key.Namespace]++
	}
	a := admission{limit: r.MaxConcurrentBuilds, nsLimit: r.MaxConcurrentBuildsPerNamespace, running: pods.running + len(unseen), nsRunning: running[ib.Namespace]}
	ahead := 0
	queue = slices.DeleteFunc(queue, func(o *kilnv1.ImageBuild) bool {
		return o.UID != ib.UID && (pods.holders[o.UID] || r.slots.holdsLocked(o.UID))
	})
	a.queued, ahead = placeInQueue(queue, ib, running, a.nsLimit)
	a.position = ahead + 1
	a.nsFull = a.nsLimit > 0 && a.nsRunning >= a.nsLimit
	a.ok = (a.limit == 0 || a.running+ahead < a.limit) && !a.nsFull
	if a.ok {
		r.slots.reserve(slot, ib.UID)
	}
	return a, nil
}

// placeInQueue is how many ImageBuilds wait for a slot (ib included) and how many of them go
// before ib in fairOrder. Those of a namespace at its limit (nsLimit > 0) go before nobody.
func placeInQueue(queue []*kilnv1.ImageBuild, ib *kilnv1.ImageBuild, running map[string]int, nsLimit int) (queued, ahead int) {
	all := make([]*kilnv1.ImageBuild, 0, len(queue)+1)
	for _, o := range queue {
		if o.UID != ib.UID {
			all = append(all, o)
		}
	}
	all = append(all, ib)
	fairOrder(all, running)
	for _, o := range all {
		if o.UID == ib.UID {
			break
		}
		if nsLimit == 0 || running[o.Namespace] < nsLimit {
			ahead++
		}
	}
	return len(all), ahead
}

// fairOrder sorts queue into the order in which the ImageBuilds get slots: namespaces take turns,
// the oldest first within one. An ImageBuild's turn is its place among its namespace's
// queued ImageBuilds (0 for the oldest) plus the builds its namespace runs now (running); a
// lower turn goes first, and the older ImageBuild of equal turns. So a namespace that queues ten
// builds takes one slot in each round, not every slot before another namespace's first, and a
// namespace that runs fewer builds goes before one that runs more.
func fairOrder(queue []*kilnv1.ImageBuild, running map[string]int) {
	sort.Slice(queue, func(i, j int) bool { return olderThan(queue[i], queue[j]) })
	turn := make(map[types.UID]int, len(queue))
	places := map[string]int{}
	for _, o := range queue {
		turn[o.UID] = running[o.Namespace] + places[o.Namespace]
		places[o.Namespace]++
	}
	sort.SliceStable(queue, func(i, j int) bool { return turn[queue[i].UID] < turn[queue[j].UID] })
}

// olderThan orders ImageBuilds by age: creation time, then namespace and name, so the order is
// total.
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

// census is what the cache shows of kiln's build pods in every namespace.
type census struct {
	running     int                           // pods that have not finished
	byNamespace map[string]int                // running, by namespace
	seen        map[types.NamespacedName]bool // every build pod, finished or not
	holders     map[types.UID]bool            // the ImageBuilds whose running pods count
}

// buildPodCensus counts kiln's build pods from the cache. A running pod holds a slot only when
// kiln made it, one per controlling ImageBuild: its UID is one this manager created (or it has a
// slot reserved), or else its ImageBuild exists and its status records that UID. A pod that
// merely carries kiln's labels, or claims an ImageBuild as its owner (anyone who may create
// pods can do both), takes no slot. The ImageBuilds are read only for pods of the second kind
// (after a manager restart), listed once per census.
func (r *ImageBuildReconciler) buildPodCensus(ctx context.Context) (census, error) {
	list := &corev1.PodList{}
	if err := r.List(ctx, list, client.MatchingLabels{LabelManagedBy: "kiln"}, client.HasLabels{LabelImageBuild}, client.UnsafeDisableDeepCopy); err != nil {
		return census{}, fmt.Errorf("counting running builds: %w", err)
	}
	c := census{seen: make(map[types.NamespacedName]bool, len(list.Items)), byNamespace: map[string]int{}}
	owners := map[types.UID]bool{}
	c.holders = owners
	// The ImageBuilds, listed once and read in place (not one copying Get per pod: over a
	// burst of starts that was most of the manager's CPU, hack/bench/manager).
	var builds map[types.NamespacedName]*kilnv1.ImageBuild
	ownerOf := func(ns, name string) (*kilnv1.ImageBuild, error) {
		if builds == nil {
			all := &kilnv1.ImageBuildList{}
			if err := r.List(ctx, all, client.UnsafeDisableDeepCopy); err != nil {
				return nil, fmt.Errorf("counting running builds: %w", err)
			}
			builds = make(map[types.NamespacedName]*kilnv1.ImageBuild, len(all.Items))
			for i := range all.Items {
				builds[types.NamespacedName{Namespace: all.Items[i].Namespace, Name: all.Items[i].Name}] = &all.Items[i]
			}
		}
		return builds[types.NamespacedName{Namespace: ns, Name: name}], nil
	}
	for i := range list.Items {
		p := &list.Items[i]
		c.seen[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = true
		ref := metav1.GetControllerOf(p)
		made := r.slots.madeByKiln(types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, p.UID, podFinished(p))
		if podFinished(p) || ref == nil || ref.Kind != "ImageBuild" || owners[ref.UID] {
			continue
		}
		if !made {
			// Not one this manager created (it started since): the pod is kiln's when its
			// ImageBuild exists and records it.
			owner, err := ownerOf(p.Namespace, ref.Name)
			if err != nil {
				return census{}, err
			}
			if owner == nil || owner.UID != ref.UID || !recorded(owner.Status.LastBuild, p) {
				continue
			}
		}
		owners[ref.UID] = true
		c.running++
		c.byNamespace[p.Namespace]++
	}
	return c, nil
}

// unseen is the slots reserved in memory whose pods the cache does not show yet: pods being
// created, or created moments ago. Once the cache shows a pod, the census counts it; a
// reservation whose pod never shows expires after recentGrace (on the monotonic clock: this is
// bookkeeping in memory, not a time any object shows). The caller holds s.mu.
func (s *buildSlots) unseen(seen map[types.NamespacedName]bool) map[types.NamespacedName]bool {
	out := map[types.NamespacedName]bool{}
	for key, sl := range s.recent {
		if seen[key] || time.Since(sl.at) > recentGrace {
			delete(s.recent, key)
			continue
		}
		out[key] = true
	}
	return out
}

// reserve holds a slot for a pod of ImageBuild owner about to be created. The caller holds s.mu.
func (s *buildSlots) reserve(key types.NamespacedName, owner types.UID) {
	if s.recent == nil {
		s.recent = map[types.NamespacedName]slot{}
	}
	s.recent[key] = slot{at: time.Now(), owner: owner}
}

// holdsLocked reports whether ImageBuild owner holds a reserved slot. The caller holds s.mu.
func (s *buildSlots) holdsLocked(owner types.UID) bool {
	for _, sl := range s.recent {
		if sl.owner == owner && time.Since(sl.at) <= recentGrace {
			return true
		}
	}
	return false
}

// holds reports whether ImageBuild owner holds a reserved slot.
func (s *buildSlots) holds(owner types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.holdsLocked(owner)
}

// shown ends the reservation of a pod that the cache now shows.
func (s *buildSlots) shown(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recent, key)
}

// confirm marks a reserved slot's pod created, or frees the slot when no pod was made.
func (s *buildSlots) confirm(key types.NamespacedName, created bool) {
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
