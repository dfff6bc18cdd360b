package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// The manager's policy clamps (testPolicy): an ImageBuild that asks for more ends Stalled with
// PolicyViolation, naming the flag and the field, before kiln creates its claim or pod.

func TestPolicyClampsStallBeforeAnythingIsCreated(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*kilnv1.ImageBuild)
		want   []string
	}{
		{"cache", func(ib *kilnv1.ImageBuild) { ib.Spec.Cache.Size = ptr.To(resource.MustParse("60Gi")) },
			[]string{"spec.cache.size 60Gi is larger than the manager allows", "--max-cache-size=50Gi"}},
		{"priority", func(ib *kilnv1.ImageBuild) { ib.Spec.PriorityClassName = "system-node-critical" },
			[]string{`spec.priorityClassName "system-node-critical" is not one the manager allows`, "--allowed-priority-classes=kiln-builds"}},
		{"account", func(ib *kilnv1.ImageBuild) { ib.Spec.ServiceAccountName = "cloud-admin" },
			[]string{`spec.serviceAccountName "cloud-admin" is not the build service account`, "--build-service-account=kiln-builder", "set it to kiln-builder"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := eventually(t)
			ns := newNamespace(t)
			ib := newImageBuild(ns, tc.name, tc.change)
			g.Expect(k8sClient.Create(context.Background(), ib)).To(Succeed())
			stalledWith(g, ib, kilnv1.ReasonPolicyViolation, tc.want...)
			cur := getIB(g, ib)
			g.Expect(condition(cur, kilnv1.ConditionReady).Reason).To(Equal(kilnv1.ReasonPolicyViolation))
			g.Expect(cur.Status.LastBuild).To(BeNil())
			g.Consistently(func(g Gomega) {
				err := k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: tc.name + "-cache"}, &corev1.PersistentVolumeClaim{})
				g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no cache claim: %v", err)
				g.Expect(podExists(ns, tc.name+"-build-1")()).To(BeFalse())
			}).Should(Succeed())
		})
	}
}

// TestPolicyClampsSayEveryViolationAndClearWhenFixed: one message names every clamp broken; a
// spec within the clamps builds, on the allowed priority class and service account.
func TestPolicyClampsSayEveryViolationAndClearWhenFixed(t *testing.T) {
	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "kiln-builds"}, Value: 100}
	if err := k8sClient.Create(ctx, pc); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, pc) })
	g.Expect(k8sClient.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kiln-builder"}})).To(Succeed())

	ib := newImageBuild(ns, "greedy", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Cache.Size = ptr.To(resource.MustParse("1Ti"))
		ib.Spec.PriorityClassName = "system-cluster-critical"
		ib.Spec.ServiceAccountName = "default"
	})
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	stalledWith(g, ib, kilnv1.ReasonPolicyViolation, "the manager's policy refuses this ImageBuild: ",
		"--max-cache-size=50Gi", "--allowed-priority-classes=kiln-builds", "--build-service-account=kiln-builder")

	update(g, ib, func(ib *kilnv1.ImageBuild) {
		ib.Spec.Cache.Size = ptr.To(resource.MustParse("50Gi"))
		ib.Spec.PriorityClassName = "kiln-builds"
		ib.Spec.ServiceAccountName = "kiln-builder"
	})
	var pod *corev1.Pod
	g.Eventually(func(g Gomega) { pod = getPod(g, ns, "greedy-build-1") }).Should(Succeed())
	g.Expect(pod.Spec.PriorityClassName).To(Equal("kiln-builds"))
	g.Expect(pod.Spec.ServiceAccountName).To(Equal("kiln-builder"))
	claim := &corev1.PersistentVolumeClaim{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "greedy-cache"}, claim)).To(Succeed())
	g.Expect(claim.Spec.Resources.Requests.Storage().String()).To(Equal("50Gi"), "a claim of exactly --max-cache-size is allowed")
	g.Eventually(func(g Gomega) {
		g.Expect(condition(getIB(g, ib), kilnv1.ConditionStalled)).To(BeNil())
	}).Should(Succeed())
}

