package controllers

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestPollBuildsWhenTheBranchMoves serves a real repository with git daemon on 127.0.0.1 and
// moves its branch.
func TestPollBuildsWhenTheBranchMoves(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	work, git := testenv.GitRepo(t, map[string]string{"Dockerfile": "FROM scratch\n"})
	base := t.TempDir()
	git("clone", "-q", "--bare", work, filepath.Join(base, "app.git"))
	addr := testenv.StartGitDaemon(t, base)
	first := git("rev-parse", "HEAD")

	ib := newImageBuild(ns, "polled", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Source = kilnv1.Source{Git: &kilnv1.GitSource{URL: "git://" + addr + "/app.git", Revision: "main", PollInterval: &metav1.Duration{Duration: time.Minute}}}
	})
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	built := func(pod string, rev string) {
		var p *corev1.Pod
		g.Eventually(func(g Gomega) { p = getPod(g, ns, pod) }).Should(Succeed())
		res := okResult
		res.Revision = rev
		finishPod(t, p, 0, resultJSON(t, res))
		g.Eventually(func(g Gomega) {
			cur := getIB(g, ib)
			g.Expect(cur.Status.Phase).To(Equal(kilnv1.PhaseSucceeded))
			g.Expect(cur.Status.Revision).To(Equal(rev))
		}).Should(Succeed())
	}
	built("polled-build-1", first)

	// A poll right after the build finds the same commit: nothing to do.
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.LastPolledAt).NotTo(BeNil()) }).Should(Succeed())
	g.Consistently(podExists(ns, "polled-build-2")).Should(BeFalse())

	// The branch moves; once the interval has passed, the next poll builds the new commit.
	_ = os.WriteFile(filepath.Join(work, "more"), []byte("x"), 0o644)
	git("add", ".")
	git("commit", "-q", "-m", "second")
	second := git("rev-parse", "HEAD")
	git("push", "-q", filepath.Join(base, "app.git"), "main")
	clockOffset.Store(int64(2 * time.Minute))
	t.Cleanup(func() { clockOffset.Store(0) })
	nudge(g, ib, "1") // a reconcile now, not in a minute

	var pod2 *corev1.Pod
	g.Eventually(func(g Gomega) { pod2 = getPod(g, ns, "polled-build-2") }).Should(Succeed())
	g.Expect(podKey(pod2).PolledRevision).To(Equal(second))
	g.Expect(getIB(g, ib).Status.PolledRevision).To(Equal(second))
	built("polled-build-2", second)

	clockOffset.Store(int64(4 * time.Minute))
	nudge(g, ib, "2")
	g.Consistently(podExists(ns, "polled-build-3")).Should(BeFalse(), "an unmoved branch starts nothing")
}

// nudge changes a label with a metadata-only patch: a reconcile, without a new generation.
func nudge(g Gomega, ib *kilnv1.ImageBuild, v string) {
	patch := []byte(`{"metadata":{"labels":{"nudge":"` + v + `"}}}`)
	g.Expect(k8sClient.Patch(context.Background(), ib.DeepCopy(), client.RawPatch(types.MergePatchType, patch))).To(Succeed())
}
