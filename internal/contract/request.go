package contract

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// The request travels as files: the manager writes them into a ConfigMap that the build pod
// mounts at RequestDir, never into the runner's arguments (the kernel refuses one argument of
// more than 128 KiB, and JSON can make a 64 KiB Dockerfile six times longer). Large free-form
// values go in files of their own, unescaped, so that the largest spec the API server accepts
// (a 64 Ki-character inline Dockerfile, 32 build args of 4 Ki characters) stays far below a
// ConfigMap's 1 MiB.
const (
	// RequestDir is where the request ConfigMap is mounted in the runner container.
	RequestDir = "/var/kiln/request"
	// RequestFile holds the Request as JSON, without the inline Dockerfile and build-arg values.
	RequestFile = "request.json"
	// InlineDockerfileFile holds spec.dockerfile.inline, when it is set.
	InlineDockerfileFile = "Dockerfile"
	// BuildArgFilePrefix + NAME holds the value of build arg NAME.
	BuildArgFilePrefix = "buildarg."
)

// Request is what the manager asks the runner to do. It travels as files (RequestFiles,
// ReadRequestDir): it holds references to Secrets, never their values.
type Request struct {
	// Version is the contract version the manager wrote; RequestFiles sets it. Absent in 1.0.
	Version string `json:"v,omitempty"`
	// Namespace and Name of the ImageBuild.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Build is the build number (the pod is <name>-build-<n>).
	Build int64 `json:"build"`
	// Generation of the ImageBuild being built (metadata.generation). Since contract 1.3.
	Generation int64 `json:"generation,omitempty"`
	// Spec is what the runner needs of the ImageBuild's spec at the generation being built.
	Spec BuildSpec `json:"spec"`
	// ResetCache empties BuildKit's cache before this build (kiln.dev/reset-cache-requested-at).
	ResetCache bool `json:"resetCache,omitempty"`
	// Previous is the image the ImageBuild pushed last, from its status: a platform image that
	// the build makes again, byte for byte, keeps that image's SBOM and package sizes instead of
	// being scanned again. Since 1.4; nil when nothing was pushed (a 1.3 runner scans).
	Previous *PreviousImage `json:"previous,omitempty"`
	// InlineDockerfile says that spec.dockerfile.inline is in InlineDockerfileFile, beside the
	// request; only RequestFiles and ReadRequestDir use it.
	InlineDockerfile bool `json:"inlineDockerfile,omitempty"`
}

// BuildSpec is the part of an ImageBuild's spec that the runner reads, and nothing else: the
// manager maps the spec into it (controllers' runnerRequest). Its JSON names and paths are the
// CRD's, so that a runner of contract 1.1, which decoded "spec" as the CRD's spec, reads a 1.2
// request whole (see version.go); sizes are numbers of bytes.
type BuildSpec struct {
	// Source is the build context: exactly one of Git or ConfigMap.
	Source Source `json:"source"`
	// Dockerfile is the Dockerfile and the build's parameters.
	Dockerfile Dockerfile `json:"dockerfile,omitempty"`
	// Output is the repository, tags and form of the pushed image.
	Output Output `json:"output"`
	// Budget limits the image's size; nil when the ImageBuild sets no budget.
	Budget *BudgetSpec `json:"budget,omitempty"`
	// Advice tunes the findings; nil when the ImageBuild does not.
	Advice *AdviceSpec `json:"advice,omitempty"`
	// Cache is what the runner does with spec.cache: only the registry cache, since contract
	// 1.4 (a 1.3 runner builds without it). The claim is the pod's business, not the runner's.
	Cache *Cache `json:"cache,omitempty"`
}

// PreviousImage is the last pushed image (status.digest) and the package sizes measured for it.
type PreviousImage struct {
	// Digest of the manifest or index pushed to spec.output.image.
	Digest string `json:"digest"`
	// Platforms are the package sizes of its platform images (status.size.platforms).
	Platforms []PreviousPlatform `json:"platforms,omitempty"`
}

// PreviousPlatform is the package sizes of one platform image of the previous image.
type PreviousPlatform struct {
	// Platform as os/arch[/variant].
	Platform string `json:"platform"`
	// LargestPackages and UnpackagedBytes as the result of that build had them.
	LargestPackages []PackageSize `json:"largestPackages,omitempty"`
	UnpackagedBytes int64         `json:"unpackagedBytes,omitempty"`
}

// Cache is spec.cache as the runner uses it.
type Cache struct {
	// Registry is the BuildKit registry cache the build imports and exports; nil for none.
	Registry *RegistryCache `json:"registry,omitempty"`
}

