package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	cremote "github.com/sigstore/cosign/v2/pkg/cosign/remote"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/cosign/v2/pkg/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/units"
)

// signer is spec.output.signing's cosign key, loaded before anything is built: a key that
// cannot be loaded fails the build as BadInput, and nothing is pushed.
type signer struct {
	sv signature.SignerVerifier
	// keyID is the SHA-256 of the public key's DER form, hex.
	keyID string
}

// maxKeyFile bounds what the runner reads of a signing Secret's key.
const maxKeyFile = 64 << 10

// loadSigner reads the cosign key pair of the signing Secret mounted at dir and returns it,
// with the texts to hide in the log (the password, the key). Errors are BadInput and name the
// Secret and the key, never a value.
func loadSigner(s *contract.Signing, dir, namespace string) (*signer, []string, error) {
	where := fmt.Sprintf("signing Secret %q (spec.output.signing.secretRef) in namespace %q", s.SecretRef.Name, namespace)
	read := func(key string, required bool) ([]byte, error) {
		b, err := readBounded(filepath.Join(dir, key), maxKeyFile)
		if errors.Is(err, os.ErrNotExist) && !required {
			return nil, nil
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil, fail(kilnv1.FailureBadInput, "%s is missing or has no key %s (%s)", where, key, signingKeysHint)
		}
		if err != nil {
			return nil, fail(kilnv1.FailureBadInput, "%s: key %s cannot be read: %v", where, key, err)
		}
		return b, nil
	}
	key, err := read(contract.SigningKey, true)
	if err != nil {
		return nil, nil, err
	}
	password, err := read(contract.SigningPassword, true)
	if err != nil {
		return nil, nil, err
	}
	// A password file made with kubectl create secret --from-file may end with a newline.
	password = bytes.TrimRight(password, "\r\n")
	hide := []string{string(key), strings.TrimSpace(string(key)), string(password)}
	sv, err := cosign.LoadPrivateKey(key, password, nil)
	if err != nil {
		return nil, hide, fail(kilnv1.FailureBadInput, "%s: key %s cannot be loaded with %s: a wrong password, or not a private key as cosign generate-key-pair writes it", where, contract.SigningKey, contract.SigningPassword)
	}
	pub, err := sv.PublicKey()
	if err != nil {
		return nil, hide, fail(kilnv1.FailureBadInput, "%s: key %s has no public key: %v", where, contract.SigningKey, err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, hide, fail(kilnv1.FailureBadInput, "%s: key %s: %v", where, contract.SigningKey, err)
	}
	if given, err := read(contract.SigningPub, false); err != nil {
		return nil, hide, err
	} else if given != nil {
		gp, err := cryptoutils.UnmarshalPEMToPublicKey(given)
		if err != nil {
			return nil, hide, fail(kilnv1.FailureBadInput, "%s: key %s is not a PEM public key: %v", where, contract.SigningPub, err)
		}
		if gd, err := x509.MarshalPKIXPublicKey(gp); err != nil || !bytes.Equal(gd, der) {
			return nil, hide, fail(kilnv1.FailureBadInput, "%s: key %s is not the public key of %s: verifiers holding it would refuse kiln's signatures", where, contract.SigningPub, contract.SigningKey)
		}
	}
	sum := sha256.Sum256(der)
	return &signer{sv: sv, keyID: hex.EncodeToString(sum[:])}, hide, nil
}

const signingKeysHint = "cosign.key and cosign.password, as cosign generate-key-pair writes them; cosign.pub optional"

// readBounded reads at most limit bytes of path; a longer file is an error.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// sign writes, before the image itself is pushed, cosign's signature of the image in layout
// (and, as `cosign sign --recursive` does, of each of its platform images) to the repository's
// sha256-<hex>.sig tags, and each provenance statement BuildKit attached, signed as a DSSE
// envelope, to sha256-<hex>.att, as `cosign attest` writes them, without a transparency log.
// The statements keep BuildKit's predicate and subject (the platform image) and also name the
// index as a subject, so that `cosign verify-attestation` of the tag finds them. Writing them
// first means no tag ever points to an image without its signature.
func (r *run) sign(ctx context.Context, s *signer, layout v1.ImageIndex, kc keychain) (*contract.Signature, error) {
	im, err := layout.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the exported OCI layout: %w", err)
	}
	if len(im.Manifests) == 0 {
		return nil, errors.New("the exported OCI layout is empty")
	}
	top := im.Manifests[0]
	repo, err := name.NewRepository(r.req.Spec.Output.Image, r.nameOptions()...)
	if err != nil {
		return nil, fail(kilnv1.FailureBadInput, "spec.output.image: %q is not a valid repository: %v", r.req.Spec.Output.Image, err)
	}
	digests := []v1.Hash{top.Digest}
	var statements [][]byte
	if top.MediaType.IsIndex() {
		idx, err := layout.ImageIndex(top.Digest)
		if err != nil {
			return nil, err
		}
		if digests, statements, err = signedParts(idx, repo, top.Digest); err != nil {
			return nil, fmt.Errorf("reading the attestations to sign: %w", err)
		}
	}
	ro := ociremote.WithRemoteOptions(r.remoteOptions(ctx, kc)...)
	dd := cremote.NewDupeDetector(s.sv)
	start := time.Now()
	for _, d := range digests {
		ref := repo.Digest(d.String())
		if err := r.withRetry(ctx, "writing the signature of "+ref.String(), func() error { return writeSignature(s.sv, ref, dd, ro) }); err != nil {
			return nil, r.pushFailure(ref.String(), err)
		}
	}
	ref := repo.Digest(top.Digest.String())
	out := &contract.Signature{Signature: repo.Tag(tagFor(top.Digest, "sig")).String(), KeyID: s.keyID}
	if len(statements) > 0 {
		if err := r.withRetry(ctx, "writing the signed attestations of "+ref.String(), func() error { return writeAttestations(s.sv, ref, statements, dd, ro) }); err != nil {
			return nil, r.pushFailure(ref.String(), err)
		}
		out.Attestations = repo.Tag(tagFor(top.Digest, "att")).String()
	}
	fmt.Fprintf(r.out, "Signed %s (%d signatures, %d attestations; key sha256:%s) in %s\n", ref, len(digests), len(statements), s.keyID[:16], time.Since(start).Round(time.Millisecond))
	return out, nil
}

