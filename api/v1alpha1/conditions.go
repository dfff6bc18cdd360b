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
	ReasonClaimPending    = "ClaimPending"
	ReasonSuspended       = "Suspended"
	ReasonRetrying        = "Retrying"
	ReasonBuildCancelled  = "BuildCancelled"
	ReasonNewRevision     = "NewRevision"
	ReasonPollFailed      = "PollFailed"
	// ReasonInvalidSpec: the stored spec does not decode (it predates kiln's validation).
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonClaimRejected: the API server refused the cache claim kiln rendered.
	ReasonClaimRejected = "ClaimRejected"
	// ReasonQuotaExceeded: a ResourceQuota refused the claim or pod for now; kiln tries again.
	ReasonQuotaExceeded = "QuotaExceeded"
	// ReasonSourceNotFound: the ConfigMap named in spec.source.configMap does not exist (yet).
	ReasonSourceNotFound = "SourceNotFound"
	// ReasonSourceChanged: the ConfigMap source's content changed, which starts a build.
	ReasonSourceChanged = "SourceChanged"
)

// Failure classes: the runner's result says which one a failed build is, and the manager adds
// the ones that happen around the runner (Timeout, PodLost). Only transient classes are retried.
const (
	FailureBadInput      = "BadInput"
	FailureBuildFailed   = "BuildFailed"
	FailureOverBudget    = "OverBudget"
	FailurePushFailed    = "PushFailed"
	FailureBuildKitNotUp = "BuildKitUnavailable"
	FailureInternal      = "InternalError"
	FailureTimeout       = "Timeout"
	FailurePodLost       = "PodLost"
	FailureRunnerCrashed = "RunnerCrashed"
	// FailureCancelled marks a build stopped by spec.suspend; it starts again on resume.
	FailureCancelled = "Cancelled"
	// FailurePodRejected: the API server refused the build pod (or its request ConfigMap) that
	// kiln rendered from the spec; the message is the server's.
	FailurePodRejected = "PodRejected"
	// FailurePodStartFailed: a container of the build pod could not be created or started
	// (StartError, CreateContainerConfigError, InvalidImageName, ...); the kubelet's message says why.
	FailurePodStartFailed = "PodStartFailed"
	// FailureImagePullFailed: an image of the build pod could not be pulled for several minutes.
	FailureImagePullFailed = "ImagePullFailed"
)

// Transient reports whether a failure of this class may go away by itself, so that a new attempt
// is worth making.
func Transient(class string) bool {
	switch class {
	case FailurePushFailed, FailureBuildKitNotUp, FailurePodLost, FailureRunnerCrashed, FailureImagePullFailed:
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
