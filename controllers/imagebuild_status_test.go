package controllers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// finishedPod is a build pod whose runner exited with code and wrote msg, without an API server.
func finishedPod(code int32, msg string) *corev1.Pod {
	pod := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
		Name: containerRunner, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Message: msg, Reason: "Completed"}},
	}}}}
	pod.Name = "app-build-2"
	if code != 0 {
		pod.Status.Phase = corev1.PodFailed
	}
	return pod
}

// report maps what pod says into ib's status, as recordResult does.
func report(ib *kilnv1.ImageBuild, pod *corev1.Pod) {
	interpretPod(ib, pod, runnerTerminated(pod)).apply(ib)
}

func olderResult(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "internal", "contract", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// A runner one minor version older than the manager still reports its result: the results of
// kiln v0.1.0's runner (contract 1.0, in internal/contract/testdata: no version, the budget in
// words, checks ordered by headroom) reach the status, and the manager words the budget itself.
func TestOlderRunnerResultReachesStatus(t *testing.T) {
	ib := newImageBuild("team", "app")
	ib.Status.LastBuild = &kilnv1.LastBuild{PodName: "app-build-2", Attempt: 1}
	report(ib, finishedPod(0, olderResult(t, "result-1.0-pushed.json")))

	st := ib.Status
	if st.LastBuild.FailureReason != "" || st.Digest == "" || st.Image != "registry.example.com/team/app@"+st.Digest || strings.Join(st.Tags, ",") != "v1.2.0,latest" {
		t.Errorf("pushed image: %s %v (%s: %s)", st.Image, st.Tags, st.LastBuild.FailureReason, st.LastBuild.Message)
	}
	if st.Size == nil || st.Size.Compressed != "61.2MiB" || len(st.Size.Platforms) != 2 || st.Size.AttestationBytes != 12_345 ||
		st.Size.Platforms[0].LargestLayers[0].CreatedBy != "RUN apt-get install -y build-essential" {
		t.Errorf("size: %+v", st.Size)
	}
	b := st.Budget
	if b == nil || b.Verdict != kilnv1.VerdictOverBudget || b.Enforcement != kilnv1.EnforcementWarn || b.Summary != "61.2MiB/50Mi (+11.2MiB)" || len(b.Checks) != 4 {
		t.Fatalf("budget: %+v", b)
	}
	// 6 layers against 4 is further over than 61.2MiB against 50Mi: relative excess, not headroom.
	for i, want := range []string{
		"linux/amd64: 6 layers is 2 over maxLayers 4",
		"linux/arm64: 6 layers is 2 over maxLayers 4",
		"linux/amd64: 61.2MiB is 11.2MiB over maxImageSize 50Mi; largest layer 38.0MiB from RUN apt-get install -y build-essential (Dockerfile:12)",
		"linux/arm64: 30.0MiB is within maxImageSize 50Mi (20.0MiB to spare)",
	} {
		if b.Checks[i].Message != want {
			t.Errorf("check %d: %q, want %q", i, b.Checks[i].Message, want)
		}
	}
	if st.Cache.CachedSteps != 5 || st.Cache.TotalSteps != 9 || len(st.Advice) != 1 || st.Revision != "0123456789abcdef0123456789abcdef01234567" {
		t.Errorf("cache %+v, advice %+v, revision %s", st.Cache, st.Advice, st.Revision)
	}

	// The same runner's over-budget failure: its own words are set aside for the manager's.
	digest := st.Digest
	report(ib, finishedPod(contract.ExitOverBudget, olderResult(t, "result-1.0-overbudget.json")))
	lb := ib.Status.LastBuild
	want := "linux/amd64: 6 layers is 2 over maxLayers 4; linux/amd64: 61.2MiB is 11.2MiB over maxImageSize 50Mi; largest layer 38.0MiB " +
		"from RUN apt-get install -y build-essential (Dockerfile:12); not pushed (budget enforcement is Enforce)"
	if lb.FailureReason != kilnv1.FailureOverBudget || lb.Message != want || ib.Status.Digest != digest || ib.Status.Budget.Enforcement != kilnv1.EnforcementEnforce {
		t.Errorf("over budget: %s %q (digest %s)", lb.FailureReason, lb.Message, ib.Status.Digest)
	}
}

// TestPrinterColumnsDescribeOneImage: after a refused build, the columns (status.size.image,
// size, budget, pushed) describe the refused image, and status.image still the pushed one
// (issue 19 item 3).
func TestPrinterColumnsDescribeOneImage(t *testing.T) {
	ib := newImageBuild("team", "app")
	ib.Status.LastBuild = &kilnv1.LastBuild{PodName: "app-build-1", Attempt: 1}
	pushed := contract.Result{Pushed: true, Digest: "sha256:" + strings.Repeat("a", 64), Image: "registry.example.com/team/app@sha256:" + strings.Repeat("a", 64),
		Tags: []string{"latest"}, Platforms: []contract.Platform{{Platform: "linux/amd64", CompressedBytes: 10 << 20, Layers: 3}}}
	report(ib, finishedPod(0, resultJSON(t, pushed)))
	if s := ib.Status.Size; s == nil || s.Image != pushed.Image || !s.Pushed || ib.Status.Image != pushed.Image {
		t.Fatalf("after a push: size %+v, image %s", s, ib.Status.Image)
	}

	refused := contract.Result{FailureClass: kilnv1.FailureOverBudget, Digest: "sha256:" + strings.Repeat("b", 64), Image: "registry.example.com/team/app@sha256:" + strings.Repeat("b", 64),
		Platforms: []contract.Platform{{Platform: "linux/amd64", CompressedBytes: 80 << 20, Layers: 3}},
		Budget:    &contract.Budget{Enforcement: kilnv1.EnforcementEnforce, Checks: []contract.Check{{Limit: "maxGrowth", Platform: "linux/amd64", LimitValue: 1 << 20, Actual: 70 << 20}}}}
	ib.Status.LastBuild = &kilnv1.LastBuild{PodName: "app-build-2", Attempt: 1}
	report(ib, finishedPod(contract.ExitOverBudget, resultJSON(t, refused)))
	s := ib.Status.Size
	if s.Image != refused.Image || s.Pushed || s.Compressed != "80.0MiB" || !strings.HasPrefix(ib.Status.Budget.Summary, "over maxGrowth") {
		t.Errorf("the columns mix two images: image %s pushed %v size %s budget %q", s.Image, s.Pushed, s.Compressed, ib.Status.Budget.Summary)
	}
	if ib.Status.Image != pushed.Image || ib.Status.Digest != pushed.Digest {
		t.Errorf("status.image %s, want the last pushed %s", ib.Status.Image, pushed.Image)
	}
}

// What the manager cannot take from a runner is an InternalError that says why.
func TestResultTheManagerCannotTake(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		want      []string
	}{
		{"another major version", `{"v":"2.0","result":{"digest":"sha256:00"}}`,
			[]string{"the runner's result is in contract version 2.0, which this manager (contract " + contract.Version + ") cannot read", "--runner-image"}},
		{"a failure class this manager does not know", `{"v":"1.4","failure":"QuotaExhausted","message":"the registry's quota is used up"}`,
			[]string{`failure class "QuotaExhausted", which this manager does not know: the registry's quota is used up`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ib := newImageBuild("team", "app")
			ib.Status.LastBuild = &kilnv1.LastBuild{PodName: "app-build-2", Attempt: 1}
			report(ib, finishedPod(1, tc.msg))
			lb := ib.Status.LastBuild
			if lb.FailureReason != kilnv1.FailureInternal {
				t.Errorf("class %s (%s)", lb.FailureReason, lb.Message)
			}
			for _, w := range tc.want {
				if !strings.Contains(lb.Message, w) {
					t.Errorf("message %q lacks %q", lb.Message, w)
				}
			}
			if ib.Status.Budget.Verdict != kilnv1.VerdictNotMeasured {
				t.Errorf("budget %+v", ib.Status.Budget)
			}
		})
	}
}

