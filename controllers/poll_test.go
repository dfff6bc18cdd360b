package controllers

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/gitremote"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// pollAllowed holds the addresses tests opened the controller's poller to.
var pollAllowed = struct {
	sync.Mutex
	addrs map[string]int
}{addrs: map[string]int{}}

// allowPolls lets the controller's poller reach the test's own servers at addrs (127.0.0.1:port)
// until the test ends, through the allow list --poll-allowed-cidrs fills in the manager.
func allowPolls(t *testing.T, addrs ...string) {
	t.Helper()
	set := func(delta int) {
		pollAllowed.Lock()
		defer pollAllowed.Unlock()
		for _, a := range addrs {
			if pollAllowed.addrs[a] += delta; pollAllowed.addrs[a] <= 0 {
				delete(pollAllowed.addrs, a)
			}
		}
		var list []string
		for a := range pollAllowed.addrs {
			list = append(list, a)
		}
		allow, err := gitremote.ParseAllowList(list)
		if err != nil {
			panic(err)
		}
		testPoller.SetAllowList(allow)
	}
	set(1)
	t.Cleanup(func() { set(-1) })
}

// polledBuild is an ImageBuild that polls url every minute; an http:// or git:// url (the test
// servers) comes with the insecure: true that admission asks for.
func polledBuild(ns, name, url string) *kilnv1.ImageBuild {
	return newImageBuild(ns, name, func(ib *kilnv1.ImageBuild) {
		ib.Spec.Source = kilnv1.Source{Git: &kilnv1.GitSource{URL: url, Revision: "main", PollInterval: &metav1.Duration{Duration: time.Minute},
			Insecure: strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "git://")}}
	})
}

// finishFirstBuild plays the kubelet for the first build of ib, which built rev; polling starts
// after it.
func finishFirstBuild(t *testing.T, g Gomega, ib *kilnv1.ImageBuild, rev string) {
	t.Helper()
	var p *corev1.Pod
	g.Eventually(func(g Gomega) { p = getPod(g, ib.Namespace, ib.Name+"-build-1") }).Should(Succeed())
	res := okResult
	res.Revision = rev
	finishPod(t, p, 0, resultJSON(t, res))
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.Phase).To(Equal(kilnv1.PhaseSucceeded)) }).Should(Succeed())
}

// eventNotes lists the notes of the Events with reason in namespace ns.
func eventNotes(g Gomega, ns, reason string) []string {
	list := &eventsv1.EventList{}
	g.Expect(k8sClient.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	var notes []string
	for _, e := range list.Items {
		if e.Reason == reason {
			notes = append(notes, e.Note)
		}
	}
	return notes
}

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
	allowPolls(t, addr)
	first := git("rev-parse", "HEAD")

	ib := polledBuild(ns, "polled", "git://"+addr+"/app.git")
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
	// The pod is created before the status patch that records it: look until the patch lands.
	g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.PolledRevision).To(Equal(second)) }).Should(Succeed())
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

// TestPollDoesNotFollowARedirectToAnAddressNotAllowed: the test's git server (allowed) redirects
// to a second 127.0.0.1 listener that stands for an instance metadata service (not allowed).
// The poll fails with a PollFailed Event that names the refused address and holds nothing the
// listener would have said; the listener gets no connection.
func TestPollDoesNotFollowARedirectToAnAddressNotAllowed(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	metaURL, metaConns := testenv.MetadataServer(t)
	redirector := httptest.NewServer(http.RedirectHandler(metaURL+"/latest/meta-data/iam/", http.StatusFound))
	t.Cleanup(redirector.Close)
	allowPolls(t, strings.TrimPrefix(redirector.URL, "http://"))

	ib := polledBuild(ns, "redirected", redirector.URL+"/app.git")
	g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
	finishFirstBuild(t, g, ib, strings.Repeat("a", 40))

	var notes []string
	g.Eventually(func(g Gomega) {
		notes = eventNotes(g, ns, kilnv1.ReasonPollFailed)
		g.Expect(notes).NotTo(BeEmpty())
	}).Should(Succeed())
	g.Expect(notes[0]).To(ContainSubstring("the manager does not connect to " + strings.TrimPrefix(metaURL, "http://") + ": a loopback address"))
	g.Expect(notes[0]).NotTo(ContainSubstring("SECR"))
	g.Expect(metaConns.Load()).To(BeZero(), "the metadata listener was connected to")
	g.Expect(getIB(g, ib).Status.LastPolledAt).NotTo(BeNil())
}

// stallServer accepts HTTP connections on 127.0.0.1 and never answers. At each connection it
// records whether the ImageBuild the request is for (its path, /<name>.git) already had
// status.lastPolledAt stored, and how many connections it holds at once.
type stallServer struct {
	addr                 string
	open, most, accepted atomic.Int32
	mu                   sync.Mutex
	storedFirst          map[string]bool
}

func startStallServer(t *testing.T, ns string) *stallServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stallServer{addr: l.Addr().String(), storedFirst: map[string]bool{}}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				s.hold(conn, ns, done)
			}()
		}
	}()
	return s
}

