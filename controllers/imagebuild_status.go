package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/budget"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/units"
)

// recordResult stores what a finished build pod reports into the status, and announces it.
func (r *ImageBuildReconciler) recordResult(ib *kilnv1.ImageBuild, pod *corev1.Pod) {
	lb := ib.Status.LastBuild
	if pod.Status.StartTime != nil {
		lb.StartTime = pod.Status.StartTime.DeepCopy()
	}
	runner := runnerTerminated(pod)
	end := metav1.NewTime(r.now())
	if runner != nil && !runner.FinishedAt.IsZero() {
		end = runner.FinishedAt
	}
	lb.CompletionTime = &end
	var took time.Duration
	if lb.StartTime != nil {
		took = end.Sub(lb.StartTime.Time)
		lb.Duration = took.Round(time.Second).String()
	}

	res := interpretPod(ib, pod, runner).apply(ib)
	if cm := ib.Spec.Source.ConfigMap; cm != nil && res.Revision != "" && lb.PolledRevision != "" && res.Revision != lb.PolledRevision {
		// The kubelet mounted other content than the ConfigMap held when the build started:
		// record what was built, so that this build does not answer the current content.
		r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonSourceChanged, "Build pod %s built ConfigMap %s content %s, not %s; building again",
			pod.Name, cm.Name, shortDigest(res.Revision), shortDigest(lb.PolledRevision))
		lb.PolledRevision = res.Revision
	}
	observeBuild(ib, took, lb.FailureReason)

	if c := ib.Status.Cache; c != nil && c.Registry != nil && c.Registry.Message != "" {
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonRegistryCacheFailed, "Build pod %s: %s; the build went on without it", pod.Name, contract.Truncate(c.Registry.Message, contract.MaxEventMessage))
	}
	switch lb.FailureReason {
	case "":
		r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonBuildSucceeded, "%s", successMessage(ib))
		if b := ib.Status.Budget; b != nil && b.Verdict == kilnv1.VerdictOverBudget {
			r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBudgetExceeded, "Pushed although over budget (enforcement Warn): %s", budget.Message(*b))
		}
	case kilnv1.FailureOverBudget:
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBudgetExceeded, "Not pushed: %s", lb.Message)
	default:
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBuildFailed, "Build pod %s failed (%s): %s", pod.Name, lb.FailureReason, contract.Truncate(lb.Message, contract.MaxEventMessage))
	}
}

// runnerTerminated is the runner container's terminated state; nil while it has none.
func runnerTerminated(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == containerRunner {
			return cs.State.Terminated
		}
	}
	return nil
}

// outcome is what a finished build pod says: the runner's result, when it wrote one, and the
// failure class (empty on success), its message and the end of the log when the result has none.
type outcome struct {
	res   contract.Result
	class kilnv1.FailureClass
	msg   string
	tail  string
}

// apply is the one mapping from what a build reports to the ImageBuild's status: the result's
// measurements (applyResult), then the failure class, message and log tail of
// status.lastBuild, cut to the limits of contract/limits.go. It returns the result.
func (o outcome) apply(ib *kilnv1.ImageBuild) contract.Result {
	applyResult(ib, o.res)
	msg, tail := o.msg, o.tail
	if tail == "" {
		tail = o.res.LogTail
	}
	if b := ib.Status.Budget; o.class == kilnv1.FailureOverBudget && o.res.Budget != nil && b != nil && b.Verdict == kilnv1.VerdictOverBudget {
		msg = budget.Message(*b) + "; not pushed (budget enforcement is Enforce)"
	}
	lb := ib.Status.LastBuild
	lb.FailureReason, lb.Message, lb.LogTail = o.class, contract.Truncate(msg, contract.MaxMessage), contract.TruncateStart(tail, contract.MaxStatusLogTail)
	return o.res
}

