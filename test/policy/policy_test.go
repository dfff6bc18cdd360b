// Package policy tests the chart's ValidatingAdmissionPolicies (policies.* values) against a real
// kube-apiserver (envtest), which evaluates them: the chart is rendered by the real helm binary
// with every policy on, the policies and bindings are applied, and each policy must refuse what
// it forbids, with a message that names the field and the chart value, and let the rest through.
package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/testenv"
)

var (
	k8s client.Client
	// restConfig reaches the API server as its admin; guard_test.go impersonates others with it.
	restConfig *rest.Config
	helm       string
	nsCounter  atomic.Int64
)

const (
	chartDir = "../../charts/kiln"
	// policyLabel selects the namespaces the policies apply to (policies.namespaceSelector).
	policyLabel = "kiln.dev/policy"
	// inForce is how long the API server may take to put a new policy in force.
	inForce = 60 * time.Second
)

// allOn turns every policy on, for namespaces labelled policyLabel=on.
const allOn = `crds: {enabled: false}
policies:
  namespaceSelector: {matchLabels: {kiln.dev/policy: "on"}}
  allowedRegistries:
    enabled: true
    patterns: ["registry.example.com/{namespace}/*", "registry.example.com/shared/**", "ghcr.io/acme/base"]
  forbidInsecure: {enabled: true}
  requireBudget: {enabled: true}
  priorityClasses: {enabled: true, allowed: [kiln-builds]}
  serviceAccounts: {enabled: true, allowed: [builder, pusher]}
  scheduling: {enabled: true, tolerationKeys: [kiln.dev/builds], nodeSelectorKeys: [kiln.dev/pool]}
  maxCacheSize: {enabled: true, size: 20Gi}
  maxTimeout: {enabled: true, timeout: 1h}
`

// policyNames are the policies allOn renders.
var policyNames = []string{
	"kiln-allowed-registries", "kiln-forbid-insecure", "kiln-require-budget", "kiln-priority-classes",
	"kiln-service-accounts", "kiln-scheduling", "kiln-max-cache-size", "kiln-max-timeout",
}

func TestMain(m *testing.M) {
	helm = testenv.Helm("../../bin")
	if helm == "" || os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "policy tests need the helm binary and envtest: run them with `make test`")
		os.Exit(1)
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../../config/crd/bases"}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	restConfig = cfg
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = kilnv1.AddToScheme(s)
	k8s, err = client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// render runs `helm template` with the given values and returns its objects.
func render(t *testing.T, values string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	return testenv.HelmTemplate(t, helm, chartDir, values)
}

func ofKind(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		for _, k := range kinds {
			if o.GetKind() == k {
				out = append(out, o)
			}
		}
	}
	return out
}

var applied atomic.Bool

