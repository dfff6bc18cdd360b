package main

import (
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/controllers"
)

// tracker records, from the bench's own informers, when each ImageBuild reached each milestone.
// Times are when the watch event arrived in this process.
type tracker struct {
	mu        sync.Mutex
	createdAt map[string]time.Time // Create call started
	podName   map[string]string    // ImageBuild -> its build pod
	podAt     map[string]time.Time // build pod first seen
	statusAt  map[string]time.Time // status.lastBuild.podName first seen
	finishAt  map[string]time.Time // pod status update returned
	readyAt   map[string]time.Time // Ready=True first seen
	failed    map[string]string    // ImageBuilds in a failed phase: their Ready message
	extraPods int                  // build pods beyond the first per ImageBuild
}

func newTracker() *tracker {
	return &tracker{
		createdAt: map[string]time.Time{}, podName: map[string]string{}, podAt: map[string]time.Time{},
		statusAt: map[string]time.Time{}, finishAt: map[string]time.Time{}, readyAt: map[string]time.Time{},
		failed: map[string]string{},
	}
}

func (t *tracker) onPod(obj any) {
	now := time.Now()
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	ib := pod.Labels[controllers.LabelImageBuild]
	if ib == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if prev, seen := t.podName[ib]; seen {
		if prev != pod.Name {
			t.extraPods++
		}
		return
	}
	t.podName[ib] = pod.Name
	t.podAt[ib] = now
}

func (t *tracker) onImageBuild(obj any) {
	now := time.Now()
	ib, ok := obj.(*kilnv1.ImageBuild)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if lb := ib.Status.LastBuild; lb != nil && lb.PodName != "" {
		if _, seen := t.statusAt[ib.Name]; !seen {
			t.statusAt[ib.Name] = now
		}
	}
	if meta.IsStatusConditionTrue(ib.Status.Conditions, kilnv1.ConditionReady) {
		if _, seen := t.readyAt[ib.Name]; !seen {
			t.readyAt[ib.Name] = now
		}
	}
	switch ib.Status.Phase {
	case kilnv1.PhaseFailed, kilnv1.PhaseBudgetExceeded:
		msg := string(ib.Status.Phase)
		if c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ConditionReady); c != nil {
			msg += ": " + c.Message
		}
		t.failed[ib.Name] = msg
	}
}

func (t *tracker) handlers(f func(any)) toolscache.ResourceEventHandlerFuncs {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { f(obj) },
		UpdateFunc: func(_, obj any) { f(obj) },
	}
}

func (t *tracker) created(name string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.createdAt[name] = at
}

func (t *tracker) finished(name string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.finishAt[name] = at
}

// counts returns how many ImageBuilds have a build pod and how many are Ready.
func (t *tracker) counts() (pods, ready int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.podAt), len(t.readyAt)
}

func (t *tracker) statusCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.statusAt)
}

func (t *tracker) pod(ib string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.podName[ib]
}

// firstFailure returns one failed ImageBuild and its message, if any.
func (t *tracker) firstFailure() (string, string, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, msg := range t.failed {
		return name, msg, len(t.failed)
	}
	return "", "", 0
}

// last returns the latest time in m.
func last(m map[string]time.Time) time.Time {
	var out time.Time
	for _, v := range m {
		if v.After(out) {
			out = v
		}
	}
	return out
}

// latencies returns to[k]-from[k] for every k in both, sorted ascending, in seconds.
func latencies(from, to map[string]time.Time) []float64 {
	var out []float64
	for k, a := range from {
		if b, ok := to[k]; ok {
			out = append(out, b.Sub(a).Seconds())
		}
	}
	sort.Float64s(out)
	return out
}

// exactQuantile is the nearest-rank q-quantile of sorted xs.
func exactQuantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(q*float64(len(xs))+0.999999) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}