// interpretPod reads a finished pod: the runner's result when it wrote one, else what the pod's
// status says happened.
func interpretPod(ib *kilnv1.ImageBuild, pod *corev1.Pod, runner *corev1.ContainerStateTerminated) outcome {
	if pod.Status.Reason == "DeadlineExceeded" {
		timeout := fmt.Sprintf("spec.timeout (%s)", buildTimeout(ib, 0))
		if d := pod.Spec.ActiveDeadlineSeconds; d != nil && time.Duration(*d)*time.Second < buildTimeout(ib, 0) {
			timeout = fmt.Sprintf("%s, which the manager's --max-build-timeout lowers to %s", timeout, time.Duration(*d)*time.Second)
		}
		if runner == nil && !runnerStarted(pod) {
			// The kubelet starts the runner once buildkitd runs: this is buildkitd not starting.
			return outcome{class: kilnv1.FailureBuildKitNotUp, msg: fmt.Sprintf("buildkitd did not become ready, and the build did not start, within %s", timeout)}
		}
		return outcome{class: kilnv1.FailureTimeout, msg: fmt.Sprintf("the build ran longer than %s and was stopped", timeout)}
	}
	if o, ok := oomKilled(ib, pod); ok {
		return o
	}
	if runner != nil && runner.Message != "" {
		res, err := contract.Decode(runner.Message)
		if errors.As(err, new(*contract.VersionError)) {
			return outcome{class: kilnv1.FailureInternal, msg: err.Error()}
		}
		if err == nil {
			if ib.Spec.Output.Signing != nil && res.FailureClass == "" && res.Pushed && res.Signature == nil {
				// A runner of contract 1.2 ignores spec.output.signing (version.go).
				res.FailureClass = kilnv1.FailureInternal
				res.Message = "the runner pushed the image without signing it: its image predates spec.output.signing (contract 1.3); run build pods with kiln's own runner image (the manager's --runner-image)"
			}
			return resultOutcome(pod, runner, res)
		}
		if runner.Reason == "StartError" {
			return outcome{class: kilnv1.FailurePodStartFailed, msg: fmt.Sprintf("the runner container could not start: %s", runner.Message)}
		}
		// Not a result: the end of the log that a pod of an older kiln let the kubelet copy
		// (TerminationMessageFallbackToLogsOnError). It may hold what the runner did not redact
		// (a crash's trace), so it is not kept: the message says where the log is.
		return outcome{class: kilnv1.FailureRunnerCrashed, msg: crashMessage(pod, runner)}
	}
	if runner != nil && runner.Reason == "StartError" {
		return outcome{class: kilnv1.FailurePodStartFailed, msg: "the runner container could not start (StartError)"}
	}
	if runner != nil {
		if pod.Status.Phase == corev1.PodSucceeded && runner.ExitCode == 0 {
			return outcome{class: kilnv1.FailureInternal, msg: "runner exited without writing a result"}
		}
		return outcome{class: kilnv1.FailureRunnerCrashed, msg: crashMessage(pod, runner)}
	}
	reason := pod.Status.Reason
	if reason == "" {
		reason = "Failed"
	}
	return outcome{class: kilnv1.FailurePodLost, msg: strings.TrimSpace(fmt.Sprintf("build pod %s ended before the runner did: %s %s", pod.Name, reason, pod.Status.Message))}
}

// resultOutcome is the outcome of a result the runner wrote: its class and message, unless the
// pod contradicts a success or the class is one this manager does not know (a newer runner's).
func resultOutcome(pod *corev1.Pod, runner *corev1.ContainerStateTerminated, res contract.Result) outcome {
	o := outcome{res: res, class: res.FailureClass, msg: res.Message}
	switch {
	case o.class == "" && (pod.Status.Phase == corev1.PodFailed || runner.ExitCode != 0):
		o.class, o.msg = kilnv1.FailureInternal, fmt.Sprintf("runner exited with code %d after reporting success", runner.ExitCode)
	case o.class != "" && !slices.Contains(kilnv1.FailureClasses, o.class):
		o.class, o.msg = kilnv1.FailureInternal, fmt.Sprintf("the runner reported failure class %q, which this manager does not know: %s", res.FailureClass, res.Message)
	}
	return o
}