// applyPolicies renders allOn and applies its policies and bindings once, then waits until the
// API server enforces each of them: a policy is compiled and bound a moment after it is stored,
// so a probe that breaks only that policy is sent until it is refused by it.
func applyPolicies(t *testing.T) {
	t.Helper()
	if applied.Load() {
		return
	}
	objs, err := render(t, allOn)
	if err != nil {
		t.Fatal(err)
	}
	vaps := ofKind(objs, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
	if len(vaps) != 2*len(policyNames) {
		t.Fatalf("allOn renders %d policies and bindings, want %d", len(vaps), 2*len(policyNames))
	}
	for _, o := range vaps {
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Fatalf("the API server refuses %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	ns := newNamespace(t, true)
	probes := map[string]func(*kilnv1.ImageBuild){
		"kiln-allowed-registries": func(ib *kilnv1.ImageBuild) { ib.Spec.Output.Image = "evil.example.com/x" },
		"kiln-forbid-insecure":    func(ib *kilnv1.ImageBuild) { ib.Spec.Output.Insecure = true },
		"kiln-require-budget":     func(ib *kilnv1.ImageBuild) { ib.Spec.Budget = nil },
		"kiln-priority-classes":   func(ib *kilnv1.ImageBuild) { ib.Spec.PriorityClassName = "probe" },
		"kiln-service-accounts":   func(ib *kilnv1.ImageBuild) { ib.Spec.ServiceAccountName = "probe" },
		"kiln-scheduling":         func(ib *kilnv1.ImageBuild) { ib.Spec.NodeSelector = map[string]string{"probe": "x"} },
		"kiln-max-cache-size":     func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.Size = ptr.To(resource.MustParse("1Ti")) },
		"kiln-max-timeout":        func(ib *kilnv1.ImageBuild) { ib.Spec.Timeout = &metav1.Duration{Duration: 24 * time.Hour} },
	}
	deadline := time.Now().Add(inForce)
	for _, name := range policyNames {
		for {
			err := k8s.Create(context.Background(), imageBuild(ns, "probe", probes[name]), client.DryRunAll)
			if err != nil && strings.Contains(err.Error(), "'"+name+"'") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("policy %s not in force after %s; the probe got: %v", name, inForce, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	applied.Store(true)
}

// newNamespace makes a namespace for one test, subject to the policies when policed.
func newNamespace(t *testing.T, policed bool) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("team-%d", nsCounter.Add(1))}}
	if policed {
		ns.Labels = map[string]string{policyLabel: "on"}
	}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// imageBuild is an ImageBuild every policy of allOn lets through, changed by mutate.
func imageBuild(ns, name string, mutate ...func(*kilnv1.ImageBuild)) *kilnv1.ImageBuild {
	ib := &kilnv1.ImageBuild{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kilnv1.ImageBuildSpec{
			Source: kilnv1.Source{ConfigMap: &kilnv1.ConfigMapSource{Name: "src"}},
			Output: kilnv1.Output{Image: "registry.example.com/" + ns + "/app"},
			Budget: &kilnv1.Budget{MaxImageSize: ptr.To(resource.MustParse("200Mi"))},
		},
	}
	for _, m := range mutate {
		m(ib)
	}
	return ib
}

func TestPoliciesAreOffByDefault(t *testing.T) {
	objs, err := render(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if vaps := ofKind(objs, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"); len(vaps) != 0 {
		t.Errorf("the default values render %d policies and bindings, want none", len(vaps))
	}
}

func TestPolicyValuesAreChecked(t *testing.T) {
	for _, tc := range []struct {
		values string
		want   []string
	}{
		{"policies: {allowedRegistries: {enabled: true}}\n", []string{"policies.allowedRegistries.patterns"}},
		{"policies: {allowedRegistries: {enabled: true, patterns: [\"r.example.com/'x\"]}}\n", []string{"patterns"}},
		{"policies: {maxCacheSize: {enabled: true, size: lots}}\n", []string{"size"}},
		{"policies: {maxTimeout: {enabled: true, timeout: 1 hour}}\n", []string{"timeout"}},
		{"policies: {priorityClasses: {enabled: true, allowed: [System_Critical]}}\n", []string{"allowed"}},
		{"policies: {validationActions: [Block]}\n", []string{"validationActions"}},
		{"policies: {manager: {maxCacheSize: big}}\n", []string{"maxCacheSize"}},
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

// TestManagerClampValues: policies.manager becomes the manager's clamp flags.
func TestManagerClampValues(t *testing.T) {
	args := func(values string) string {
		objs, err := render(t, values)
		if err != nil {
			t.Fatal(err)
		}
		d := ofKind(objs, "Deployment")[0]
		cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		a, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
		return strings.Join(a, " ")
	}
	if got := args(""); strings.Contains(got, "--max-cache-size") || strings.Contains(got, "--allowed-priority-classes") || strings.Contains(got, "--build-service-account") {
		t.Errorf("no clamp flags by default: %s", got)
	}
	got := args("policies: {manager: {maxCacheSize: 100Gi, allowedPriorityClasses: [kiln-builds, low], buildServiceAccount: builder}}\n")
	for _, want := range []string{"--max-cache-size=100Gi", "--allowed-priority-classes=kiln-builds,low", "--build-service-account=builder"} {
		if !strings.Contains(got, want) {
			t.Errorf("manager args lack %s: %s", want, got)
		}
	}
}

// TestPolicies sends, for each policy, ImageBuilds it must refuse and ImageBuilds it must let
// through, to the real API server.
func TestPolicies(t *testing.T) {
	applyPolicies(t)
	ns := newNamespace(t, true)
	type change = func(*kilnv1.ImageBuild)
	image := func(s string) change { return func(ib *kilnv1.ImageBuild) { ib.Spec.Output.Image = s } }
	for i, tc := range []struct {
		name   string
		change change
		// policy is the one that refuses, with a message holding want; "" lets it through.
		policy string
		want   []string
	}{
		{"own namespace's repository", image("registry.example.com/" + ns + "/api"), "", nil},
		{"shared repository at any depth", image("registry.example.com/shared/tools/go/builder"), "", nil},
		{"exact repository", image("ghcr.io/acme/base"), "", nil},
		{"another namespace's repository", image("registry.example.com/other-team/api"), "kiln-allowed-registries",
			[]string{"spec.output.image registry.example.com/other-team/api is not a repository namespace " + ns + " may push to",
				"registry.example.com/" + ns + "/*, registry.example.com/shared/**, ghcr.io/acme/base", "policies.allowedRegistries.patterns"}},
		{"* is one path part", image("registry.example.com/" + ns + "/api/extra"), "kiln-allowed-registries", []string{"spec.output.image"}},
		{"patterns are anchored", image("ghcr.io/acme/base-tools"), "kiln-allowed-registries", []string{"spec.output.image"}},
		{"a dot is a dot", image("registryXexample.com/" + ns + "/api"), "kiln-allowed-registries", []string{"spec.output.image"}},
		{"no registry host", image(ns + "/api"), "kiln-allowed-registries", []string{"spec.output.image"}},

		{"insecure", func(ib *kilnv1.ImageBuild) { ib.Spec.Output.Insecure = true }, "kiln-forbid-insecure",
			[]string{"spec.output.insecure is true", "policies.forbidInsecure.enabled", "remove spec.output.insecure"}},
		{"insecure git source", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Source = kilnv1.Source{Git: &kilnv1.GitSource{URL: "git://git.example.com/app.git", Insecure: true}}
		}, "kiln-forbid-insecure", []string{"spec.source.git.insecure is true", "policies.forbidInsecure.enabled", "use an https:// or ssh URL"}},
		{"https git source", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Source = kilnv1.Source{Git: &kilnv1.GitSource{URL: "https://git.example.com/app.git"}}
		}, "", nil},

		{"no budget", func(ib *kilnv1.ImageBuild) { ib.Spec.Budget = nil }, "kiln-require-budget",
			[]string{"spec.budget is required", "policies.requireBudget.enabled"}},
		{"a budget without a limit", func(ib *kilnv1.ImageBuild) { ib.Spec.Budget = &kilnv1.Budget{} }, "kiln-require-budget",
			[]string{"spec.budget sets no limit", "maxImageSize"}},
		{"budget enforcement Warn", func(ib *kilnv1.ImageBuild) { ib.Spec.Budget.Enforcement = kilnv1.EnforcementWarn }, "kiln-require-budget",
			[]string{"spec.budget.enforcement is Warn", "requires Enforce"}},
		{"budget enforcement Enforce, another limit", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Budget = &kilnv1.Budget{MaxLayers: ptr.To[int32](20), Enforcement: kilnv1.EnforcementEnforce}
		}, "", nil},

		{"allowed priority class", func(ib *kilnv1.ImageBuild) { ib.Spec.PriorityClassName = "kiln-builds" }, "", nil},
		{"other priority class", func(ib *kilnv1.ImageBuild) { ib.Spec.PriorityClassName = "system-node-critical" }, "kiln-priority-classes",
			[]string{"spec.priorityClassName system-node-critical is not allowed", "policies.priorityClasses.allowed", "use one of kiln-builds"}},

		{"allowed service account", func(ib *kilnv1.ImageBuild) { ib.Spec.ServiceAccountName = "pusher" }, "", nil},
		{"other service account", func(ib *kilnv1.ImageBuild) { ib.Spec.ServiceAccountName = "cloud-admin" }, "kiln-service-accounts",
			[]string{"spec.serviceAccountName cloud-admin is not allowed", "policies.serviceAccounts.allowed", "use one of builder, pusher"}},

		{"allowed toleration and node selector", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Tolerations = []corev1.Toleration{{Key: "kiln.dev/builds", Operator: corev1.TolerationOpExists}}
			ib.Spec.NodeSelector = map[string]string{"kiln.dev/pool": "builders"}
		}, "", nil},
		{"tolerate every taint", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
		}, "kiln-scheduling", []string{"spec.tolerations may tolerate only the taint keys kiln.dev/builds", "policies.scheduling.tolerationKeys"}},
		{"tolerate another taint", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Tolerations = []corev1.Toleration{
				{Key: "kiln.dev/builds", Operator: corev1.TolerationOpExists},
				{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
			}
		}, "kiln-scheduling", []string{"spec.tolerations"}},
		{"select the control plane", func(ib *kilnv1.ImageBuild) {
			ib.Spec.NodeSelector = map[string]string{"node-role.kubernetes.io/control-plane": ""}
		}, "kiln-scheduling", []string{"spec.nodeSelector may use only the node label keys kiln.dev/pool", "policies.scheduling.nodeSelectorKeys"}},
		{"affinity", func(ib *kilnv1.ImageBuild) {
			ib.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{"cp-1"}}}}},
			}}}
		}, "kiln-scheduling", []string{"spec.affinity is forbidden", "policies.scheduling.allowAffinity"}},

		{"cache at the maximum", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.Size = ptr.To(resource.MustParse("20Gi")) }, "", nil},
		{"cache above the maximum", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.Size = ptr.To(resource.MustParse("30000Mi")) }, "kiln-max-cache-size",
			[]string{"spec.cache.size 30000Mi is more than the 20Gi this cluster allows", "policies.maxCacheSize.size"}},
		{"shared claim", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.ClaimName = "team-cache" }, "", nil},

		{"timeout at the maximum", func(ib *kilnv1.ImageBuild) { ib.Spec.Timeout = &metav1.Duration{Duration: time.Hour} }, "", nil},
		{"timeout above the maximum", func(ib *kilnv1.ImageBuild) { ib.Spec.Timeout = &metav1.Duration{Duration: 90 * time.Minute} }, "kiln-max-timeout",
			[]string{"spec.timeout 1h30m0s is longer than the 1h this cluster allows", "policies.maxTimeout.timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(context.Background(), imageBuild(ns, fmt.Sprintf("case-%d", i), tc.change))
			if tc.policy == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			checkRefusal(t, err, tc.policy, tc.want...)
		})
	}
}

