package controllers

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/gitremote"
)

// The controller tests run against a real kube-apiserver and etcd (envtest), built from source
// by `make envtest-bins`. envtest has no kubelet: tests set build pods' status themselves.
var (
	k8sClient client.Client
	cfg       *rest.Config
	scheme    = runtime.NewScheme()
	nsCounter atomic.Int64
	// testReconciler is the running controller, for tests that change its limits.
	testReconciler *ImageBuildReconciler
	// clockOffset moves the controller's clock forward, for tests of elapsed time.
	clockOffset atomic.Int64
	// metricsAddr is where the test manager serves /metrics.
	metricsAddr string
	// testPoller is the controller's git poller; allowPolls opens it to a test's servers.
	testPoller = gitremote.New(gitremote.Options{})
	// testPolicy is the controller's Policy, as --max-cache-size=50Gi
	// --allowed-priority-classes=kiln-builds --build-service-account=kiln-builder
	// --allowed-security-profiles=userns set it.
	testPolicy = Policy{MaxCacheSize: ptr.To(resource.MustParse("50Gi")), AllowedPriorityClasses: []string{"kiln-builds"}, BuildServiceAccount: "kiln-builder",
		AllowedSecurityProfiles: []kilnv1.SecurityProfile{kilnv1.SecurityProfileUserNS}}
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the controller tests with `make test`, which builds kube-apiserver and etcd into bin/")
		os.Exit(1)
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	_ = clientgoscheme.AddToScheme(scheme)
	_ = kilnv1.AddToScheme(scheme)

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting envtest: %v\n", err)
		os.Exit(1)
	}
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mgrDone := startManager(ctx)
	code := m.Run()
	cancel()
	<-mgrDone
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
	}
	os.Exit(code)
}

func zapLevel() zapcore.Level {
	if os.Getenv("KILN_TEST_VERBOSE") != "" {
		return zapcore.Level(-2)
	}
	return zapcore.ErrorLevel
}

// startManager runs the controller as the manager does, with a short retry backoff.
func startManager(ctx context.Context) <-chan struct{} {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	metricsAddr = l.Addr().String()
	l.Close()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: metricsAddr},
		Cache:   CacheOptions(),
	})
	if err != nil {
		panic(err)
	}
	r := &ImageBuildReconciler{
		Client:           mgr.GetClient(),
		APIReader:        mgr.GetAPIReader(),
		Scheme:           scheme,
		Recorder:         mgr.GetEventRecorder("kiln"),
		BuildKitImage:    "registry.test/buildkit:rootless",
		RunnerImage:      "registry.test/kiln:test",
		DefaultCacheSize: resource.MustParse("5Gi"),
		RetryBackoff:     500 * time.Millisecond,
		WaitRefresh:      2 * time.Second,
		Now:              func() time.Time { return time.Now().Add(time.Duration(clockOffset.Load())) },
		// Polls reach the tests' own 127.0.0.1 servers only when a test allows them (allowPolls).
		Poller: testPoller,
		// The manager's policy clamps (policy_test.go); no other test asks for more.
		Policy: testPolicy,
	}
	testReconciler = r
	if err := r.SetupWithManager(mgr, 4); err != nil {
		panic(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "manager: %v\n", err)
		}
	}()
	return done
}

// newNamespace makes a namespace of its own for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d-%d", time.Now().Unix()%100000, nsCounter.Add(1))}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	// newImageBuild's ConfigMap source.
	src := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "hello-src"}, Data: map[string]string{"Dockerfile": "FROM scratch\n"}}
	if err := k8sClient.Create(context.Background(), src); err != nil {
		t.Fatalf("creating ConfigMap: %v", err)
	}
	// envtest runs no garbage collector or namespace controller: remove what the test made, so
	// that its unfinished build pods do not hold build slots in later tests.
	t.Cleanup(func() {
		ctx := context.Background()
		_ = k8sClient.DeleteAllOf(ctx, &kilnv1.ImageBuild{}, client.InNamespace(ns.Name))
		_ = k8sClient.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns.Name), client.GracePeriodSeconds(0))
	})
	return ns.Name
}

// newImageBuild is a minimal valid ImageBuild with a ConfigMap context.
func newImageBuild(ns, name string, mutate ...func(*kilnv1.ImageBuild)) *kilnv1.ImageBuild {
	ib := &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kilnv1.ImageBuildSpec{
			Source: kilnv1.Source{ConfigMap: &kilnv1.ConfigMapSource{Name: "hello-src"}},
			Output: kilnv1.Output{Image: "registry.example.com/team/hello", Tags: []string{"v1"}},
		},
	}
	for _, m := range mutate {
		m(ib)
	}
	return ib
}

func eventually(t *testing.T) gomega.Gomega {
	g := gomega.NewWithT(t)
	g.SetDefaultEventuallyTimeout(30 * time.Second)
	g.SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	g.SetDefaultConsistentlyDuration(2 * time.Second)
	return g
}
