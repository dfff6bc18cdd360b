package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// followPoll is how often kiln build --follow and kiln wait read the ImageBuild.
const followPoll = 500 * time.Millisecond

// follow follows the build that answers ib's current generation and rebuild request: it says
// where the build waits (queue, cache), streams each attempt's runner log, and ends with a
// summary. It returns the exit code of the build's outcome.
func follow(ctx context.Context, k *kube, ib *kilnv1.ImageBuild, stdout, stderr io.Writer) int {
	key := kilnv1.BuildKey{Generation: ib.Generation, RebuildRequestedAt: ib.Annotations[kilnv1.AnnotationRebuildRequestedAt]}
	streamed := map[string]bool{}
	said := ""
	for {
		cur := &kilnv1.ImageBuild{}
		if err := k.c.Get(ctx, client.ObjectKeyFromObject(ib), cur); err != nil {
			if ctx.Err() != nil {
				fmt.Fprintf(stderr, "kiln: gave up following ImageBuild %s/%s: %v\n", ib.Namespace, ib.Name, ctx.Err())
				return ExitFailed
			}
			fmt.Fprintf(stderr, "kiln: reading ImageBuild %s/%s: %v\n", ib.Namespace, ib.Name, err)
			return ExitFailed
		}
		if code, done := outcome(cur, key); done {
			summary(cur, stdout)
			return code
		}
		if cur.Spec.Suspend {
			fmt.Fprintf(stderr, "kiln: ImageBuild %s/%s is suspended (spec.suspend: true): nothing builds until it is resumed\n", ib.Namespace, ib.Name)
			return ExitFailed
		}
		if msg := waiting(cur, key); msg != "" && msg != said {
			fmt.Fprintf(stdout, "%s\n", msg)
			said = msg
		}
		if lb := cur.Status.LastBuild; lb != nil && answersKey(lb, key) && lb.PodName != "" && !streamed[lb.PodName] {
			streamed[lb.PodName] = true
			fmt.Fprintf(stdout, "Build pod %s (attempt %d):\n", lb.PodName, lb.Attempt)
			streamLog(ctx, k, ib.Namespace, lb.PodName, stdout)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "kiln: gave up following ImageBuild %s/%s: %v\n", ib.Namespace, ib.Name, ctx.Err())
			return ExitFailed
		case <-time.After(followPoll):
		}
	}
}

// answersKey reports whether lb is the build of key.
func answersKey(lb *kilnv1.LastBuild, key kilnv1.BuildKey) bool {
	return lb.Generation == key.Generation && lb.RebuildRequestedAt == key.RebuildRequestedAt
}

// outcome is the exit code of ib's build of key, once it has ended for good: pushed (Ready),
// over budget or failed (Stalled). A failure kiln retries is not the end.
func outcome(ib *kilnv1.ImageBuild, key kilnv1.BuildKey) (int, bool) {
	lb := ib.Status.LastBuild
	if lb == nil || !answersKey(lb, key) || lb.CompletionTime == nil || ib.Status.ObservedGeneration != key.Generation {
		return 0, false
	}
	if meta.IsStatusConditionTrue(ib.Status.Conditions, kilnv1.ConditionReady) {
		return ExitPushed, true
	}
	if meta.IsStatusConditionTrue(ib.Status.Conditions, kilnv1.ConditionStalled) {
		if lb.FailureReason == kilnv1.FailureOverBudget {
			return ExitOverBudget, true
		}
		return ExitFailed, true
	}
	return 0, false
}

// waiting is what ib waits for before its build of key runs (a slot, the cache claim), or "";
// a status of an earlier generation says nothing about it.
func waiting(ib *kilnv1.ImageBuild, key kilnv1.BuildKey) string {
	if ib.Status.ObservedGeneration != key.Generation {
		return ""
	}
	switch ib.Status.Phase {
	case kilnv1.PhaseQueued, kilnv1.PhaseWaitingForCache, kilnv1.PhasePending:
		if c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ConditionReady); c != nil && c.Message != "" {
			return fmt.Sprintf("%s: %s", ib.Status.Phase, c.Message)
		}
	case kilnv1.PhaseFailed:
		if c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ConditionReady); c != nil && c.Reason == kilnv1.ReasonRetrying {
			return "Retrying: " + c.Message
		}
	}
	return ""
}

// streamLog copies the runner's log of pod to w, following it until the runner ends. It waits
// for the runner to start; a pod that ends, or is gone, before it does has no log to show.
func streamLog(ctx context.Context, k *kube, ns, pod string, w io.Writer) {
	for {
		rc, err := k.cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "runner", Follow: true}).Stream(ctx)
		if err == nil {
			n, _ := io.Copy(w, rc)
			_ = rc.Close()
			if n > 0 {
				return
			}
			// An empty stream: the runner had not started yet (the API may answer before
			// the kubelet knows). Ask again, unless it has ended.
		}
		p, perr := k.cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if perr != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil || runnerEnded(p) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(followPoll):
		}
	}
}

// summary prints what the build made: the image, its size against the budget, the cache's
// share, the first advice; or why it failed.
func summary(ib *kilnv1.ImageBuild, w io.Writer) {
	lb := ib.Status.LastBuild
	fmt.Fprintf(w, "\n== ImageBuild %s/%s, build %s\n", ib.Namespace, ib.Name, lb.PodName)
	if lb.FailureReason != "" {
		fmt.Fprintf(w, "Failed (%s): %s\n", lb.FailureReason, lb.Message)
		if lb.FailureReason != kilnv1.FailureOverBudget {
			// Nothing of this build was measured: status.size is an earlier build's.
			if ib.Status.Image != "" {
				fmt.Fprintf(w, "Last pushed image (an earlier build's): %s\n", ib.Status.Image)
			}
			return
		}
	}
	if s := ib.Status.Size; s != nil {
		state := "pushed"
		if !s.Pushed {
			state = "not pushed"
		}
		fmt.Fprintf(w, "Image:  %s (%s)\n", s.Image, state)
		budget := ""
		if b := ib.Status.Budget; b != nil && ib.Spec.Budget != nil {
			budget = fmt.Sprintf(", budget %s: %s", b.Summary, b.Verdict)
		}
		fmt.Fprintf(w, "Size:   %s compressed%s\n", s.Compressed, budget)
	}
	if c := ib.Status.Cache; c != nil && c.TotalSteps > 0 {
		fmt.Fprintf(w, "Cache:  %d of %d steps cached (claim %s)\n", c.CachedSteps, c.TotalSteps, c.ClaimName)
	}
	if a := ib.Status.Advice; len(a) > 0 {
		more := ""
		if len(a) > 1 {
			more = fmt.Sprintf(" (and %d more: kubectl describe ib %s)", len(a)-1, ib.Name)
		}
		fmt.Fprintf(w, "Advice: %s%s\n", a[0].Message, more)
	}
}

// runnerEnded reports whether pod's runner container has terminated.
func runnerEnded(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == "runner" && cs.State.Terminated != nil {
			return true
		}
	}
	return false
}
