package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// keyOf is the build key an ImageBuild asks for now.
func keyOf(ib *kilnv1.ImageBuild) kilnv1.BuildKey {
	return kilnv1.BuildKey{
		Generation:         ib.Generation,
		RebuildRequestedAt: ib.Annotations[kilnv1.AnnotationRebuildRequestedAt],
		PolledRevision:     ib.Status.PolledRevision,
	}
}

// podKey is the build key a build pod answers (AnnotationBuildKey); the zero key when it has none.
func podKey(pod *corev1.Pod) kilnv1.BuildKey {
	var k kilnv1.BuildKey
	_ = json.Unmarshal([]byte(pod.Annotations[AnnotationBuildKey]), &k)
	return k
}

// encodeKey is the value of AnnotationBuildKey for key.
func encodeKey(key kilnv1.BuildKey) string {
	b, _ := json.Marshal(key) // a struct of strings and an integer: never fails
	return string(b)
}

// answers reports whether the build lb answered key: the one place where build keys are compared
// with the status.
func answers(lb *kilnv1.LastBuild, key kilnv1.BuildKey) bool {
	return lb != nil && lb.BuildKey == key
}

func podBuild(pod *corev1.Pod) int64 {
	n, _ := strconv.ParseInt(pod.Annotations[AnnotationBuild], 10, 64)
	return n
}

func podFinished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// resultWritten reports whether pod's runner has ended with a result in its termination
// message. That result is final the moment the kubelet reports it, so kiln records the build
// then rather than once buildkitd, the sidecar, has stopped too (about a second or two later).
// A runner that ended without a result (killed at the deadline, crashed) is read once the pod
// has finished, when the pod's own status says why.
func resultWritten(pod *corev1.Pod) bool {
	runner := runnerTerminated(pod)
	if runner == nil || runner.Message == "" {
		return false
	}
	_, err := contract.Decode(runner.Message)
	return err == nil
}

// reconcileBuild moves the current build forward, in five steps: cancel the builds of an
// outdated key, adopt the newest pod of the current key when the status lags behind it, follow
// that build, decide what comes next (decideNext), and start it.
func (r *ImageBuildReconciler) reconcileBuild(ctx context.Context, ib *kilnv1.ImageBuild, claim cacheClaim, st *buildState) error {
	pods, err := r.buildPods(ctx, ib)
	if err != nil {
		return err
	}
	if claim.Deleting {
		if err := r.letClaimGo(ctx, ib, pods, claim.Name); err != nil {
			return err
		}
	}
	key := keyOf(ib)
	if stale, err := r.cancelOutdated(ctx, ib, pods, key); err != nil || stale {
		st.requeueAfter(time.Second) // the cache catches up within moments
		return err
	}
	if ib.Spec.Suspend {
		reportSuspended(ib, pods, st)
		return nil
	}
	current, highest := currentPod(ib, pods, key, r.slots.createdPod)
	if stale, err := r.unrecordedPods(ctx, ib, pods, key); err != nil || stale {
		st.requeueAfter(time.Second) // the cache catches up within moments
		return err
	}
	if followed, err := r.followCurrent(ctx, ib, current, key, st); err != nil || followed {
		return err
	}
	next := decideNext(ib, key, r.now(), r.backoff)
	switch next.action {
	case actionWait:
		st.progress(kilnv1.PhaseFailed, kilnv1.ReasonRetrying, next.message)
		st.requeueAfter(next.wait)
	case actionReport:
		r.reportOutcome(ib, st)
	case actionStart:
		if highest > ib.Status.BuildCount {
			// A build pod the status does not count: the cache may show the ImageBuild from
			// before the patch that recorded it (that pod may have finished already, and
			// freed the claim). Starting a build on such a read would build twice.
			if stale, err := r.staleStatus(ctx, ib); err != nil || stale {
				st.requeueAfter(time.Second)
				return err
			}
		}
		return r.startBuild(ctx, ib, claim, highest+1, next.attempt, st)
	}
	return nil
}

