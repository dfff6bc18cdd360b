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
)

// Transient reports whether a failure of this class may go away by itself, so that a new attempt
// is worth making.
func Transient(class string) bool {
	switch class {
	case FailurePushFailed, FailureBuildKitNotUp, FailurePodLost, FailureRunnerCrashed:
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
