package runner

import (
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"

	"github.com/kiln-dev/kiln/internal/contract"
)

// A registry cache may not name one of the pushed tags, however the reference is spelled: the
// helper's spellings that admission's string comparison let through.
func TestCacheNamingAPushedTagIsRefused(t *testing.T) {
	for _, tc := range []struct {
		image string
		tags  []string
		cache string
		want  string
	}{
		{"10.88.0.1:5000/nu16/a", []string{"v1"}, "10.88.0.1:05000/nu16/a:v1", "10.88.0.1:5000/nu16/a:v1"},
		{"docker.io/team/x", nil, "team/x:latest", "team/x:latest"},
		{"docker.io/library/x", nil, "x", "x:latest"},
		{"index.docker.io/library/x", []string{"v2", "main"}, "docker.io/x:main", "x:main"},
		{"Registry.Example.com/team/app", []string{"v1"}, "registry.example.com/team/app:v1", "registry.example.com/team/app:v1"},
		{"registry.example.com/team/app", []string{"v1"}, "registry.example.com/team/app", ""},
		{"registry.example.com/team/app", []string{"v1"}, "registry.example.com/team/app:V1", ""},
		{"registry.example.com/team/app", []string{"v1"}, "registry.example.com/team/app-cache:v1", ""},
		{"registry.example.com:5000/team/app", []string{"v1"}, "registry.example.com/team/app:v1", ""},
	} {
		r := &run{req: contract.Request{Spec: contract.BuildSpec{Output: contract.Output{Image: tc.image, Tags: tc.tags}}}}
		got := r.pushedTagNamed(tc.cache)
		if (got == "") != (tc.want == "") {
			t.Errorf("cache %s, output %s %v: names pushed tag %q, want %q", tc.cache, tc.image, tc.tags, got, tc.want)
		}
	}
}

// A step reported CACHED stays counted so when BuildKit reports it again, not cached, as it pulls
// the layers of a result from a registry cache.
func TestStepFromRegistryCacheCountsAsCached(t *testing.T) {
	s := newStepCounter()
	now := time.Now()
	d := digest.FromString("RUN sleep 12")
	s.observe(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: d, Name: "[2/2] RUN sleep 12", Cached: true, Completed: &now}}})
	s.observe(&client.SolveStatus{Vertexes: []*client.Vertex{{Digest: d, Name: "[2/2] RUN sleep 12", Completed: &now}}})
	if cached, total := s.counts(); cached != 1 || total != 1 {
		t.Errorf("%d of %d steps cached, want 1 of 1", cached, total)
	}
}