// letClaimGo deletes ib's finished build pods that mount claim, which is being deleted: the
// claim's protection keeps it while any pod that was scheduled with it exists, finished or not,
// so kiln's kept history would hold a deleted claim, and every later build, forever. Their
// results are in status already; their logs go with them, as the Event says.
func (r *ImageBuildReconciler) letClaimGo(ctx context.Context, ib *kilnv1.ImageBuild, pods []*corev1.Pod, claim string) error {
	var deleted []string
	for _, p := range pods {
		if !podFinished(p) || p.DeletionTimestamp != nil || !mountsClaim(p, claim) {
			continue
		}
		if lb := ib.Status.LastBuild; lb != nil && lb.PodName == p.Name && lb.CompletionTime == nil {
			continue // its result is not recorded yet: the next reconcile records it first
		}
		if err := r.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting finished build pod %s, which holds cache claim %s being deleted: %w", p.Name, claim, err)
		}
		deleted = append(deleted, p.Name)
	}
	if len(deleted) > 0 {
		r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonClaimReleased, "Deleted finished build pods %s (and their logs): cache claim %s is being deleted, and it goes only once no pod that used it exists",
			strings.Join(deleted, ", "), claim)
	}
	return nil
}

// mountsClaim reports whether pod has a volume of PersistentVolumeClaim claim.
func mountsClaim(pod *corev1.Pod, claim string) bool {
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
			return true
		}
	}
	return false
}

// reportSuspended says that no build runs, and which of ib's pods are still stopping. A build in
// progress (or waiting to start) becomes Suspended at once; an ended build keeps its phase.
func reportSuspended(ib *kilnv1.ImageBuild, pods []*corev1.Pod, st *buildState) {
	st.suspended = true
	phase := ib.Status.Phase
	switch phase {
	case "", kilnv1.PhasePending, kilnv1.PhaseQueued, kilnv1.PhaseWaitingForCache, kilnv1.PhaseBuilding:
		phase = kilnv1.PhaseSuspended
	}
	msg := "spec.suspend is true: no build runs"
	for _, pod := range pods {
		if !podFinished(pod) && pod.DeletionTimestamp != nil {
			msg += fmt.Sprintf("; build pod %s is stopping", pod.Name)
		}
	}
	st.progress(phase, kilnv1.ReasonSuspended, msg)
}

// cancelOutdated deletes the unfinished build pods that do not answer key (or every unfinished
// one while the ImageBuild is suspended).
func (r *ImageBuildReconciler) cancelOutdated(ctx context.Context, ib *kilnv1.ImageBuild, pods []*corev1.Pod, key kilnv1.BuildKey) (stale bool, err error) {
	checked := false
	for _, pod := range pods {
		if podFinished(pod) || pod.DeletionTimestamp != nil || (podKey(pod) == key && !ib.Spec.Suspend) {
			continue
		}
		if !checked {
			// Cancelling cannot be undone: decide on the ImageBuild as the API server holds it,
			// not on a cached copy that may lack the status that made this pod current.
			if stale, err := r.staleStatus(ctx, ib); err != nil || stale {
				return stale, err
			}
			checked = true
		}
		if err := r.Delete(ctx, pod, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("cancelling build pod %s: %w", pod.Name, err)
		}
		why := "the ImageBuild changed"
		switch old := podKey(pod); {
		case old.Generation != key.Generation:
			why = fmt.Sprintf("the spec changed (generation %d, was %d)", key.Generation, old.Generation)
		case old.RebuildRequestedAt != key.RebuildRequestedAt:
			why = fmt.Sprintf("a newer rebuild was requested (kiln.dev/rebuild-requested-at %q)", key.RebuildRequestedAt)
		case old.PolledRevision != key.PolledRevision:
			why = fmt.Sprintf("the source has a newer revision (%s)", shortDigest(key.PolledRevision))
		}
		if ib.Spec.Suspend {
			why = "the ImageBuild is suspended"
			if lb := ib.Status.LastBuild; lb != nil && lb.PodName == pod.Name && lb.CompletionTime == nil {
				now := metav1.NewTime(r.now())
				lb.CompletionTime, lb.FailureReason, lb.Message = &now, kilnv1.FailureCancelled, "stopped because spec.suspend is true"
			}
		}
		r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonBuildCancelled, "Cancelled build pod %s: %s", pod.Name, why)
	}
	return false, nil
}

