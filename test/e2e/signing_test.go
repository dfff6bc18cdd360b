//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// TestSignedBuildVerifies (issue 15): the Go service of first-build.md, built with
// spec.output.signing on the local cluster, carries kiln's provenance and cosign's signature;
// the cosign CLI verifies both with the public key (offline: no transparency log), and a
// wrong password in the Secret fails the build as BadInput without pushing.
func TestSignedBuildVerifies(t *testing.T) {
	cli := os.Getenv("COSIGN")
	if cli == "" {
		t.Fatal("COSIGN is not set: make e2e builds the cosign CLI into bin/ and names it")
	}
	ctx := context.Background()
	ns := namespace(t, "e2e-signing")
	const password = "e2e-signing-pw-71c0"
	kb, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return []byte(password), nil })
	if err != nil {
		t.Fatal(err)
	}
	secret := func(name, pw string) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{
			"cosign.key": kb.PrivateBytes, "cosign.pub": kb.PublicBytes, "cosign.password": []byte(pw)}}
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	secret("cosign", password)
	secret("cosign-wrong", "not-"+password)
	helloSource(t, ns, "hello-src", "hello, signed")

	ib := imageBuild(ns, "hello", "hello-src", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Output.Signing = &kilnv1.Signing{SecretRef: kilnv1.LocalObjectReference{Name: "cosign"}}
	})
	if err := k8s.Create(ctx, ib); err != nil {
		t.Fatal(err)
	}
	done := waitFor(t, ib, 10*time.Minute, "Ready", ready)
	if done.Status.Signature == nil || len(done.Status.Attestations) != 1 || done.Status.Attestations[0].Provenance == "" {
		t.Fatalf("status signature %+v, attestations %+v: want both", done.Status.Signature, done.Status.Attestations)
	}
	pub := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(pub, kb.PublicBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	tag := ib.Spec.Output.Image + ":v1"
	for _, args := range [][]string{
		{"verify", "--key", pub, "--insecure-ignore-tlog", "--allow-http-registry", "--output", "text", tag},
		{"verify-attestation", "--key", pub, "--insecure-ignore-tlog", "--allow-http-registry", "--type", "slsaprovenance1", "--output", "text", tag},
	} {
		out, err := exec.Command(cli, args...).CombinedOutput()
		if err != nil {
			t.Errorf("cosign %s: %v\n%s", args[0], err, out)
		} else {
			t.Logf("cosign %s %s: ok", args[0], tag)
		}
	}

	wrong := imageBuild(ns, "wrong", "hello-src", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Output.Signing = &kilnv1.Signing{SecretRef: kilnv1.LocalObjectReference{Name: "cosign-wrong"}}
	})
	if err := k8s.Create(ctx, wrong); err != nil {
		t.Fatal(err)
	}
	failed := waitFor(t, wrong, 5*time.Minute, "Stalled", func(ib *kilnv1.ImageBuild) bool {
		return ib.Status.LastBuild != nil && ib.Status.LastBuild.FailureReason != ""
	})
	lb := failed.Status.LastBuild
	if lb.FailureReason != kilnv1.FailureBadInput || !strings.Contains(lb.Message, `signing Secret "cosign-wrong"`) || strings.Contains(lb.Message+lb.LogTail, password) {
		t.Errorf("wrong password: %s: %s", lb.FailureReason, lb.Message)
	}
	if d, _ := registryDigest(t, wrong.Spec.Output.Image+":v1"); d != "" {
		t.Errorf("the build with the wrong password pushed %s", d)
	}
}
