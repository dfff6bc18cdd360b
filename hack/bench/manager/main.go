// Command manager is the benchmark of issue 5: `kiln manager`, as a separate process, against
// envtest's real kube-apiserver and etcd, with N ImageBuilds created at once.
//
//	go run ./hack/bench/manager -n 1000
//
// It measures the time until every ImageBuild has its build pod, the reconcile latency (from the
// manager's own histogram), the manager's peak RSS and CPU time, and, after it plays the kubelet
// and finishes every build pod, the time until every ImageBuild is Ready. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

const namespace = "bench"

type options struct {
	n            int
	workers      int
	maxBuilds    int
	createConc   int
	finishConc   int
	timeout      time.Duration
	sampleEvery  time.Duration
	kilnBin      string
	assets       string
	keep         bool
	profile      bool
	managerArgs  multiFlag
	podTarget    time.Duration
	rssTargetMiB float64
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var o options
	flag.IntVar(&o.n, "n", 1000, "ImageBuilds to create")
	flag.IntVar(&o.workers, "workers", 4, "the manager's --workers (ImageBuilds reconciled in parallel)")
	flag.IntVar(&o.maxBuilds, "max-concurrent-builds", 1000, "the manager's --max-concurrent-builds; must be 0 or at least -n")
	flag.IntVar(&o.createConc, "create-concurrency", 8, "parallel Create calls of the bench client")
	flag.IntVar(&o.finishConc, "finish-concurrency", 8, "parallel pod status updates of the bench client")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on a phase after this long")
	flag.DurationVar(&o.sampleEvery, "sample-interval", 100*time.Millisecond, "how often the manager's RSS and CPU time are read")
	flag.StringVar(&o.kilnBin, "kiln", "", "use this kiln binary instead of building ./cmd/kiln")
	flag.StringVar(&o.assets, "assets", "", "directory with kube-apiserver and etcd (default: $KUBEBUILDER_ASSETS, else bin/k8s-v*/)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (manager log, samples.csv)")
	flag.BoolVar(&o.profile, "profile", false, "run the manager under hack/bench/manager/kilnpprof and print CPU and mutex profiles per phase (RSS/CPU figures then include profiling overhead)")
	flag.Var(&o.managerArgs, "manager-arg", "extra flag for `kiln manager` (repeatable), e.g. -manager-arg=--zap-log-level=error")
	flag.DurationVar(&o.podTarget, "pods-target", 60*time.Second, "target for the time until all build pods exist")
	flag.Float64Var(&o.rssTargetMiB, "rss-target-mib", 200, "target for the manager's peak RSS, MiB")
	flag.Parse()
	if o.maxBuilds != 0 && o.maxBuilds < o.n {
		fmt.Fprintf(os.Stderr, "-max-concurrent-builds (%d) is below -n (%d): not every ImageBuild would get a pod\n", o.maxBuilds, o.n)
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zap.Options{}.Level)))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// repoRoot walks up from the working directory to kiln's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/kiln-dev/kiln\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run this from inside the kiln repository (no go.mod of github.com/kiln-dev/kiln above the working directory)")
		}
		dir = parent
	}
}