// currentPod is the build pod the status records for key, when it is there (the pod kiln
// created: same name and UID); and the highest build number seen in the pods and the status.
//
// highest is the highest build number taken: the status's count, a pod this manager created
// (made, by UID: the status may not count it yet), or, for a pod kiln has no record of, at most
// one more than the count (a manager that stopped between creating a pod and recording it). A
// pod's build annotation is anyone's to write who may create pods: trusted without a bound, it
// could push the next number past the largest int64.
func currentPod(ib *kilnv1.ImageBuild, pods []*corev1.Pod, key kilnv1.BuildKey, made func(types.UID) bool) (*corev1.Pod, int64) {
	highest := ib.Status.BuildCount
	lb := ib.Status.LastBuild
	var current *corev1.Pod
	for _, pod := range pods {
		if n := podBuild(pod); made(pod.UID) || n == ib.Status.BuildCount+1 {
			highest = max(highest, n)
		}
		if answers(lb, key) && recorded(lb, pod) {
			current = pod
		}
	}
	return current, highest
}

// recorded reports whether pod is the build pod lb records: its name and, once kiln records
// UIDs, its UID. A pod someone else made with the name (or with the ImageBuild as its owner)
// is not.
func recorded(lb *kilnv1.LastBuild, pod *corev1.Pod) bool {
	return lb != nil && pod.Name == lb.PodName && (lb.PodUID == "" || lb.PodUID == pod.UID)
}

// unrecordedPods looks at the unfinished pods of key that the status does not record. The status
// may lag behind a pod kiln just created (a stale read): it reports stale then, so that no second
// build starts. Otherwise such a pod is not kiln's build (made by someone who may create pods, or
// left by a manager that stopped before it recorded it): kiln neither follows it nor reads its
// result, and says so in an Event (the recorder folds repeats into one).
func (r *ImageBuildReconciler) unrecordedPods(ctx context.Context, ib *kilnv1.ImageBuild, pods []*corev1.Pod, key kilnv1.BuildKey) (stale bool, err error) {
	checked := false
	for _, pod := range pods {
		if podFinished(pod) || pod.DeletionTimestamp != nil || podKey(pod) != key || podBuild(pod) < ib.Status.BuildCount ||
			recorded(ib.Status.LastBuild, pod) {
			continue
		}
		if !checked {
			if stale, err := r.staleStatus(ctx, ib); err != nil || stale {
				return stale, err
			}
			checked = true
		}
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonUnrecordedPod,
			"Build pod %s is not one kiln recorded creating (UID %s): kiln ignores it and its result", pod.Name, pod.UID)
	}
	return false, nil
}

