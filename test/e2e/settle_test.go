//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// TestBadImageBuildsDoNotStopOthers (issue 10): a typo is refused at admission; ImageBuilds the
// API server accepts but kiln cannot build each end Stalled with their reason; and meanwhile an
// unrelated ImageBuild builds. A ConfigMap source that appears later builds then, and an edit of
// it builds again, with no annotation.
func TestBadImageBuildsDoNotStopOthers(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "e2e-settle")

	// The typo that used to stop every build in the cluster never gets in.
	typo := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kiln.dev/v1alpha1", "kind": "ImageBuild",
		"metadata": map[string]any{"namespace": ns, "name": "typo"},
		"spec": map[string]any{"timeout": "banana", "source": map[string]any{"configMap": map[string]any{"name": "src"}},
			"output": map[string]any{"image": env["REGISTRY"] + "/e2e/typo"}},
	}}
	if err := k8s.Create(ctx, typo); err == nil || !strings.Contains(err.Error(), "spec.timeout") {
		t.Fatalf("timeout: banana: want a refusal naming spec.timeout, got %v", err)
	}

	// Accepted, but the pod kiln renders from it is not.
	refused := imageBuild(ns, "refused", "src", func(ib *kilnv1.ImageBuild) { ib.Spec.NodeSelector = map[string]string{"bad key": "x"} })
	// Accepted, but its source does not exist yet.
	later := imageBuild(ns, "later", "later-src")
	// Fine.
	good := imageBuild(ns, "good", "src")
	src := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "src"}, Data: map[string]string{
		"Dockerfile": "FROM " + env["BASE_BUSYBOX"] + "\nRUN echo good > /good\n",
	}}
	for _, obj := range []client.Object{src, refused, later, good} {
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	stalled := func(reason string) func(*kilnv1.ImageBuild) bool {
		return func(ib *kilnv1.ImageBuild) bool {
			c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ConditionStalled)
			return c != nil && c.Reason == reason && ib.Status.ObservedGeneration == ib.Generation
		}
	}
	waitFor(t, refused, 2*time.Minute, "Stalled PodRejected", stalled(string(kilnv1.FailurePodRejected)))
	waitFor(t, later, 2*time.Minute, "Stalled SourceNotFound", stalled(kilnv1.ReasonSourceNotFound))
	waitFor(t, good, 10*time.Minute, "Ready", ready)

	// The source appears: it builds, with no annotation.
	laterSrc := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "later-src"}, Data: map[string]string{
		"Dockerfile": "FROM " + env["BASE_BUSYBOX"] + "\nRUN echo one > /v\n",
	}}
	if err := k8s.Create(ctx, laterSrc); err != nil {
		t.Fatal(err)
	}
	first := waitFor(t, later, 10*time.Minute, "Ready", ready)
	// Edited: it builds again, and status says which content it built.
	laterSrc.Data["Dockerfile"] = "FROM " + env["BASE_BUSYBOX"] + "\nRUN echo two > /v\n"
	if err := k8s.Update(ctx, laterSrc); err != nil {
		t.Fatal(err)
	}
	second := waitFor(t, later, 10*time.Minute, "Ready after the ConfigMap edit", func(ib *kilnv1.ImageBuild) bool {
		return ready(ib) && ib.Status.Revision != first.Status.Revision && ib.Status.LastBuild.PodName != first.Status.LastBuild.PodName
	})
	if second.Status.Digest == first.Status.Digest {
		t.Errorf("the edited source built the same image %s", second.Status.Digest)
	}
}

// TestUnschedulableBuildEndsAndFreesItsSlot (issue 12 item 2): a build pod no node can take
// stays Pending with the scheduler's reason in the ImageBuild, then, after --max-pending (1m in
// the e2e install, hack/install-kiln.sh), fails as Unschedulable and gives back its pod and its
// cache Lease.
func TestUnschedulableBuildEndsAndFreesItsSlot(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "e2e-nowhere")
	src := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "src"}, Data: map[string]string{
		"Dockerfile": "FROM " + env["BASE_BUSYBOX"] + "\nRUN echo never > /v\n",
	}}
	ib := imageBuild(ns, "nowhere", "src", func(ib *kilnv1.ImageBuild) {
		ib.Spec.NodeSelector = map[string]string{"kiln.test/nowhere": "true"}
		ib.Spec.Retries = ptr.To[int32](0)
	})
	for _, obj := range []client.Object{src, ib} {
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ib, 2*time.Minute, "Pending with the scheduler's reason", func(ib *kilnv1.ImageBuild) bool {
		c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ConditionReady)
		return c != nil && strings.Contains(c.Message, "not scheduled:") && strings.Contains(c.Message, "node affinity/selector")
	})
	end := waitFor(t, ib, 4*time.Minute, "Stalled Unschedulable", func(ib *kilnv1.ImageBuild) bool {
		c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ConditionStalled)
		return c != nil && c.Reason == string(kilnv1.FailureUnschedulable)
	})
	if msg := meta.FindStatusCondition(end.Status.Conditions, kilnv1.ConditionStalled).Message; !strings.Contains(msg, "could not be scheduled for more than") {
		t.Errorf("message %q", msg)
	}
	// Its slot and cache are free: the pod is gone and the claim's Lease released (it stays, owned
	// by its claim, with no holder).
	deadline := time.Now().Add(time.Minute)
	for {
		podErr := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "nowhere-build-1"}, &corev1.Pod{})
		lease := &coordinationv1.Lease{}
		leaseErr := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "kiln-cache-nowhere-cache"}, lease)
		if apierrors.IsNotFound(podErr) && leaseErr == nil && lease.Spec.HolderIdentity == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Unschedulable: pod %v; lease %v, holder %v; want the pod gone and the lease held by nobody", podErr, leaseErr, ptr.Deref(lease.Spec.HolderIdentity, ""))
		}
		time.Sleep(time.Second)
	}
}
