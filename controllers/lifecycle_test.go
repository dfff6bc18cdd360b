package controllers

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

func podExists(ns, name string) func() bool {
	return func() bool {
		return k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &corev1.Pod{}) == nil
	}
}

// requestOf reads the runner's request of a build pod as the runner does: the ConfigMap its
// request volume names, as files in a directory.
func requestOf(g Gomega, pod *corev1.Pod) contract.Request {
	g.Expect(pod.Spec.Containers[0].Args).To(Equal([]string{"runner", "--request-dir=" + contract.RequestDir}))
	var name string
	for _, v := range pod.Spec.Volumes {
		if v.Name == "request" {
			name = v.ConfigMap.Name
		}
	}
	cm := &corev1.ConfigMap{}
	g.Expect(k8sClient.Get(context.Background(), types.NamespacedName{Namespace: pod.Namespace, Name: name}, cm)).To(Succeed())
	dir, err := os.MkdirTemp("", "request")
	g.Expect(err).NotTo(HaveOccurred())
	defer os.RemoveAll(dir)
	for k, v := range cm.Data {
		g.Expect(os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600)).To(Succeed())
	}
	req, err := contract.ReadRequestDir(dir)
	g.Expect(err).NotTo(HaveOccurred())
	return req
}

// update applies mutate to the current ImageBuild, retrying on conflicts.
func update(g Gomega, ib *kilnv1.ImageBuild, mutate func(*kilnv1.ImageBuild)) {
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		mutate(cur)
		g.Expect(k8sClient.Update(context.Background(), cur)).To(Succeed())
	}).Should(Succeed())
}

// failPod plays the kubelet ending a pod without the runner's result.
func failPod(t *testing.T, pod *corev1.Pod, reason string, runnerStarted bool) {
	t.Helper()
	start := metav1.NewTime(time.Now().Add(-time.Minute))
	pod.Status.Phase = corev1.PodFailed
	pod.Status.Reason = reason
	pod.Status.StartTime = &start
	if runnerStarted {
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerRunner, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: start}}}}
	}
	if err := k8sClient.Status().Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
}

func TestMaxConcurrentBuildsQueuesFIFO(t *testing.T) {
	g := eventually(t)
	g.SetDefaultEventuallyTimeout(60 * time.Second)
	ctx := context.Background()
	ns := newNamespace(t)
	// Earlier tests' builds never end by themselves (no kubelet, no garbage collector): they
	// would hold slots.
	quiesceOthers(g, ns)
	testReconciler.SetMaxConcurrentBuilds(2)
	t.Cleanup(func() { testReconciler.SetMaxConcurrentBuilds(0) })

	names := []string{"a", "b", "c", "d", "e"}
	for _, n := range names {
		g.Expect(k8sClient.Create(ctx, newImageBuild(ns, n))).To(Succeed())
	}

	var mu sync.Mutex
	maxActive := 0
	var started []string // ImageBuilds in the order their pods appeared
	seen := map[string]bool{}
	deadline := time.Now().Add(90 * time.Second)
	for {
		pods := &corev1.PodList{}
		g.Expect(k8sClient.List(ctx, pods, client.InNamespace(ns))).To(Succeed())
		active := 0
		sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].CreationTimestamp.Before(&pods.Items[j].CreationTimestamp) })
		for i := range pods.Items {
			p := &pods.Items[i]
			if !seen[p.Name] {
				seen[p.Name] = true
				started = append(started, p.Labels[LabelImageBuild])
				t.Logf("%s pod %s appeared", time.Now().Format("15:04:05.000"), p.Name)
			}
			if !podFinished(p) {
				active++
			}
		}
		mu.Lock()
		maxActive = max(maxActive, active)
		mu.Unlock()
		if active > 2 {
			t.Fatalf("%d build pods running with --max-concurrent-builds=2", active)
		}
		if len(started) == 2 && active == 2 {
			// The other three wait, with their place in the queue.
			g.Eventually(func(g Gomega) {
				msgs := map[string]string{}
				for _, n := range names {
					cur := getIB(g, newImageBuild(ns, n))
					if cur.Status.Phase == kilnv1.PhaseQueued {
						msgs[n] = conditionOf(g, cur, kilnv1.ConditionReady).Message
					}
				}
				g.Expect(msgs).To(HaveLen(3))
				g.Expect(msgs["c"]).To(ContainSubstring("position 1 of 3"))
				g.Expect(msgs["e"]).To(ContainSubstring("position 3 of 3"))
				g.Expect(msgs["c"]).To(ContainSubstring("2 of 2 slots in use"))
			}).Should(Succeed())
		}
		// Free one slot at a time, and only when both are taken (or nothing waits any more), so
		// that each freed slot goes to exactly one waiting ImageBuild and the order shows.
		if active == 2 || len(started) == len(names) {
			for i := range pods.Items {
				p := &pods.Items[i]
				if !podFinished(p) {
					finishPod(t, p, 0, resultJSON(t, okResult))
					break
				}
			}
		}
		done := 0
		for _, n := range names {
			cur := &kilnv1.ImageBuild{}
			if k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: n}, cur) == nil && cur.Status.Phase == kilnv1.PhaseSucceeded {
				done++
			}
		}
		if done == len(names) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all builds finished; started %v", started)
		}
		time.Sleep(200 * time.Millisecond)
	}
	g.Expect(maxActive).To(Equal(2))
	// a and b fit in the two free slots at once, in either order; each later slot goes to the
	// oldest waiting ImageBuild.
	g.Expect(started[:2]).To(ConsistOf("a", "b"))
	g.Expect(started[2:]).To(Equal([]string{"c", "d", "e"}), "waiting builds start in creation order")
}

