package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// The chart is rendered by the real helm binary (built into bin/ by `make helm`) and every object
// is applied with server-side dry-run to a real kube-apiserver (envtest).

var (
	k8s  client.Client
	helm string
	// restConfig reaches the API server as its admin.
	restConfig *rest.Config
)

const chartDir = "../../charts/kiln"

func TestMain(m *testing.M) {
	helm = testenv.Helm("../../bin")
	if helm == "" || os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "chart tests need the helm binary and envtest: run them with `make test`")
		os.Exit(1)
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{"testdata"}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	restConfig = cfg
	k8s, err = client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		panic(err)
	}
	_ = k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kiln-system"}})
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// render runs `helm template` with the given values and returns its objects.
func render(t *testing.T, values string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	return testenv.HelmTemplate(t, helm, chartDir, values)
}

func find(objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind {
			return o
		}
	}
	return nil
}

func TestChartRendersAndApplies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values string
		check  func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		{"defaults", "", func(t *testing.T, objs []*unstructured.Unstructured) {
			crd := find(objs, "CustomResourceDefinition")
			if crd == nil || crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
				t.Errorf("the CRD is installed and kept by default: %v", crd)
			}
			args := containerArgs(t, find(objs, "Deployment"))
			for _, want := range []string{"--buildkit-image=docker.io/moby/buildkit:v0.33.0-rootless", "--build-pod-security-profile=rootless", "--runner-image=ghcr.io/kiln-dev/kiln:v0.1.0-dev", "--max-concurrent-builds=10", "--default-cache-size=10Gi"} {
				if !strings.Contains(args, want) {
					t.Errorf("manager args lack %s: %s", want, args)
				}
			}
			if !strings.Contains(args, "--leader-elect --leader-election-namespace=kiln-system") || find(objs, "Role") == nil || find(objs, "RoleBinding") == nil {
				t.Error("one replica elects a leader too: two managers overlap during a rolling update")
			}
			if s, _, _ := unstructured.NestedString(find(objs, "Deployment").Object, "spec", "strategy", "type"); s != "" {
				t.Errorf("strategy %q: with a leader elected, the default RollingUpdate is safe", s)
			}
			if find(objs, "Service") == nil || find(objs, "ServiceMonitor") != nil {
				t.Error("metrics Service yes, ServiceMonitor no, by default")
			}
			checkRules(t, findNamed(objs, "ClusterRole", "kiln-manager"))
			for _, want := range []string{"--metrics-bind-address=:8443", "--metrics-secure=true"} {
				if !strings.Contains(args, want) {
					t.Errorf("manager args lack %s: %s", want, args)
				}
			}
			sameRules(t, findNamed(objs, "ClusterRole", "kiln-metrics-auth"), "metrics_auth_role.yaml")
			sameRules(t, findNamed(objs, "ClusterRole", "kiln-metrics-reader"), "metrics_reader_role.yaml")
			if findNamed(objs, "ClusterRoleBinding", "kiln-metrics-auth") == nil || findNamed(objs, "ClusterRoleBinding", "kiln-metrics-reader") != nil {
				t.Error("the manager may review tokens; nobody reads metrics until metrics.readers says who")
			}
			if vap := find(objs, "ValidatingAdmissionPolicy"); vap != nil || find(objs, "ValidatingAdmissionPolicyBinding") != nil {
				t.Errorf("no admission policy by default, the build namespace guard included: %v", vap.GetName())
			}
		}},
		{"build namespace guard", "policies: {buildNamespaceGuard: {enabled: true}}\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			checkGuard(t, objs, `["Deny"]`, "docker.io/moby/buildkit:v0.33.0-rootless", "docker.io/moby/buildkit:v0.33.0")
		}},
		{"build namespace guard with its own validationActions and one BuildKit image", `policies: {validationActions: [Deny], buildNamespaceGuard: {enabled: true, validationActions: [Warn, Audit]}}
buildkit: {image: registry.local/buildkit:v0.33.0-rootless, rootfulImage: ""}
serviceAccount: {name: builds}
`, func(t *testing.T, objs []*unstructured.Unstructured) {
			checkGuard(t, objs, `["Warn","Audit"]`, "registry.local/buildkit:v0.33.0-rootless")
			if vars := guardVariables(t, objs); vars["kilnRequest"] != `request.userInfo.username == "system:serviceaccount:kiln-system:builds"` {
				t.Errorf("the guard's kiln identity: %s", vars["kilnRequest"])
			}
		}},
		{"two replicas elect a leader", "replicaCount: 2\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			if !strings.Contains(containerArgs(t, find(objs, "Deployment")), "--leader-elect") || find(objs, "Role") == nil || find(objs, "RoleBinding") == nil {
				t.Error("leader election flag and Role expected")
			}
		}},
		{"no leader election", "leaderElection: {enabled: false}\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			d := find(objs, "Deployment")
			if strings.Contains(containerArgs(t, d), "--leader-elect") || find(objs, "Role") != nil {
				t.Error("leaderElection.enabled=false still elects a leader")
			}
			if s, _, _ := unstructured.NestedString(d.Object, "spec", "strategy", "type"); s != "Recreate" {
				t.Errorf("strategy %q: without a leader, the old manager must stop before the new one starts", s)
			}
		}},
		{"without CRDs", "crds: {enabled: false}\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			if find(objs, "CustomResourceDefinition") != nil {
				t.Error("crds.enabled=false still renders the CRD")
			}
		}},
		{"CRD not kept", "crds: {keep: false}\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			if _, ok := find(objs, "CustomResourceDefinition").GetAnnotations()["helm.sh/resource-policy"]; ok {
				t.Error("crds.keep=false still keeps the CRD")
			}
		}},
		{"ServiceMonitor", "metrics: {serviceMonitor: {enabled: true, labels: {release: prom}}}\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			sm := find(objs, "ServiceMonitor")
			if sm == nil || sm.GetLabels()["release"] != "prom" {
				t.Fatalf("ServiceMonitor %v", sm)
			}
			ep := endpoint(t, sm)
			if ep["scheme"] != "https" || ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" || fmt.Sprint(ep["tlsConfig"]) != "map[insecureSkipVerify:true]" {
				t.Errorf("a ServiceMonitor for secure metrics with a self-signed certificate: %v", ep)
			}
		}},
		{"metrics certificate and readers", `metrics:
  tls: {secretName: kiln-metrics-tls}
  readers: [{kind: ServiceAccount, name: prometheus-k8s, namespace: monitoring}, {kind: Group, name: sre}]
  serviceMonitor: {enabled: true}
`, func(t *testing.T, objs []*unstructured.Unstructured) {
			d := find(objs, "Deployment")
			if !strings.Contains(containerArgs(t, d), "--metrics-cert-dir=/etc/kiln/metrics-certs") {
				t.Error("no --metrics-cert-dir")
			}
			vols, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
			if fmt.Sprint(vols) != "[map[name:metrics-certs secret:map[secretName:kiln-metrics-tls]]]" {
				t.Errorf("volumes %v", vols)
			}
			tlsConfig := endpoint(t, find(objs, "ServiceMonitor"))["tlsConfig"]
			if fmt.Sprint(tlsConfig) != "map[ca:map[secret:map[key:ca.crt name:kiln-metrics-tls]] serverName:kiln-metrics.kiln-system.svc]" {
				t.Errorf("the ServiceMonitor verifies the certificate: %v", tlsConfig)
			}
			b := findNamed(objs, "ClusterRoleBinding", "kiln-metrics-reader")
			subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
			if fmt.Sprint(subjects) != "[map[kind:ServiceAccount name:prometheus-k8s namespace:monitoring] map[apiGroup:rbac.authorization.k8s.io kind:Group name:sre]]" {
				t.Errorf("metrics readers %v", subjects)
			}
		}},
		{"metrics over plain HTTP", "metrics: {secure: false, port: 8080, service: {port: 8080}, serviceMonitor: {enabled: true}}\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			if !strings.Contains(containerArgs(t, find(objs, "Deployment")), "--metrics-bind-address=:8080 --metrics-secure=false") {
				t.Error("metrics.secure=false serves plain HTTP")
			}
			if findNamed(objs, "ClusterRole", "kiln-metrics-auth") != nil || findNamed(objs, "ClusterRole", "kiln-metrics-reader") != nil {
				t.Error("plain HTTP needs no token reviews")
			}
			if ep := endpoint(t, find(objs, "ServiceMonitor")); ep["scheme"] != nil || ep["tlsConfig"] != nil {
				t.Errorf("a plain HTTP ServiceMonitor: %v", ep)
			}
		}},
		{"no metrics", "metrics: {enabled: false}\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			if find(objs, "Service") != nil || !strings.Contains(containerArgs(t, find(objs, "Deployment")), "--metrics-bind-address=0") {
				t.Error("metrics off: no Service, metrics endpoint off")
			}
		}},
		{"images cache and scheduling", `image: {repository: registry.local/kiln, tag: dev}
buildkit: {image: registry.local/buildkit:v0.33.0-rootless}
runner: {image: registry.local/kiln-runner:dev}
cache: {defaultSize: 50Gi, defaultStorageClass: fast}
nodeSelector: {pool: system}
tolerations: [{key: system, operator: Exists}]
priorityClassName: system-cluster-critical
`, func(t *testing.T, objs []*unstructured.Unstructured) {
			args := containerArgs(t, find(objs, "Deployment"))
			for _, want := range []string{"--runner-image=registry.local/kiln-runner:dev", "--buildkit-image=registry.local/buildkit:v0.33.0-rootless", "--default-storage-class=fast", "--default-cache-size=50Gi"} {
				if !strings.Contains(args, want) {
					t.Errorf("args lack %s", want)
				}
			}
		}},
		{"userns security profile", `buildkit: {rootfulImage: registry.local/buildkit:v0.33.0}
buildPod: {securityProfile: userns, allowedSecurityProfiles: [rootless], usernsSeccompProfile: kiln/buildkitd-userns.json}
`, func(t *testing.T, objs []*unstructured.Unstructured) {
			args := containerArgs(t, find(objs, "Deployment"))
			for _, want := range []string{"--buildkit-rootful-image=registry.local/buildkit:v0.33.0", "--build-pod-security-profile=userns", "--allowed-security-profiles=rootless",
				"--buildkit-userns-seccomp-profile=kiln/buildkitd-userns.json"} {
				if !strings.Contains(args, want) {
					t.Errorf("args lack %s", want)
				}
			}
		}},
		{"existing service account and no RBAC", "serviceAccount: {create: false, name: builder}\nrbac: {create: false}\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			if find(objs, "ServiceAccount") != nil || find(objs, "ClusterRole") != nil || find(objs, "ClusterRoleBinding") != nil {
				t.Error("nothing to create")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := render(t, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if err := k8s.Create(context.Background(), o.DeepCopy(), client.DryRunAll); err != nil {
					t.Errorf("%s %s rejected by the API server: %v", o.GetKind(), o.GetName(), err)
				}
			}
			tc.check(t, objs)
		})
	}
}

