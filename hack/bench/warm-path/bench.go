package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

type bench struct {
	o              options
	e              env
	cl             clients
	obs            *observer
	ns             string
	gitURL, commit string
}

// sample is one build, timed.
type sample struct {
	pod              string
	attempt          int32
	applied          time.Time // the create or patch was sent
	podSeen, podDone time.Time // watch events: the pod's first, the pod finished
	runnerDone       time.Time // watch event: the runner container terminated
	ready            time.Time // the Ready watch event
	buildkitd        buildkitdLog
	runner           runnerLog
	duration         string // status.lastBuild.duration
}

// first makes the cold build, in a new namespace; or, in a reused one, gives its ImageBuild this
// run's spec and waits for the build that starts (not measured: nil).
func (b *bench) first(ctx context.Context, created bool) (*sample, error) {
	want, err := b.imageBuild()
	if err != nil {
		return nil, err
	}
	if created {
		applied := time.Now()
		if err := b.cl.c.Create(ctx, want); err != nil {
			return nil, err
		}
		fmt.Printf("Cold build: ImageBuild %s/%s created, waiting ...\n", b.ns, ibName)
		s, err := b.finish(ctx, kilnv1.BuildKey{Generation: want.Generation}, applied)
		if err == nil {
			fmt.Printf("Cold build: %s\n", s.line())
		}
		return s, err
	}
	cur := &kilnv1.ImageBuild{}
	if err := b.cl.c.Get(ctx, types.NamespacedName{Namespace: b.ns, Name: ibName}, cur); apierrors.IsNotFound(err) {
		return nil, errNoImageBuild
	} else if err != nil {
		return nil, err
	}
	base := cur.DeepCopy()
	cur.Spec.Source, cur.Spec.Output, cur.Spec.Cache = want.Spec.Source, want.Spec.Output, want.Spec.Cache
	if err := b.cl.c.Patch(ctx, cur, client.MergeFrom(base)); err != nil {
		return nil, err
	}
	fmt.Printf("Reusing %s/%s (generation %d): waiting for its build with this run's spec (not measured) ...\n", b.ns, ibName, cur.Generation)
	if _, err := b.finish(ctx, kilnv1.BuildKey{Generation: cur.Generation, RebuildRequestedAt: cur.Annotations[kilnv1.AnnotationRebuildRequestedAt]}, time.Now()); err != nil {
		return nil, err
	}
	return nil, nil
}

// rebuild requests build i with no change and times it.
func (b *bench) rebuild(ctx context.Context, i int) (sample, error) {
	cur := &kilnv1.ImageBuild{}
	if err := b.cl.c.Get(ctx, types.NamespacedName{Namespace: b.ns, Name: ibName}, cur); err != nil {
		return sample{}, err
	}
	at := fmt.Sprintf("warm-path-%d-%d", time.Now().UnixNano(), i)
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, kilnv1.AnnotationRebuildRequestedAt, at)
	applied := time.Now()
	if err := b.cl.c.Patch(ctx, cur, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return sample{}, err
	}
	s, err := b.finish(ctx, kilnv1.BuildKey{Generation: cur.Generation, RebuildRequestedAt: at}, applied)
	if err != nil {
		return sample{}, err
	}
	fmt.Printf("Rebuild %d/%d: %s\n", i, b.o.n, s.line())
	return *s, nil
}

// finish waits for the build of key k, started at applied, and reads its pod's logs.
func (b *bench) finish(ctx context.Context, k kilnv1.BuildKey, applied time.Time) (*sample, error) {
	wctx, cancel := context.WithTimeout(ctx, b.o.timeout)
	defer cancel()
	ib, ready, err := b.obs.waitReady(wctx, k)
	if err != nil {
		return nil, err
	}
	lb := ib.Status.LastBuild
	if err := b.obs.waitPodDone(wctx, lb.PodName); err != nil {
		return nil, err
	}
	time.Sleep(b.o.settle)
	s := &sample{pod: lb.PodName, attempt: lb.Attempt, applied: applied, ready: ready, duration: lb.Duration}
	s.podSeen, s.runnerDone, s.podDone = b.obs.podTimes(lb.PodName)
	bk, err := containerLog(ctx, b.cl.cs, b.ns, lb.PodName, "buildkitd")
	if err != nil {
		return nil, err
	}
	rl, err := containerLog(ctx, b.cl.cs, b.ns, lb.PodName, "runner")
	if err != nil {
		return nil, err
	}
	s.buildkitd, s.runner = parseBuildkitdLog(bk), parseRunnerLog(rl)
	return s, nil
}

func (s *sample) line() string {
	return fmt.Sprintf("pod %s (attempt %d), %d of %d steps cached, apply→Ready %s, status.lastBuild.duration %s",
		s.pod, s.attempt, s.runner.cached, s.runner.total, secs(s.ready.Sub(s.applied)), s.duration)
}

// freshClaim is a build on a new, empty claim: with the registry cache, or without it.
type freshClaim struct {
	withCache bool
	s         *sample
	cache     *kilnv1.RegistryCacheStatus
}

// onNewClaim deletes the ImageBuild's claim, waits until it is gone, and times the build that
// follows on the new claim kiln makes: with the registry cache (a rebuild request), or without
// it (spec.cache.registry removed, which is a new generation).
func (b *bench) onNewClaim(ctx context.Context, withCache bool) (freshClaim, error) {
	claim := &corev1.PersistentVolumeClaim{}
	key := types.NamespacedName{Namespace: b.ns, Name: ibName + "-cache"}
	if err := b.cl.c.Get(ctx, key, claim); err != nil {
		return freshClaim{}, err
	}
	if err := b.cl.c.Delete(ctx, claim); err != nil {
		return freshClaim{}, err
	}
	for {
		// kiln makes a new claim of the same name as soon as the old one is gone.
		now := &corev1.PersistentVolumeClaim{}
		err := b.cl.c.Get(ctx, key, now)
		if apierrors.IsNotFound(err) || (err == nil && now.UID != claim.UID) {
			break
		}
		if err != nil {
			return freshClaim{}, err
		}
		select {
		case <-ctx.Done():
			return freshClaim{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	cur := &kilnv1.ImageBuild{}
	if err := b.cl.c.Get(ctx, types.NamespacedName{Namespace: b.ns, Name: ibName}, cur); err != nil {
		return freshClaim{}, err
	}
	at := fmt.Sprintf("warm-path-new-claim-%d", time.Now().UnixNano())
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, kilnv1.AnnotationRebuildRequestedAt, at)
	what := "with the registry cache"
	if !withCache {
		patch = fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}},"spec":{"cache":{"registry":null}}}`, kilnv1.AnnotationRebuildRequestedAt, at)
		what = "without a registry cache"
	}
	applied := time.Now()
	if err := b.cl.c.Patch(ctx, cur, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return freshClaim{}, err
	}
	s, err := b.finish(ctx, kilnv1.BuildKey{Generation: cur.Generation, RebuildRequestedAt: at}, applied)
	if err != nil {
		return freshClaim{}, err
	}
	fmt.Printf("New claim, %s: %s\n", what, s.line())
	var rc *kilnv1.RegistryCacheStatus
	if ib := b.obs.latestImageBuild(); ib != nil && ib.Status.Cache != nil {
		rc = ib.Status.Cache.Registry
	}
	return freshClaim{withCache: withCache, s: s, cache: rc}, nil
}
