package chart

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestLeasePolicyLimitsTheManagersLeaseWrites installs the chart's RBAC and its opt-in
// ValidatingAdmissionPolicy (rbac.leasePolicy) for real, then acts as the manager's service
// account: RBAC lets it write Leases in every namespace, and the policy (which the API server
// evaluates) narrows that to kiln-cache-* and its leader election Lease.
func TestLeasePolicyLimitsTheManagersLeaseWrites(t *testing.T) {
	ctx := context.Background()
	objs, err := render(t, "rbac: {leasePolicy: {enabled: true}}\n")
	if err != nil {
		t.Fatal(err)
	}
	if defaults, err := render(t, ""); err != nil || find(defaults, "ValidatingAdmissionPolicy") != nil {
		t.Fatalf("the lease policy is off by default: %v", err)
	}
	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		for _, o := range objs {
			if o.GetKind() != kind || ((kind == "ClusterRole" || kind == "ClusterRoleBinding") && o.GetName() != "kiln-manager") {
				continue
			}
			if err := k8s.Create(ctx, o.DeepCopy()); err != nil {
				t.Fatalf("creating %s %s: %v", kind, o.GetName(), err)
			}
			t.Cleanup(func() { _ = k8s.Delete(ctx, o.DeepCopy()) })
		}
	}
	for _, ns := range []string{"team-a", "kube-node-lease"} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	as := rest.CopyConfig(restConfig)
	as.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:kiln-system:kiln"}
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	mgr, err := client.New(as, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	lease := func(ns, name string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	denied := func(err error) bool {
		return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "the kiln manager writes only Leases named kiln-cache-*")
	}

	// The API server puts a new policy in force within seconds; until then, writes go through.
	for i := 0; ; i++ {
		err := mgr.Create(ctx, lease("team-a", fmt.Sprintf("probe-%d", i)))
		if denied(err) {
			break
		}
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		if i == 600 {
			t.Fatal("the lease policy is not in force after 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// kiln's own: a cache Lease anywhere, its leader election Lease at home.
	cache := lease("team-a", "kiln-cache-app-cache")
	if err := mgr.Create(ctx, cache); err != nil {
		t.Errorf("creating a cache Lease: %v", err)
	}
	cache.Spec.HolderIdentity = ptr.To("app-build-1")
	if err := mgr.Update(ctx, cache); err != nil {
		t.Errorf("taking a cache Lease: %v", err)
	}
	leader := lease("kiln-system", "kiln-manager.kiln.dev")
	if err := mgr.Create(ctx, leader); err != nil {
		t.Errorf("creating the leader election Lease: %v", err)
	}
	leader.Spec.HolderIdentity = ptr.To("kiln-0")
	if err := mgr.Update(ctx, leader); err != nil {
		t.Errorf("renewing the leader election Lease: %v", err)
	}

	// Anything else: refused by the policy (RBAC would allow it), or by RBAC (delete).
	if err := mgr.Create(ctx, lease("kube-node-lease", "node-1")); !denied(err) {
		t.Errorf("creating a node heartbeat Lease: %v", err)
	}
	if err := mgr.Create(ctx, lease("team-a", "kiln-manager.kiln.dev")); !denied(err) {
		t.Errorf("creating a leader election Lease outside the release's namespace: %v", err)
	}
	other := lease("kube-system", "kube-controller-manager")
	if err := k8s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	other.Spec.HolderIdentity = ptr.To("kiln")
	if err := mgr.Update(ctx, other); !denied(err) {
		t.Errorf("taking another controller's leader election Lease: %v", err)
	}
	if err := mgr.Delete(ctx, other); !apierrors.IsForbidden(err) {
		t.Errorf("deleting a Lease: %v", err)
	}
	if err := mgr.Delete(ctx, cache); !apierrors.IsForbidden(err) {
		t.Errorf("the manager deletes no Lease, not even its own: %v", err)
	}

	// Nobody else is affected.
	if err := k8s.Create(ctx, lease("team-a", "someone-elses")); err != nil {
		t.Errorf("another user's Lease: %v", err)
	}
}
