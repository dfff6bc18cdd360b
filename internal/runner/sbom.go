package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/sbom"
	"github.com/kiln-dev/kiln/internal/units"
	"github.com/kiln-dev/kiln/internal/version"
)

// mediaTypeInToto is the media type of an in-toto statement layer, as BuildKit writes them.
const mediaTypeInToto = types.MediaType("application/vnd.in-toto+json")

// attachSBOMs scans each platform image of the exported layout with syft and adds its SPDX
// statement to the image's attestation manifest, where BuildKit put the provenance (or to a
// new attestation manifest, when there is none: a single image becomes an index of the image
// and its attestation). It returns a layout-like index whose one manifest is what to push, and
// records the attestations in res.
func (r *run) attachSBOMs(ctx context.Context, sc *sbom.Scanner, lay v1.ImageIndex, kc authn.Keychain, res *contract.Result) (v1.ImageIndex, error) {
	start := time.Now()
	reuse := r.previousSBOMs(ctx, kc)
	im, err := lay.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the exported OCI layout: %w", err)
	}
	if len(im.Manifests) == 0 {
		return nil, errors.New("the exported OCI layout is empty")
	}
	top := im.Manifests[0]
	var idx v1.ImageIndex
	if top.MediaType.IsIndex() {
		if idx, err = lay.ImageIndex(top.Digest); err != nil {
			return nil, err
		}
	} else {
		img, err := lay.Image(top.Digest)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: top.MediaType, Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}}})
	}
	inner, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	attOf := map[string]v1.Descriptor{}
	for _, d := range inner.Manifests {
		if measure.IsAttestation(d) {
			attOf[d.Annotations[measure.AnnotationReferenceDigest]] = d
		}
	}
	out := idx
	for _, d := range inner.Manifests {
		if measure.IsAttestation(d) || !d.MediaType.IsImage() {
			continue
		}
		if out, err = r.addSBOM(ctx, sbomSource{sc, reuse}, out, idx, d, attOf, res); err != nil {
			return nil, err
		}
	}
	atts, bytes, err := measure.IndexAttestations(out)
	if err != nil {
		return nil, err
	}
	res.Attestations, res.AttestationBytes = attestations(atts), bytes
	how := "made with syft"
	if len(reuse) > 0 && allReused(inner, reuse) {
		how = "reused from the last pushed image"
	}
	fmt.Fprintf(r.out, "SBOMs %s in %s\n", how, time.Since(start).Round(time.Millisecond))
	return mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: out}), nil
}

// allReused reports whether every platform image of idx (its manifest im) had its SBOM reused.
func allReused(im *v1.IndexManifest, reuse map[string]reusedSBOM) bool {
	for _, d := range im.Manifests {
		if _, ok := reuse[d.Digest.String()]; !ok && !measure.IsAttestation(d) && d.MediaType.IsImage() {
			return false
		}
	}
	return true
}

// sbomSource is where SBOMs come from: syft, or the previous image's for an unchanged platform
// image (previousSBOMs).
type sbomSource struct {
	scanner *sbom.Scanner
	reuse   map[string]reusedSBOM
}

// addSBOM adds the SBOM of platform image d of idx to its attestation manifest in out.
func (r *run) addSBOM(ctx context.Context, src sbomSource, out, idx v1.ImageIndex, d v1.Descriptor, attOf map[string]v1.Descriptor, res *contract.Result) (v1.ImageIndex, error) {
	platform := ""
	if d.Platform != nil {
		platform = measure.PlatformString(*d.Platform)
	}
	var st []byte
	if prev, ok := src.reuse[d.Digest.String()]; ok {
		st = prev.statement
		fmt.Fprintf(r.out, "SBOM %s: the image is the one pushed last (%s): its SBOM is reused, %s\n", platform, d.Digest, units.Bytes(int64(len(st))))
		r.reusePackages(platform, prev.sizes, res)
	} else {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		doc, pkgs, err := src.scanner.Generate(ctx, img, r.imageName(), sbom.Options{Tool: "kiln", Version: version.Version})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", platform, err)
		}
		if st, err = sbom.Statement(doc, r.req.Spec.Output.Image, d.Digest); err != nil {
			return nil, err
		}
		fmt.Fprintf(r.out, "SBOM %s: %d packages, %s\n", platform, len(pkgs), units.Bytes(int64(len(st))))
		r.reportPackages(d.Digest.String(), platform, pkgs, res)
	}
	layer := static.NewLayer(st, mediaTypeInToto)
	add := mutate.Addendum{Layer: layer, Annotations: map[string]string{measure.AnnotationPredicateType: sbom.PredicateType}}
	old, had := attOf[d.Digest.String()]
	var att v1.Image
	var err error
	if had {
		if att, err = idx.Image(old.Digest); err != nil {
			return nil, err
		}
		out = mutate.RemoveManifests(out, match.Digests(old.Digest))
	} else {
		att = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		if att, err = mutate.ConfigFile(att, &v1.ConfigFile{OS: "unknown", Architecture: "unknown"}); err != nil {
			return nil, err
		}
		old = v1.Descriptor{Annotations: map[string]string{measure.AnnotationReferenceType: measure.ReferenceTypeAttestation, measure.AnnotationReferenceDigest: d.Digest.String()}}
	}
	if att, err = mutate.Append(att, add); err != nil {
		return nil, err
	}
	return mutate.AppendManifests(out, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
		MediaType: types.OCIManifestSchema1, Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}, Annotations: old.Annotations}}), nil
}

// reusePackages puts the package sizes measured for the same platform image by the previous
// build into res: the same image has the same files.
func (r *run) reusePackages(platform string, prev *contract.PreviousPlatform, res *contract.Result) {
	if len(prev.LargestPackages) > 0 {
		fmt.Fprintf(r.out, "Largest packages of %s, as measured when it was pushed:\n", platform)
		sbom.WriteSizes(r.out, prev.LargestPackages, prev.UnpackagedBytes, len(prev.LargestPackages))
	}
	for i := range res.Platforms {
		if res.Platforms[i].Platform == platform {
			res.Platforms[i].LargestPackages = prev.LargestPackages[:min(len(prev.LargestPackages), contract.MaxPackagesPerPlatform)]
			res.Platforms[i].UnpackagedBytes = prev.UnpackagedBytes
		}
	}
}

// logPackages is how many of the largest packages the runner's log lists per platform.
const logPackages = 20

// reportPackages attributes the measured final files of the platform image with digest to the
// SBOM's packages (packageSizes), keeps the largest in res and lists more in the log.
func (r *run) reportPackages(digest, platform string, pkgs []sbom.Package, res *contract.Result) {
	var files map[string]measure.File
	for _, m := range r.measured.Images {
		if m.Digest == digest {
			files = m.Files
		}
	}
	if files == nil {
		return
	}
	sizes, unpackaged := sbom.Sizes(pkgs, files)
	if len(sizes) > 0 {
		sbom.WriteSizes(r.out, sizes, unpackaged, logPackages)
	}
	for i := range res.Platforms {
		if res.Platforms[i].Platform == platform {
			res.Platforms[i].LargestPackages = sizes[:min(len(sizes), contract.MaxPackagesPerPlatform)]
			res.Platforms[i].UnpackagedBytes = unpackaged
		}
	}
}