// RegistryCache is spec.cache.registry.
type RegistryCache struct {
	// Image is the cache's reference, a repository with an optional tag.
	Image string `json:"image"`
	// Mode is BuildKit's export mode, min or max; empty means max.
	Mode kilnv1.RegistryCacheMode `json:"mode,omitempty"`
}

// Source is the build context: exactly one of its fields is set.
type Source struct {
	// Git is a repository that BuildKit fetches itself.
	Git *GitSource `json:"git,omitempty"`
	// ConfigMap is a ConfigMap mounted at ContextDir, each key a file of the context.
	ConfigMap *ConfigMapSource `json:"configMap,omitempty"`
	// OCI is a context in a registry, pulled and unpacked by the runner. Since 1.4.
	OCI *OCISource `json:"oci,omitempty"`
}

// OCISource is spec.source.oci, with the limits the manager puts on what the runner unpacks.
type OCISource struct {
	// Image is repository@sha256:digest.
	Image string `json:"image"`
	// PullSecretRef, when set, is the Secret mounted at SourceSecretDir; without it the push
	// Secret's credentials are used.
	PullSecretRef *SecretRef `json:"pullSecretRef,omitempty"`
	// Insecure pulls over plain HTTP.
	Insecure bool `json:"insecure,omitempty"`
	// MaxBytes bounds the unpacked context (the manager's --max-source-size).
	MaxBytes int64 `json:"maxBytes"`
	// MaxEntries bounds its number of files, directories and links.
	MaxEntries int `json:"maxEntries"`
}

// GitSource is a git repository.
type GitSource struct {
	// URL of the repository, as BuildKit's git source takes it.
	URL string `json:"url"`
	// Revision is a branch, tag or commit; empty for the remote's HEAD.
	Revision string `json:"revision,omitempty"`
	// ContextDir is the sub-directory used as the context, relative to the repository's root.
	ContextDir string `json:"contextDir,omitempty"`
	// SecretRef, when set, is the Secret with the git credentials, mounted at GitSecretDir.
	SecretRef *SecretRef `json:"secretRef,omitempty"`
	// Insecure is spec.source.git.insecure: the user allowed a plain transport (http://,
	// git://). Admission enforces it; the runner only says in its log what it gives up, and
	// must not require it (a manager of an earlier 1.2 kiln does not send it).
	Insecure bool `json:"insecure,omitempty"`
}

// ConfigMapSource is a ConfigMap used as the context.
type ConfigMapSource struct {
	// Name of the ConfigMap, for messages: the build pod mounts it at ContextDir.
	Name string `json:"name"`
}

// SecretRef names a Secret in the ImageBuild's namespace that the build pod mounts; the runner
// reads the mounted files and names the Secret in its messages.
type SecretRef struct {
	// Name of the Secret.
	Name string `json:"name"`
}

// Dockerfile is the Dockerfile and the build's parameters, as BuildKit's Dockerfile frontend
// takes them.
type Dockerfile struct {
	// Path of the Dockerfile inside the context; empty for "Dockerfile".
	Path string `json:"path,omitempty"`
	// Inline is the Dockerfile's text when it is kept outside the context. It travels in
	// InlineDockerfileFile.
	Inline string `json:"inline,omitempty"`
	// Target is the stage to build; empty for the last one.
	Target string `json:"target,omitempty"`
	// BuildArgs are the --build-arg values, in the spec's order.
	BuildArgs []BuildArg `json:"buildArgs,omitempty"`
	// Secrets are offered to RUN --mount=type=secret steps; each is mounted under BuildSecretsDir.
	Secrets []BuildSecret `json:"secrets,omitempty"`
	// Platforms to build, as os/arch[/variant]; none for the node's own.
	Platforms []string `json:"platforms,omitempty"`
	// AllowPlatformMismatch pushes platform images holding executables of another architecture.
	// Since 1.4: a 1.3 runner does not check.
	AllowPlatformMismatch bool `json:"allowPlatformMismatch,omitempty"`
}

// BuildArg is one --build-arg NAME=VALUE.
type BuildArg struct {
	// Name of the ARG.
	Name string `json:"name"`
	// Value of the ARG. It travels in a file of its own, BuildArgFilePrefix + Name.
	Value string `json:"value,omitempty"`
}

// BuildSecret is one BuildKit secret: its value is the file BuildSecretFile in the directory
// named ID under BuildSecretsDir.
type BuildSecret struct {
	// ID is the id a Dockerfile asks for in RUN --mount=type=secret,id=<id>.
	ID string `json:"id"`
	// SecretRef is the Secret and key the value comes from, for messages.
	SecretRef SecretKeyRef `json:"secretRef"`
}

// SecretKeyRef names one key of a Secret in the ImageBuild's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	Name string `json:"name"`
	// Key inside the Secret.
	Key string `json:"key"`
}