func (s *stallServer) hold(conn net.Conn, ns string, done <-chan struct{}) {
	s.accepted.Add(1)
	n := s.open.Add(1)
	defer s.open.Add(-1)
	for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
	}
	line, _ := bufio.NewReader(conn).ReadString('\n') // GET /<name>.git/info/refs?... HTTP/1.1
	name, _, _ := strings.Cut(strings.TrimPrefix(strings.Fields(line + " x x")[1], "/"), ".git")
	ib := &kilnv1.ImageBuild{}
	err := k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, ib)
	s.mu.Lock()
	s.storedFirst[name] = err == nil && ib.Status.LastPolledAt != nil
	s.mu.Unlock()
	<-done
}

// TestPollRunsOffTheWorkers: git servers that accept and never answer hold neither the
// reconcile workers (another ImageBuild starts its build at once) nor more than two connections
// to their host; each ImageBuild's lastPolledAt is stored before its poll connects.
func TestPollRunsOffTheWorkers(t *testing.T) {
	g := eventually(t)
	ns := newNamespace(t)
	stall := startStallServer(t, ns)
	allowPolls(t, stall.addr)

	const n = 6 // more than the four reconcile workers of the test manager
	var ibs []*kilnv1.ImageBuild
	for i := range n {
		ib := polledBuild(ns, fmt.Sprintf("stalled-%d", i), fmt.Sprintf("http://%s/stalled-%d.git", stall.addr, i))
		g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
		ibs = append(ibs, ib)
	}
	// Each finished build is followed by a poll that stalls: the next builds still finish.
	start := time.Now()
	for _, ib := range ibs {
		finishFirstBuild(t, g, ib, strings.Repeat("b", 40))
	}
	g.Expect(time.Since(start)).To(BeNumerically("<", 15*time.Second), "finishing the builds waited for stalled polls")
	g.Eventually(stall.open.Load).Should(BeNumerically(">=", 2), "polls of the stalled host")

	other := newImageBuild(ns, "other")
	g.Expect(k8sClient.Create(context.Background(), other)).To(Succeed())
	g.Eventually(podExists(ns, "other-build-1"), 5*time.Second).Should(BeTrue(), "a reconcile waited for a stalled poll")

	for _, ib := range ibs {
		g.Eventually(func(g Gomega) { g.Expect(getIB(g, ib).Status.LastPolledAt).NotTo(BeNil()) }, 5*time.Second).Should(Succeed(),
			"lastPolledAt of %s is stored before its poll ends", ib.Name)
	}
	g.Consistently(stall.most.Load, time.Second).Should(BeNumerically("<=", 2), "polls of one host at once")
	stall.mu.Lock()
	defer stall.mu.Unlock()
	g.Expect(stall.storedFirst).NotTo(BeEmpty())
	for name, stored := range stall.storedFirst {
		g.Expect(stored).To(BeTrue(), "the poll of %s connected before its lastPolledAt was stored", name)
	}
}

// TestPollResultSurvivesAStaleRead: the reconcile after the one that recorded a new commit may
// read the ImageBuild from a cache that does not show that patch yet. It must record the commit
// again (else the build key it reads is outdated and the build just started is cancelled), and
// announce it no second time; a read that shows the commit lets the pool forget it.
func TestPollResultSurvivesAStaleRead(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	wake := make(chan event.GenericEvent, 1)
	rec := events.NewFakeRecorder(10)
	moved := strings.Repeat("c", 40)
	r := &ImageBuildReconciler{Recorder: rec}
	r.polls = newPollPool(ctx, func(context.Context, string, string) (string, error) { return moved, nil }, wake, 1, 1)
	stored := polledBuild("ns", "stale", "https://git.example.com/app.git")
	stored.UID, stored.Generation = "uid-1", 1
	done := metav1.NewTime(time.Now().Add(-2 * time.Minute))
	stored.Status = kilnv1.ImageBuildStatus{BuildCount: 1, Revision: strings.Repeat("a", 40), LastPolledAt: &done,
		LastBuild: &kilnv1.LastBuild{PodName: "stale-build-1", CompletionTime: &done, BuildKey: kilnv1.BuildKey{Generation: 1}}}
	reconcile := func(read *kilnv1.ImageBuild) *kilnv1.ImageBuild {
		ib := read.DeepCopy()
		r.reconcilePoll(ctx, ib, &buildState{})
		for _, fn := range afterPatch.take(ib) { // the status patch succeeded
			fn()
		}
		return ib
	}

	polling := reconcile(stored)
	g.Expect(polling.Status.LastPolledAt.Time).To(BeTemporally(">", done.Time))
	g.Eventually(wake).Should(Receive())
	for i := range 2 { // the reconcile the poll wakes, then one that reads the same stale copy
		g.Expect(reconcile(polling).Status.PolledRevision).To(Equal(moved), "read %d", i)
	}
	g.Expect(rec.Events).To(HaveLen(1))
	g.Expect(<-rec.Events).To(ContainSubstring("NewRevision"))

	fresh := polling.DeepCopy()
	fresh.Status.PolledRevision = moved
	reconcile(fresh)
	_, hasResult, _, _ := r.polls.state(types.NamespacedName{Namespace: "ns", Name: "stale"})
	g.Expect(hasResult).To(BeFalse(), "a read that shows the commit ends the result")
}