func TestSuspendStopsTheBuildAndResumeStartsIt(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "sus")
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "sus-build-1") }).Should(Succeed())
	runPod(t, pod)

	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = true })
	g.Eventually(podExists(ns, "sus-build-1")).Should(BeFalse(), "the running build is stopped")
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(conditionOf(g, cur, kilnv1.ConditionReady).Reason).To(Equal(kilnv1.ReasonSuspended))
		g.Expect(condition(cur, kilnv1.ConditionReconciling)).To(BeNil())
		g.Expect(cur.Status.LastBuild.FailureReason).To(Equal(kilnv1.FailureCancelled))
	}).Should(Succeed())
	g.Consistently(podExists(ns, "sus-build-2")).Should(BeFalse(), "no build starts while suspended")

	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = false })
	var pod2 *corev1.Pod
	g.Eventually(func(g Gomega) { pod2 = getPod(g, ns, "sus-build-2") }).Should(Succeed())
	g.Expect(pod2.Annotations[AnnotationAttempt]).To(Equal("1"), "a resumed build is not a retry")
}

func TestTimeoutFailsWithReasonTimeout(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "slow", func(ib *kilnv1.ImageBuild) { ib.Spec.Timeout = &metav1.Duration{Duration: 10 * time.Minute} })
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "slow-build-1") }).Should(Succeed())
	g.Expect(ptr.Deref(pod.Spec.ActiveDeadlineSeconds, 0)).To(Equal(int64(600)))
	failPod(t, pod, "DeadlineExceeded", true)

	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseFailed))
		g.Expect(conditionOf(g, cur, kilnv1.ConditionStalled).Reason).To(Equal(string(kilnv1.FailureTimeout)))
		g.Expect(cur.Status.LastBuild.Message).To(ContainSubstring("longer than spec.timeout (10m0s)"))
	}).Should(Succeed())
	g.Consistently(podExists(ns, "slow-build-2")).Should(BeFalse(), "a timeout is not retried")
}

func TestBuildKitNeverReadyIsRetried(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "nobk")
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "nobk-build-1") }).Should(Succeed())
	failPod(t, pod, "DeadlineExceeded", false)
	var pod2 *corev1.Pod
	g.Eventually(func(g Gomega) { pod2 = getPod(g, ns, "nobk-build-2") }).Should(Succeed())
	g.Expect(pod2.Annotations[AnnotationAttempt]).To(Equal("2"))
}

func TestEvictedPodIsRetriedUntilAttemptsRunOut(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "evict", func(ib *kilnv1.ImageBuild) { ib.Spec.Retries = ptr.To[int32](1) })
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	for n := 1; n <= 2; n++ {
		var pod *corev1.Pod
		g.Eventually(func(g Gomega) { pod = getPod(g, ns, fmt.Sprintf("evict-build-%d", n)) }).Should(Succeed())
		g.Expect(pod.Annotations[AnnotationAttempt]).To(Equal(fmt.Sprint(n)))
		failPod(t, pod, "Evicted", false)
	}
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		st := condition(cur, kilnv1.ConditionStalled)
		g.Expect(st).NotTo(BeNil())
		g.Expect(st.Reason).To(Equal(string(kilnv1.FailurePodLost)))
		g.Expect(st.Message).To(ContainSubstring("gave up after 2 attempts"))
		g.Expect(cur.Status.LastBuild.Attempt).To(Equal(int32(2)))
	}).Should(Succeed())
	g.Consistently(podExists(ns, "evict-build-3")).Should(BeFalse())
}

