// Package contract is what the manager and the runner agree on: where the build pod mounts
// things, what the runner is asked to do (Request), and the result it writes to the termination
// message (Result). Both documents carry the contract Version; the rules that let a runner and a
// manager of different minor versions work together are in version.go.
//
// Both documents have their own compact types, not the CRD's. The request carries only what the
// runner reads of the ImageBuild's spec (BuildSpec), sizes in bytes; the manager maps an
// ImageBuild into it in one place. The result carries measurements as numbers and failure
// classes as kilnv1.FailureClass, and the manager alone turns them into the ImageBuild's status
// and its human text.
package contract

import (
	"encoding/json"
	"fmt"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// Paths inside the build pod. They live under /var/kiln: kiln's image holds its binary at /kiln,
// so nothing can be mounted below that path.
const (
	// SocketDir is the emptyDir both containers mount; buildkitd listens on Socket inside it.
	SocketDir = "/run/buildkit"
	// Socket is buildkitd's address as the BuildKit client takes it.
	Socket = "unix://" + SocketDir + "/buildkitd.sock"
	// BuildKitStateDir is rootless buildkitd's root, on the cache claim.
	BuildKitStateDir = "/home/user/.local/share/buildkit"
	// WorkDir is scratch space for the runner (the OCI layout before push).
	WorkDir = "/var/kiln/work"
	// ContextDir is where a ConfigMap context is mounted.
	ContextDir = "/var/kiln/context"
	// PushSecretDir holds the push Secret's .dockerconfigjson.
	PushSecretDir = "/var/kiln/secrets/push"
	// GitSecretDir holds the git Secret's keys (token, ssh-privatekey, known_hosts).
	GitSecretDir = "/var/kiln/secrets/git"
	// SourceSecretDir holds spec.source.oci.pullSecretRef's .dockerconfigjson.
	SourceSecretDir = "/var/kiln/secrets/source"
	// SigningSecretDir holds the signing Secret's keys (SigningKey, SigningPassword, SigningPub).
	SigningSecretDir = "/var/kiln/secrets/signing"
	// BuildSecretsDir holds one directory per build secret id, with the value in BuildSecretFile.
	BuildSecretsDir = "/var/kiln/secrets/build"
	// BuildSecretFile is the file name of a build secret's value inside its directory.
	BuildSecretFile = "value"
	// ResultPath is where the runner writes its Result.
	ResultPath = "/dev/termination-log"
)

// Exit codes of the runner (ExitCode).
const (
	ExitOK           = 0
	ExitInternal     = 1
	ExitBadInput     = 2
	ExitBuildFailed  = 3
	ExitOverBudget   = 4
	ExitPushFailed   = 5
	ExitBuildKitDown = 6
)

// ExitCode maps a failure class to the runner's exit code. InternalError and the classes without
// a code of their own (PodLost, when the pod is stopped mid-build) exit with ExitInternal.
func ExitCode(class kilnv1.FailureClass) int {
	switch class {
	case "":
		return ExitOK
	case kilnv1.FailureBadInput:
		return ExitBadInput
	case kilnv1.FailureBuildFailed:
		return ExitBuildFailed
	case kilnv1.FailureOverBudget:
		return ExitOverBudget
	case kilnv1.FailurePushFailed:
		return ExitPushFailed
	case kilnv1.FailureBuildKitNotUp:
		return ExitBuildKitDown
	}
	return ExitInternal
}

// Result is what the runner reports. It must fit in MaxResultBytes: Encode shortens it with Fit.
// Its JSON names are those kiln v0.1.0's runner wrote (contract 1.0), so that Decode reads a
// result from a build pod started before the manager was upgraded.
type Result struct {
	// Version is the contract version the runner wrote; Encode sets it. Absent in 1.0.
	Version string `json:"v,omitempty"`
	// FailureClass is empty on success.
	FailureClass kilnv1.FailureClass `json:"failure,omitempty"`
	// Message explains a failure, naming the field, line or Secret at fault. It is empty for
	// OverBudget: the manager says that from Budget.
	Message string `json:"message,omitempty"`
	// LogTail is the end of the build log on failure, with known secret values redacted.
	LogTail string `json:"logTail,omitempty"`
	// Digest of the built manifest or index, once it is measured; it reached the registry only
	// when Pushed (before contract 1.2: set only when pushed).
	Digest string `json:"digest,omitempty"`
	// Image is repository@digest of the built image (see Digest).
	Image string `json:"image,omitempty"`
	// Tags pushed.
	Tags []string `json:"tags,omitempty"`
	// Pushed is true when the image reached the registry (always, on success; also under Warn).
	Pushed bool `json:"pushed,omitempty"`
	// Revision is the resolved git commit, or a ConfigMap context's ConfigMapDigest.
	Revision string `json:"rev,omitempty"`
	// Platforms are the measured platform images; none when the build failed before measuring.
	Platforms []Platform `json:"platforms,omitempty"`
	// AttestationBytes is the size of attestation manifests, counted apart.
	AttestationBytes int64 `json:"attBytes,omitempty"`
	// Attestations are the built index's attestation manifests, one per platform image that
	// has some (BuildKit's provenance and SBOM). Since contract 1.3; Fit may drop them.
	Attestations []Attestation `json:"attestations,omitempty"`
	// Signature locates the cosign signature written for a pushed, signed image. Since 1.3.
	Signature *Signature `json:"signature,omitempty"`
	// Budget is the judgement of Platforms against spec.budget; nil when there is no budget.
	Budget *Budget `json:"budget,omitempty"`
	// CachedSteps and TotalSteps count the build's vertices.
	CachedSteps int32 `json:"cached,omitempty"`
	TotalSteps  int32 `json:"total,omitempty"`
	// Advice is the runner's most valuable findings, best first.
	Advice []Advice `json:"advice,omitempty"`
	// Cache reports what the build did with its registry cache; nil without one. Since 1.4.
	Cache *CacheReport `json:"cache,omitempty"`
}

// CacheReport is what a build did with spec.cache.registry.
type CacheReport struct {
	// Image is the cache's reference.
	Image string `json:"image"`
	// Imported says that BuildKit read the cache's manifest.
	Imported bool `json:"imported,omitempty"`
	// Exported is the digest of the cache manifest pushed; empty when none was.
	Exported string `json:"exported,omitempty"`
	// Message says why the import or the export failed; empty when neither did.
	Message string `json:"message,omitempty"`
}

// PackageSize is the bytes of the final filesystem that one package owns, or several that own
// the same files (every Go module of one binary): Name lists them then.
type PackageSize struct {
	Name  string `json:"name"`
	Type  string `json:"type,omitempty"`
	Bytes int64  `json:"bytes"`
	Files int32  `json:"files,omitempty"`
}

// Signature locates a cosign signature: the tags that hold the signature and the signed
// attestations, and the key's id.
type Signature struct {
	Signature    string `json:"sig"`
	Attestations string `json:"att,omitempty"`
	KeyID        string `json:"keyID,omitempty"`
}

// The keys of the signing Secret (spec.output.signing.secretRef), as cosign names the files.
const (
	SigningKey      = "cosign.key"
	SigningPassword = "cosign.password"
	SigningPub      = "cosign.pub"
)

// Attestation is the attestation manifest of one platform image, and the digests of the
// in-toto statements in it.
type Attestation struct {
	// Platform of the image the statements are about (os/arch[/variant]).
	Platform string `json:"platform,omitempty"`
	// Manifest is the attestation manifest's digest in the index.
	Manifest string `json:"manifest"`
	// Provenance and SBOM are the digests of the SLSA provenance and SPDX statements; empty
	// when there is none, or when Fit dropped them to fit.
	Provenance string `json:"provenance,omitempty"`
	SBOM       string `json:"sbom,omitempty"`
}

// Platform is one platform image as measured.
type Platform struct {
	// Platform as os/arch[/variant].
	Platform string `json:"platform"`
	// CompressedBytes is the config blob plus every layer blob.
	CompressedBytes int64 `json:"compressedBytes"`
	// UncompressedBytes is the sum of the uncompressed layer tarballs.
	UncompressedBytes int64 `json:"uncompressedBytes"`
	// Layers is the number of layers.
	Layers int32 `json:"layers"`
	// WastedBytes is the size of file copies that later layers delete or overwrite.
	WastedBytes int64 `json:"wastedBytes,omitempty"`
	// LargestLayers are the biggest layers, largest first (at most MaxLayersPerPlatform).
	LargestLayers []Layer `json:"largestLayers,omitempty"`
	// LargestPackages are the packages (of the SBOM) whose files take the most bytes of the
	// final filesystem, largest first (at most MaxPackagesPerPlatform); UnpackagedBytes is what
	// no package owns. Since contract 1.3.
	LargestPackages []PackageSize `json:"largestPackages,omitempty"`
	UnpackagedBytes int64         `json:"unpackagedBytes,omitempty"`
	// LargestWaste is the pair of layers that wastes the most: one added files that the other
	// deleted or overwrote; nil when nothing is wasted. Since contract 1.2.
	LargestWaste *Waste `json:"largestWaste,omitempty"`
}

// Waste is the bytes one layer added and a later layer hid (deleted or overwrote), summed.
type Waste struct {
	// Bytes hidden, over Files files; Largest is the path of the biggest of them.
	Bytes   int64  `json:"bytes"`
	Files   int32  `json:"files"`
	Largest string `json:"largest,omitempty"`
	// Deleted is true when the later layer deleted the files, false when it overwrote them.
	Deleted bool `json:"deleted,omitempty"`
	// Added and Removed are the two layers, as Layer names them (index, instruction, line).
	Added   Layer `json:"added"`
	Removed Layer `json:"removed"`
}

// Layer is one layer and the Dockerfile instruction that created it.
type Layer struct {
	// Index of the layer in the manifest, 0 for the base.
	Index int32 `json:"index"`
	// CompressedBytes of the layer blob.
	CompressedBytes int64 `json:"compressedBytes"`
	// CreatedBy is the instruction, at most MaxCreatedBy bytes.
	CreatedBy string `json:"createdBy,omitempty"`
	// Line in the Dockerfile; 0 when unknown (base image layers).
	Line int32 `json:"line,omitempty"`
}

// Budget is the judgement of the platform images against spec.budget, in numbers.
type Budget struct {
	// Enforcement in force: Enforce or Warn.
	Enforcement kilnv1.Enforcement `json:"enforcement,omitempty"`
	// Checks has one entry per limit and platform, the worst first (budget.Judge's order).
	Checks []Check `json:"checks,omitempty"`
}

// Check is one limit applied to one platform image.
type Check struct {
	// Limit is the budget field: maxImageSize, maxLayerSize, maxLayers, maxWastedSize, maxGrowth.
	Limit string `json:"limit"`
	// Platform the check applies to.
	Platform string `json:"platform,omitempty"`
	// LimitValue is the limit: bytes, or layers for maxLayers.
	LimitValue int64 `json:"limitValue"`
	// Actual is the measured value in the same unit: for maxLayerSize the largest layer, for
	// maxGrowth the compressed size minus the current image's.
	Actual int64 `json:"actual"`
	// Layer is the layer a broken maxGrowth check blames: the largest one the current image does
	// not have. Since contract 1.2.
	Layer *Layer `json:"layer,omitempty"`
}

// Over reports whether the check is broken.
func (c Check) Over() bool { return c.Actual > c.LimitValue }

// Over reports whether any check is broken; a nil budget never is.
func (b *Budget) Over() bool {
	if b == nil {
		return false
	}
	for _, c := range b.Checks {
		if c.Over() {
			return true
		}
	}
	return false
}

// Advice is one finding about the Dockerfile or the image.
type Advice struct {
	// Rule is the finding's id.
	Rule string `json:"rule"`
	// Message explains what to change, at most MaxAdviceMessage bytes.
	Message string `json:"message"`
	// Line in the Dockerfile; 0 when none.
	Line int32 `json:"line,omitempty"`
	// SavingBytes is the estimated saving; 0 when unknown.
	SavingBytes int64 `json:"savingBytes,omitempty"`
}

// Largest is the platform image with the most compressed bytes (the first of equals), and false
// when there is none.
func Largest(platforms []Platform) (Platform, bool) {
	if len(platforms) == 0 {
		return Platform{}, false
	}
	big := platforms[0]
	for _, p := range platforms[1:] {
		if p.CompressedBytes > big.CompressedBytes {
			big = p
		}
	}
	return big, true
}

// Encode returns the JSON encoding of r at this contract Version, shortened by Fit to at most
// MaxResultBytes.
func (r Result) Encode() ([]byte, error) {
	r.Version = Version
	return r.Fit(MaxResultBytes)
}

// Decode parses a termination message written by Encode of any minor version of this major
// version (see version.go). A result of another major version is a *VersionError.
func Decode(msg string) (Result, error) {
	if err := checkVersion(documentResult, []byte(msg)); err != nil {
		return Result{}, err
	}
	var r Result
	if err := json.Unmarshal([]byte(msg), &r); err != nil {
		return Result{}, fmt.Errorf("runner result is not valid JSON: %w", err)
	}
	return r, nil
}
