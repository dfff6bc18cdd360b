//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// TestRegistryCacheWarmsANewClaim: an ImageBuild with a registry cache loses its claim; the next
// build, on a new empty claim, is warm from the registry cache. A cache nobody can reach only
// warns.
func TestRegistryCacheWarmsANewClaim(t *testing.T) {
	ns := namespace(t, "e2e-regcache")
	helloSource(t, ns, "hello-src", "hello from the registry cache")
	cacheRef := env["REGISTRY"] + "/e2e/" + ns + "-cache:main"
	ib := imageBuild(ns, "hello", "hello-src", func(ib *kilnv1.ImageBuild) {
		ib.Spec.Cache.Registry = &kilnv1.RegistryCache{Image: cacheRef}
		ib.Spec.Output.Provenance, ib.Spec.Output.SBOM = kilnv1.ProvenanceNone, ptr.To(false) // times of the build alone
	})
	if err := k8s.Create(context.Background(), ib); err != nil {
		t.Fatal(err)
	}
	cold := waitFor(t, ib, 10*time.Minute, "Ready", ready)
	if r := cold.Status.Cache.Registry; r == nil || r.Image != cacheRef || r.Exported == "" || r.Message != "" {
		t.Fatalf("cold build's status.cache.registry %+v: want a cache exported to %s", r, cacheRef)
	}
	if d, _ := registryDigest(t, cacheRef); d != cold.Status.Cache.Registry.Exported {
		t.Errorf("the registry has %q at %s, status says %s", d, cacheRef, cold.Status.Cache.Registry.Exported)
	}

	// The claim is lost: kiln makes a new, empty one for the next build.
	kc(t, "-n", ns, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/hello-build-1", "--timeout=60s")
	kc(t, "-n", ns, "delete", "pvc", "hello-cache", "--wait=true", "--timeout=60s")
	kc(t, "-n", ns, "annotate", "ib/hello", "kiln.dev/rebuild-requested-at="+time.Now().UTC().Format(time.RFC3339), "--overwrite")
	warm := waitFor(t, ib, 10*time.Minute, "rebuilt on a new claim", func(ib *kilnv1.ImageBuild) bool {
		return ready(ib) && ib.Status.LastBuild.PodName == "hello-build-2"
	})
	if r := warm.Status.Cache.Registry; r == nil || !r.Imported || r.Message != "" {
		t.Errorf("status.cache.registry %+v: want the cache imported, no warning", r)
	}
	// All but the final COPY --from, which BuildKit runs again on an empty state (docs/operations.md).
	if c := warm.Status.Cache; c.TotalSteps == 0 || c.CachedSteps < c.TotalSteps-1 {
		t.Errorf("on a new claim %d of %d steps were cached", c.CachedSteps, c.TotalSteps)
	}
	if warm.Status.Digest != cold.Status.Digest {
		t.Errorf("built from the registry cache: %s, cold: %s", warm.Status.Digest, cold.Status.Digest)
	}
	t.Logf("cold build %.1fs; on a new claim with the registry cache %.1fs", buildSeconds(t, cold), buildSeconds(t, warm))

	// A cache reference nobody serves: the build is pushed, with a warning.
	kc(t, "-n", ns, "patch", "ib/hello", "--type=merge", "-p", `{"spec":{"cache":{"registry":{"image":"`+strings.SplitN(env["REGISTRY"], ":", 2)[0]+`:1/nowhere/cache:main"}}}}`)
	bad := waitFor(t, ib, 10*time.Minute, "rebuilt with an unreachable cache", func(ib *kilnv1.ImageBuild) bool {
		return ready(ib) && ib.Status.LastBuild.PodName == "hello-build-3"
	})
	if r := bad.Status.Cache.Registry; r == nil || r.Imported || r.Exported != "" || !strings.Contains(r.Message, "importing it failed") || !strings.Contains(r.Message, "exporting it failed") {
		t.Errorf("status.cache.registry %+v: want both failures said", r)
	}
	events := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events.Items {
		found = found || (e.Reason == kilnv1.ReasonRegistryCacheFailed && e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, "nowhere/cache:main"))
	}
	if !found {
		t.Errorf("no Warning Event %s naming the cache", kilnv1.ReasonRegistryCacheFailed)
	}
}