// TestCheckPolicy: what checkPolicy looks at besides the spec. A suspended ImageBuild starts
// nothing; a build of the current key that is under way was
// started before the policy changed and is followed to its end; after it, the policy holds.
func TestCheckPolicy(t *testing.T) {
	r := &ImageBuildReconciler{Policy: testPolicy}
	base := func(mutate func(*kilnv1.ImageBuild)) *kilnv1.ImageBuild {
		ib := newImageBuild("ns", "ib", func(ib *kilnv1.ImageBuild) {
			ib.Generation = 3
			ib.Spec.ServiceAccountName = "cloud-admin"
		})
		mutate(ib)
		return ib
	}
	now := metav1.NewTime(time.Now())
	for _, tc := range []struct {
		name    string
		ib      *kilnv1.ImageBuild
		stalled bool
	}{
		{"new spec", base(func(*kilnv1.ImageBuild) {}), true},
		{"suspended", base(func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = true }), false},
		{"build of this generation under way", base(func(ib *kilnv1.ImageBuild) {
			ib.Status.LastBuild = &kilnv1.LastBuild{PodName: "ib-build-1", Attempt: 1, BuildKey: keyOf(ib)}
		}), false},
		{"build of this generation ended", base(func(ib *kilnv1.ImageBuild) {
			ib.Status.LastBuild = &kilnv1.LastBuild{PodName: "ib-build-1", Attempt: 1, BuildKey: keyOf(ib), CompletionTime: &now}
		}), true},
		{"build of an earlier generation under way", base(func(ib *kilnv1.ImageBuild) {
			ib.Status.LastBuild = &kilnv1.LastBuild{PodName: "ib-build-1", Attempt: 1, BuildKey: kilnv1.BuildKey{Generation: 2}}
		}), true},
		{"size of a claim kiln creates", base(func(ib *kilnv1.ImageBuild) {
			ib.Spec.ServiceAccountName = ""
			ib.Spec.Cache = kilnv1.Cache{Size: ptr.To(resource.MustParse("51Gi"))}
		}), true},
		{"nothing asked", base(func(ib *kilnv1.ImageBuild) { ib.Spec.ServiceAccountName = "" }), false},
	} {
		st := &buildState{}
		r.checkPolicy(tc.ib, st)
		if st.stalled != tc.stalled {
			t.Errorf("%s: stalled %v, want %v (%s)", tc.name, st.stalled, tc.stalled, st.message)
		}
		if st.stalled && st.reason != kilnv1.ReasonPolicyViolation {
			t.Errorf("%s: reason %s", tc.name, st.reason)
		}
	}
	if v := (Policy{}).violations(maximalImageBuild("ns")); len(v) != 0 {
		t.Errorf("the zero Policy allows everything, not: %v", v)
	}
}

// TestSecurityProfilePolicy: an ImageBuild gets the manager's profile unless it names another,
// which must be the default or one of --allowed-security-profiles.
func TestSecurityProfilePolicy(t *testing.T) {
	withProfile := func(p kilnv1.SecurityProfile) *kilnv1.ImageBuild {
		return newImageBuild("ns", "ib", func(ib *kilnv1.ImageBuild) { ib.Spec.SecurityProfile = p })
	}
	userns, rootless := kilnv1.SecurityProfileUserNS, kilnv1.SecurityProfileRootless
	for _, tc := range []struct {
		name   string
		policy Policy
		ib     *kilnv1.ImageBuild
		want   kilnv1.SecurityProfile
		refuse string
	}{
		{"zero policy: rootless", Policy{}, withProfile(""), rootless, ""},
		{"zero policy refuses userns", Policy{}, withProfile(userns), userns, `spec.securityProfile "userns" is not one the manager allows (--build-pod-security-profile and --allowed-security-profiles allow rootless)`},
		{"the manager's default", Policy{SecurityProfile: userns}, withProfile(""), userns, ""},
		{"naming the default", Policy{SecurityProfile: userns}, withProfile(userns), userns, ""},
		{"default userns refuses rootless", Policy{SecurityProfile: userns}, withProfile(rootless), rootless, "allow userns)"},
		{"allowed besides the default", Policy{SecurityProfile: userns, AllowedSecurityProfiles: []kilnv1.SecurityProfile{rootless}}, withProfile(rootless), rootless, ""},
	} {
		if got := tc.policy.securityProfile(tc.ib); got != tc.want {
			t.Errorf("%s: profile %s, want %s", tc.name, got, tc.want)
		}
		v := strings.Join(tc.policy.violations(tc.ib), "; ")
		if (tc.refuse == "") != (v == "") || !strings.Contains(v, tc.refuse) {
			t.Errorf("%s: violations %q, want %q", tc.name, v, tc.refuse)
		}
	}
}