// checkGuard checks the build namespace guard's binding (its namespace label and actions) and
// the BuildKit images its exception allows.
func checkGuard(t *testing.T, objs []*unstructured.Unstructured, actions string, images ...string) {
	t.Helper()
	b := findNamed(objs, "ValidatingAdmissionPolicyBinding", "kiln-build-namespace-guard")
	if b == nil {
		t.Fatal("no binding kiln-build-namespace-guard")
	}
	selector, _, _ := unstructured.NestedStringMap(b.Object, "spec", "matchResources", "namespaceSelector", "matchLabels")
	if fmt.Sprint(selector) != "map[kiln.dev/build-namespace:true]" {
		t.Errorf("the guard's namespaces: %v", selector)
	}
	got, _, _ := unstructured.NestedStringSlice(b.Object, "spec", "validationActions")
	if want, _ := json.Marshal(got); string(want) != actions {
		t.Errorf("the guard's validationActions: %s, want %s", want, actions)
	}
	want, _ := json.Marshal(images)
	if vars := guardVariables(t, objs); vars["kilnImages"] != string(want) {
		t.Errorf("the guard's BuildKit images: %s, want %s", vars["kilnImages"], want)
	}
}

// guardVariables are the build namespace guard's CEL variables by name.
func guardVariables(t *testing.T, objs []*unstructured.Unstructured) map[string]string {
	t.Helper()
	p := findNamed(objs, "ValidatingAdmissionPolicy", "kiln-build-namespace-guard")
	if p == nil {
		t.Fatal("no ValidatingAdmissionPolicy kiln-build-namespace-guard")
	}
	vars, _, _ := unstructured.NestedSlice(p.Object, "spec", "variables")
	out := map[string]string{}
	for _, v := range vars {
		m := v.(map[string]any)
		out[m["name"].(string)] = m["expression"].(string)
	}
	return out
}