// Output is where and how the image is pushed.
type Output struct {
	// Image is the repository, without tag or digest.
	Image string `json:"image"`
	// Tags to push; none means "latest". The first tag's current image is maxGrowth's baseline.
	Tags []string `json:"tags,omitempty"`
	// PushSecretRef, when set, is the kubernetes.io/dockerconfigjson Secret mounted at
	// PushSecretDir.
	PushSecretRef *SecretRef `json:"pushSecretRef,omitempty"`
	// Compression of the layers; empty for gzip.
	Compression kilnv1.Compression `json:"compression,omitempty"`
	// Reproducible sets SOURCE_DATE_EPOCH and rewrites timestamps.
	Reproducible bool `json:"reproducible,omitempty"`
	// Insecure talks to the registry over plain HTTP.
	Insecure bool `json:"insecure,omitempty"`
	// Provenance is the SLSA provenance BuildKit attaches: max, min, or empty (or none) for
	// none. Since contract 1.3: a runner of 1.2 builds without provenance.
	Provenance kilnv1.ProvenanceMode `json:"provenance,omitempty"`
	// SBOM attaches an SPDX SBOM per platform image. Since contract 1.3: a 1.2 runner attaches none.
	SBOM bool `json:"sbom,omitempty"`
	// Signing, when set, is the Secret with the cosign key pair, mounted at SigningSecretDir.
	// Since contract 1.3.
	Signing *Signing `json:"signing,omitempty"`
}

// Signing is spec.output.signing.
type Signing struct {
	SecretRef SecretRef `json:"secretRef"`
}

// BudgetSpec is spec.budget in numbers: sizes in bytes, the way budget.Judge compares them. A nil
// limit is not checked. Each size applies to each platform's image.
type BudgetSpec struct {
	// MaxImageSize is the largest compressed image (config plus layers), in bytes.
	MaxImageSize *int64 `json:"maxImageSize,omitempty"`
	// MaxLayerSize is the largest compressed layer, in bytes.
	MaxLayerSize *int64 `json:"maxLayerSize,omitempty"`
	// MaxLayers is the largest number of layers.
	MaxLayers *int32 `json:"maxLayers,omitempty"`
	// MaxWastedSize is the most bytes in files that a later layer deletes or overwrites.
	MaxWastedSize *int64 `json:"maxWastedSize,omitempty"`
	// MaxGrowth is how many bytes the compressed image may grow over the first tag's current
	// image; 0 means it may not grow.
	MaxGrowth *int64 `json:"maxGrowth,omitempty"`
	// Enforcement is Enforce or Warn; empty means Enforce.
	Enforcement kilnv1.Enforcement `json:"enforcement,omitempty"`
}

// AdviceSpec tunes the findings.
type AdviceSpec struct {
	// Ignore silences these rule ids.
	Ignore []string `json:"ignore,omitempty"`
}