// followCurrent follows the build of the current key: a running pod is observed, a finished one
// recorded and its Lease released, a pod gone before it finished is recorded as lost. It says
// whether the build is still under way (nothing comes next yet).
func (r *ImageBuildReconciler) followCurrent(ctx context.Context, ib *kilnv1.ImageBuild, current *corev1.Pod, key kilnv1.BuildKey, st *buildState) (bool, error) {
	lb := ib.Status.LastBuild
	if !answers(lb, key) {
		return false, nil
	}
	switch {
	case current != nil && lb.PodName == current.Name && lb.CompletionTime == nil:
		return r.followUnrecorded(ctx, ib, current, st)
	case current != nil && lb.PodName == current.Name:
		if podFinished(current) {
			return false, r.releaseCacheLease(ctx, ib.Namespace, buildClaim(ib, current), current.Name)
		}
		if current.DeletionTimestamp == nil && (lb.FailureReason == kilnv1.FailurePodStartFailed || lb.FailureReason == kilnv1.FailureImagePullFailed) {
			// kiln ended this build (a container could not start) and the pod is still there.
			// Its Lease stays until it is gone: buildkitd may still hold the claim.
			if err := r.Delete(ctx, current); client.IgnoreNotFound(err) != nil {
				return false, fmt.Errorf("deleting build pod %s: %w", current.Name, err)
			}
		}
	case lb.CompletionTime == nil:
		// The pod of the build in progress is gone from the cache: make sure before calling it lost.
		pod := &corev1.Pod{}
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ib.Namespace, Name: lb.PodName}, pod)
		if err == nil && recorded(lb, pod) && !kilnLabelled(ib, pod) {
			// Someone took kiln's labels off the pod: the cache, which holds labelled pods only,
			// no longer shows it, and no watch event will. Follow it by reading it, every few
			// seconds; its UID is the one kiln recorded, so its result is still the build's.
			st.requeueAfter(unlabelledPodPoll)
			return r.followCurrent(ctx, ib, pod, key, st)
		}
		if err == nil && recorded(lb, pod) {
			st.progress(kilnv1.PhasePending, kilnv1.ReasonPending, fmt.Sprintf("waiting for build pod %s", lb.PodName))
			st.requeueAfter(time.Second)
			return true, nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("reading build pod %s: %w", lb.PodName, err)
		}
		if stale, err := r.staleStatus(ctx, ib); err != nil || stale {
			// kiln itself may have ended this build and deleted its pod: the cache does not
			// show that status yet. Look again once it does.
			st.requeueAfter(time.Second)
			return true, err
		}
		r.recordLost(ib, fmt.Sprintf("build pod %s disappeared before it finished (deleted, or its node was lost)", lb.PodName))
	case current == nil:
		// The build ended and its pod is gone: kiln deleted it (unschedulable, a container that
		// could not start) or it was pruned. Nothing runs on the claim for it any more.
		return false, r.releaseGoneHolder(ctx, ib, lb.PodName)
	}
	return false, nil
}

// followUnrecorded follows the pod of the build in progress: it observes it while it runs, and
// records its result once the runner has written one or the pod has finished. It says whether
// the build is still under way.
func (r *ImageBuildReconciler) followUnrecorded(ctx context.Context, ib *kilnv1.ImageBuild, current *corev1.Pod, st *buildState) (bool, error) {
	if !podFinished(current) && current.DeletionTimestamp != nil && runnerTerminated(current) == nil {
		return r.followDeleted(ctx, ib, current, st)
	}
	if !podFinished(current) && !resultWritten(current) {
		return true, r.observeRunning(ctx, ib, current, st)
	}
	if stale, err := r.staleStatus(ctx, ib); err != nil || stale {
		// A cached copy from before the patch that recorded this result would record it,
		// and announce it, a second time.
		st.requeueAfter(time.Second)
		return true, err
	}
	r.recordResult(ib, current)
	if !podFinished(current) {
		// The runner's result is final, but buildkitd is still stopping and holds the claim:
		// its Lease goes once the pod has finished (followCurrent's next case).
		return false, nil
	}
	return false, r.releaseCacheLease(ctx, ib.Namespace, buildClaim(ib, current), current.Name)
}

// unlabelledPodPoll is how often kiln reads a build pod whose labels someone removed.
const unlabelledPodPoll = 5 * time.Second

// kilnLabelled reports whether pod carries the labels by which kiln's cache and watches find
// ib's build pods.
func kilnLabelled(ib *kilnv1.ImageBuild, pod *corev1.Pod) bool {
	return pod.Labels[LabelManagedBy] == "kiln" && pod.Labels[LabelImageBuild] == ib.Name
}