// oomKilled is the outcome of a build whose buildkitd (or runner) the kernel killed for memory:
// whatever the runner then reported (BuildKit gone, a crash), the build needs more memory, and
// trying again with the same limit fails the same way.
func oomKilled(ib *kilnv1.ImageBuild, pod *corev1.Pod) (outcome, bool) {
	for _, cs := range containerStatuses(pod) {
		for _, t := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
			if t == nil || t.Reason != "OOMKilled" {
				continue
			}
			limit := "no memory limit (the node ran out)"
			if q, ok := containerLimit(pod, cs.Name, corev1.ResourceMemory); ok {
				limit = "memory limit " + q.String()
				if cs.Name == containerBuildKit {
					if _, own := specResources(ib).Limits[corev1.ResourceMemory]; own {
						limit += " from spec.resources.limits.memory"
					} else {
						limit += " (the manager's default, --buildkit-resources)"
					}
				}
			}
			return outcome{class: kilnv1.FailureBuildFailed, msg: fmt.Sprintf("container %s of build pod %s ran out of memory (OOMKilled, %s): raise spec.resources.limits.memory, or make the build use less", cs.Name, pod.Name, limit)}, true
		}
	}
	return outcome{}, false
}

// containerLimit is the limit of resource name on container of pod, as the pod was made.
func containerLimit(pod *corev1.Pod, container string, name corev1.ResourceName) (resource.Quantity, bool) {
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == container {
			q, ok := c.Resources.Limits[name]
			return q, ok
		}
	}
	return resource.Quantity{}, false
}

// crashMessage says that the runner ended without a result, and where its log is.
func crashMessage(pod *corev1.Pod, runner *corev1.ContainerStateTerminated) string {
	return fmt.Sprintf("runner exited with code %d (%s) without a result; its log: kubectl logs -n %s %s -c %s",
		runner.ExitCode, runner.Reason, pod.Namespace, pod.Name, containerRunner)
}

func runnerStarted(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == containerRunner && (cs.State.Running != nil || cs.State.Terminated != nil) {
			return true
		}
	}
	return false
}

// applyResult turns the runner's result into the status: sizes, the budget verdict and its
// messages (budget.Status), cache hits, advice, revision. A measured image replaces the size,
// budget and advice of the last one; the image and digest change only when something was
// pushed, so that they always name what is in the registry.
func applyResult(ib *kilnv1.ImageBuild, res contract.Result) {
	if big, measured := contract.Largest(res.Platforms); measured {
		ib.Status.Size = &kilnv1.ImageSize{Image: res.Image, Pushed: res.Pushed, Compressed: units.Bytes(big.CompressedBytes), Platforms: platformSizes(res.Platforms), AttestationBytes: res.AttestationBytes}
		verdict := budget.Status(res.Budget, res.Platforms)
		ib.Status.Budget = &verdict
		ib.Status.Advice = nil
		for _, a := range res.Advice {
			ib.Status.Advice = append(ib.Status.Advice, kilnv1.Advice{Rule: a.Rule, Message: a.Message, Line: a.Line, SavingBytes: a.SavingBytes})
		}
	} else {
		ib.Status.Budget = &kilnv1.BudgetStatus{Verdict: kilnv1.VerdictNotMeasured, Summary: "not measured"}
	}
	if ib.Status.Cache == nil {
		ib.Status.Cache = &kilnv1.CacheStatus{ClaimName: claimName(ib)}
	}
	ib.Status.Cache.CachedSteps, ib.Status.Cache.TotalSteps = res.CachedSteps, res.TotalSteps
	ib.Status.Cache.Registry = nil
	if c := res.Cache; c != nil {
		ib.Status.Cache.Registry = &kilnv1.RegistryCacheStatus{Image: c.Image, Imported: c.Imported, Exported: c.Exported, Message: contract.Truncate(c.Message, contract.MaxMessage)}
	}
	if res.Revision != "" {
		ib.Status.Revision = res.Revision
	}
	if res.Pushed && res.Digest != "" {
		ib.Status.Digest = res.Digest
		ib.Status.Image = res.Image
		ib.Status.Tags = res.Tags
		ib.Status.Attestations, ib.Status.Signature = nil, nil
		if s := res.Signature; s != nil {
			ib.Status.Signature = &kilnv1.SignatureStatus{Signature: s.Signature, Attestations: s.Attestations, KeyID: s.KeyID}
		}
		for _, a := range res.Attestations {
			ib.Status.Attestations = append(ib.Status.Attestations, kilnv1.AttestationStatus{Platform: a.Platform, Manifest: a.Manifest, Provenance: a.Provenance, SBOM: a.SBOM})
		}
	}
}