// What a build did with its registry cache reaches status.cache.registry, and a later build
// without one clears it.
func TestRegistryCacheReachesStatus(t *testing.T) {
	ib := newImageBuild("team", "app")
	ib.Status.LastBuild = &kilnv1.LastBuild{PodName: "app-build-2", Attempt: 1}
	res := okResult
	res.Cache = &contract.CacheReport{Image: "registry.example.com/team/app-cache:main", Exported: "sha256:" + strings.Repeat("c", 64),
		Message: "registry cache registry.example.com/team/app-cache:main: importing it failed: unauthorized"}
	report(ib, finishedPod(0, resultJSON(t, res)))
	want := kilnv1.RegistryCacheStatus{Image: res.Cache.Image, Exported: res.Cache.Exported, Message: res.Cache.Message}
	if got := ib.Status.Cache.Registry; got == nil || *got != want {
		t.Errorf("status.cache.registry %+v, want %+v", got, want)
	}
	if ib.Status.LastBuild.FailureReason != "" {
		t.Errorf("a registry cache that failed failed the build: %s", ib.Status.LastBuild.Message)
	}
	report(ib, finishedPod(0, resultJSON(t, okResult)))
	if ib.Status.Cache.Registry != nil {
		t.Errorf("status.cache.registry %+v after a build without a registry cache", ib.Status.Cache.Registry)
	}
}