// buildClaim is the cache claim whose Lease ib's build pod holds: the one the status recorded
// when the build started, or, for a build recorded before that, the pod's annotation (which
// anyone who may edit pods can change).
func buildClaim(ib *kilnv1.ImageBuild, pod *corev1.Pod) string {
	if c := ib.Status.Cache; c != nil && c.ClaimName != "" {
		return c.ClaimName
	}
	return pod.Annotations[AnnotationCacheClaim]
}

// releaseGoneHolder gives back the cache Lease that the ended build's pod podName still holds,
// once that pod is gone. The Lease is read from the cache first: most ended builds hold none.
func (r *ImageBuildReconciler) releaseGoneHolder(ctx context.Context, ib *kilnv1.ImageBuild, podName string) error {
	claim := claimName(ib)
	if c := ib.Status.Cache; c != nil && c.ClaimName != "" {
		claim = c.ClaimName
	}
	lease := &coordinationv1.Lease{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: ib.Namespace, Name: leaseName(claim)}, lease); err != nil {
		return client.IgnoreNotFound(err)
	}
	if ptr.Deref(lease.Spec.HolderIdentity, "") != podName {
		return nil
	}
	switch err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ib.Namespace, Name: podName}, &corev1.Pod{}); {
	case err == nil:
		return nil // still there (the cache lags): its end wakes this ImageBuild again
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("reading build pod %s that holds the cache lease: %w", podName, err)
	}
	return r.releaseCacheLease(ctx, ib.Namespace, claim, podName)
}

// followDeleted ends the build whose pod someone else deleted (kubectl delete, a drain, a
// preemption) at once, as lost, instead of reporting it as running until the pod is gone: the
// runner stops on SIGTERM, so the build cannot finish. The pod keeps the claim's Lease until it
// is gone; the retry waits for that (waitForClaim).
func (r *ImageBuildReconciler) followDeleted(ctx context.Context, ib *kilnv1.ImageBuild, pod *corev1.Pod, st *buildState) (bool, error) {
	if stale, err := r.staleStatus(ctx, ib); err != nil || stale {
		// kiln itself may have ended this build and deleted its pod; look again with that status.
		st.requeueAfter(time.Second)
		return true, err
	}
	r.recordLost(ib, fmt.Sprintf("build pod %s was deleted at %s before it finished (kubectl delete, eviction, preemption or a node drain)",
		pod.Name, deletedAt(pod).UTC().Format(time.RFC3339)))
	return false, nil
}

// deletedAt is when pod was deleted: its deletionTimestamp is that time plus the grace period,
// the time by which it will be killed.
func deletedAt(pod *corev1.Pod) time.Time {
	return pod.DeletionTimestamp.Add(-time.Duration(ptr.Deref(pod.DeletionGracePeriodSeconds, 0)) * time.Second)
}

// staleStatus reports whether the API server holds a newer ImageBuild than ib (read from the
// cache): decisions that cannot be undone, such as calling a build lost, wait for the fresh one.
func (r *ImageBuildReconciler) staleStatus(ctx context.Context, ib *kilnv1.ImageBuild) (bool, error) {
	fresh := &metav1.PartialObjectMetadata{}
	fresh.SetGroupVersionKind(kilnv1.GroupVersion.WithKind("ImageBuild"))
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(ib), fresh); err != nil {
		return false, client.IgnoreNotFound(fmt.Errorf("reading ImageBuild %s: %w", ib.Name, err))
	}
	return fresh.ResourceVersion != ib.ResourceVersion, nil
}

// nextAction is what decideNext says comes after the current build.
type nextAction int

const (
	// actionStart starts a build (attempt n of the current key).
	actionStart nextAction = iota
	// actionWait waits before a retry.
	actionWait
	// actionReport reports the final outcome of the current key's build.
	actionReport
)