func findAssets(root, flagValue string) (string, error) {
	dir := flagValue
	if dir == "" {
		dir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if dir == "" {
		matches, _ := filepath.Glob(filepath.Join(root, "bin", "k8s-v*", "kube-apiserver"))
		sort.Strings(matches)
		if len(matches) > 0 {
			dir = filepath.Dir(matches[len(matches)-1])
		}
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("no %s in %q: run `make envtest-bins` (or set -assets / KUBEBUILDER_ASSETS)", b, dir)
		}
	}
	return dir, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// managerProc is the running `kiln manager`.
type managerProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

func (m *managerProc) stop() {
	select {
	case <-m.exited:
		return
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(20 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
}

func (m *managerProc) signal(s os.Signal) { _ = m.cmd.Process.Signal(s) }

func waitReady(ctx context.Context, m *managerProc, url string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-m.exited:
			return fmt.Errorf("the manager exited before it was ready: %w", m.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200 within 2m", url)
}

// procCPU reads the CPU seconds of the named processes (missing ones read 0).
func procCPU(pids map[string]int) map[string]float64 {
	out := map[string]float64{}
	for name, pid := range pids {
		v, _ := cpuSeconds(pid)
		out[name] = v
	}
	return out
}

// checkpoint is what is read at a phase boundary.
type checkpoint struct {
	at      time.Time
	metrics *scrape
	api     *scrape            // the kube-apiserver's own metrics
	cpu     map[string]float64 // by process: manager, kube-apiserver, etcd, bench
}

// bench is one run of the benchmark: the processes it started and what it reads them with.
type bench struct {
	o          options
	root, work string
	bin        string       // the kiln binary the manager runs
	cfg        *rest.Config // the bench's own client config
	c          client.Client
	informers  cache.Cache
	tr         *tracker
	mgr        *managerProc
	probeURL   string
	metricsURL string
	pids       map[string]int // by process: manager, kube-apiserver, etcd, bench
	smp        *sampler
	names      []string // the ImageBuilds
}

func run(ctx context.Context, o options) (retErr error) {
	b := &bench{o: o, tr: newTracker()}
	assets, err := b.prepare()
	if err != nil {
		return err
	}
	defer func() {
		if retErr == nil && !o.keep && !o.profile {
			_ = os.RemoveAll(b.work)
			return
		}
		logf("work directory kept: %s", b.work)
	}()

	// 1. The kiln binary.
	if err := b.buildKiln(ctx); err != nil {
		return err
	}
	// 2. envtest: a real kube-apiserver and etcd, with the CRD.
	stopCluster, kubeconfigPath, err := b.startCluster(ctx, assets)
	if err != nil {
		return err
	}
	defer stopCluster()
	// 3. The manager, as its own process.
	if err := b.startManager(kubeconfigPath); err != nil {
		return err
	}
	defer func() {
		logf("stopping the manager")
		b.mgr.stop()
	}()
	if err := waitReady(ctx, b.mgr, b.probeURL); err != nil {
		return err
	}
	pid := b.mgr.cmd.Process.Pid
	b.pids["manager"] = pid
	b.smp = newSampler(pid, o.sampleEvery, b.tr.counts)
	go b.smp.run()
	defer b.smp.halt()
	if err := b.waitController(ctx); err != nil {
		return err
	}
	cp0, err := b.mark(ctx)
	if err != nil {
		return err
	}
	logf("manager ready (pid %d, %.1f MiB RSS, %.2f s CPU at start)", pid, float64(b.smp.maxSampledRSS())/1024, cp0.cpu["manager"])

	// 4. Phase 1: create N ImageBuilds; wait until every one has its build pod.
	r := report{o: o, tr: b.tr, cp: []checkpoint{cp0}}
	b.profilePhase(syscall.SIGUSR1) // cpu-1.pprof: phase 1
	if err := b.phase1(ctx, &r); err != nil {
		return err
	}
	// 5. Phase 2: play the kubelet; wait until every ImageBuild is Ready.
	b.profilePhase(syscall.SIGUSR1) // cpu-2.pprof: phase 2
	if err := b.phase2(ctx, &r); err != nil {
		return err
	}
	if err := b.finish(&r); err != nil {
		return err
	}

	// 6. The report.
	r.print(os.Stdout)
	if o.profile {
		printProfiles(ctx, b.bin, b.work)
	}
	return nil
}

// profilePhase signals the kilnpprof manager, with -profile, to start the next profile.
func (b *bench) profilePhase(sig os.Signal) {
	if b.o.profile {
		b.mgr.signal(sig)
	}
}

// finish reads the manager's peak memory, stops the sampler and writes its samples, and with
// -profile has the manager write its last profiles.
func (b *bench) finish(r *report) error {
	var err error
	if _, r.hwmKiB, err = memKiB(b.mgr.cmd.Process.Pid); err != nil {
		return fmt.Errorf("reading the manager's VmHWM: %w", err)
	}
	b.smp.halt()
	r.maxSampledKiB = b.smp.maxSampledRSS()
	if err := b.smp.writeCSV(filepath.Join(b.work, "samples.csv")); err != nil {
		logf("writing samples.csv: %v", err)
	}
	if b.o.profile {
		b.mgr.signal(syscall.SIGUSR2) // stops cpu-2, writes heap-2 and mutex-2
		time.Sleep(2 * time.Second)
	}
	return nil
}

// startCluster starts envtest with kiln's CRD and connects to it (connect); stop stops it. The
// processes it starts are recorded in b.pids.
func (b *bench) startCluster(ctx context.Context, assets string) (stop func(), kubeconfigPath string, err error) {
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(b.root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	logf("starting envtest")
	cfg, err := env.Start()
	if err != nil {
		return nil, "", fmt.Errorf("starting envtest: %w", err)
	}
	stopEnv := func() {
		logf("stopping envtest")
		if err := env.Stop(); err != nil {
			logf("stopping envtest: %v", err)
		}
	}
	b.pids = childrenNamed(os.Getpid(), "kube-apiserver", "etcd")
	b.pids["bench"] = os.Getpid()
	if kubeconfigPath, err = b.connect(ctx, env, cfg); err != nil {
		stopEnv()
		return nil, "", err
	}
	stopInformers, err := b.watch(ctx)
	if err != nil {
		stopEnv()
		return nil, "", err
	}
	return func() { stopInformers(); stopEnv() }, kubeconfigPath, nil
}

// prepare finds the repository and the envtest binaries and makes the work directory; it
// returns the envtest binaries' directory.
func (b *bench) prepare() (assets string, err error) {
	if b.root, err = repoRoot(); err != nil {
		return "", err
	}
	if assets, err = findAssets(b.root, b.o.assets); err != nil {
		return "", err
	}
	if b.work, err = os.MkdirTemp("", "kiln-bench-manager-"); err != nil {
		return "", err
	}
	load, _ := os.ReadFile("/proc/loadavg")
	logf("repo %s; envtest binaries %s; work directory %s; %d CPUs online; load average %s", b.root, assets, b.work, goruntime.NumCPU(), strings.TrimSpace(string(load)))
	return assets, nil
}

// buildKiln builds ./cmd/kiln (or, with -profile, kilnpprof) into the work directory, unless
// -kiln names a binary.
func (b *bench) buildKiln(ctx context.Context) error {
	b.bin = b.o.kilnBin
	if b.bin != "" && !b.o.profile {
		return nil
	}
	pkg, name := "./cmd/kiln", "kiln"
	if b.o.profile {
		pkg, name = "./hack/bench/manager/kilnpprof", "kilnpprof"
	}
	b.bin = filepath.Join(b.work, name)
	logf("go build -o %s %s", b.bin, pkg)
	build := exec.CommandContext(ctx, "go", "build", "-o", b.bin, pkg)
	build.Dir, build.Stdout, build.Stderr = b.root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building %s: %w", pkg, err)
	}
	return nil
}

// connect writes the manager's kubeconfig (a user of system:masters) into the work directory,
// makes the bench's own client, and creates the namespace and the source ConfigMap; it returns
// the kubeconfig's path.
func (b *bench) connect(ctx context.Context, env *envtest.Environment, cfg *rest.Config) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "kiln-bench-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("adding the manager's user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	kubeconfigPath := filepath.Join(b.work, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return "", err
	}

	// The bench's own client: no client-side rate limit, like the manager's (controller-runtime's
	// GetConfig sets QPS -1).
	b.cfg = rest.CopyConfig(cfg)
	b.cfg.QPS, b.cfg.Burst = -1, 0
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = kilnv1.AddToScheme(scheme)
	if b.c, err = client.New(b.cfg, client.Options{Scheme: scheme}); err != nil {
		return "", err
	}
	if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return "", fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	if err := b.c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "src"},
		Data: map[string]string{"Dockerfile": "FROM scratch\n"}}); err != nil {
		return "", fmt.Errorf("creating the source ConfigMap: %w", err)
	}
	return kubeconfigPath, nil
}

