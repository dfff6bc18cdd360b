package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/units"
)

// maxLogTail bounds status.lastBuild.logTail.
const maxLogTail = 2048

// recordResult stores what a finished build pod reports into the status.
func (r *ImageBuildReconciler) recordResult(ib *kilnv1.ImageBuild, pod *corev1.Pod) {
	lb := ib.Status.LastBuild
	if pod.Status.StartTime != nil {
		lb.StartTime = pod.Status.StartTime.DeepCopy()
	}
	var runner *corev1.ContainerStateTerminated
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == containerRunner {
			runner = cs.State.Terminated
		}
	}
	end := metav1.NewTime(r.now())
	if runner != nil && !runner.FinishedAt.IsZero() {
		end = runner.FinishedAt
	}
	lb.CompletionTime = &end
	if lb.StartTime != nil {
		lb.Duration = end.Sub(lb.StartTime.Time).Round(time.Second).String()
	}

	res, class, msg, tail := interpretPod(ib, pod, runner)
	if tail == "" {
		tail = res.LogTail
	}
	lb.FailureReason, lb.Message, lb.LogTail = class, contract.Truncate(msg, 1024), contract.TruncateStart(tail, maxLogTail)
	r.applyResult(ib, res)
	if cm := ib.Spec.Source.ConfigMap; cm != nil && res.Revision != "" && lb.PolledRevision != "" && res.Revision != lb.PolledRevision {
		// The kubelet mounted other content than the ConfigMap held when the build started:
		// record what was built, so that this build does not answer the current content.
		r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonSourceChanged, "Build pod %s built ConfigMap %s content %s, not %s; building again",
			pod.Name, cm.Name, shortDigest(res.Revision), shortDigest(lb.PolledRevision))
		lb.PolledRevision = res.Revision
	}
	var took time.Duration
	if lb.StartTime != nil {
		took = end.Sub(lb.StartTime.Time)
	}
	observeBuild(ib, took, class)

	switch {
	case class == "":
		r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonBuildSucceeded, "%s", successMessage(ib))
		if res.Budget != nil && res.Budget.Verdict == kilnv1.VerdictOverBudget {
			r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBudgetExceeded, "Pushed although over budget (enforcement Warn): %s", budgetMessage(res.Budget))
		}
	case class == kilnv1.FailureOverBudget:
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBudgetExceeded, "Not pushed: %s", msg)
	default:
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBuildFailed, "Build pod %s failed (%s): %s", pod.Name, class, contract.Truncate(msg, 512))
	}
}

// interpretPod reads a finished pod: the runner's result when it wrote one, else what the pod's
// status says happened.
func interpretPod(ib *kilnv1.ImageBuild, pod *corev1.Pod, runner *corev1.ContainerStateTerminated) (res contract.Result, class, msg, tail string) {
	if pod.Status.Reason == "DeadlineExceeded" {
		timeout := fmt.Sprintf("spec.timeout (%s)", buildTimeout(ib, 0))
		if d := pod.Spec.ActiveDeadlineSeconds; d != nil && time.Duration(*d)*time.Second < buildTimeout(ib, 0) {
			timeout = fmt.Sprintf("%s, which the manager's --max-build-timeout lowers to %s", timeout, time.Duration(*d)*time.Second)
		}
		if runner == nil && !runnerStarted(pod) {
			// The runner waits for buildkitd's startup probe: this is BuildKit not coming up.
			return res, kilnv1.FailureBuildKitNotUp, fmt.Sprintf("buildkitd did not become ready, and the build did not start, within %s", timeout), ""
		}
		return res, kilnv1.FailureTimeout, fmt.Sprintf("the build ran longer than %s and was stopped", timeout), ""
	}
	if runner != nil && runner.Message != "" {
		if parsed, err := contract.Decode(runner.Message); err == nil {
			class, msg = parsed.FailureClass, parsed.Message
			if class == "" && (pod.Status.Phase == corev1.PodFailed || runner.ExitCode != 0) {
				class, msg = kilnv1.FailureInternal, fmt.Sprintf("runner exited with code %d after reporting success", runner.ExitCode)
			}
			return parsed, class, msg, ""
		}
		if runner.Reason == "StartError" {
			return res, kilnv1.FailurePodStartFailed, fmt.Sprintf("the runner container could not start: %s", runner.Message), ""
		}
		// TerminationMessageFallbackToLogsOnError: the runner died before writing its result,
		// and the message holds the end of its log, whose last line usually says why.
		msg := fmt.Sprintf("runner exited with code %d (%s) without a result", runner.ExitCode, runner.Reason)
		if last := lastLine(runner.Message); last != "" {
			msg += ": " + contract.Truncate(last, 300)
		}
		return res, kilnv1.FailureRunnerCrashed, msg, runner.Message
	}
	if runner != nil && runner.Reason == "StartError" {
		return res, kilnv1.FailurePodStartFailed, "the runner container could not start (StartError)", ""
	}
	if runner != nil {
		if pod.Status.Phase == corev1.PodSucceeded && runner.ExitCode == 0 {
			return res, kilnv1.FailureInternal, "runner exited without writing a result", ""
		}
		return res, kilnv1.FailureRunnerCrashed, fmt.Sprintf("runner exited with code %d (%s) without a result", runner.ExitCode, runner.Reason), ""
	}
	reason := pod.Status.Reason
	if reason == "" {
		reason = "Failed"
	}
	return res, kilnv1.FailurePodLost, strings.TrimSpace(fmt.Sprintf("build pod %s ended before the runner did: %s %s", pod.Name, reason, pod.Status.Message)), ""
}