func TestRebuildAnnotationStartsExactlyOneBuild(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "again")
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "again-build-1") }).Should(Succeed())
	finishPod(t, pod, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSucceeded)) }).Should(Succeed())

	const at = "2026-11-22T08:00:00Z"
	update(g, ib, func(ib *kilnv1.ImageBuild) {
		ib.Annotations = map[string]string{kilnv1.AnnotationRebuildRequestedAt: at}
	})
	var pod2 *corev1.Pod
	g.Eventually(func(g Gomega) { pod2 = getPod(g, ns, "again-build-2") }).Should(Succeed())
	g.Expect(podKey(pod2).RebuildRequestedAt).To(Equal(at))
	finishPod(t, pod2, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) {
		cur := getIB(g, ib)
		g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseSucceeded))
		g.Expect(cur.Status.LastBuild.RebuildRequestedAt).To(Equal(at))
	}).Should(Succeed())
	g.Consistently(podExists(ns, "again-build-3")).Should(BeFalse(), "one request, one build")
}

func TestHistoryKeepsHistoryLimitPods(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "hist", func(ib *kilnv1.ImageBuild) { ib.Spec.HistoryLimit = ptr.To[int32](2) })
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	for n := 1; n <= 4; n++ {
		if n > 1 {
			update(g, ib, func(ib *kilnv1.ImageBuild) {
				ib.Annotations = map[string]string{kilnv1.AnnotationRebuildRequestedAt: fmt.Sprint(n)}
			})
		}
		var pod *corev1.Pod
		g.Eventually(func(g Gomega) { pod = getPod(g, ns, fmt.Sprintf("hist-build-%d", n)) }).Should(Succeed())
		finishPod(t, pod, 0, resultJSON(t, okResult))
		g.Eventually(func(g Gomega) {
			cur := getIB(g, ib)
			g.Expect(cur.Status.LastBuild.PodName).To(Equal(pod.Name))
			g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseSucceeded))
		}).Should(Succeed())
	}
	g.Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		g.Expect(k8sClient.List(context.Background(), pods, client.InNamespace(ns))).To(Succeed())
		var names []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				names = append(names, p.Name)
			}
		}
		g.Expect(names).To(ConsistOf("hist-build-3", "hist-build-4"))
	}).Should(Succeed())
}

func TestFailureKeepsTheLogTail(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	for _, tc := range []struct {
		name  string
		code  int32
		msg   string
		class kilnv1.FailureClass
		tail  string
	}{
		// What the kubelet copied from the log of an older kiln's pod is not kept: the runner did
		// not write it, so nothing says it is redacted.
		{"crash", 137, "#7 12.3 compiling widgets\npassword=hunter22\nkilled", kilnv1.FailureRunnerCrashed, ""},
		{"result", contract.ExitBuildFailed, resultJSON(t, contract.Result{FailureClass: kilnv1.FailureBuildFailed, Message: "RUN make: exit code 2", LogTail: "make: *** [all] Error 2"}),
			kilnv1.FailureBuildFailed, "make: *** [all] Error 2"},
	} {
		ib := newImageBuild(ns, tc.name, func(ib *kilnv1.ImageBuild) { ib.Spec.Retries = ptr.To[int32](0) })
		g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
		var pod *corev1.Pod
		g.Eventually(func(g Gomega) { pod = getPod(g, ns, tc.name+"-build-1") }).Should(Succeed())
		finishPod(t, pod, tc.code, tc.msg)
		g.Eventually(func(g Gomega) {
			lb := getIB(g, ib).Status.LastBuild
			g.Expect(lb.FailureReason).To(Equal(tc.class))
			g.Expect(lb.LogTail).To(Equal(tc.tail))
			g.Expect(lb.Message).NotTo(ContainSubstring("hunter22"))
			if tc.class == kilnv1.FailureRunnerCrashed {
				g.Expect(lb.Message).To(ContainSubstring("its log: kubectl logs -n " + ns + " " + tc.name + "-build-1 -c runner"))
			}
		}).Should(Succeed())
	}
}

