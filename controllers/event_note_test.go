package controllers

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// TestEventNotesAreCutToTheAPIServersLimit: a note over 1024 bytes is cut at a rune boundary with
// "…", and the Event reaches the API server (which refuses a longer note, and the Event is lost).
func TestEventNotesAreCutToTheAPIServersLimit(t *testing.T) {
	long := strings.Repeat("é", 2500) // 5000 bytes
	note := eventNote("Build pod %s failed: %s", "x-build-1", long)
	if len(note) > contract.MaxEventNote || !utf8.ValidString(note) || !strings.HasSuffix(note, "…") || !strings.HasPrefix(note, "Build pod x-build-1 failed: éé") {
		t.Fatalf("note of %d bytes (valid UTF-8: %v): %.60q…%q", len(note), utf8.ValidString(note), note, note[max(0, len(note)-8):])
	}
	if short := eventNote("Built %s", "x"); short != "Built x" {
		t.Errorf("a short note is changed: %q", short)
	}

	g := eventually(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ib := newImageBuild(ns, "loud", func(ib *kilnv1.ImageBuild) { ib.Spec.Suspend = true })
	g.Expect(k8sClient.Create(ctx, ib)).To(Succeed())
	cur := getIB(g, ib)
	testReconciler.event(cur, corev1.EventTypeWarning, "LongNote", "Build pod %s failed: %s", "loud-build-1", long)
	for _, fn := range afterPatch.take(cur) {
		fn()
	}
	g.Eventually(func(g Gomega) {
		notes := eventNotes(g, ns, "LongNote")
		g.Expect(notes).To(HaveLen(1))
		g.Expect(len(notes[0])).To(BeNumerically("<=", contract.MaxEventNote))
		g.Expect(notes[0]).To(HaveSuffix("…"))
	}).Should(Succeed())
}
