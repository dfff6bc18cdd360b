package controllers

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/gitremote"
)

// Polls run off the reconcile workers. A reconcile that finds a poll due records
// status.lastPolledAt and, once that status patch has succeeded, submits the poll to the
// pollPool; the pool runs at most PollWorkers polls at once and PollsPerHost per git host, then
// keeps the result and wakes the ImageBuild through the controller's channel source. The next
// reconcile applies the result to the status (applyPoll); the pool forgets it only once a
// reconcile reads it back from the cache, so neither a failed patch nor a stale read loses it.

const (
	defaultPollWorkers  = 4
	defaultPollsPerHost = 2
)

// setupPolls makes the poll pool; it stops with the manager.
func (r *ImageBuildReconciler) setupPolls(mgr ctrl.Manager) error {
	poller := r.Poller
	if poller == nil {
		poller = gitremote.New(gitremote.Options{})
	}
	workers, perHost := r.PollWorkers, r.PollsPerHost
	if workers <= 0 {
		workers = defaultPollWorkers
	}
	if perHost <= 0 {
		perHost = defaultPollsPerHost
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.polls = newPollPool(ctx, poller.Resolve, r.wake, workers, perHost)
	return mgr.Add(manager.RunnableFunc(func(stop context.Context) error {
		<-stop.Done()
		cancel()
		return nil
	}))
}

// pollJob is one look at a git source, and what it was started for: a result applies only to
// the same ImageBuild (UID), generation and build count, with the same URL and revision.
type pollJob struct {
	key        types.NamespacedName
	uid        types.UID
	generation int64
	buildCount int64
	url, rev   string
}

func newPollJob(ib *kilnv1.ImageBuild) pollJob {
	g := ib.Spec.Source.Git
	return pollJob{key: types.NamespacedName{Namespace: ib.Namespace, Name: ib.Name}, uid: ib.UID,
		generation: ib.Generation, buildCount: ib.Status.BuildCount, url: g.URL, rev: g.Revision}
}

// matches reports whether the job was started for ib as it is now.
func (j pollJob) matches(ib *kilnv1.ImageBuild) bool {
	g := ib.Spec.Source.Git
	return g != nil && j == pollJob{key: j.key, uid: ib.UID, generation: ib.Generation,
		buildCount: ib.Status.BuildCount, url: g.URL, rev: g.Revision}
}

// host is the git host a job's URL names, the unit of the per-host limit.
func (j pollJob) host() string {
	if u, err := url.Parse(j.url); err == nil {
		return strings.ToLower(u.Hostname())
	}
	return ""
}

// pollResult is a finished poll: the commit found, or why none was; announced once its
// NewRevision Event is out.
type pollResult struct {
	job       pollJob
	seq       uint64
	commit    string
	err       error
	announced bool
}

type pollResolver func(ctx context.Context, url, rev string) (string, error)

// pollPool runs polls in goroutines, bounded in all and per host. An ImageBuild has at most one
// poll running and one result waiting, so what the pool holds is bounded by the ImageBuilds.
type pollPool struct {
	resolve pollResolver
	wake    chan<- event.GenericEvent
	ctx     context.Context
	slots   chan struct{}
	perHost int

	mu      sync.Mutex
	seq     uint64
	hosts   map[string]*hostSlots
	running map[types.NamespacedName]bool
	started map[types.NamespacedName]time.Time
	results map[types.NamespacedName]pollResult
}

// hostSlots limits the polls of one host; users counts the polls running or waiting for it.
type hostSlots struct {
	slots chan struct{}
	users int
}

func newPollPool(ctx context.Context, resolve pollResolver, wake chan<- event.GenericEvent, workers, perHost int) *pollPool {
	return &pollPool{
		resolve: resolve, wake: wake, ctx: ctx,
		slots:   make(chan struct{}, max(workers, 1)),
		perHost: max(perHost, 1),
		hosts:   map[string]*hostSlots{},
		running: map[types.NamespacedName]bool{},
		started: map[types.NamespacedName]time.Time{},
		results: map[types.NamespacedName]pollResult{},
	}
}

// submit starts job, unless a poll of the same ImageBuild is running.
func (p *pollPool) submit(job pollJob, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running[job.key] {
		return
	}
	p.running[job.key], p.started[job.key] = true, now
	go p.run(job)
}

func (p *pollPool) run(job pollJob) {
	h := p.hostSlots(job.host())
	defer p.releaseHost(job.host())
	var commit string
	var err error
	select {
	case h.slots <- struct{}{}:
		select {
		case p.slots <- struct{}{}:
			commit, err = p.resolve(p.ctx, job.url, job.rev)
			<-p.slots
		case <-p.ctx.Done():
		}
		<-h.slots
	case <-p.ctx.Done():
	}
	if p.ctx.Err() != nil {
		p.mu.Lock()
		delete(p.running, job.key) // the manager stops: nobody waits for the result
		p.mu.Unlock()
		return
	}
	p.finish(job, commit, err)
	ib := &kilnv1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Namespace: job.key.Namespace, Name: job.key.Name}}
	select {
	case p.wake <- event.GenericEvent{Object: ib}:
	case <-p.ctx.Done():
	}
}

func (p *pollPool) finish(job pollJob, commit string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	p.results[job.key] = pollResult{job: job, seq: p.seq, commit: commit, err: err}
	delete(p.running, job.key)
}

func (p *pollPool) hostSlots(host string) *hostSlots {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hosts[host]
	if h == nil {
		h = &hostSlots{slots: make(chan struct{}, p.perHost)}
		p.hosts[host] = h
	}
	h.users++
	return h
}

func (p *pollPool) releaseHost(host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h := p.hosts[host]; h != nil {
		if h.users--; h.users == 0 {
			delete(p.hosts, host)
		}
	}
}

// state is what the pool knows of an ImageBuild's polls: a result waiting to be applied, whether
// a poll is running, and when the last one started.
func (p *pollPool) state(key types.NamespacedName) (res pollResult, hasResult, running bool, started time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	res, hasResult = p.results[key]
	return res, hasResult, p.running[key], p.started[key]
}

// done forgets the result seq, once it is in the status (or of no use).
func (p *pollPool) done(key types.NamespacedName, seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if res, ok := p.results[key]; ok && res.seq == seq {
		delete(p.results, key)
	}
}

// announced notes that the result seq has had its Event.
func (p *pollPool) announced(key types.NamespacedName, seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if res, ok := p.results[key]; ok && res.seq == seq {
		res.announced = true
		p.results[key] = res
	}
}

// forget drops what the pool keeps for an ImageBuild that is gone.
func (p *pollPool) forget(key types.NamespacedName) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.results, key)
	delete(p.started, key)
}
