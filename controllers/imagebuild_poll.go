package controllers

import (
	"context"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/gitremote"
)

// polled reports whether ib's source is polled now: a git source with a pollInterval and no
// credentials, a revision that can move, not suspended, and between builds of its generation
// (the first build, or one in progress, resolves the revision itself).
func polled(ib *kilnv1.ImageBuild) bool {
	g := ib.Spec.Source.Git
	lb := ib.Status.LastBuild
	return g != nil && g.PollInterval != nil && g.SecretRef == nil && !gitremote.IsCommit(g.Revision) && !ib.Spec.Suspend &&
		lb != nil && lb.CompletionTime != nil && lb.Generation == ib.Generation
}

// reconcilePoll looks, every spec.source.git.pollInterval, at which commit the revision points
// to; a commit other than the built one is recorded in status.polledRevision, which is part of
// the build key and so starts a build. The look itself runs in the poll pool, off this worker
// (imagebuild_pollpool.go): this step applies a finished poll's result, and starts the next poll
// when it is due, after status.lastPolledAt is stored.
func (r *ImageBuildReconciler) reconcilePoll(ctx context.Context, ib *kilnv1.ImageBuild, st *buildState) {
	if r.polls == nil {
		return
	}
	key := types.NamespacedName{Namespace: ib.Namespace, Name: ib.Name}
	res, hasResult, running, started := r.polls.state(key)
	if hasResult {
		r.applyPoll(ctx, ib, res)
	}
	if !polled(ib) || running {
		return // a running poll wakes the ImageBuild when it ends
	}
	interval := ib.Spec.Source.Git.PollInterval.Duration
	if last := lastPoll(ib, started); !last.IsZero() {
		if wait := interval - r.now().Sub(last); wait > 0 {
			st.requeueAfter(wait)
			return
		}
	}
	now := metav1.NewTime(r.now())
	ib.Status.LastPolledAt = &now
	st.requeueAfter(interval)
	// The poll starts once lastPolledAt is stored: a poll that brings the manager down is not
	// started again at once by the next manager.
	job := newPollJob(ib)
	afterPatch.add(ib, func() { r.polls.submit(job, now.Time) })
}

// applyPoll records what a finished poll found. A new commit stays in the pool until a
// reconcile reads it back from the cache: one that reads a stale ImageBuild (before the patch
// that recorded it) records it again, rather than take the build it started for outdated and
// cancel it. Events are announced once, after the first patch.
func (r *ImageBuildReconciler) applyPoll(ctx context.Context, ib *kilnv1.ImageBuild, res pollResult) {
	key := res.job.key
	g := ib.Spec.Source.Git
	if !polled(ib) || !res.job.matches(ib) || res.err != nil || res.commit == ib.Status.Revision || res.commit == ib.Status.PolledRevision {
		afterPatch.add(ib, func() { r.polls.done(key, res.seq) })
	}
	switch {
	case !polled(ib) || !res.job.matches(ib):
		return // the ImageBuild changed, or built, since the poll started
	case res.err != nil:
		// The poller's messages are kiln's own sentences: no byte the git server sent.
		log.FromContext(ctx).Info("Polling the git source failed", "url", redactURL(g.URL), "revision", g.Revision, "error", res.err.Error())
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonPollFailed, "Polling %s %s failed: %v", redactURL(g.URL), orHEAD(g.Revision), res.err)
		return
	case res.commit == ib.Status.Revision || res.commit == ib.Status.PolledRevision:
		return
	}
	ib.Status.PolledRevision = res.commit
	if !res.announced {
		afterPatch.add(ib, func() { r.polls.announced(key, res.seq) })
		r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonNewRevision, "%s %s moved to %s; building it", redactURL(g.URL), orHEAD(g.Revision), res.commit)
	}
}

// lastPoll is when ib's source was last polled: the stored status.lastPolledAt, or the start of
// a poll this manager ran since, which the cache may not show yet.
func lastPoll(ib *kilnv1.ImageBuild, started time.Time) time.Time {
	if last := ib.Status.LastPolledAt; last != nil && last.After(started) {
		return last.Time
	}
	return started
}

// schedulePoll makes sure an ImageBuild whose source polls is looked at again when its next poll
// is due, also right after the build that ends the wait for the first poll (kiln's own status
// patches wake no reconcile).
func (r *ImageBuildReconciler) schedulePoll(ib *kilnv1.ImageBuild, st *buildState) {
	if !polled(ib) {
		return
	}
	wait := time.Second
	if last := ib.Status.LastPolledAt; last != nil {
		wait = max(ib.Spec.Source.Git.PollInterval.Duration-r.now().Sub(last.Time), time.Second)
	}
	st.requeueAfter(wait)
}

func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}

func orHEAD(rev string) string {
	if rev == "" {
		return "HEAD"
	}
	return rev
}