// watch starts the bench's informers on pods and ImageBuilds in the namespace, feeding the
// tracker, and waits until they are in sync; stop stops them.
func (b *bench) watch(ctx context.Context) (stop func(), err error) {
	b.informers, err = cache.New(b.cfg, cache.Options{Scheme: b.c.Scheme(), DefaultNamespaces: map[string]cache.Config{namespace: {}}})
	if err != nil {
		return nil, err
	}
	for _, w := range []struct {
		obj client.Object
		on  func(any)
	}{{&corev1.Pod{}, b.tr.onPod}, {&kilnv1.ImageBuild{}, b.tr.onImageBuild}} {
		inf, err := b.informers.GetInformer(ctx, w.obj)
		if err != nil {
			return nil, err
		}
		if _, err := inf.AddEventHandler(b.tr.handlers(w.on)); err != nil {
			return nil, err
		}
	}
	infCtx, stopInformers := context.WithCancel(ctx)
	go func() { _ = b.informers.Start(infCtx) }()
	if !b.informers.WaitForCacheSync(ctx) {
		stopInformers()
		return nil, errors.New("the bench's informers did not sync")
	}
	return stopInformers, nil
}

// startManager starts `kiln manager` with the manager's log in the work directory.
func (b *bench) startManager(kubeconfigPath string) error {
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	probeAddr, err := freeAddr()
	if err != nil {
		return err
	}
	b.probeURL, b.metricsURL = "http://"+probeAddr+"/readyz", "http://"+metricsAddr+"/metrics"
	args := []string{"manager",
		fmt.Sprintf("--max-concurrent-builds=%d", b.o.maxBuilds),
		"--metrics-bind-address=" + metricsAddr,
		"--health-probe-bind-address=" + probeAddr,
		fmt.Sprintf("--workers=%d", b.o.workers),
	}
	// The bench scrapes plain HTTP; a kiln that serves metrics over HTTPS by default says so in
	// its flags (an older -kiln binary has no such flag).
	if help, _ := exec.Command(b.bin, "manager", "-h").CombinedOutput(); strings.Contains(string(help), "-metrics-secure") {
		args = append(args, "--metrics-secure=false")
	}
	args = append(args, b.o.managerArgs...)
	logPath := filepath.Join(b.work, "manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(b.bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigPath, "KILN_BENCH_PROFILE_DIR="+b.work)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf("%s %s (KUBECONFIG=%s; log %s)", b.bin, strings.Join(args, " "), kubeconfigPath, logPath)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting the manager: %w", err)
	}
	b.mgr = &managerProc{cmd: cmd, exited: make(chan struct{})}
	go func() { b.mgr.err = cmd.Wait(); logFile.Close(); close(b.mgr.exited) }()
	return nil
}

