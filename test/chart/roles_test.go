package chart

import (
	"context"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestUserRoles (issue 13 item 5): the chart's kiln-edit and kiln-view ClusterRoles, aggregated
// into Kubernetes' edit/admin and view roles by default, grant what their names say and no
// more, as the real API server's RBAC authorizer decides (SubjectAccessReview). envtest runs no
// aggregation controller, so the roles are bound directly; the labels that aggregate them are
// checked on the rendered objects.
func TestUserRoles(t *testing.T) {
	ctx := context.Background()
	objs, err := render(t, "")
	if err != nil {
		t.Fatal(err)
	}
	edit, view := findNamed(objs, "ClusterRole", "kiln-edit"), findNamed(objs, "ClusterRole", "kiln-view")
	if edit == nil || view == nil {
		t.Fatal("the chart renders no kiln-edit or kiln-view ClusterRole by default")
	}
	if l := edit.GetLabels(); l["rbac.authorization.k8s.io/aggregate-to-edit"] != "true" || l["rbac.authorization.k8s.io/aggregate-to-admin"] != "true" {
		t.Errorf("kiln-edit is not aggregated into edit and admin: %v", l)
	}
	if l := view.GetLabels(); l["rbac.authorization.k8s.io/aggregate-to-view"] != "true" {
		t.Errorf("kiln-view is not aggregated into view: %v", l)
	}
	if objs, err := render(t, "rbac: {userRoles: {aggregate: false}}\n"); err != nil || findNamed(objs, "ClusterRole", "kiln-edit").GetLabels()["rbac.authorization.k8s.io/aggregate-to-edit"] != "" {
		t.Errorf("aggregate: false still aggregates (%v)", err)
	}
	if objs, err := render(t, "rbac: {userRoles: {create: false}}\n"); err != nil || findNamed(objs, "ClusterRole", "kiln-edit") != nil {
		t.Errorf("create: false still renders the roles (%v)", err)
	}

	for _, role := range []string{"kiln-edit", "kiln-view"} {
		o := findNamed(objs, "ClusterRole", role).DeepCopy()
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(ctx, o) })
	}
	for user, role := range map[string]string{"alice": "kiln-edit", "bob": "kiln-view"} {
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "kiln-system", Name: user},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user}}}
		if err := k8s.Create(ctx, rb); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(ctx, rb) })
	}
	allowed := func(user, verb, group, resource string) bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: "kiln-system", Verb: verb, Group: group, Resource: resource}}}
		if err := k8s.Create(ctx, sar); err != nil {
			t.Fatal(err)
		}
		return sar.Status.Allowed
	}
	for _, tc := range []struct {
		user, verb, group, resource string
		want                        bool
	}{
		{"alice", "create", "kiln.dev", "imagebuilds", true},
		{"alice", "delete", "kiln.dev", "imagebuilds", true},
		{"alice", "update", "kiln.dev", "imagebuilds/status", false}, // status is kiln's
		{"alice", "create", "", "pods", false},
		{"alice", "get", "", "secrets", false},
		{"bob", "list", "kiln.dev", "imagebuilds", true},
		{"bob", "create", "kiln.dev", "imagebuilds", false},
		{"bob", "get", "", "secrets", false},
	} {
		if got := allowed(tc.user, tc.verb, tc.group, tc.resource); got != tc.want {
			t.Errorf("%s %s %s: allowed %v, want %v", tc.user, tc.verb, tc.resource, got, tc.want)
		}
	}
}
