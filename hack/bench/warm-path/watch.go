package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// observer records when this process saw things happen, from watches started before the
// change that causes them: the API server's timestamps have one-second granularity.
type observer struct {
	mu       sync.Mutex
	podSeen  map[string]time.Time // pod name: first watch event
	podDone  map[string]time.Time // pod name: first event with phase Succeeded or Failed
	runnerAt map[string]time.Time // pod name: first event with the runner container terminated
	readyAt  map[string]time.Time // build key (rebuild request, generation): first Ready=True event
	latest   *kilnv1.ImageBuild
	changed  chan struct{} // closed and replaced on every ImageBuild event
}

func newObserver() *observer {
	return &observer{podSeen: map[string]time.Time{}, podDone: map[string]time.Time{}, runnerAt: map[string]time.Time{}, readyAt: map[string]time.Time{}, changed: make(chan struct{})}
}

// start watches the pods and the ImageBuild name of namespace ns, until ctx ends (a watch the
// API server closes is started again).
func (o *observer) start(ctx context.Context, c client.WithWatch, ns, name string) error {
	pods := func() (watch.Interface, error) { return c.Watch(ctx, &corev1.PodList{}, client.InNamespace(ns)) }
	ibs := func() (watch.Interface, error) {
		return c.Watch(ctx, &kilnv1.ImageBuildList{}, client.InNamespace(ns), client.MatchingFields{"metadata.name": name})
	}
	for _, f := range []func() (watch.Interface, error){pods, ibs} {
		w, err := f()
		if err != nil {
			return fmt.Errorf("watching namespace %s: %w", ns, err)
		}
		go o.follow(ctx, w, f)
	}
	return nil
}

func (o *observer) follow(ctx context.Context, w watch.Interface, again func() (watch.Interface, error)) {
	for {
		for ev := range w.ResultChan() {
			now := time.Now()
			switch obj := ev.Object.(type) {
			case *corev1.Pod:
				o.pod(obj, now)
			case *kilnv1.ImageBuild:
				o.imageBuild(obj, now)
			}
		}
		for ctx.Err() == nil {
			var err error
			if w, err = again(); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (o *observer) pod(p *corev1.Pod, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, seen := o.podSeen[p.Name]; !seen {
		o.podSeen[p.Name] = now
	}
	if _, seen := o.podDone[p.Name]; !seen && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
		o.podDone[p.Name] = now
	}
	for _, cs := range p.Status.ContainerStatuses {
		if _, seen := o.runnerAt[p.Name]; !seen && cs.Name == "runner" && cs.State.Terminated != nil {
			o.runnerAt[p.Name] = now
		}
	}
}

func (o *observer) imageBuild(ib *kilnv1.ImageBuild, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if isReady(ib) {
		k := keyString(ib.Status.LastBuild.BuildKey)
		if _, seen := o.readyAt[k]; !seen {
			o.readyAt[k] = now
		}
	}
	o.latest = ib
	close(o.changed)
	o.changed = make(chan struct{})
}

// isReady: the ImageBuild's outcome is final and Ready for its current spec and request.
func isReady(ib *kilnv1.ImageBuild) bool {
	lb := ib.Status.LastBuild
	return lb != nil && lb.CompletionTime != nil && lb.FailureReason == "" &&
		ib.Status.ObservedGeneration == ib.Generation &&
		lb.Generation == ib.Generation &&
		lb.RebuildRequestedAt == ib.Annotations[kilnv1.AnnotationRebuildRequestedAt] &&
		meta.IsStatusConditionTrue(ib.Status.Conditions, kilnv1.ConditionReady)
}

func keyString(k kilnv1.BuildKey) string {
	return fmt.Sprintf("%d/%s", k.Generation, k.RebuildRequestedAt)
}

// failed says why the ImageBuild's current build ended without an image, or "".
func failed(ib *kilnv1.ImageBuild) string {
	if c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ConditionStalled); c != nil && c.Status == metav1.ConditionTrue {
		return "Stalled: " + c.Reason + ": " + c.Message
	}
	lb := ib.Status.LastBuild
	if lb == nil || lb.FailureReason == "" || lb.CompletionTime == nil || lb.Generation != ib.Generation ||
		lb.RebuildRequestedAt != ib.Annotations[kilnv1.AnnotationRebuildRequestedAt] {
		return ""
	}
	if c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ConditionReady); c != nil && c.Status == metav1.ConditionFalse &&
		c.ObservedGeneration == ib.Generation && ib.Status.ObservedGeneration == ib.Generation {
		return fmt.Sprintf("%s: %s\n%s", lb.FailureReason, lb.Message, lb.LogTail)
	}
	return ""
}

// waitReady waits until the ImageBuild is Ready for build key k and returns it with the time
// this process saw it Ready.
func (o *observer) waitReady(ctx context.Context, k kilnv1.BuildKey) (*kilnv1.ImageBuild, time.Time, error) {
	for {
		o.mu.Lock()
		at, ok := o.readyAt[keyString(k)]
		ib, changed := o.latest, o.changed
		o.mu.Unlock()
		if ok && ib != nil {
			return ib, at, nil
		}
		if ib != nil {
			if why := failed(ib); why != "" {
				return ib, time.Time{}, fmt.Errorf("build %s failed: %s", keyString(k), why)
			}
		}
		select {
		case <-ctx.Done():
			return ib, time.Time{}, fmt.Errorf("waiting for build %s to be Ready: %w", keyString(k), ctx.Err())
		case <-changed:
		}
	}
}

// podTimes are when this process first saw the pod, its runner container terminated, and the
// pod finished.
func (o *observer) podTimes(name string) (seen, runner, done time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.podSeen[name], o.runnerAt[name], o.podDone[name]
}

// waitPodDone waits until this process has seen pod name finish. kiln records a build as soon as
// its runner ends, while buildkitd still stops and holds the claim: the next rebuild starts
// after that, so that it times a rebuild, not a wait for the claim.
func (o *observer) waitPodDone(ctx context.Context, name string) error {
	for {
		if _, _, done := o.podTimes(name); !done.IsZero() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for pod %s to finish: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// latestImageBuild is the ImageBuild as the last watch event showed it.
func (o *observer) latestImageBuild() *kilnv1.ImageBuild {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest
}
