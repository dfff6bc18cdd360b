// Command warm-path is the benchmark of issue 16 item 1: kiln's warm path, a rebuild of a project
// of goose's size where nothing changed, on the local cluster (hack/local-cluster) with kiln
// installed (hack/install-kiln.sh).
//
//	set -a; . .kiln/local-cluster/env; set +a
//	go run ./hack/bench/warm-path -n 10                      # kiln's supply-chain defaults
//	go run ./hack/bench/warm-path -n 10 -supply-chain=false  # provenance none, no SBOM
//
// It generates a vendored Go program (the same files for the same -seed: ~265 MiB of build
// context, most of it vendored testdata that is never compiled, plus generated packages that take
// tens of seconds to compile cold), commits it to a git repository served by `git daemon` on the
// cluster's bridge address, and builds it with an ImageBuild in a fresh namespace
// (kiln-bench-warm-<random>, deleted at the end unless -keep). The first build, on a fresh cache
// claim, is the cold build; then come -n rebuilds with no change, each started by a new
// kiln.dev/rebuild-requested-at annotation and waited for (Ready) before the next.
//
// Each rebuild is timed in phases: what this process sees through watches started before the
// annotation (the pod's first event, the pod finished, Ready: the API server's own timestamps
// have one-second granularity), what the CRI's nanosecond log timestamps say (buildkitd's first
// line and its "running server on", the runner's first and last lines), and the runner's own
// durations (its "kiln: phases:" line, else its "Built in", "SBOMs made with syft in",
// "Signed ... in" and "Pushed ... in" lines). It prints the median, min and max of each phase
// over the rebuilds, the cold build beside them, the kiln image it ran, and its flags.
//
// On the local cluster (2 cores), a run takes about 10 s to generate the project, 1.5 min for the
// cold build, and 5-7 s per rebuild: 3 minutes for -n 8. -namespace reuses a namespace kept by an
// earlier run (-keep): no new cold build; its ImageBuild takes this run's spec (one unmeasured
// build), then come the rebuilds; it is deleted at the end too, unless -keep.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

const (
	ibName   = "warm-path"
	nsPrefix = "kiln-bench-warm-"
)

type options struct {
	n           int
	supplyChain bool
	provenance  string
	sbom        string
	cacheSize   string
	namespace   string
	keep        bool
	timeout     time.Duration
	workdir     string
	gitPort     int
	generate    string
	shape       projectShape
	// registryCache adds spec.cache.registry and, after the rebuilds, times first builds on a
	// new claim with and without it.
	registryCache bool
	settle        time.Duration
}

type env struct {
	kubeconfig, registry, baseGolang, baseBusybox string
}

func main() {
	o := parseFlags()
	if o.generate != "" {
		e := env{baseGolang: cmpOr(os.Getenv("BASE_GOLANG"), "golang:1"), baseBusybox: cmpOr(os.Getenv("BASE_BUSYBOX"), "busybox:1")}
		if err := generate(o.generate, o.shape, e.baseGolang, e.baseBusybox); err != nil {
			fatal(err)
		}
		return
	}
	e, err := readEnv()
	if err != nil {
		fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, e); err != nil {
		fatal(err)
	}
}

func parseFlags() options {
	var o options
	flag.IntVar(&o.n, "n", 10, "warm rebuilds (no change) after the cold build")
	flag.BoolVar(&o.supplyChain, "supply-chain", true, "false: spec.output.provenance none and sbom false; true: -provenance and -sbom")
	flag.StringVar(&o.provenance, "provenance", "", "spec.output.provenance: max, min or none; empty leaves kiln's default")
	flag.StringVar(&o.sbom, "sbom", "", "spec.output.sbom: true or false; empty leaves kiln's default")
	flag.StringVar(&o.cacheSize, "cache-size", "10Gi", "spec.cache.size of the ImageBuild's claim")
	flag.StringVar(&o.namespace, "namespace", "", "reuse this namespace, kept by an earlier run (-keep), and its ImageBuild: no new cold build")
	flag.BoolVar(&o.keep, "keep", false, "keep the namespace (its ImageBuild, pods and cache claim) at the end; else it is deleted, a reused one too")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "give up on one build after this long")
	flag.StringVar(&o.workdir, "workdir", "", "where the project and its git repository are made (default: a temporary directory, removed at the end)")
	flag.IntVar(&o.gitPort, "git-port", 0, "git daemon's port (0: any free port)")
	flag.StringVar(&o.generate, "generate", "", "only write the project into this directory, and exit")
	flag.Uint64Var(&o.shape.seed, "seed", 16, "the generated project's seed: the same seed, the same files")
	flag.IntVar(&o.shape.packages, "packages", 120, "generated Go packages under vendor/")
	flag.IntVar(&o.shape.files, "files", 10, "files per generated package")
	flag.IntVar(&o.shape.funcs, "funcs", 12, "functions per generated file")
	flag.IntVar(&o.shape.assetMiB, "asset-mib", 250, "MiB of vendored files that are not compiled")
	flag.BoolVar(&o.registryCache, "registry-cache", false, "give the ImageBuild a registry cache (spec.cache.registry, mode max) and, after the rebuilds, time a build on a new, empty claim with it and one without it")
	flag.DurationVar(&o.settle, "settle", time.Second, "pause between a build's pod finishing and the next rebuild, so that each rebuild times itself, not the manager's handling of the last pod's end")
	flag.StringVar(&logDir, "logs", "", "keep the buildkitd and runner logs of every build in this directory")
	flag.Parse()
	o.shape.assetFile = 2 << 20
	if !o.supplyChain {
		o.provenance, o.sbom = string(kilnv1.ProvenanceNone), "false"
	}
	return o
}