// lastLine is the last line of s that is not blank.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func runnerStarted(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == containerRunner && (cs.State.Running != nil || cs.State.Terminated != nil) {
			return true
		}
	}
	return false
}

// applyResult copies the runner's measurements into the status. The image and digest change only
// when something was pushed: they always name what is in the registry.
func (r *ImageBuildReconciler) applyResult(ib *kilnv1.ImageBuild, res contract.Result) {
	if len(res.Platforms) > 0 {
		var largest int64
		for _, p := range res.Platforms {
			largest = max(largest, p.CompressedBytes)
		}
		ib.Status.Size = &kilnv1.ImageSize{Compressed: units.Bytes(largest), Platforms: res.Platforms, AttestationBytes: res.AttestationBytes}
	}
	switch {
	case res.Budget != nil:
		ib.Status.Budget = res.Budget
	case res.FailureClass != "" || len(res.Platforms) == 0:
		ib.Status.Budget = &kilnv1.BudgetStatus{Verdict: kilnv1.VerdictNotMeasured, Summary: "not measured"}
	}
	if ib.Status.Cache == nil {
		ib.Status.Cache = &kilnv1.CacheStatus{ClaimName: claimName(ib)}
	}
	ib.Status.Cache.CachedSteps, ib.Status.Cache.TotalSteps = res.CachedSteps, res.TotalSteps
	if res.Advice != nil {
		ib.Status.Advice = res.Advice
	}
	if res.Revision != "" {
		ib.Status.Revision = res.Revision
	}
	if res.Pushed && res.Digest != "" {
		ib.Status.Digest = res.Digest
		ib.Status.Image = res.Image
		ib.Status.Tags = res.Tags
	}
}

// recordLost finishes the current build as lost: its pod was deleted before it ended.
func (r *ImageBuildReconciler) recordLost(ib *kilnv1.ImageBuild) {
	lb := ib.Status.LastBuild
	now := metav1.NewTime(r.now())
	lb.CompletionTime = &now
	lb.FailureReason = kilnv1.FailurePodLost
	lb.Message = fmt.Sprintf("build pod %s disappeared before it finished (deleted, or its node was lost)", lb.PodName)
	r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBuildFailed, "%s", lb.Message)
}

func successMessage(ib *kilnv1.ImageBuild) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pushed %s", ib.Status.Image)
	if ib.Status.Size != nil {
		fmt.Fprintf(&b, " (%s", ib.Status.Size.Compressed)
		if ib.Status.Budget != nil && ib.Status.Budget.Summary != "" {
			fmt.Fprintf(&b, ", budget %s", ib.Status.Budget.Summary)
		}
		b.WriteString(")")
	}
	if c := ib.Status.Cache; c != nil && c.TotalSteps > 0 {
		fmt.Fprintf(&b, "; %d/%d steps cached", c.CachedSteps, c.TotalSteps)
	}
	if lb := ib.Status.LastBuild; lb != nil && lb.Duration != "" {
		fmt.Fprintf(&b, "; built in %s", lb.Duration)
	}
	return b.String()
}

