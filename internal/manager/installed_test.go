package manager

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// These tests run kiln's manager as it is installed: as the service account of config/rbac, with
// exactly the permissions config/rbac grants it (the chart renders the same rules), against a
// real kube-apiserver (envtest).

const (
	managerNS = "kiln-system"
	managerSA = "kiln-manager"
)

var (
	envOnce sync.Once
	env     *envtest.Environment
	envCfg  *rest.Config
	envErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		_ = env.Stop()
	}
	os.Exit(code)
}

// apiServer starts envtest once for the tests that need it, with kiln's CRD and RBAC installed.
func apiServer(t *testing.T) (*rest.Config, client.Client) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("needs envtest's kube-apiserver and etcd (KUBEBUILDER_ASSETS): run it with `make test`")
	}
	envOnce.Do(func() {
		env = &envtest.Environment{CRDDirectoryPaths: []string{"../../config/crd/bases"}, ErrorIfCRDPathMissing: true}
		if envCfg, envErr = env.Start(); envErr == nil {
			envErr = installRBAC(envCfg)
		}
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	admin, err := client.New(envCfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return envCfg, admin
}

// installRBAC applies every file config/rbac/kustomization.yaml lists, in kiln-system.
func installRBAC(cfg *rest.Config) error {
	admin, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: managerNS}}); err != nil {
		return err
	}
	data, err := os.ReadFile("../../config/rbac/kustomization.yaml")
	if err != nil {
		return err
	}
	var k struct{ Resources []string }
	if err := yaml.Unmarshal(data, &k); err != nil {
		return err
	}
	for _, f := range k.Resources {
		data, err := os.ReadFile(filepath.Join("../../config/rbac", f))
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			obj := &unstructured.Unstructured{}
			if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			if err := admin.Create(ctx, obj); err != nil {
				return fmt.Errorf("%s: %s %s: %w", f, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
	return nil
}

// asManager is cfg acting as the manager's service account.
func asManager(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: fmt.Sprintf("system:serviceaccount:%s:%s", managerNS, managerSA)}
	return c
}

// defaults are the manager's options as its flags default them.
func defaults(t *testing.T) Options {
	t.Helper()
	var o Options
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	o.BindFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	return o
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serviceAccountToken makes the service account ns/name, binds it to clusterRole (unless empty)
// and returns a token for it.
func serviceAccountToken(t *testing.T, cfg *rest.Config, admin client.Client, ns, name, clusterRole string) string {
	t.Helper()
	ctx := context.Background()
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
		t.Fatal(err)
	}
	if clusterRole != "" {
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-" + clusterRole},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
		}
		if err := admin.Create(ctx, binding); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// TestManagerAsInstalled runs one manager (controller names are unique in a process) with the
// chart's flags: it leads through its Lease, builds with no more than its RBAC, serves metrics
// only to a caller allowed to read them, and hands the Lease over when it stops.
func TestManagerAsInstalled(t *testing.T) {
	cfg, admin := apiServer(t)
	ctx := context.Background()
	o := defaults(t)
	o.LeaderElect, o.LeaderElectionNS = true, managerNS
	o.ProbeAddr = "0"
	o.MetricsAddr = freeAddr(t) // served as the flags default it: --metrics-secure
	mgr, err := New(asManager(cfg), o)
	if err != nil {
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	var startErr error
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		startErr = mgr.Start(mgrCtx)
	}()
	t.Cleanup(func() {
		stop()
		<-stopped
	})
	select {
	case <-mgr.Elected():
	case <-stopped:
		t.Fatalf("the manager stopped: %v", startErr)
	case <-time.After(60 * time.Second):
		t.Fatal("the manager was not elected within 60s")
	}
	leaseKey := types.NamespacedName{Namespace: managerNS, Name: LeaderElectionID}
	lease := &coordinationv1.Lease{}
	if err := admin.Get(ctx, leaseKey, lease); err != nil || ptr.Deref(lease.Spec.HolderIdentity, "") == "" {
		t.Fatalf("leader election Lease %v: %v", lease.Spec, err)
	}

	t.Run("builds with its own RBAC", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}
		src := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "src"}, Data: map[string]string{"Dockerfile": "FROM scratch\n"}}
		ib := &kilnv1.ImageBuild{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "app"},
			Spec: kilnv1.ImageBuildSpec{
				Source: kilnv1.Source{ConfigMap: &kilnv1.ConfigMapSource{Name: "src"}},
				Output: kilnv1.Output{Image: "registry.example.com/team-a/app"},
			},
		}
		for _, obj := range []client.Object{ns, src, ib} {
			if err := admin.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "build pod app-build-1", 30*time.Second, func() error {
			return admin.Get(ctx, types.NamespacedName{Namespace: ns.Name, Name: "app-build-1"}, &corev1.Pod{})
		})
		cache := &coordinationv1.Lease{}
		if err := admin.Get(ctx, types.NamespacedName{Namespace: ns.Name, Name: "kiln-cache-app-cache"}, cache); err != nil || ptr.Deref(cache.Spec.HolderIdentity, "") != "app-build-1" {
			t.Fatalf("cache Lease %+v: %v", cache.Spec, err)
		}
	})

	t.Run("metrics need a token that may read them", func(t *testing.T) {
		status := func(scheme, token string) (int, string) {
			t.Helper()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+o.MetricsAddr+"/metrics", nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			// The manager's certificate is self-signed (no --metrics-cert-dir).
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed test certificate
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("GET /metrics: %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		reader := serviceAccountToken(t, cfg, admin, "monitoring", "prometheus", "kiln-metrics-reader")
		stranger := serviceAccountToken(t, cfg, admin, "monitoring", "stranger", "")

		if code, _ := status("http", ""); code == http.StatusOK {
			t.Error("metrics are served over plain HTTP")
		}
		if code, _ := status("https", ""); code != http.StatusUnauthorized {
			t.Errorf("without a token: HTTP %d, want 401", code)
		}
		// controller-runtime's filter answers 500 when the TokenReview fails on a malformed token.
		if code, _ := status("https", "not-a-token"); code == http.StatusOK {
			t.Errorf("with a token the API server does not know: HTTP %d", code)
		}
		if code, _ := status("https", stranger); code != http.StatusForbidden {
			t.Errorf("with a token not bound to kiln-metrics-reader: HTTP %d, want 403", code)
		}
		code, body := status("https", reader)
		if code != http.StatusOK || !strings.Contains(body, "controller_runtime_reconcile_total") {
			t.Errorf("with a kiln-metrics-reader token: HTTP %d, %.200s", code, body)
		}
	})

	// A clean stop gives the Lease back (LeaderElectionReleaseOnCancel): the next manager of a
	// rolling update leads at once, not after the Lease's 15s.
	stop()
	<-stopped
	if startErr != nil {
		t.Fatalf("the manager stopped with %v", startErr)
	}
	if err := admin.Get(ctx, leaseKey, lease); err != nil || ptr.Deref(lease.Spec.HolderIdentity, "") != "" {
		t.Fatalf("the Lease is still held after the manager stopped: %+v, %v", lease.Spec, err)
	}
	next, err := ctrl.NewManager(asManager(cfg), ctrl.Options{
		Scheme: Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		LeaderElection: true, LeaderElectionID: LeaderElectionID, LeaderElectionNamespace: managerNS,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	nextCtx, stopNext := context.WithCancel(ctx)
	defer stopNext()
	go func() { _ = next.Start(nextCtx) }()
	start := time.Now()
	select {
	case <-next.Elected():
		t.Logf("the next manager led %s after the first stopped", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the next manager did not lead within 10s of the first one's stop")
	}
}