// UnmarshalJSON reads the sizes as JSON numbers of bytes, as contract 1.2 writes them, and as the
// quantity strings ("50Mi") of the 1.0 and 1.1 requests, which embedded the CRD's spec: a runner
// reads an older manager's request (version.go). The quantity strings may go at the next major
// version.
func (b *BudgetSpec) UnmarshalJSON(data []byte) error {
	type plain BudgetSpec // the same fields, without this method
	var w struct {
		plain
		MaxImageSize  json.RawMessage `json:"maxImageSize"`
		MaxLayerSize  json.RawMessage `json:"maxLayerSize"`
		MaxWastedSize json.RawMessage `json:"maxWastedSize"`
		MaxGrowth     json.RawMessage `json:"maxGrowth"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*b = BudgetSpec(w.plain)
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		to   **int64
	}{
		{"maxImageSize", w.MaxImageSize, &b.MaxImageSize},
		{"maxLayerSize", w.MaxLayerSize, &b.MaxLayerSize},
		{"maxWastedSize", w.MaxWastedSize, &b.MaxWastedSize},
		{"maxGrowth", w.MaxGrowth, &b.MaxGrowth},
	} {
		n, err := sizeOf(f.raw)
		if err != nil {
			return fmt.Errorf("spec.budget.%s: %w", f.name, err)
		}
		*f.to = n
	}
	return nil
}

// sizeOf reads a size in bytes: a JSON number, or a 1.0 or 1.1 quantity string; nil when absent.
func sizeOf(raw json.RawMessage) (*int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var n int64
	if raw[0] != '"' {
		if err := json.Unmarshal(raw, &n); err != nil {
			return nil, fmt.Errorf("not a number of bytes: %s", raw)
		}
		return &n, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return nil, fmt.Errorf("%q is neither a number of bytes nor a quantity", s)
	}
	n = q.Value()
	return &n, nil
}

// RequestFiles splits req into the files of its request ConfigMap (file name to content), at
// this contract Version. The inline Dockerfile and every build-arg value go in files of their
// own; ReadRequestDir joins them again.
func RequestFiles(req Request) (map[string]string, error) {
	req.Version = Version
	files := map[string]string{}
	if df := &req.Spec.Dockerfile; df.Inline != "" {
		files[InlineDockerfileFile] = df.Inline
		df.Inline = ""
		req.InlineDockerfile = true
	}
	args := slices.Clone(req.Spec.Dockerfile.BuildArgs) // the caller's keep their values
	for i := range args {
		files[BuildArgFilePrefix+args[i].Name] = args[i].Value
		args[i].Value = ""
	}
	req.Spec.Dockerfile.BuildArgs = args
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return nil, fmt.Errorf("encoding the runner's request: %w", err)
	}
	files[RequestFile] = b.String()
	return files, nil
}

// RequestDigestEnv is the runner's environment variable that holds the ConfigMapDigest of the
// request files the manager wrote. The pod's spec cannot change once it is created, but the
// request ConfigMap, mounted by name, can be deleted and made again by anyone who may write
// ConfigMaps in the namespace: the runner builds only the request whose digest this is.
const RequestDigestEnv = "KILN_REQUEST_DIGEST"

// RequestFilesDigest is the ConfigMapDigest of the files of a request ConfigMap.
func RequestFilesDigest(files map[string]string) string {
	b := make(map[string][]byte, len(files))
	for name, v := range files {
		b[name] = []byte(v)
	}
	return ConfigMapDigest(b)
}

// CheckRequestDir reports an error when the request files mounted at dir are not the ones whose
// digest is want (RequestFilesDigest of what the manager wrote); nil when they are.
func CheckRequestDir(dir, want string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading the build request: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") { // the kubelet's own links of a ConfigMap volume
			continue
		}
		dt, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("reading the build request: %w", err)
		}
		files[e.Name()] = dt
	}
	if got := ConfigMapDigest(files); got != want {
		return fmt.Errorf("the build request mounted at %s is not the one kiln wrote (content %s, not %s): its ConfigMap was replaced after kiln created it, and kiln builds no request it did not write", dir, got, want)
	}
	return nil
}

// ReadRequestDir reads a request written by RequestFiles from the directory it is mounted at,
// as DecodeRequest does.
func ReadRequestDir(dir string) (Request, error) {
	var req Request
	data, err := os.ReadFile(filepath.Join(dir, RequestFile))
	if err != nil {
		return req, fmt.Errorf("reading the build request: %w", err)
	}
	if req, err = DecodeRequest(data); err != nil {
		return req, err
	}
	if req.InlineDockerfile {
		dt, err := os.ReadFile(filepath.Join(dir, InlineDockerfileFile))
		if err != nil {
			return req, fmt.Errorf("reading the build request's inline Dockerfile: %w", err)
		}
		req.Spec.Dockerfile.Inline, req.InlineDockerfile = string(dt), false
	}
	for i, a := range req.Spec.Dockerfile.BuildArgs {
		v, err := os.ReadFile(filepath.Join(dir, BuildArgFilePrefix+a.Name))
		if err != nil {
			return req, fmt.Errorf("reading the value of build arg %s: %w", a.Name, err)
		}
		req.Spec.Dockerfile.BuildArgs[i].Value = string(v)
	}
	return req, nil
}

// DecodeRequest parses a Request from JSON of any minor version of this major version: fields it
// does not know are ignored (see version.go). A request of another major version is a
// *VersionError.
func DecodeRequest(data []byte) (Request, error) {
	if err := checkVersion(documentRequest, data); err != nil {
		return Request{}, err
	}
	var req Request
	err := json.Unmarshal(data, &req)
	var syntax *json.SyntaxError
	switch {
	case errors.As(err, &syntax):
		return req, fmt.Errorf("the build request is not valid JSON: %w", err)
	case err != nil:
		return req, fmt.Errorf("the build request does not fit this runner's types: %w", err)
	}
	if c := req.Spec.Cache; c != nil && c.Registry == nil {
		req.Spec.Cache = nil // a 1.0 or 1.1 request's spec.cache: the claim, which is not the runner's
	}
	return req, nil
}

// ConfigMapDigest is the content digest of a ConfigMap used as a build context,
// "sha256:<64 hex digits>": SHA-256 over the files in name order, each as its name, a NUL byte,
// its length in decimal, a NUL byte and its bytes. The manager computes it from the ConfigMap's
// data and binaryData, the runner from the files the kubelet mounted, so the two agree exactly
// when they saw the same content.
func ConfigMapDigest(files map[string][]byte) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(files[n]))
		h.Write(files[n])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
