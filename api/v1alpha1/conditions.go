package v1alpha1

// Condition types of an ImageBuild.
const (
	// ConditionReady is True when the image for the current generation is built and pushed.
	ConditionReady = "Ready"
	// ConditionReconciling is present, and True, while kiln is working towards Ready.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is present, and True, when kiln cannot go on without a change from the user.
	ConditionStalled = "Stalled"
	// ConditionSizeBudget carries the budget verdict as its reason (WithinBudget, OverBudget,
	// NotMeasured).
	ConditionSizeBudget = "SizeBudget"
)

// Condition reasons, also used as Event reasons. UpperCamel, stable: tools match on them.
const (
	ReasonBuildSucceeded  = "BuildSucceeded"
	ReasonBuildStarted    = "BuildStarted"
	ReasonBuildFailed     = "BuildFailed"
	ReasonBudgetExceeded  = "BudgetExceeded"
	ReasonBuilding        = "Building"
	ReasonPending         = "Pending"
	ReasonQueued          = "Queued"
	ReasonWaitingForCache = "WaitingForCache"
	ReasonClaimNotFound   = "ClaimNotFound"
	// ReasonClaimNotShared: spec.cache.claimName names a claim not marked for sharing
	// (kiln.dev/cache: "true"), or one another object controls.
	ReasonClaimNotShared = "ClaimNotShared"
	ReasonSuspended      = "Suspended"
	ReasonRetrying       = "Retrying"
	ReasonBuildCancelled = "BuildCancelled"
	ReasonNewRevision    = "NewRevision"
	ReasonPollFailed     = "PollFailed"
	// ReasonInvalidSpec: the stored spec does not decode (it predates kiln's validation).
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonStatusReset (an Event): the stored status did not decode and kiln replaced it.
	ReasonStatusReset = "StatusReset"
	// ReasonClaimRejected: the API server refused the cache claim kiln rendered.
	ReasonClaimRejected = "ClaimRejected"
	// ReasonQuotaExceeded: a ResourceQuota refused the claim or pod for now; kiln tries again.
	ReasonQuotaExceeded = "QuotaExceeded"
	// ReasonSourceNotFound: the ConfigMap named in spec.source.configMap does not exist (yet).
	ReasonSourceNotFound = "SourceNotFound"
	// ReasonSourceChanged: the ConfigMap source's content changed, which starts a build.
	ReasonSourceChanged = "SourceChanged"
	// ReasonUnrecordedPod: a pod claims to be a build of the ImageBuild but kiln did not create it.
	ReasonUnrecordedPod = "UnrecordedPod"
	// ReasonPolicyViolation: the spec asks for what the manager's policy flags forbid
	// (--max-cache-size, --allowed-priority-classes, --build-service-account); the message names
	// the flag and the field.
	ReasonPolicyViolation = "PolicyViolation"
	// ReasonRegistryCacheFailed (an Event) says that a build could not import or export its
	// registry cache (spec.cache.registry), and went on without it.
	ReasonRegistryCacheFailed = "RegistryCacheFailed"
	// ReasonClaimReleased (an Event) says that kiln deleted finished build pods that kept a
	// cache claim being deleted.
	ReasonClaimReleased = "ClaimReleased"
)

// FailureClass says why a build failed: the runner reports most classes in its result, and the
// manager adds the ones that happen around the runner (Timeout, PodLost, PodRejected, ...). It is
// one enum for the CRD (status.lastBuild.failureReason), the runner's result
// (internal/contract) and the code; the empty class is success.
// +kubebuilder:validation:Enum=BadInput;BuildFailed;OverBudget;PushFailed;BuildKitUnavailable;InternalError;Timeout;PodLost;RunnerCrashed;Cancelled;PodRejected;PodStartFailed;ImagePullFailed;Unschedulable;SourceUnavailable;PodNameTaken
type FailureClass string

