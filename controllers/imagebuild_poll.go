package controllers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/gitremote"
)

// pollTimeout bounds one look at a git server.
const pollTimeout = 30 * time.Second

// reconcilePoll looks, every spec.source.git.pollInterval, at which commit the revision points
// to; a commit other than the built one is recorded in status.polledRevision, which is part of
// the build key and so starts a build. It polls only between builds, never during one.
func (r *ImageBuildReconciler) reconcilePoll(ctx context.Context, ib *kilnv1.ImageBuild, st *buildState) {
	g := ib.Spec.Source.Git
	if g == nil || g.PollInterval == nil || g.SecretRef != nil || gitremote.IsCommit(g.Revision) || ib.Spec.Suspend {
		return
	}
	lb := ib.Status.LastBuild
	if lb == nil || lb.CompletionTime == nil || lb.Generation != ib.Generation {
		return // the first build, or one in progress, resolves the revision itself
	}
	interval := g.PollInterval.Duration
	if last := ib.Status.LastPolledAt; last != nil {
		if wait := interval - r.now().Sub(last.Time); wait > 0 {
			st.requeueAfter(wait)
			return
		}
	}
	now := metav1.NewTime(r.now())
	ib.Status.LastPolledAt = &now
	st.requeueAfter(interval)

	pctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	refs, err := gitremote.List(pctx, g.URL)
	var head string
	if err == nil {
		head, err = refs.Resolve(g.Revision)
	}
	if err != nil {
		log.FromContext(ctx).Info("Polling the git source failed", "url", g.URL, "revision", g.Revision, "error", err.Error())
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonPollFailed, "Polling %s %s failed: %v", g.URL, orHEAD(g.Revision), err)
		return
	}
	if head == ib.Status.Revision || head == ib.Status.PolledRevision {
		return
	}
	ib.Status.PolledRevision = head
	r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonNewRevision, "%s %s moved to %s; building it", g.URL, orHEAD(g.Revision), head)
}

// schedulePoll makes sure an ImageBuild whose source polls is looked at again when its next poll
// is due, also right after the build that ends the wait for the first poll (kiln's own status
// patches wake no reconcile).
func (r *ImageBuildReconciler) schedulePoll(ib *kilnv1.ImageBuild, st *buildState) {
	g := ib.Spec.Source.Git
	lb := ib.Status.LastBuild
	if g == nil || g.PollInterval == nil || g.SecretRef != nil || gitremote.IsCommit(g.Revision) || ib.Spec.Suspend ||
		lb == nil || lb.CompletionTime == nil || lb.Generation != ib.Generation {
		return
	}
	wait := time.Second
	if last := ib.Status.LastPolledAt; last != nil {
		wait = max(g.PollInterval.Duration-r.now().Sub(last.Time), time.Second)
	}
	st.requeueAfter(wait)
}

func orHEAD(rev string) string {
	if rev == "" {
		return "HEAD"
	}
	return rev
}