func findNamed(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// endpoint is a ServiceMonitor's one endpoint.
func endpoint(t *testing.T, sm *unstructured.Unstructured) map[string]any {
	t.Helper()
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("endpoints %v", eps)
	}
	return eps[0].(map[string]any)
}

// sameRules compares a chart ClusterRole's rules with the first ClusterRole of config/rbac/file.
func sameRules(t *testing.T, cr *unstructured.Unstructured, file string) {
	t.Helper()
	if cr == nil {
		t.Errorf("no ClusterRole for %s", file)
		return
	}
	data, err := os.ReadFile("../../config/rbac/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var got, want rbacv1.ClusterRole
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(cr.Object, &got); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(strings.Split(string(data), "\n---")[0]), &want); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Rules) != fmt.Sprint(want.Rules) {
		t.Errorf("chart ClusterRole %s differs from config/rbac/%s:\n%v\n%v", cr.GetName(), file, got.Rules, want.Rules)
	}
}

func containerArgs(t *testing.T, d *unstructured.Unstructured) string {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("containers %v", cs)
	}
	args, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
	return strings.Join(args, " ")
}

// checkRules compares the chart's ClusterRole with config/rbac/role.yaml and checks it holds no
// Secret access.
func checkRules(t *testing.T, cr *unstructured.Unstructured) {
	t.Helper()
	var got, want rbacv1.ClusterRole
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(cr.Object, &got); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Rules) != fmt.Sprint(want.Rules) {
		t.Errorf("chart rules differ from config/rbac/role.yaml:\n%v\n%v", got.Rules, want.Rules)
	}
	for _, r := range got.Rules {
		for _, res := range r.Resources {
			if res == "secrets" || res == "*" {
				t.Errorf("the manager must not read Secrets: %+v", r)
			}
		}
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		values string
		want   []string
	}{
		{"replicas: 2\n", []string{"replicas", "not allowed"}},
		{"replicaCount: 0\n", []string{"replicaCount", "minimum"}},
		{"cache: {defaultSize: ten-gigs}\n", []string{"defaultSize"}},
		{"metrics: {serviceMonitor: {enabled: yes-please}}\n", []string{"enabled"}},
		{"buildkit: {image: \"\"}\n", []string{"image"}},
		{"buildkit: {rootfulImage: \"moby/buildkit v0.33.0\"}\n", []string{"rootfulImage"}},
		{"policies: {buildNamespaceGuard: {enabled: true, validationActions: [Block]}}\n", []string{"validationActions"}},
		{"policies: {buildNamespaceGuard: {enabled: true, namespaceSelector: {}}}\n", []string{"namespaceSelector", "not allowed"}},
		{"logLevel: verbose\n", []string{"logLevel"}},
		{"buildPod: {securityProfile: privileged}\n", []string{"securityProfile"}},
		{"retryBackoff: soon\n", []string{"retryBackoff"}},
		{"replicaCount: 2\nleaderElection: {enabled: false}\n", []string{"leaderElection.enabled=false needs replicaCount: 1"}},
	} {
		_, err := render(t, tc.values)
		if err == nil {
			t.Errorf("values %q were accepted", tc.values)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("values %q: error does not mention %q:\n%v", tc.values, w, err)
			}
		}
	}
}

func TestHelmLint(t *testing.T) {
	out, err := exec.Command(helm, "lint", "--strict", chartDir).CombinedOutput()
	if err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}