// The failure classes. Only Transient ones are retried.
const (
	// FailureBadInput: the spec, the Dockerfile or a Secret it names is wrong; the message says
	// which field, line or Secret.
	FailureBadInput FailureClass = "BadInput"
	// FailureBuildFailed: a Dockerfile step failed.
	FailureBuildFailed FailureClass = "BuildFailed"
	// FailureOverBudget: the image breaks the budget under enforcement Enforce, so it was not pushed.
	FailureOverBudget FailureClass = "OverBudget"
	// FailurePushFailed: the registry could not be reached, or failed, after the runner's retries.
	FailurePushFailed FailureClass = "PushFailed"
	// FailureBuildKitNotUp: buildkitd did not come up, or failed or was lost during the build.
	FailureBuildKitNotUp FailureClass = "BuildKitUnavailable"
	// FailureInternal: a fault of kiln itself, such as a runner of another contract version.
	FailureInternal FailureClass = "InternalError"
	// FailureTimeout: the build ran longer than spec.timeout.
	FailureTimeout FailureClass = "Timeout"
	// FailurePodLost: the build pod was deleted, evicted or lost with its node before it finished.
	FailurePodLost FailureClass = "PodLost"
	// FailureRunnerCrashed: the runner exited without writing its result.
	FailureRunnerCrashed FailureClass = "RunnerCrashed"
	// FailureCancelled marks a build stopped by spec.suspend; it starts again on resume.
	FailureCancelled FailureClass = "Cancelled"
	// FailurePodRejected: the API server refused the build pod (or its request ConfigMap) that
	// kiln rendered from the spec; the message is the server's.
	FailurePodRejected FailureClass = "PodRejected"
	// FailurePodStartFailed: a container of the build pod could not be created or started
	// (StartError, CreateContainerConfigError, InvalidImageName, ...); the kubelet's message says why.
	FailurePodStartFailed FailureClass = "PodStartFailed"
	// FailureImagePullFailed: an image of the build pod could not be pulled for several minutes.
	FailureImagePullFailed FailureClass = "ImagePullFailed"
	// FailureUnschedulable: the build pod stayed unscheduled longer than the manager's
	// --max-pending; the scheduler's message says why (a nodeSelector or affinity no node has,
	// resources no node offers, a claim that cannot bind).
	FailureUnschedulable FailureClass = "Unschedulable"
	// FailureSourceUnavailable: the git host could not be reached, timed out or failed (a
	// repository or revision that does not exist, or credentials refused, are BadInput).
	FailureSourceUnavailable FailureClass = "SourceUnavailable"
	// FailurePodNameTaken: the name of the next build pod (or of its request ConfigMap) is taken
	// by an object kiln did not create; kiln does not adopt it.
	FailurePodNameTaken FailureClass = "PodNameTaken"
)

// FailureClasses are every failure class, as the enum of status.lastBuild.failureReason lists them.
var FailureClasses = []FailureClass{
	FailureBadInput, FailureBuildFailed, FailureOverBudget, FailurePushFailed, FailureBuildKitNotUp, FailureInternal, FailureTimeout,
	FailurePodLost, FailureRunnerCrashed, FailureCancelled, FailurePodRejected, FailurePodStartFailed, FailureImagePullFailed, FailureUnschedulable,
	FailureSourceUnavailable, FailurePodNameTaken,
}

// Transient reports whether a failure of this class may go away by itself, so that a new attempt
// is worth making.
func Transient(class FailureClass) bool {
	switch class {
	case FailurePushFailed, FailureBuildKitNotUp, FailurePodLost, FailureRunnerCrashed, FailureImagePullFailed, FailureSourceUnavailable:
		return true
	}
	return false
}

// Annotations users set on an ImageBuild.
const (
	// AnnotationRebuildRequestedAt starts one new build whenever its value changes.
	AnnotationRebuildRequestedAt = "kiln.dev/rebuild-requested-at"
	// AnnotationResetCacheRequestedAt empties the cache at the next build whenever its value changes.
	AnnotationResetCacheRequestedAt = "kiln.dev/reset-cache-requested-at"
)