// platformSizes are the result's platform images as the status holds them.
func platformSizes(platforms []contract.Platform) []kilnv1.PlatformSize {
	out := make([]kilnv1.PlatformSize, 0, len(platforms))
	for _, p := range platforms {
		ps := kilnv1.PlatformSize{Platform: p.Platform, CompressedBytes: p.CompressedBytes, UncompressedBytes: p.UncompressedBytes, Layers: p.Layers, WastedBytes: p.WastedBytes,
			UnpackagedBytes: p.UnpackagedBytes}
		for _, k := range p.LargestPackages {
			ps.LargestPackages = append(ps.LargestPackages, kilnv1.PackageSize{Name: k.Name, Type: k.Type, Bytes: k.Bytes, Files: k.Files})
		}
		for _, l := range p.LargestLayers {
			ps.LargestLayers = append(ps.LargestLayers, kilnv1.LayerSize{Index: l.Index, CompressedBytes: l.CompressedBytes, CreatedBy: l.CreatedBy, Line: l.Line})
		}
		out = append(out, ps)
	}
	return out
}

// recordLost finishes the current build as lost (its pod was deleted before it ended), with the
// message that says how.
func (r *ImageBuildReconciler) recordLost(ib *kilnv1.ImageBuild, msg string) {
	lb := ib.Status.LastBuild
	now := metav1.NewTime(r.now())
	lb.CompletionTime = &now
	lb.FailureReason = kilnv1.FailurePodLost
	lb.Message = msg
	r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBuildFailed, "Build pod %s failed (%s): %s", lb.PodName, lb.FailureReason, lb.Message)
}

// successMessage says what a successful build pushed, from the status.
func successMessage(ib *kilnv1.ImageBuild) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pushed %s", ib.Status.Image)
	if ib.Status.Size != nil {
		fmt.Fprintf(&b, " (%s", ib.Status.Size.Compressed)
		if ib.Status.Budget != nil && ib.Status.Budget.Summary != "" {
			if sum := ib.Status.Budget.Summary; sum == "no budget" {
				b.WriteString(", no budget")
			} else {
				fmt.Fprintf(&b, ", budget %s", sum)
			}
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

// setCondition sets a condition with the ImageBuild's generation.
func setCondition(ib *kilnv1.ImageBuild, typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&ib.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: contract.Truncate(message, contract.MaxConditionMessage), ObservedGeneration: ib.Generation,
	})
}

// summarizeAndPatch turns what the steps found into the conditions, sets observedGeneration when
// the outcome is final, and patches the status once, if it changed.
func (r *ImageBuildReconciler) summarizeAndPatch(ctx context.Context, before, ib *kilnv1.ImageBuild, st *buildState, retErr error) (reconcile.Result, error) {
	switch {
	case st.stalled:
		if st.phase == "" {
			// A stall before the build step: the phase of an earlier state (Queued, Building)
			// would misstate it, and a Queued one would hold a place in the queue.
			st.phase = kilnv1.PhaseFailed
		}
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
	if before.Status.DecodeError != "" {
		// The stored status holds a value nothing can decode: a patch would leave it there, so
		// replace the whole status.
		if err := r.Status().Update(ctx, ib); err != nil {
			retErr = errors.Join(retErr, client.IgnoreNotFound(fmt.Errorf("replacing the undecodable status: %w", err)))
			announce = nil
		}
	} else if !equality.Semantic.DeepEqual(before.Status, ib.Status) {
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
		msg := budget.Message(*b)
		if b.Enforcement == kilnv1.EnforcementWarn {
			msg += " (pushed anyway: enforcement is Warn)"
		}
		setCondition(ib, kilnv1.ConditionSizeBudget, metav1.ConditionFalse, string(kilnv1.VerdictOverBudget), msg)
	default:
		setCondition(ib, kilnv1.ConditionSizeBudget, metav1.ConditionTrue, string(kilnv1.VerdictWithinBudget), b.Summary)
	}
}