func TestResetCacheAnnotationReachesTheNextBuildOnce(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "reset")
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "reset-build-1") }).Should(Succeed())
	g.Expect(requestOf(g, pod).ResetCache).To(BeFalse())
	finishPod(t, pod, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSucceeded)) }).Should(Succeed())

	update(g, ib, func(ib *kilnv1.ImageBuild) {
		ib.Annotations = map[string]string{kilnv1.AnnotationResetCacheRequestedAt: "r1"}
	})
	g.Eventually(func(g Gomega) {
		g.Expect(conditionOf(g, getIB(g, ib), kilnv1.ConditionReady).Message).To(ContainSubstring(`cache reset requested (kiln.dev/reset-cache-requested-at="r1"): it runs with the next build`))
	}).Should(Succeed())
	g.Consistently(podExists(ns, "reset-build-2")).Should(BeFalse(), "the reset alone starts no build")
	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Annotations[kilnv1.AnnotationRebuildRequestedAt] = "b1" })
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "reset-build-2") }).Should(Succeed())
	g.Expect(requestOf(g, pod).ResetCache).To(BeTrue())
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.LastHandledResetCacheAt).To(Equal("r1")) }).Should(Succeed())
	finishPod(t, pod, 0, resultJSON(t, okResult))

	update(g, ib, func(ib *kilnv1.ImageBuild) { ib.Annotations[kilnv1.AnnotationRebuildRequestedAt] = "b2" })
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "reset-build-3") }).Should(Succeed())
	g.Expect(requestOf(g, pod).ResetCache).To(BeFalse(), "one request, one reset")
	finishPod(t, pod, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) {
		g.Expect(conditionOf(g, getIB(g, ib), kilnv1.ConditionReady).Message).To(And(ContainSubstring("pushed"), Not(ContainSubstring("cache reset"))))
	}).Should(Succeed())
}

func TestPendingClaimIsReported(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "stuck", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.StorageClassName = ptr.To("no-such-class") })
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	g.Eventually(podExists(ns, "stuck-build-1")).Should(BeTrue())
	g.Eventually(func(g Gomega) { g.Expect(condition(getIB(g, ib), kilnv1.ConditionReady)).NotTo(BeNil()) }).Should(Succeed())
	g.Consistently(func(g Gomega) {
		ready := condition(getIB(g, ib), kilnv1.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Message).NotTo(ContainSubstring("Pending for"))
	}, time.Second).Should(Succeed())

	clockOffset.Store(int64(3 * time.Minute))
	t.Cleanup(func() { clockOffset.Store(0) })
	// Any change makes the controller look again; the pod's status is the natural one.
	pod := getPod(g, ns, "stuck-build-1")
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable"}}
	g.Expect(k8sClient.Status().Update(context.Background(), pod)).To(Succeed())
	g.Eventually(func(g Gomega) {
		msg := conditionOf(g, getIB(g, ib), kilnv1.ConditionReconciling).Message
		g.Expect(msg).To(ContainSubstring("cache claim stuck-cache has been Pending for more than 2m0s (since "))
		g.Expect(msg).To(ContainSubstring(`StorageClass "no-such-class"`))
	}).Should(Succeed())
}

func TestMetricsAreExported(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	ib := newImageBuild(ns, "measured", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Budget = &kilnv1.Budget{MaxImageSize: ptr.To(resource.MustParse("5Mi"))}
	})
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "measured-build-1") }).Should(Succeed())
	finishPod(t, pod, 0, resultJSON(t, okResult))
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSucceeded)) }).Should(Succeed())

	g.Eventually(func(g Gomega) {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		text := string(body)
		for _, series := range []string{
			`kiln_builds_total{result="Succeeded"}`,
			`kiln_build_duration_seconds_bucket{result="Succeeded",le="60"}`,
			fmt.Sprintf(`kiln_image_compressed_bytes{imagebuild="measured",namespace="%s",platform="linux/amd64"} 1.234567e+06`, ns),
			fmt.Sprintf(`kiln_build_cached_steps_ratio{imagebuild="measured",namespace="%s"} 0.42857142857142855`, ns),
			`kiln_budget_verdicts_total{enforcement="Enforce",verdict="WithinBudget"}`,
			`kiln_build_queue_depth 0`,
			`kiln_imagebuilds{phase="Succeeded"}`,
		} {
			g.Expect(text).To(ContainSubstring(series))
		}
	}).Should(Succeed())

	// A deleted ImageBuild's series go with it.
	g.Expect(k8sClient.Delete(context.Background(), getIB(g, ib))).To(Succeed())
	g.Eventually(func(g Gomega) {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		g.Expect(string(body)).NotTo(ContainSubstring(`imagebuild="measured",namespace="` + ns + `"`))
	}).Should(Succeed())
}