func readEnv() (env, error) {
	e := env{kubeconfig: os.Getenv("KUBECONFIG"), registry: os.Getenv("REGISTRY"), baseGolang: os.Getenv("BASE_GOLANG"), baseBusybox: os.Getenv("BASE_BUSYBOX")}
	var missing []string
	for k, v := range map[string]string{"KUBECONFIG": e.kubeconfig, "REGISTRY": e.registry, "BASE_GOLANG": e.baseGolang, "BASE_BUSYBOX": e.baseBusybox} {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return e, fmt.Errorf("%s not set: run `set -a; . .kiln/local-cluster/env; set +a` first (hack/local-cluster makes it)", strings.Join(missing, ", "))
	}
	return e, nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "warm-path:", err)
	os.Exit(1)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type clients struct {
	c  client.WithWatch
	cs kubernetes.Interface
}

func newClients(kubeconfig string) (clients, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return clients{}, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return clients{}, err
	}
	if err := kilnv1.AddToScheme(scheme); err != nil {
		return clients{}, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return clients{}, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	return clients{c: c, cs: cs}, err
}

func run(ctx context.Context, o options, e env) error {
	cl, err := newClients(e.kubeconfig)
	if err != nil {
		return err
	}
	kiln, err := kilnInfo(ctx, cl)
	if err != nil {
		return err
	}
	src, err := serveProject(o, e)
	if err != nil {
		return err
	}
	defer src.close()
	ns, created, err := namespace(ctx, cl.c, o.namespace)
	if err != nil {
		return err
	}
	if !o.keep {
		defer deleteNamespace(cl.c, ns)
	} else {
		defer fmt.Printf("Kept namespace %s (kubectl delete namespace %s when done)\n", ns, ns)
	}
	obs := newObserver()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := obs.start(wctx, cl.c, ns, ibName); err != nil {
		return err
	}
	b := &bench{o: o, e: e, cl: cl, obs: obs, ns: ns, gitURL: "git://" + src.daemon.addr + "/app.git", commit: src.commit}
	cold, err := b.first(ctx, created)
	if err != nil {
		return err
	}
	var warm []sample
	for i := range o.n {
		s, err := b.rebuild(ctx, i+1)
		if err != nil {
			report(os.Stdout, o, kiln, src, cold, warm, nil)
			return err
		}
		warm = append(warm, s)
	}
	var fresh []freshClaim
	if o.registryCache {
		for _, withCache := range []bool{true, false} {
			f, err := b.onNewClaim(ctx, withCache)
			if err != nil {
				report(os.Stdout, o, kiln, src, cold, warm, fresh)
				return err
			}
			fresh = append(fresh, f)
		}
	}
	report(os.Stdout, o, kiln, src, cold, warm, fresh)
	return nil
}

// kilnInfo names the kiln manager the cluster runs: the deployment's image and the digest its
// pods run.
func kilnInfo(ctx context.Context, cl clients) (string, error) {
	d, err := cl.cs.AppsV1().Deployments("kiln-system").Get(ctx, "kiln", metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("kiln is not installed (kubectl -n kiln-system get deploy kiln; hack/install-kiln.sh installs it): %w", err)
	}
	info := d.Spec.Template.Spec.Containers[0].Image
	sel := metav1.FormatLabelSelector(d.Spec.Selector)
	pods, err := cl.cs.CoreV1().Pods("kiln-system").List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		for _, s := range p.Status.ContainerStatuses {
			if s.Name == d.Spec.Template.Spec.Containers[0].Name && s.ImageID != "" {
				info += " (pod " + p.Name + " runs " + s.ImageID + ")"
			}
		}
	}
	return info, nil
}