// budgetMessage is the worst check's message, or the summary.
func budgetMessage(b *kilnv1.BudgetStatus) string {
	for _, c := range b.Checks {
		if c.Headroom < 0 && c.Message != "" {
			return c.Message
		}
	}
	return b.Summary
}

// setCondition sets a condition with the ImageBuild's generation.
func setCondition(ib *kilnv1.ImageBuild, typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&ib.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: contract.Truncate(message, 32768), ObservedGeneration: ib.Generation,
	})
}

// summarizeAndPatch turns what the steps found into the conditions, sets observedGeneration when
// the outcome is final, and patches the status once, if it changed.
func (r *ImageBuildReconciler) summarizeAndPatch(ctx context.Context, before, ib *kilnv1.ImageBuild, st *buildState, retErr error) (reconcile.Result, error) {
	switch {
	case st.stalled:
		setCondition(ib, kilnv1.ConditionStalled, metav1.ConditionTrue, st.reason, st.message)
		meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.ConditionReconciling)
		setCondition(ib, kilnv1.ConditionReady, metav1.ConditionFalse, st.reason, st.message)
		ib.Status.ObservedGeneration = ib.Generation
	case st.suspended:
		meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.ConditionReconciling)
		meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.ConditionStalled)
		if !meta.IsStatusConditionTrue(ib.Status.Conditions, kilnv1.ConditionReady) {
			setCondition(ib, kilnv1.ConditionReady, metav1.ConditionFalse, st.reason, st.message)
		}
	case st.phase == kilnv1.PhaseSucceeded:
		meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.ConditionReconciling)
		meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.ConditionStalled)
		setCondition(ib, kilnv1.ConditionReady, metav1.ConditionTrue, st.reason, st.message)
		ib.Status.ObservedGeneration = ib.Generation
	case st.reason != "":
		msg := st.message
		if st.claimWarning != "" {
			msg += "; " + st.claimWarning
		}
		meta.RemoveStatusCondition(&ib.Status.Conditions, kilnv1.ConditionStalled)
		setCondition(ib, kilnv1.ConditionReconciling, metav1.ConditionTrue, st.reason, msg)
		setCondition(ib, kilnv1.ConditionReady, metav1.ConditionFalse, st.reason, msg)
	case retErr != nil:
		setCondition(ib, kilnv1.ConditionReconciling, metav1.ConditionTrue, "ReconcileError", retErr.Error())
	}
	if st.phase != "" {
		ib.Status.Phase = st.phase
	}
	if ib.Status.Phase == "" {
		ib.Status.Phase = kilnv1.PhasePending
	}
	setSizeBudgetCondition(ib)

	announce := afterPatch.take(ib)
	if !equality.Semantic.DeepEqual(before.Status, ib.Status) {
		if err := r.Status().Patch(ctx, ib, client.MergeFrom(before)); err != nil {
			retErr = errors.Join(retErr, client.IgnoreNotFound(fmt.Errorf("patching status: %w", err)))
			announce = nil // the next reconcile finds the same and announces it
		}
	}
	for _, fn := range announce {
		fn()
	}
	if retErr != nil {
		log.FromContext(ctx).V(1).Info("Reconcile of ImageBuild failed; it will be retried", "error", retErr.Error())
		return reconcile.Result{}, retErr
	}
	return reconcile.Result{RequeueAfter: st.requeue}, nil
}

func setSizeBudgetCondition(ib *kilnv1.ImageBuild) {
	b := ib.Status.Budget
	switch {
	case b == nil || b.Verdict == kilnv1.VerdictNotMeasured:
		setCondition(ib, kilnv1.ConditionSizeBudget, metav1.ConditionUnknown, string(kilnv1.VerdictNotMeasured), "no image has been measured for this build")
	case b.Verdict == kilnv1.VerdictOverBudget:
		msg := budgetMessage(b)
		if b.Enforcement == kilnv1.EnforcementWarn {
			msg += " (pushed anyway: enforcement is Warn)"
		}
		setCondition(ib, kilnv1.ConditionSizeBudget, metav1.ConditionFalse, string(kilnv1.VerdictOverBudget), msg)
	default:
		setCondition(ib, kilnv1.ConditionSizeBudget, metav1.ConditionTrue, string(kilnv1.VerdictWithinBudget), b.Summary)
	}
}
