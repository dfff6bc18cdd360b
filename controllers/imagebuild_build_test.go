package controllers

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// TestDecideNext: what follows the last build is a pure function of the ImageBuild, its current
// key and the time.
func TestDecideNext(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	key := kilnv1.BuildKey{Generation: 3, RebuildRequestedAt: "r1", PolledRevision: "abc"}
	backoff := func(attempt int32) time.Duration { return time.Duration(attempt) * 10 * time.Second }
	ended := func(ago time.Duration, class kilnv1.FailureClass, attempt int32) *kilnv1.LastBuild {
		at := metav1.NewTime(now.Add(-ago))
		return &kilnv1.LastBuild{PodName: "x-build-1", Attempt: attempt, BuildKey: key, CompletionTime: &at, FailureReason: class}
	}
	for _, tc := range []struct {
		name    string
		lb      *kilnv1.LastBuild
		retries int32
		want    next
	}{
		{"no build yet", nil, 2, next{action: actionStart, attempt: 1}},
		{"the last build answered another generation", &kilnv1.LastBuild{Attempt: 3, BuildKey: kilnv1.BuildKey{Generation: 2, RebuildRequestedAt: "r1", PolledRevision: "abc"}}, 2, next{action: actionStart, attempt: 1}},
		{"a new rebuild request", &kilnv1.LastBuild{Attempt: 1, BuildKey: kilnv1.BuildKey{Generation: 3, PolledRevision: "abc"}}, 2, next{action: actionStart, attempt: 1}},
		{"a new polled revision", &kilnv1.LastBuild{Attempt: 1, BuildKey: kilnv1.BuildKey{Generation: 3, RebuildRequestedAt: "r1", PolledRevision: "old"}}, 2, next{action: actionStart, attempt: 1}},
		{"succeeded", ended(time.Minute, "", 1), 2, next{action: actionReport}},
		{"bad input is final", ended(time.Hour, kilnv1.FailureBadInput, 1), 2, next{action: actionReport}},
		{"over budget is final", ended(time.Hour, kilnv1.FailureOverBudget, 1), 2, next{action: actionReport}},
		{"a refused pod is final", ended(time.Hour, kilnv1.FailurePodRejected, 1), 2, next{action: actionReport}},
		{"transient, backoff not over", ended(5*time.Second, kilnv1.FailurePushFailed, 1), 2, next{action: actionWait, wait: 5 * time.Second}},
		{"transient, backoff over", ended(11*time.Second, kilnv1.FailurePushFailed, 1), 2, next{action: actionStart, attempt: 2}},
		{"backoff doubles with the attempt", ended(15*time.Second, kilnv1.FailurePodLost, 2), 2, next{action: actionWait, wait: 5 * time.Second}},
		{"attempts used up", ended(time.Hour, kilnv1.FailurePodLost, 3), 2, next{action: actionReport}},
		{"no retries", ended(time.Hour, kilnv1.FailureImagePullFailed, 1), 0, next{action: actionReport}},
		{"resumed after suspend: same attempt", ended(time.Hour, kilnv1.FailureCancelled, 2), 2, next{action: actionStart, attempt: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ib := newImageBuild("ns", "x", func(ib *kilnv1.ImageBuild) { ib.Spec.Retries = ptr.To(tc.retries) })
			ib.Generation = 3
			ib.Annotations = map[string]string{kilnv1.AnnotationRebuildRequestedAt: "r1"}
			ib.Status.PolledRevision = "abc"
			ib.Status.LastBuild = tc.lb
			got := decideNext(ib, keyOf(ib), now, backoff)
			if got.action != tc.want.action || got.attempt != tc.want.attempt || got.wait != tc.want.wait {
				t.Errorf("decideNext = %+v, want %+v", got, tc.want)
			}
			if got.action == actionWait && !strings.Contains(got.message, "retrying in 5s") {
				t.Errorf("wait message %q", got.message)
			}
		})
	}
}

// TestOutcomeSaysItsClassOnce: a failed build's conditions carry the failure class as their
// reason, and their message does not repeat it ("BadInput: BadInput: …" was issue 19 item 2).
func TestOutcomeSaysItsClassOnce(t *testing.T) {
	r := &ImageBuildReconciler{}
	now := metav1.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	for _, class := range kilnv1.FailureClasses {
		if class == kilnv1.FailureOverBudget || class == kilnv1.FailureCancelled {
			continue // reported as BudgetExceeded; a cancelled build starts again
		}
		ib := &kilnv1.ImageBuild{}
		ib.Status.LastBuild = &kilnv1.LastBuild{PodName: "x-build-1", Attempt: 1, CompletionTime: &now, FailureReason: class, Message: "what went wrong"}
		st := &buildState{}
		r.reportOutcome(ib, st)
		if !st.stalled || st.reason != string(class) {
			t.Errorf("%s: stalled %v with reason %q, want the class as the reason", class, st.stalled, st.reason)
		}
		if strings.Contains(st.message, string(class)) || !strings.Contains(st.message, "what went wrong") {
			t.Errorf("%s: message %q repeats the class or loses the runner's message", class, st.message)
		}
	}
}