// source is the generated project, committed and served.
type source struct {
	dir, commit string
	size        int64
	daemon      *gitDaemon
	cleanup     func()
}

func (s *source) close() {
	s.daemon.stop()
	s.cleanup()
}

func serveProject(o options, e env) (*source, error) {
	work, cleanup := o.workdir, func() {}
	if work == "" {
		d, err := os.MkdirTemp("", "kiln-warm-path-")
		if err != nil {
			return nil, err
		}
		work, cleanup = d, func() { os.RemoveAll(d) }
	}
	s := &source{dir: filepath.Join(work, "app"), cleanup: cleanup}
	base := filepath.Join(work, "git")
	fail := func(err error) (*source, error) { cleanup(); return nil, err }
	if err := os.RemoveAll(s.dir); err != nil {
		return fail(err)
	}
	if err := os.RemoveAll(base); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return fail(err)
	}
	start := time.Now()
	if err := generate(s.dir, o.shape, e.baseGolang, e.baseBusybox); err != nil {
		return fail(fmt.Errorf("generating the project: %w", err))
	}
	var err error
	if s.size, err = dirSize(s.dir); err != nil {
		return fail(err)
	}
	if s.commit, err = gitCommit(s.dir, base); err != nil {
		return fail(err)
	}
	host, _, _ := net.SplitHostPort(e.registry) // the bridge gateway: pods reach it
	if s.daemon, err = startGitDaemon(base, host, o.gitPort, filepath.Join(work, "git-daemon.log")); err != nil {
		return fail(err)
	}
	fmt.Printf("Project: %s, commit %s, served at git://%s/app.git (made in %s)\n", mib(s.size), s.commit, s.daemon.addr, time.Since(start).Round(time.Second))
	return s, nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		n += fi.Size()
		return err
	})
	return n, err
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// namespace creates kiln-bench-warm-<random> (privileged: rootless buildkitd needs seccomp and
// AppArmor Unconfined), or checks that the namespace to reuse exists.
func namespace(ctx context.Context, c client.Client, reuse string) (string, bool, error) {
	if reuse != "" {
		if !strings.HasPrefix(reuse, nsPrefix) {
			return "", false, fmt.Errorf("-namespace %s: not a namespace this bench made (%s...), which it would delete at the end", reuse, nsPrefix)
		}
		err := c.Get(ctx, types.NamespacedName{Name: reuse}, &corev1.Namespace{})
		return reuse, false, err
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := nsPrefix + hex.EncodeToString(b)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}}}
	return name, true, c.Create(ctx, ns)
}

// deleteNamespace deletes the namespace and waits (3 minutes at most) until it is gone, and so
// the cache claim's volume.
func deleteNamespace(c client.Client, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
		fmt.Fprintf(os.Stderr, "warm-path: deleting namespace %s: %v\n", name, err)
		return
	}
	for c.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{}) == nil {
		if ctx.Err() != nil {
			fmt.Fprintf(os.Stderr, "warm-path: namespace %s is still terminating\n", name)
			return
		}
		time.Sleep(time.Second)
	}
	fmt.Printf("Deleted namespace %s\n", name)
}

// output is spec.output for these flags.
func (b *bench) output() kilnv1.Output {
	out := kilnv1.Output{Image: b.e.registry + "/bench/warm-path", Tags: []string{"v1"}, Insecure: true, Provenance: kilnv1.ProvenanceMode(b.o.provenance)}
	if b.o.sbom != "" {
		out.SBOM = ptr.To(b.o.sbom == "true")
	}
	return out
}

func (b *bench) imageBuild() (*kilnv1.ImageBuild, error) {
	size, err := resource.ParseQuantity(b.o.cacheSize)
	if err != nil {
		return nil, fmt.Errorf("-cache-size: %w", err)
	}
	ib := &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: ibName},
		Spec: kilnv1.ImageBuildSpec{
			Source: kilnv1.Source{Git: &kilnv1.GitSource{URL: b.gitURL, Revision: "main", Insecure: true}},
			Output: b.output(),
			Cache:  kilnv1.Cache{Size: &size},
		},
	}
	if b.o.registryCache {
		// A tag of this namespace's own: the cold build finds no cache.
		ib.Spec.Cache.Registry = &kilnv1.RegistryCache{Image: b.e.registry + "/bench/warm-path-cache:" + b.ns}
	}
	return ib, nil
}

var errNoImageBuild = errors.New("no ImageBuild " + ibName + " in the namespace to reuse")
