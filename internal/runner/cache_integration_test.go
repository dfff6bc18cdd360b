package runner

import (
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestRegistryCacheWithRealBuildKit: a build exports its registry cache; a buildkitd with an empty
// state directory (a new claim) imports it and serves every step from it; a cache that cannot be
// reached is a warning, and the build is pushed all the same.
func TestRegistryCacheWithRealBuildKit(t *testing.T) {
	testenv.SkipUnlessBuildKitPossible(t)
	reg := testenv.StartRegistry(t)
	first := testenv.StartBuildKit(t, testenv.BuildKitOptions{InsecureRegistries: []string{reg.Addr}})
	e := &env{t: t, reg: reg, bk: first, busybox: testenv.BusyboxImage(t, reg), golang: testenv.GoImage(t, reg)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("buildkitd log:\n%s", e.bk.Log())
		}
	})
	files := helloFiles(e.golang, "hello from the registry cache")
	cacheRef := reg.Addr + "/test/cached-cache:main"
	req := e.request("cached", func(s *contract.BuildSpec) {
		s.Cache = &contract.Cache{Registry: &contract.RegistryCache{Image: cacheRef, Mode: "max"}}
	})

	cold := e.run(t, req, e.paths(t, files))
	if cold.FailureClass != "" || !cold.Pushed {
		t.Fatalf("cold build: %s %s", cold.FailureClass, cold.Message)
	}
	if c := cold.Cache; c == nil || c.Imported || c.Exported == "" || c.Message != "" {
		t.Fatalf("cold build's cache report %+v: want nothing imported (no cache yet), a manifest exported, no warning", c)
	}
	d := e.get(t, cacheRef)
	if d.Digest.String() != cold.Cache.Exported {
		t.Errorf("the registry has %s at %s, the build reported %s", d.Digest, cacheRef, cold.Cache.Exported)
	}
	m, err := d.Image()
	if err != nil {
		t.Fatal(err)
	}
	mf, err := m.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if mf.Config.MediaType != "application/vnd.buildkit.cacheconfig.v0" || d.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("cache manifest %s with config %s: want an OCI image manifest of BuildKit's cache config", d.MediaType, mf.Config.MediaType)
	}
	if len(cold.Platforms) != 1 || cold.Platforms[0].Layers != 1 {
		t.Errorf("the measured image is %+v: the cache must not be counted in it", cold.Platforms)
	}

	// A new claim: a buildkitd with an empty state directory.
	first.Stop()
	e.bk = testenv.StartBuildKit(t, testenv.BuildKitOptions{InsecureRegistries: []string{reg.Addr}})
	warm := e.run(t, req, e.paths(t, files))
	if warm.FailureClass != "" || !warm.Pushed {
		t.Fatalf("build on an empty state: %s %s", warm.FailureClass, warm.Message)
	}
	// Every step but the last comes from the cache. BuildKit (v0.33) runs a COPY --from again on
	// an empty state: its cache key includes the checksum of the files it copies, which it
	// computes from the imported build stage's layers, and then copies them (milliseconds; the
	// layer is the same, as the digest below shows).
	if warm.TotalSteps == 0 || warm.CachedSteps < warm.TotalSteps-1 {
		t.Errorf("on an empty state with the registry cache %d of %d steps were cached, want all but the final COPY --from", warm.CachedSteps, warm.TotalSteps)
	}
	if c := warm.Cache; c == nil || !c.Imported || c.Message != "" {
		t.Errorf("cache report %+v: want imported, no warning", c)
	}
	if warm.Digest != cold.Digest {
		t.Errorf("the image built from the registry cache is %s, the cold build's %s", warm.Digest, cold.Digest)
	}

	// A cache nobody can reach: a warning, and the image is pushed.
	bad := e.request("cached", func(s *contract.BuildSpec) {
		s.Output.Tags = []string{"badcache"}
		s.Cache = &contract.Cache{Registry: &contract.RegistryCache{Image: "127.0.0.1:1/nowhere/cache:main", Mode: "min"}}
	})
	res := e.run(t, bad, e.paths(t, files))
	if res.FailureClass != "" || !res.Pushed {
		t.Fatalf("a build with an unreachable registry cache failed: %s %s", res.FailureClass, res.Message)
	}
	c := res.Cache
	if c == nil || c.Imported || c.Exported != "" || !strings.Contains(c.Message, "importing it failed") || !strings.Contains(c.Message, "exporting it failed") || !strings.Contains(c.Message, "127.0.0.1:1/nowhere/cache:main") {
		t.Errorf("cache report %+v: want both failures named, with the reference", c)
	}
}