// next is decideNext's answer.
type next struct {
	action  nextAction
	attempt int32
	wait    time.Duration
	message string
}

// decideNext says what follows the last build, from the ImageBuild, the current key and the
// time alone: a first build for a new key, the same attempt again after a suspend, a retry of a
// transient failure after its backoff, or the final outcome. backoff is the wait after a failed
// attempt.
func decideNext(ib *kilnv1.ImageBuild, key kilnv1.BuildKey, now time.Time, backoff func(attempt int32) time.Duration) next {
	lb := ib.Status.LastBuild
	switch {
	case !answers(lb, key):
		return next{action: actionStart, attempt: 1}
	case lb.CompletionTime == nil:
		return next{action: actionStart, attempt: lb.Attempt} // its pod was never made: make it
	case lb.FailureReason == kilnv1.FailureCancelled:
		return next{action: actionStart, attempt: lb.Attempt} // resumed after spec.suspend
	case lb.FailureReason == "" || !kilnv1.Transient(lb.FailureReason) || lb.Attempt >= maxAttempts(ib):
		return next{action: actionReport}
	}
	if wait := backoff(lb.Attempt) - now.Sub(lb.CompletionTime.Time); wait > 0 {
		return next{action: actionWait, wait: wait, message: fmt.Sprintf("attempt %d of %d failed (%s: %s); retrying in %s",
			lb.Attempt, maxAttempts(ib), lb.FailureReason, lb.Message, wait.Round(time.Second))}
	}
	return next{action: actionStart, attempt: lb.Attempt + 1}
}

// maxAttempts is 1 + spec.retries.
func maxAttempts(ib *kilnv1.ImageBuild) int32 {
	if ib.Spec.Retries == nil {
		return 1
	}
	return *ib.Spec.Retries + 1
}

// backoff is the wait after the given failed attempt.
func (r *ImageBuildReconciler) backoff(attempt int32) time.Duration {
	base := r.RetryBackoff
	if base <= 0 {
		base = 10 * time.Second
	}
	d := base << min(attempt-1, 10)
	return min(d, 5*time.Minute)
}

// resetRequested reports whether the reset-cache annotation asks for a reset not yet done.
func resetRequested(ib *kilnv1.ImageBuild) bool {
	at := ib.Annotations[kilnv1.AnnotationResetCacheRequestedAt]
	return at != "" && at != ib.Status.LastHandledResetCacheAt
}

// reportOutcome reports the final outcome of the current key's build, and a cache reset that
// waits for the next build.
func (r *ImageBuildReconciler) reportOutcome(ib *kilnv1.ImageBuild, st *buildState) {
	defer func() {
		if at := ib.Annotations[kilnv1.AnnotationResetCacheRequestedAt]; resetRequested(ib) {
			st.message += fmt.Sprintf("; cache reset requested (%s=%q): it runs with the next build (set %s to start one now)",
				kilnv1.AnnotationResetCacheRequestedAt, at, kilnv1.AnnotationRebuildRequestedAt)
		}
	}()
	lb := ib.Status.LastBuild
	switch lb.FailureReason {
	case "":
		st.progress(kilnv1.PhaseSucceeded, kilnv1.ReasonBuildSucceeded, successMessage(ib))
	case kilnv1.FailureOverBudget:
		st.progress(kilnv1.PhaseBudgetExceeded, kilnv1.ReasonBudgetExceeded, lb.Message)
		st.stall(kilnv1.ReasonBudgetExceeded, lb.Message)
	default:
		// The conditions' reason is the class: the message does not repeat it.
		msg := lb.Message
		if kilnv1.Transient(lb.FailureReason) {
			msg = fmt.Sprintf("gave up after %d attempts; the last failed: %s", lb.Attempt, msg)
		}
		st.progress(kilnv1.PhaseFailed, kilnv1.ReasonBuildFailed, msg)
		st.stall(string(lb.FailureReason), msg)
	}
}
