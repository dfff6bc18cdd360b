package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/sbom"
)

// reusedSBOM is the SBOM statement of a platform image that the previous build pushed too, byte
// for byte, and the package sizes measured then (never nil).
type reusedSBOM struct {
	statement []byte
	sizes     *contract.PreviousPlatform
}

// previousSBOMs reads the SBOM statements of the image the ImageBuild pushed last (the request's
// Previous, from its status) by platform image digest. An SBOM describes one image's content,
// so a platform image built again with the same digest keeps it: syft is not run again (its
// start alone costs about 0.7 s of CPU, the most of a warm build's supply-chain cost). Only the
// pushed index named by digest is read, which kiln itself pushed: its statements cannot have
// changed. Anything that cannot be read is said in the log, and the SBOMs are made anew.
func (r *run) previousSBOMs(ctx context.Context, kc authn.Keychain) map[string]reusedSBOM {
	prev := r.req.Previous
	if prev == nil || prev.Digest == "" {
		return nil
	}
	ref, err := name.NewDigest(r.req.Spec.Output.Image+"@"+prev.Digest, r.nameOptions()...)
	if err != nil {
		return nil
	}
	out, err := r.readPreviousSBOMs(ctx, ref, kc)
	if err != nil {
		fmt.Fprintf(r.out, "Cannot reuse the SBOMs of %s (the last image pushed), making them anew: %v\n", ref, err)
		return nil
	}
	return out
}

func (r *run) readPreviousSBOMs(ctx context.Context, ref name.Digest, kc authn.Keychain) (map[string]reusedSBOM, error) {
	desc, err := remote.Get(ref, r.remoteOptions(ctx, kc)...)
	if err != nil {
		return nil, err
	}
	if !desc.MediaType.IsIndex() {
		return nil, nil // a single image carries no attestations
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, err
	}
	atts, _, err := measure.IndexAttestations(idx)
	if err != nil {
		return nil, err
	}
	out := map[string]reusedSBOM{}
	for _, a := range atts {
		for _, s := range a.Statements {
			if s.PredicateType != sbom.PredicateType || s.Size > maxStatement {
				continue
			}
			raw, err := statementBlob(idx, a.Manifest, s.Digest)
			if err != nil {
				return nil, err
			}
			if !statementAbout(raw, a.Subject) {
				continue
			}
			sizes := r.previousSizes(a.Platform)
			if sizes == nil {
				// Reusing the SBOM would leave status without the image's package sizes.
				fmt.Fprintf(r.out, "SBOM %s: the package sizes of the image pushed last (%s) are not known here (the last image measured was another, such as one the budget refused), so its SBOM is not reused\n", a.Platform, a.Subject)
				continue
			}
			out[a.Subject] = reusedSBOM{statement: raw, sizes: sizes}
		}
	}
	return out, nil
}

// previousSizes is the package sizes the request carries for platform; nil when it has none (the
// SBOM is then made anew: status would otherwise lose the image's package sizes).
func (r *run) previousSizes(platform string) *contract.PreviousPlatform {
	for i, p := range r.req.Previous.Platforms {
		if p.Platform == platform {
			return &r.req.Previous.Platforms[i]
		}
	}
	return nil
}

// statementAbout reports whether in-toto statement raw is an SPDX SBOM whose subject is the image
// with digest subject.
func statementAbout(raw []byte, subject string) bool {
	var st struct {
		PredicateType string `json:"predicateType"`
		Subject       []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&st); err != nil || st.PredicateType != sbom.PredicateType {
		return false
	}
	for _, s := range st.Subject {
		for alg, hex := range s.Digest {
			if alg+":"+hex == subject {
				return true
			}
		}
	}
	return false
}
