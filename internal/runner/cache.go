package runner

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/client"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// The names of the progress vertices in which BuildKit (v0.33: solver/llbsolver's bridge and
// cache/remotecache/registry) imports and exports a registry cache; a failed one carries the
// error. The import's name ends with the cache's reference.
const (
	cacheImportVertex = "importing cache manifest from "
	cacheExportVertex = "exporting cache to registry"
	// cacheManifestKey is the solve response's entry with the exported cache manifest's
	// descriptor (BuildKit's remotecache.ExporterResponseManifestDesc).
	cacheManifestKey = "cache.manifest"
)

// addRegistryCache adds spec.cache.registry to the solve: BuildKit imports it (the Dockerfile
// frontend's "cache-imports", as buildx passes --cache-from) and exports to it once the build is
// solved, in OCI media types as an image manifest, which every OCI registry stores. Neither may
// fail the build: BuildKit goes on without a cache it cannot import, and "ignore-error" keeps a
// failed export from failing the solve; cacheReport says what happened.
func (r *run) addRegistryCache(opt *client.SolveOpt, frontendAttrs map[string]string) error {
	rc := r.registryCache()
	if rc == nil {
		return nil
	}
	if tag := r.pushedTagNamed(rc.Image); tag != "" {
		return fail(kilnv1.FailureBadInput, "spec.cache.registry.image %s is %s, one of the tags the image is pushed to: the cache would overwrite it; give the cache a tag or repository of its own, such as %s:buildcache",
			rc.Image, tag, r.req.Spec.Output.Image)
	}
	from := map[string]string{"ref": rc.Image}
	to := map[string]string{
		"ref": rc.Image, "mode": string(rc.Mode),
		"oci-mediatypes": "true", "image-manifest": "true", "ignore-error": "true",
	}
	if r.req.Spec.Output.Insecure {
		from["registry.insecure"], to["registry.insecure"] = "true", "true"
	}
	imports := []client.CacheOptionsEntry{{Type: "registry", Attrs: from}}
	b, err := json.Marshal(imports)
	if err != nil {
		return err
	}
	frontendAttrs["cache-imports"] = string(b)
	opt.CacheImports = imports
	if opt.FrontendAttrs == nil {
		opt.FrontendAttrs = map[string]string{} // BuildKit's client copies the cache options into it
	}
	opt.CacheExports = []client.CacheOptionsEntry{{Type: "registry", Attrs: to}}
	fmt.Fprintf(r.out, "Registry cache %s (mode %s): imported at the start, exported when the build is solved\n", rc.Image, rc.Mode)
	return nil
}

// pushedTagNamed is the tag of spec.output that ref names, however it is spelled (docker.io and
// library/ left out or not, a port with a leading zero, no tag for latest), or "" when it names
// none. Admission compares the strings only; this is the check that holds.
func (r *run) pushedTagNamed(ref string) string {
	cache, err := name.NewTag(ref, r.nameOptions()...)
	if err != nil {
		return "" // BuildKit says what is wrong with it
	}
	out := r.req.Spec.Output
	tags := out.Tags
	if len(tags) == 0 {
		tags = []string{"latest"}
	}
	for _, t := range tags {
		pushed, err := name.NewTag(out.Image+":"+t, r.nameOptions()...)
		if err == nil && sameRegistry(cache.Context().Registry, pushed.Context().Registry) &&
			cache.Context().RepositoryStr() == pushed.Context().RepositoryStr() && cache.TagStr() == pushed.TagStr() {
			return pushed.String()
		}
	}
	return ""
}

// sameRegistry reports whether a and b are one registry: the same host, and the same port as a
// number (05000 is 5000).
func sameRegistry(a, b name.Registry) bool {
	host := func(r name.Registry) (string, int) {
		h, p, err := net.SplitHostPort(r.RegistryStr())
		if err != nil {
			return strings.ToLower(r.RegistryStr()), 0
		}
		n, _ := strconv.Atoi(p)
		return strings.ToLower(h), n
	}
	ah, ap := host(a)
	bh, bp := host(b)
	return ah == bh && ap == bp
}

// registryCache is spec.cache.registry with its mode defaulted; nil without one.
func (r *run) registryCache() *contract.RegistryCache {
	c := r.req.Spec.Cache
	if c == nil || c.Registry == nil || c.Registry.Image == "" {
		return nil
	}
	rc := *c.Registry
	if rc.Mode == "" {
		rc.Mode = kilnv1.RegistryCacheMax
	}
	return &rc
}

// cacheReport is what the build did with its registry cache, from the progress it showed and
// the solve's response (nil when the solve failed); nil without a registry cache. Failures are
// said in the log as warnings: they never fail the build.
func (r *run) cacheReport(steps *stepCounter, resp *client.SolveResponse) *contract.CacheReport {
	rc := r.registryCache()
	if rc == nil {
		return nil
	}
	rep := &contract.CacheReport{Image: rc.Image}
	steps.mu.Lock()
	defer steps.mu.Unlock()
	var importErr, exportErr string
	for name, msg := range steps.cacheIO {
		switch {
		case strings.HasPrefix(name, cacheImportVertex) && msg == "":
			rep.Imported = true
		case strings.HasPrefix(name, cacheImportVertex) && strings.HasSuffix(msg, ": not found"):
			// No cache there yet: this build's export makes it. Not a problem.
			fmt.Fprintf(r.out, "Registry cache %s: not found; this build exports it\n", rc.Image)
		case strings.HasPrefix(name, cacheImportVertex):
			importErr = "importing it failed: " + r.red.String(cleanCacheError(msg))
		case name == cacheExportVertex && msg != "":
			exportErr = "exporting it failed: " + r.red.String(cleanCacheError(msg))
		}
	}
	var problems []string
	for _, p := range []string{importErr, exportErr} {
		if p != "" {
			problems = append(problems, p)
		}
	}
	if resp != nil {
		var desc ocispecs.Descriptor
		if s := resp.ExporterResponse[cacheManifestKey]; s != "" && json.Unmarshal([]byte(s), &desc) == nil {
			rep.Exported = desc.Digest.String()
		}
	}
	if len(problems) > 0 {
		rep.Message = fmt.Sprintf("registry cache %s: %s", rc.Image, strings.Join(problems, "; "))
		fmt.Fprintf(r.out, "Warning: %s (the build goes on without it)\n", rep.Message)
	}
	switch {
	case rep.Exported != "":
		fmt.Fprintf(r.out, "Registry cache %s: exported cache manifest %s\n", rc.Image, rep.Exported)
	case resp != nil && rep.Message == "":
		fmt.Fprintf(r.out, "Registry cache %s: nothing exported\n", rc.Image)
	}
	return rep
}

// cleanCacheError is the part of a cache import or export error worth reading: BuildKit wraps
// the registry's answer in "failed to configure registry cache importer: ...".
func cleanCacheError(msg string) string {
	msg = strings.TrimSpace(msg)
	for _, p := range []string{"failed to configure registry cache importer: ", "failed to configure registry cache exporter: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return contract.Truncate(msg, 512)
}