// checkRefusal checks that err is a refusal by the policy, whose message holds want.
func checkRefusal(t *testing.T, err error, policy string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; policy %s should have refused it", policy)
	}
	var status interface{ Status() metav1.Status }
	if !errors.As(err, &status) || status.Status().Reason != metav1.StatusReasonForbidden {
		t.Errorf("refused, but not as Forbidden: %v", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "ValidatingAdmissionPolicy '"+policy+"'") {
		t.Errorf("not refused by policy %s: %v", policy, err)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("the refusal does not say %q:\n%s", w, msg)
		}
	}
}

// TestPoliciesFollowTheNamespaceSelector: a namespace without the label is not policed. Once it
// is, an ImageBuild stored before stays editable where its spec does not change (annotations,
// such as a rebuild request) and deletable; a change to its spec must comply.
func TestPoliciesFollowTheNamespaceSelector(t *testing.T) {
	applyPolicies(t)
	ctx := context.Background()
	ns := newNamespace(t, false)
	// It breaks one policy only: which of several refusals the API server reports is not said.
	old := imageBuild(ns, "legacy", func(ib *kilnv1.ImageBuild) { ib.Spec.Output.Insecure = true })
	if err := k8s.Create(ctx, old); err != nil {
		t.Fatalf("a namespace outside policies.namespaceSelector is policed: %v", err)
	}
	nsObj := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	nsObj.Labels = map[string]string{policyLabel: "on"}
	if err := k8s.Update(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	// The API server sees the label through its namespace informer, a moment later.
	deadline := time.Now().Add(inForce)
	var err error
	for {
		err = k8s.Create(ctx, imageBuild(ns, "probe", func(ib *kilnv1.ImageBuild) { ib.Spec.Output.Insecure = true }), client.DryRunAll)
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	checkRefusal(t, err, "kiln-forbid-insecure", "spec.output.insecure")

	patch := client.MergeFrom(old.DeepCopy())
	old.Annotations = map[string]string{kilnv1.AnnotationRebuildRequestedAt: "now"}
	if err := k8s.Patch(ctx, old, patch); err != nil {
		t.Errorf("an annotation on an ImageBuild stored before the policy is refused: %v", err)
	}
	patch = client.MergeFrom(old.DeepCopy())
	old.Spec.Output.Tags = []string{"v2"}
	checkRefusal(t, k8s.Patch(ctx, old, patch), "kiln-forbid-insecure", "spec.output.insecure")
	if err := k8s.Delete(ctx, old); err != nil {
		t.Errorf("deleting an ImageBuild stored before the policy: %v", err)
	}
}