// waitController waits until the manager's controller is up (its workers gauge is served), so
// that the clock starts with it.
func (b *bench) waitController(ctx context.Context) error {
	for {
		s, err := scrapeMetrics(ctx, b.metricsURL)
		if err == nil && len(s.sumBy("controller_runtime_active_workers", "", map[string]string{"controller": "imagebuild"})) > 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mark reads a checkpoint: the processes' CPU time, the manager's and the API server's metrics.
func (b *bench) mark(ctx context.Context) (checkpoint, error) {
	cp := checkpoint{at: time.Now(), cpu: procCPU(b.pids)}
	s, err := scrapeMetrics(ctx, b.metricsURL)
	cp.metrics = s
	if err != nil {
		return cp, err
	}
	if cp.api, err = scrapeAPIServer(ctx, b.cfg); err != nil {
		logf("reading the API server's metrics: %v", err)
	}
	return cp, nil
}

// phase1 creates N ImageBuilds and waits until every one has its build pod, and then until
// every status names it.
func (b *bench) phase1(ctx context.Context, r *report) error {
	o := b.o
	b.names = make([]string, o.n)
	for i := range b.names {
		b.names[i] = fmt.Sprintf("app-%04d", i)
	}
	logf("phase 1: creating %d ImageBuilds (%d in parallel)", o.n, o.createConc)
	r.t0 = time.Now()
	createErr := parallel(ctx, b.names, o.createConc, func(ctx context.Context, name string) error {
		ib := &kilnv1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: kilnv1.ImageBuildSpec{
				Source: kilnv1.Source{ConfigMap: &kilnv1.ConfigMapSource{Name: "src"}},
				Output: kilnv1.Output{Image: "registry.example.com/bench/app"},
			},
		}
		at := time.Now()
		if err := b.c.Create(ctx, ib); err != nil {
			return fmt.Errorf("creating ImageBuild %s: %w", name, err)
		}
		b.tr.created(name, at)
		return nil
	})
	r.createdAll = time.Now()
	if createErr != nil {
		return createErr
	}
	logf("created %d ImageBuilds in %.2f s", o.n, r.createdAll.Sub(r.t0).Seconds())
	var err error
	if r.podsDone, err = b.reach(ctx, r, "every ImageBuild has its build pod", b.tr.podAt, func() int {
		p, _ := b.tr.counts()
		return p
	}); err != nil {
		return err
	}
	logf("all %d build pods exist %.2f s after the first create", o.n, r.podsDone.Sub(r.t0).Seconds())

	// The manager records each pod in the ImageBuild's status after creating it: wait for that
	// too, so that finishing pods does not race with the tail of phase 1.
	r.statusDone, err = b.reach(ctx, r, "every status names its build pod", b.tr.statusAt, b.tr.statusCount)
	return err
}

// phase2 plays the kubelet: every build pod succeeded and the runner wrote its result; it waits
// until every ImageBuild is Ready.
func (b *bench) phase2(ctx context.Context, r *report) error {
	o := b.o
	result, err := benchResult()
	if err != nil {
		return err
	}
	logf("phase 2: finishing %d build pods (%d in parallel)", o.n, o.finishConc)
	r.t2 = time.Now()
	if err := parallel(ctx, b.names, o.finishConc, func(ctx context.Context, name string) error {
		return finishPod(ctx, b.c, b.informers, b.tr.pod(name), result, func(at time.Time) { b.tr.finished(name, at) })
	}); err != nil {
		return err
	}
	r.finishedAll = time.Now()
	logf("set %d pod statuses in %.2f s", o.n, r.finishedAll.Sub(r.t2).Seconds())
	if r.readyDone, err = b.reach(ctx, r, "every ImageBuild is Ready", b.tr.readyAt, func() int {
		_, ready := b.tr.counts()
		return ready
	}); err != nil {
		return err
	}
	logf("all %d ImageBuilds Ready %.2f s after the first pod status update", o.n, r.readyDone.Sub(r.t2).Seconds())
	return nil
}

// reach waits until done() counts every ImageBuild, adds a checkpoint to the report, and
// returns the latest time in seen (the tracker's record of when each ImageBuild got there).
func (b *bench) reach(ctx context.Context, r *report, what string, seen map[string]time.Time, done func() int) (time.Time, error) {
	if err := waitFor(ctx, b.tr, b.o.timeout, what, func() (int, int) { return done(), b.o.n }); err != nil {
		return time.Time{}, err
	}
	cp, err := b.mark(ctx)
	if err != nil {
		return time.Time{}, err
	}
	r.cp = append(r.cp, cp)
	b.tr.mu.Lock()
	defer b.tr.mu.Unlock()
	return last(seen), nil
}

// parallel runs f on every item with at most conc at once; the first error cancels the rest.
func parallel(ctx context.Context, items []string, conc int, f func(context.Context, string) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(conc, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(items) || ctx.Err() != nil {
					return
				}
				if err := f(ctx, items[i]); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// waitFor polls progress until done == want, the timeout, or an ImageBuild fails.
func waitFor(ctx context.Context, tr *tracker, timeout time.Duration, what string, progress func() (done, want int)) error {
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for {
		done, want := progress()
		if done >= want {
			return nil
		}
		if name, msg, n := tr.firstFailure(); n > 0 {
			return fmt.Errorf("%d ImageBuilds failed, e.g. %s: %s", n, name, msg)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting until %s: %d of %d", timeout, what, done, want)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Since(lastLog) > 5*time.Second {
			logf("  waiting until %s: %d of %d", what, done, want)
			lastLog = time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchResult is a successful runner result, as in the controller tests' okResult.
func benchResult() (string, error) {
	const digest = "sha256:4a5b0e1b9d0f7c2e3a1d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b"
	res := contract.Result{
		Digest: digest,
		Image:  "registry.example.com/bench/app@" + digest,
		Tags:   []string{"latest"}, Pushed: true,
		Platforms: []contract.Platform{{Platform: "linux/amd64", CompressedBytes: 1_234_567, UncompressedBytes: 2_500_000, Layers: 1,
			LargestLayers: []contract.Layer{{Index: 0, CompressedBytes: 1_234_000, CreatedBy: "COPY app /app", Line: 2}}}},
		Budget: &contract.Budget{Enforcement: kilnv1.EnforcementEnforce,
			Checks: []contract.Check{{Limit: "maxImageSize", Platform: "linux/amd64", LimitValue: 5 << 20, Actual: 1_234_567}}},
		CachedSteps: 3, TotalSteps: 7,
	}
	b, err := res.Encode()
	return string(b), err
}

// finishPod plays the kubelet as controllers/imagebuild_controller_test.go's finishPod does: the
// pod Succeeded and the runner container terminated with code 0 and the result as its message.
func finishPod(ctx context.Context, c client.Client, r client.Reader, name, msg string, done func(time.Time)) error {
	if name == "" {
		return errors.New("no build pod known")
	}
	key := types.NamespacedName{Namespace: namespace, Name: name}
	pod := &corev1.Pod{}
	if err := r.Get(ctx, key, pod); err != nil {
		return fmt.Errorf("reading pod %s: %w", name, err)
	}
	for attempt := 0; ; attempt++ {
		pod = pod.DeepCopy()
		start := metav1.NewTime(time.Now().Add(-42 * time.Second))
		pod.Status.Phase = corev1.PodSucceeded
		pod.Status.StartTime = &start
		image := ""
		for _, ct := range pod.Spec.Containers {
			if ct.Name == "runner" {
				image = ct.Image
			}
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: "runner", Image: image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Message: msg, StartedAt: start, FinishedAt: metav1.Now(), Reason: "Completed",
			}},
		}}
		err := c.Status().Update(ctx, pod)
		if err == nil {
			done(time.Now())
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return fmt.Errorf("setting the status of pod %s: %w", name, err)
		}
		pod = &corev1.Pod{}
		if err := c.Get(ctx, key, pod); err != nil {
			return fmt.Errorf("reading pod %s: %w", name, err)
		}
	}
}

// report prints the results.
type report struct {
	o                                    options
	t0, createdAll, podsDone, statusDone time.Time
	t2, finishedAll, readyDone           time.Time
	hwmKiB, maxSampledKiB                int64
	cp                                   []checkpoint // start, all pods, all statuses, all Ready
	tr                                   *tracker
}

// reconcileWant selects the ImageBuild controller's series.
var reconcileWant = map[string]string{"controller": "imagebuild"}

func (r report) print(out *os.File) {
	r.printSummary(out)
	r.printDetails(out)
	start, settled, end := r.cp[0], r.cp[2], r.cp[3]
	r.printAPIRequests(out, "\nkube-apiserver requests, phase 1 (first create until every status names its pod): count, mean server-side latency", start, settled)
	r.printAPIRequests(out, "kube-apiserver requests, phase 2 (finish until every ImageBuild is Ready)", settled, end)
	fmt.Fprintln(out, "\nReconcile quantiles are interpolated inside the manager's histogram buckets (as PromQL histogram_quantile does).")
	fmt.Fprintln(out, "Workqueue buckets are decades (1e-8 s .. 1e3 s): only the bucket holding the quantile is shown; means are exact (sum/count).")
	fmt.Fprintln(out, "Per-ImageBuild latencies are exact, from the bench's own watches.")
}

// phases returns the ImageBuild controller's histogram name over the whole run, phase 1 (until
// every status names its pod) and phase 2; ok is false when the manager does not serve it.
func (r report) phases(name string) (run, p1, p2 histogram, ok bool) {
	start, settled, end := r.cp[0], r.cp[2], r.cp[3]
	all, ok := end.metrics.histogram(name, reconcileWant)
	h0, _ := start.metrics.histogram(name, reconcileWant)
	h1, _ := settled.metrics.histogram(name, reconcileWant)
	return all.sub(h0), h1.sub(h0), all.sub(h1), ok
}

// printSummary prints the headline figures against their targets.
func (r report) printSummary(out *os.File) {
	recRun, _, _, _ := r.phases("controller_runtime_reconcile_time_seconds")
	qRun, _, _, qOK := r.phases("workqueue_queue_duration_seconds")
	podsSec := r.podsDone.Sub(r.t0).Seconds()
	readySec := r.readyDone.Sub(r.t2).Seconds()
	hwmMiB := float64(r.hwmKiB) / 1024
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}

	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintf(w, "metric\tvalue\ttarget\t\n")
	fmt.Fprintf(w, "ImageBuilds\t%d\t\t\n", r.o.n)
	fmt.Fprintf(w, "time until all build pods exist\t%.1f s\t<= %.0f s (%s)\t\n", podsSec, r.o.podTarget.Seconds(), verdict(podsSec <= r.o.podTarget.Seconds()))
	fmt.Fprintf(w, "time until all Ready after finish\t%.1f s\t\t\n", readySec)
	fmt.Fprintf(w, "reconcile p50 / p99 (bucket-interp.)\t%s / %s\t\t\n", fmtDur(recRun.quantile(0.5)), fmtDur(recRun.quantile(0.99)))
	if qOK {
		fmt.Fprintf(w, "workqueue wait p50 / p99 (bucket; mean)\t%s / %s; %s\t\t\n", qRun.bucketOf(0.5), qRun.bucketOf(0.99), fmtDur(qRun.mean()))
	}
	fmt.Fprintf(w, "manager peak RSS (VmHWM)\t%.0f MiB\t< %.0f MiB (%s)\t\n", hwmMiB, r.o.rssTargetMiB, verdict(hwmMiB < r.o.rssTargetMiB))
	fmt.Fprintf(w, "manager CPU seconds\t%.1f s\t\t\n", r.cp[3].cpu["manager"])
	_ = w.Flush()
}

// printDetails prints the figures behind the summary: per phase, per ImageBuild, per process.
func (r report) printDetails(out *os.File) {
	start, pods, settled, end := r.cp[0], r.cp[1], r.cp[2], r.cp[3]
	_, recP1, recP2, _ := r.phases("controller_runtime_reconcile_time_seconds")
	_, qP1, qP2, qOK := r.phases("workqueue_queue_duration_seconds")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "details")
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintf(w, "manager flags\t--max-concurrent-builds=%d --workers=%d %s\t\n", r.o.maxBuilds, r.o.workers, r.o.managerArgs.String())
	fmt.Fprintf(w, "machine\t%d CPUs online, shared with other work (load avg at end: %s)\t\n", goruntime.NumCPU(), loadAvg())
	fmt.Fprintf(w, "create %d ImageBuilds (bench client, %d parallel)\t%.2f s\t\n", r.o.n, r.o.createConc, r.createdAll.Sub(r.t0).Seconds())
	fmt.Fprintf(w, "first create -> all statuses name their pod\t%.2f s\t\n", r.statusDone.Sub(r.t0).Seconds())
	fmt.Fprintf(w, "set %d pod statuses (bench client, %d parallel)\t%.2f s\t\n", r.o.n, r.o.finishConc, r.finishedAll.Sub(r.t2).Seconds())
	r.tr.mu.Lock()
	c2p := latencies(r.tr.createdAt, r.tr.podAt)
	f2r := latencies(r.tr.finishAt, r.tr.readyAt)
	extra := r.tr.extraPods
	r.tr.mu.Unlock()
	fmt.Fprintf(w, "per ImageBuild: create -> pod seen p50 / p99 / max (exact)\t%s / %s / %s\t\n", fmtDur(exactQuantile(c2p, .5)), fmtDur(exactQuantile(c2p, .99)), fmtDur(exactQuantile(c2p, 1)))
	fmt.Fprintf(w, "per ImageBuild: pod finished -> Ready seen p50 / p99 / max (exact)\t%s / %s / %s\t\n", fmtDur(exactQuantile(f2r, .5)), fmtDur(exactQuantile(f2r, .99)), fmtDur(exactQuantile(f2r, 1)))
	fmt.Fprintf(w, "build pods beyond one per ImageBuild\t%d\t\n", extra)
	fmt.Fprintf(w, "reconciles phase 1 (create..statuses) by result\t%s\t\n", formatCounts(deltaBy(settled.metrics, start.metrics, "controller_runtime_reconcile_total", "result", reconcileWant)))
	fmt.Fprintf(w, "reconciles phase 2 (finish..Ready) by result\t%s\t\n", formatCounts(deltaBy(end.metrics, settled.metrics, "controller_runtime_reconcile_total", "result", reconcileWant)))
	fmt.Fprintf(w, "reconcile p50 / p99 / mean, phase 1\t%s / %s / %s\t\n", fmtDur(recP1.quantile(.5)), fmtDur(recP1.quantile(.99)), fmtDur(recP1.mean()))
	fmt.Fprintf(w, "reconcile p50 / p99 / mean, phase 2\t%s / %s / %s\t\n", fmtDur(recP2.quantile(.5)), fmtDur(recP2.quantile(.99)), fmtDur(recP2.mean()))
	fmt.Fprintf(w, "reconcile time summed (all workers)\tphase 1 %.1f s, phase 2 %.1f s\t\n", recP1.Sum, recP2.Sum)
	if qOK {
		fmt.Fprintf(w, "workqueue wait p50 / p99 (bucket) / mean, phase 1\t%s / %s / %s\t\n", qP1.bucketOf(.5), qP1.bucketOf(.99), fmtDur(qP1.mean()))
		fmt.Fprintf(w, "workqueue wait p50 / p99 (bucket) / mean, phase 2\t%s / %s / %s\t\n", qP2.bucketOf(.5), qP2.bucketOf(.99), fmtDur(qP2.mean()))
	}
	fmt.Fprintf(w, "manager API requests phase 1 by method\t%s\t\n", formatCounts(deltaBy(settled.metrics, start.metrics, "rest_client_requests_total", "method", nil)))
	fmt.Fprintf(w, "manager API requests phase 2 by method\t%s\t\n", formatCounts(deltaBy(end.metrics, settled.metrics, "rest_client_requests_total", "method", nil)))
	fmt.Fprintf(w, "manager API responses (whole run) by code\t%s\t\n", formatCounts(deltaBy(end.metrics, start.metrics, "rest_client_requests_total", "code", nil)))
	fmt.Fprintf(w, "manager RSS: max sampled VmRSS / VmHWM\t%.0f MiB / %.0f MiB\t\n", float64(r.maxSampledKiB)/1024, float64(r.hwmKiB)/1024)
	for _, p := range []string{"manager", "kube-apiserver", "etcd", "bench"} {
		if _, ok := end.cpu[p]; !ok {
			continue
		}
		fmt.Fprintf(w, "CPU seconds %s: startup / phase 1 (to all pods) / settle / phase 2 / total\t%.1f / %.1f / %.1f / %.1f / %.1f\t\n", p,
			start.cpu[p], pods.cpu[p]-start.cpu[p], settled.cpu[p]-pods.cpu[p], end.cpu[p]-settled.cpu[p], end.cpu[p])
	}
	_ = w.Flush()
}

// printAPIRequests prints, under title, the kube-apiserver's requests between two checkpoints
// that came at least once for every other ImageBuild: count and mean server-side latency.
func (r report) printAPIRequests(out *os.File, title string, from, to checkpoint) {
	fmt.Fprintln(out, title)
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	for _, st := range histDelta(to.api, from.api, "apiserver_request_duration_seconds", []string{"verb", "resource", "subresource"}) {
		if st.Count >= float64(r.o.n)/2 {
			fmt.Fprintf(w, "  %s\t%.0f\t%s\t\n", st.Key, st.Count, fmtDur(st.Sum/st.Count))
		}
	}
	_ = w.Flush()
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// printProfiles prints the top of each profile the kilnpprof manager wrote.
func printProfiles(ctx context.Context, bin, work string) {
	for _, p := range []struct{ file, what string }{
		{"cpu-1.pprof", "CPU, phase 1 (create until every status names its pod)"},
		{"cpu-2.pprof", "CPU, phase 2 (finish until every ImageBuild is Ready)"},
		{"mutex-2.pprof", "mutex contention, whole run"},
	} {
		path := filepath.Join(work, p.file)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		fmt.Printf("\n== %s: %s\n", p.what, path)
		for _, mode := range []string{"-top", "-top -cum"} {
			args := append([]string{"tool", "pprof"}, strings.Fields(mode)...)
			args = append(args, "-nodecount=25", bin, path)
			out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
			if err != nil {
				fmt.Printf("go tool pprof: %v\n", err)
			}
			fmt.Print(string(out))
		}
	}
}