// tagFor is cosign's tag for the signature ("sig") or attestations ("att") of digest d.
func tagFor(d v1.Hash, suffix string) string {
	return d.Algorithm + "-" + d.Hex + "." + suffix
}

// signedParts returns the digests to sign in index idx (its own, then each platform image's)
// and its provenance and SBOM statements (as measure.IndexAttestations finds them), each with
// the index added to its subjects.
func signedParts(idx v1.ImageIndex, repo name.Repository, self v1.Hash) ([]v1.Hash, [][]byte, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	digests := []v1.Hash{self}
	for _, d := range im.Manifests {
		if !measure.IsAttestation(d) && d.MediaType.IsImage() {
			digests = append(digests, d.Digest)
		}
	}
	atts, _, err := measure.IndexAttestations(idx)
	if err != nil {
		return nil, nil, err
	}
	var statements [][]byte
	for _, a := range atts {
		for _, st := range a.Statements {
			switch st.PredicateType {
			case measure.PredicateSLSAProvenance1, measure.PredicateSLSAProvenance02, measure.PredicateSPDX:
			default:
				continue
			}
			raw, err := statementBlob(idx, a.Manifest, st.Digest)
			if err != nil {
				return nil, nil, err
			}
			signed, err := withSubject(raw, repo.Name(), self)
			if err != nil {
				return nil, nil, err
			}
			statements = append(statements, signed)
		}
	}
	return digests, statements, nil
}

// maxStatement bounds what the runner reads of one attestation statement (BuildKit's
// provenance, its own SBOM) to sign it: an image with many thousand packages makes an SBOM of
// tens of MiB.
const maxStatement = 256 << 20

// statementBlob reads statement layer digest of attestation manifest manifest in idx.
func statementBlob(idx v1.ImageIndex, manifest, digest string) ([]byte, error) {
	mh, err := v1.NewHash(manifest)
	if err != nil {
		return nil, err
	}
	lh, err := v1.NewHash(digest)
	if err != nil {
		return nil, err
	}
	img, err := idx.Image(mh)
	if err != nil {
		return nil, err
	}
	layer, err := img.LayerByDigest(lh)
	if err != nil {
		return nil, err
	}
	rc, err := layer.Compressed()
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	raw, err := io.ReadAll(io.LimitReader(rc, maxStatement+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxStatement {
		return nil, fail(kilnv1.FailureBadInput, "attestation statement %s is larger than %s, more than kiln signs: set spec.output.sbom: false or spec.output.provenance: min",
			digest, units.Bytes(maxStatement))
	}
	return raw, nil
}

// withSubject adds the subject (repository, digest) to in-toto statement raw.
func withSubject(raw []byte, repo string, d v1.Hash) ([]byte, error) {
	var st map[string]json.RawMessage
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("an attestation is not an in-toto statement: %w", err)
	}
	var subjects []map[string]any
	if err := json.Unmarshal(st["subject"], &subjects); err != nil {
		return nil, fmt.Errorf("an attestation's subject: %w", err)
	}
	subjects = append(subjects, map[string]any{"name": repo, "digest": map[string]string{d.Algorithm: d.Hex}})
	b, err := json.Marshal(subjects)
	if err != nil {
		return nil, err
	}
	st["subject"] = b
	return json.Marshal(st)
}

// writeSignature writes cosign's signature of ref (its simple-signing payload) to the
// repository, beside any signatures already there (the same one is not written twice).
func writeSignature(sv signature.SignerVerifier, ref name.Digest, dd mutate.DupeDetector, ro ociremote.Option) error {
	payload, err := (&sigpayload.Cosign{Image: ref}).MarshalJSON()
	if err != nil {
		return err
	}
	raw, err := sv.SignMessage(bytes.NewReader(payload))
	if err != nil {
		return err
	}
	sig, err := static.NewSignature(payload, base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		return err
	}
	se, err := mutate.AttachSignatureToEntity(ociremote.SignedUnknown(ref, ro), sig, mutate.WithDupeDetector(dd))
	if err != nil {
		return err
	}
	return ociremote.WriteSignatures(ref.Repository, se, ro)
}

// freshAttestations is a signed entity without attestations so far.
type freshAttestations struct{ oci.SignedEntity }

func (freshAttestations) Attestations() (oci.Signatures, error) { return empty.Signatures(), nil }

// writeAttestations signs each statement as a DSSE envelope and writes them to ref's
// attestations, replacing earlier ones of the same predicate type.
func writeAttestations(sv signature.SignerVerifier, ref name.Digest, statements [][]byte, dd mutate.DupeDetector, ro ociremote.Option) error {
	wrapped := dsse.WrapSigner(sv, types.IntotoPayloadType)
	// The attestations of this build replace those written before for the same digest (a
	// cached rebuild gives the same digest and new provenance), rather than pile up.
	var se oci.SignedEntity = freshAttestations{ociremote.SignedUnknown(ref, ro)}
	for _, st := range statements {
		var head struct {
			PredicateType string `json:"predicateType"`
		}
		if err := json.Unmarshal(st, &head); err != nil {
			return err
		}
		env, err := wrapped.SignMessage(bytes.NewReader(st))
		if err != nil {
			return err
		}
		att, err := static.NewAttestation(env, static.WithLayerMediaType(types.DssePayloadType),
			static.WithAnnotations(map[string]string{"predicateType": head.PredicateType}))
		if err != nil {
			return err
		}
		if se, err = mutate.AttachAttestationToEntity(se, att, mutate.WithDupeDetector(dd)); err != nil {
			return err
		}
	}
	return ociremote.WriteAttestations(ref.Repository, se, ro)
}
