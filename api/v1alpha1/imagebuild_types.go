package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ImageBuildSpec says what to build, where to push it, and how big it may be.
// +kubebuilder:validation:XValidation:rule="!has(self.cache) || !has(self.cache.registry) || !((self.cache.registry.image == self.output.image && (!has(self.output.tags) || self.output.tags.exists(t, t == 'latest'))) || (has(self.output.tags) && self.output.tags.exists(t, self.cache.registry.image == self.output.image + ':' + t)))",message="cache.registry.image must not be one of the tags the image is pushed to (output.image with output.tags): give the cache a tag or repository of its own, such as <image>:buildcache",fieldPath=".cache.registry.image"
type ImageBuildSpec struct {
	// Source is where the build context comes from: exactly one of git or configMap.
	// +required
	Source Source `json:"source"`

	// Dockerfile selects the Dockerfile and the build's parameters.
	// +optional
	Dockerfile Dockerfile `json:"dockerfile,omitempty"`

	// Output is the image repository and tags the build is pushed to.
	// +required
	Output Output `json:"output"`

	// Cache is the persistent volume that holds BuildKit's state between builds.
	// +optional
	Cache Cache `json:"cache,omitempty"`

	// Budget limits the image's size. An image that breaks an enforced budget is not pushed.
	// +optional
	Budget *Budget `json:"budget,omitempty"`

	// Advice tunes kiln's findings about the Dockerfile and the image (see docs/advice.md).
	// +optional
	Advice *AdviceSpec `json:"advice,omitempty"`

	// Timeout ends a build that runs longer, counted from the build pod's start: a duration
	// between 1m and 24h, such as 45m or 1h30m. The manager's --max-build-timeout may lower it.
	// +kubebuilder:default="30m0s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="must be a duration such as 30m, 1h or 1h30m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1m') && duration(self) <= duration('24h'))",message="must be between 1m and 24h"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// Retries is how many times a build that failed for a transient reason (pod evicted or deleted,
	// BuildKit never ready, registry unavailable) is tried again. Bad input and budget failures are
	// never retried.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	Retries *int32 `json:"retries,omitempty"`

	// HistoryLimit is how many finished build pods are kept for their logs.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=50
	// +optional
	HistoryLimit *int32 `json:"historyLimit,omitempty"`

	// Suspend stops a running build and starts no new one while true.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Resources for the buildkitd container, which does the actual building.
	// +optional
	Resources *BuildKitResources `json:"resources,omitempty"`

	// NodeSelector constrains the build pod to nodes with these labels.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the build pod.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity of the build pod.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// PriorityClassName of the build pod.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a lower-case DNS-1123 name, such as high-priority"
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// DecodeError is set, instead of any other field, when the stored spec does not decode into
	// these types; it is never serialized. See UnmarshalJSON.
	DecodeError string `json:"-"`

	// ServiceAccountName runs the build pod under this service account (for image pull secrets or
	// admission policy). Its token is never mounted into the pod.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a lower-case DNS-1123 name, such as builder"
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// SecurityProfile is how the build pod isolates buildkitd from the node. Unset uses the
	// manager's --build-pod-security-profile; another value must be one the manager allows
	// (--allowed-security-profiles), else the ImageBuild ends Stalled (PolicyViolation). See
	// docs/security.md for what each profile needs from the node and what it protects against.
	// +kubebuilder:validation:Enum=rootless;userns
	// +optional
	SecurityProfile SecurityProfile `json:"securityProfile,omitempty"`
}

// SecurityProfile names a build pod shape.
type SecurityProfile string

const (
	// SecurityProfileRootless runs rootless BuildKit (rootlesskit) as user 1000. Its container
	// needs seccomp and AppArmor Unconfined, so the namespace must allow Pod Security
	// privileged (or the chart's build-namespace guard must be on).
	SecurityProfileRootless SecurityProfile = "rootless"
	// SecurityProfileUserNS runs rootful BuildKit as root of the pod's own user namespace
	// (hostUsers: false): root in the pod is an unprivileged user on the node. It needs
	// Kubernetes user namespaces on the node (containerd >= 2, runc >= 1.2, idmapped mounts).
	SecurityProfileUserNS SecurityProfile = "userns"
)

// BuildKitResources are the buildkitd container's compute resources, as a container's
// resources.limits and resources.requests. Every value must be a quantity the manager can parse
// (the schema's pattern alone lets "1e99999999999999999999" through).
type BuildKitResources struct {
	// Limits, such as cpu: "4" and memory: 8Gi.
	// +kubebuilder:validation:MaxProperties=8
	// +kubebuilder:validation:XValidation:rule="self.all(k, isQuantity(string(self[k])))",message="each limit must be a quantity such as 2, 500m or 4Gi"
	// +optional
	Limits map[corev1.ResourceName]resource.Quantity `json:"limits,omitempty"`

	// Requests, such as cpu: 500m and memory: 1Gi.
	// +kubebuilder:validation:MaxProperties=8
	// +kubebuilder:validation:XValidation:rule="self.all(k, isQuantity(string(self[k])))",message="each request must be a quantity such as 2, 500m or 4Gi"
	// +optional
	Requests map[corev1.ResourceName]resource.Quantity `json:"requests,omitempty"`
}

// AdviceSpec tunes kiln's advice.
type AdviceSpec struct {
	// Ignore silences these rule ids, like a `# kiln:ignore=<rule-id>` comment in the Dockerfile.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]+(-[a-z0-9]+)*$`
	// +listType=set
	// +optional
	Ignore []string `json:"ignore,omitempty"`
}

// Source is the build context: exactly one of its fields is set.
// +kubebuilder:validation:XValidation:rule="(has(self.git) ? 1 : 0) + (has(self.configMap) ? 1 : 0) + (has(self.oci) ? 1 : 0) == 1",message="exactly one of source.git, source.configMap or source.oci must be set"
type Source struct {
	// Git fetches the context from a git repository.
	// +optional
	Git *GitSource `json:"git,omitempty"`

	// ConfigMap uses a ConfigMap in the same namespace as the context: each key is a file at the
	// context's top level. Meant for small contexts, demos and tests.
	// +optional
	ConfigMap *ConfigMapSource `json:"configMap,omitempty"`

	// OCI is a build context stored in a registry as an OCI artifact, pinned by digest: one
	// gzip tar layer, as `flux push artifact` and `kiln build` push it. The runner pulls and
	// unpacks it, refusing paths that leave the context, links that point out of it, devices,
	// and more than the manager's --max-source-size.
	// +optional
	OCI *OCISource `json:"oci,omitempty"`
}

// OCISource is a build context in a registry (docs/sources.md#oci).
type OCISource struct {
	// Image is the artifact's reference pinned by digest, e.g.
	// registry.example.com/team/app-src@sha256:<64 hex digits>.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=384
	// +kubebuilder:validation:XValidation:rule="self.matches('^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*@sha256:[a-f0-9]{64}$')",message="must be a repository pinned by digest, such as registry.example.com/team/app-src@sha256:<64 hex digits>"
	// +required
	Image string `json:"image"`

	// PullSecretRef names a kubernetes.io/dockerconfigjson Secret with the registry's
	// credentials. Without it, spec.output.pushSecretRef's are used.
	// +optional
	PullSecretRef *LocalObjectReference `json:"pullSecretRef,omitempty"`

	// Insecure pulls over plain HTTP, for registries inside a local cluster.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// GitSource is a git repository, fetched by BuildKit itself.
// +kubebuilder:validation:XValidation:rule="!has(self.pollInterval) || !has(self.secretRef)",message="pollInterval works only for repositories readable without credentials (kiln's manager never reads Secrets): remove secretRef, or start builds with the kiln.dev/rebuild-requested-at annotation"
// +kubebuilder:validation:XValidation:rule="!has(self.pollInterval) || self.url.startsWith('https://') || self.url.startsWith('http://') || self.url.startsWith('git://')",message="pollInterval needs an https://, http:// or git:// url"
// +kubebuilder:validation:XValidation:rule="!(self.url.startsWith('http://') || self.url.startsWith('git://')) || (has(self.insecure) && self.insecure)",message="http:// and git:// urls need spec.source.git.insecure: true, which gives up authenticating the git server: the repository's contents, and any credentials sent, travel in clear and may be read or replaced on the way; use https:// or ssh:// where the server offers them"
type GitSource struct {
	// URL of the repository: https://, ssh://, git@host:path, or with insecure: true http:// or
	// git://. Credentials never go in the URL (a user name is allowed for ssh): name a Secret in
	// secretRef.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^(https?://|ssh://|git://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)[^\\\\s]+$')",message="must be a git URL (https://, http://, ssh://, git:// or user@host:path)"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(https?|git)://[^/]*@') && !self.matches('^ssh://[^/@]*:[^/@]*@')",message="must not carry credentials (user:password@ or token@): put them in a Secret and name it in spec.source.git.secretRef"
	// +required
	URL string `json:"url"`

	// Revision is a branch, tag or commit. Empty means the remote's HEAD. It follows git's rules
	// for ref names (git check-ref-format): no whitespace or control characters, none of
	// ':' '#' '~' '^' '?' '*' '[' backslash, no "..", "@{" or "//", and it does not start with '-' or '/'
	// nor end with '/', '.' or ".lock".
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="!self.matches('[\\\\x00-\\\\x20\\\\x7f:#~^?*\\\\[\\\\\\\\]|\\\\.\\\\.|@\\\\{|//|^[-/]|[/.]$|\\\\.lock$')",message="must be a branch, tag or commit name as git allows it: no whitespace or control characters, none of : # ~ ^ ? * [ or backslash, no '..', '@{' or '//', not starting with '-' or '/', not ending with '/', '.' or '.lock'"
	// +optional
	Revision string `json:"revision,omitempty"`

	// ContextDir is the sub-directory of the repository used as the build context.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.split('/').exists(p, p == '..')",message="must be a relative path inside the repository"
	// +optional
	ContextDir string `json:"contextDir,omitempty"`

	// SecretRef names a Secret in the same namespace with git credentials: a `token` key for
	// HTTPS (sent as basic auth), or for SSH an `ssh-privatekey` key and a `known_hosts` key
	// (required: the git server's host keys, which BuildKit checks; an ssh URL without them fails
	// as BadInput).
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`

	// PollInterval, when set, makes kiln's manager check every interval which commit the
	// revision (a branch, or a tag that may move) points to, and build when it changes. Public
	// repositories only; the manager needs network access to the git server.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="must be a duration such as 5m or 1h"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1m') && duration(self) <= duration('168h'))",message="must be between 1m and 168h"
	// +optional
	PollInterval *metav1.Duration `json:"pollInterval,omitempty"`

	// Insecure allows the plain transports, http:// and git:// URLs, which authenticate no
	// server: whoever is on the path can read the repository, read the credentials sent with it
	// (an http:// token), or serve another tree, which kiln then builds and pushes. Admission
	// refuses http:// and git:// URLs without it. It changes nothing for https:// and ssh://.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// ConfigMapSource is a ConfigMap used as the build context.
type ConfigMapSource struct {
	// Name of the ConfigMap, in the ImageBuild's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a lower-case DNS-1123 name, such as app-src"
	// +required
	Name string `json:"name"`
}

// LocalObjectReference names an object in the ImageBuild's own namespace.
type LocalObjectReference struct {
	// Name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a lower-case DNS-1123 name, such as registry-credentials"
	// +required
	Name string `json:"name"`
}

// Dockerfile selects the Dockerfile and the build's parameters.
// +kubebuilder:validation:XValidation:rule="!(has(self.path) && has(self.inline))",message="set dockerfile.path or dockerfile.inline, not both"
type Dockerfile struct {
	// Path of the Dockerfile inside the context. Defaults to "Dockerfile" when inline is not set.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.split('/').exists(p, p == '..')",message="must be a relative path inside the context"
	// +optional
	Path string `json:"path,omitempty"`

	// Inline is the Dockerfile's text, kept outside the context it builds.
	// +kubebuilder:validation:MaxLength=65536
	// +optional
	Inline string `json:"inline,omitempty"`

	// Target is the stage to build. Empty means the last stage.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9_.-]*$`
	// +optional
	Target string `json:"target,omitempty"`

	// BuildArgs are passed as --build-arg NAME=VALUE. Never put secrets here: use secrets.
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	// +optional
	BuildArgs []BuildArg `json:"buildArgs,omitempty"`

	// Secrets are offered to `RUN --mount=type=secret,id=<id>` steps and never stored in the image.
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=id
	// +optional
	Secrets []BuildSecret `json:"secrets,omitempty"`

	// Platforms to build, as os/arch[/variant]. Empty means the node's own platform.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.all(p, p.matches('^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$'))",message="each platform must have the form os/arch or os/arch/variant, such as linux/amd64 or linux/arm/v7"
	// +listType=set
	// +optional
	Platforms []string `json:"platforms,omitempty"`

	// AllowPlatformMismatch pushes a platform image whose executables are mostly for another
	// architecture (more executable ELF files of other machines than of the platform's). By
	// default kiln refuses such an image before the push (BadInput): it is what building a
	// platform from a base image that lacks it makes, and it fails with "exec format error" on
	// that platform's nodes. Set it only when the content is meant for other machines.
	// +optional
	AllowPlatformMismatch bool `json:"allowPlatformMismatch,omitempty"`
}

// BuildArg is one --build-arg.
type BuildArg struct {
	// Name of the ARG in the Dockerfile.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +required
	Name string `json:"name"`

	// Value of the ARG.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Value string `json:"value,omitempty"`
}

// BuildSecret offers one key of a Secret to the build as a BuildKit secret.
type BuildSecret struct {
	// ID is the id a Dockerfile asks for in `RUN --mount=type=secret,id=<id>`.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9_.-]*$`
	// +required
	ID string `json:"id"`

	// SecretRef is the Secret, in the ImageBuild's namespace, and the key whose value is offered.
	// +required
	SecretRef SecretKeyReference `json:"secretRef"`
}

// SecretKeyReference names one key of a Secret in the ImageBuild's namespace.
type SecretKeyReference struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a lower-case DNS-1123 name, such as npm-token"
	// +required
	Name string `json:"name"`

	// Key inside the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +required
	Key string `json:"key"`
}

// Compression of the pushed layers.
// +kubebuilder:validation:Enum=gzip;zstd;estargz
type Compression string

// The layer compressions kiln offers.
const (
	CompressionGzip    Compression = "gzip"
	CompressionZstd    Compression = "zstd"
	CompressionEstargz Compression = "estargz"
)

// Output is where the image is pushed.
type Output struct {
	// Image is the repository to push to, without tag or digest, e.g. registry.example.com/team/app.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.matches('^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$')",message="must be an image repository such as registry.example.com/team/app, in lower case, without tag or digest"
	// +required
	Image string `json:"image"`

	// Tags to push. The first tag's current image is the baseline for budget.maxGrowth.
	// +kubebuilder:default={"latest"}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.all(t, t.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'))",message="each tag must be a valid image tag: letters, digits, '_', '.' and '-', not starting with '.' or '-', at most 128 characters"
	// +listType=set
	// +optional
	Tags []string `json:"tags,omitempty"`

	// PushSecretRef names a kubernetes.io/dockerconfigjson Secret with the registry's credentials.
	// +optional
	PushSecretRef *LocalObjectReference `json:"pushSecretRef,omitempty"`

	// Compression of the layers: gzip (default), zstd or estargz (lazy pulling).
	// +kubebuilder:default=gzip
	// +optional
	Compression Compression `json:"compression,omitempty"`

	// Reproducible sets SOURCE_DATE_EPOCH (the commit time for git sources, 0 otherwise) and
	// rewrites file timestamps, so an unchanged source gives the same digest.
	// +optional
	Reproducible bool `json:"reproducible,omitempty"`

	// Insecure pushes over plain HTTP, for registries inside a local cluster.
	// +optional
	Insecure bool `json:"insecure,omitempty"`

	// Provenance is the SLSA provenance (v1) BuildKit records and kiln pushes with the image,
	// as an attestation manifest in its index: max (default) names every step, base image and
	// source, and the build arguments with their values; min names the sources and base images
	// only, without build arguments; none attaches none (the image is then pushed as a single
	// manifest, unless it has several platforms). Build secrets appear by id only, never by
	// value. docs/supply-chain.md says what is recorded and how to verify it.
	// +kubebuilder:default=max
	// +optional
	Provenance ProvenanceMode `json:"provenance,omitempty"`

	// SBOM attaches an SPDX SBOM of each platform image, made by kiln's runner with syft (no
	// scanner image is pulled), to the image's attestation manifest beside the provenance.
	// Default true.
	// +kubebuilder:default=true
	// +optional
	SBOM *bool `json:"sbom,omitempty"`

	// Signing signs the pushed image, and its provenance, with a cosign key pair, in cosign's
	// format (no transparency log): `cosign verify --key cosign.pub` and `cosign
	// verify-attestation --key cosign.pub --type slsaprovenance1` check them offline. A key that
	// cannot be loaded fails the build before anything is pushed.
	// +optional
	Signing *Signing `json:"signing,omitempty"`
}

// Signing names the cosign key pair that signs the pushed image.
type Signing struct {
	// SecretRef names a Secret in the ImageBuild's namespace with the keys cosign.key (the
	// private key as `cosign generate-key-pair` writes it, encrypted), cosign.password (its
	// password; empty for a key without one) and, optionally, cosign.pub (checked against the
	// private key). It reaches only the runner, in a memory-backed volume.
	// +required
	SecretRef LocalObjectReference `json:"secretRef"`
}

// ProvenanceMode is how much SLSA provenance BuildKit records (its attest:provenance mode).
// +kubebuilder:validation:Enum=max;min;none
type ProvenanceMode string

// The provenance modes.
const (
	ProvenanceMax  ProvenanceMode = "max"
	ProvenanceMin  ProvenanceMode = "min"
	ProvenanceNone ProvenanceMode = "none"
)

// Cache is the persistent volume that holds BuildKit's state.
// +kubebuilder:validation:XValidation:rule="!(has(self.claimName) && (has(self.size) || has(self.storageClassName)))",message="cache.claimName shares an existing claim: do not set cache.size or cache.storageClassName with it"
type Cache struct {
	// Size of the claim kiln creates (named <name>-cache). Defaults to the manager's default cache
	// size. BuildKit's garbage collection keeps its storage well below it.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('100Mi')) >= 0",message="must be at least 100Mi"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName of the claim kiln creates. Empty means the cluster's default class.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a lower-case DNS-1123 name, such as fast-ssd"
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// ClaimName shares an existing PersistentVolumeClaim in the same namespace between ImageBuilds.
	// kiln runs one build at a time on it and never deletes it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a lower-case DNS-1123 name, such as team-cache"
	// +optional
	ClaimName string `json:"claimName,omitempty"`

	// Registry is a BuildKit registry cache: every build imports it, and every build that
	// BuildKit completes exports to it, so that a build on an empty claim (a new ImageBuild, a
	// reset or lost claim, a claim in another zone) is warm too. Credentials come from
	// spec.output.pushSecretRef and spec.output.insecure applies to it. A failed import or
	// export is a warning in status and Events, never a failure. Whoever can push to this
	// repository decides what cached steps give your builds: trust it as you trust a base image.
	// +optional
	Registry *RegistryCache `json:"registry,omitempty"`
}

// RegistryCache is a BuildKit cache stored in a registry, in OCI media types (an image manifest
// whose config is BuildKit's cache configuration).
type RegistryCache struct {
	// Image is the cache's reference: a repository with an optional tag (default latest), never
	// a digest, e.g. registry.example.com/team/app-cache:main. It must not be one of the tags
	// kiln pushes the image to (the runner refuses it however it is spelled), nor any other
	// image anyone runs or builds from: the export overwrites it with a cache manifest.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=384
	// +kubebuilder:validation:XValidation:rule="self.matches('^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$')",message="must be an image repository (in lower case) with an optional tag, such as registry.example.com/team/app-cache:main, without a digest"
	// +required
	Image string `json:"image"`

	// Mode is what the export writes: max (the default) every step's result, so that a
	// multi-stage build's earlier stages come from the cache too; min only the final image's
	// layers (smaller, but a build stage runs again).
	// +kubebuilder:default=max
	// +optional
	Mode RegistryCacheMode `json:"mode,omitempty"`
}

// RegistryCacheMode is BuildKit's cache export mode.
// +kubebuilder:validation:Enum=min;max
type RegistryCacheMode string

// The registry cache's modes.
const (
	RegistryCacheMin RegistryCacheMode = "min"
	RegistryCacheMax RegistryCacheMode = "max"
)

// Enforcement says what happens to an image that breaks its budget.
// +kubebuilder:validation:Enum=Enforce;Warn
type Enforcement string

// The two enforcement modes.
const (
	// EnforcementEnforce refuses to push an over-budget image.
	EnforcementEnforce Enforcement = "Enforce"
	// EnforcementWarn pushes it and says so in the SizeBudget condition.
	EnforcementWarn Enforcement = "Warn"
)

// Budget limits the image's size. Sizes apply to each platform's image separately.
type Budget struct {
	// MaxImageSize is the largest compressed image allowed: config plus layers, per platform.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="must be a positive size, such as 50Mi"
	// +optional
	MaxImageSize *resource.Quantity `json:"maxImageSize,omitempty"`

	// MaxLayerSize is the largest compressed layer allowed.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="must be a positive size, such as 20Mi"
	// +optional
	MaxLayerSize *resource.Quantity `json:"maxLayerSize,omitempty"`

	// MaxLayers is the largest number of layers allowed.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxLayers *int32 `json:"maxLayers,omitempty"`

	// MaxWastedSize is the most bytes allowed in files that a later layer deletes or overwrites.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="must be a positive size, such as 1Mi"
	// +optional
	MaxWastedSize *resource.Quantity `json:"maxWastedSize,omitempty"`

	// MaxGrowth is how much the compressed image may grow compared with the image the first tag
	// points to now. 0 means it may not grow at all.
	// +kubebuilder:validation:XValidation:rule="!quantity(string(self)).isLessThan(quantity('0'))",message="must not be negative"
	// +optional
	MaxGrowth *resource.Quantity `json:"maxGrowth,omitempty"`

	// Enforcement is Enforce (an over-budget image is not pushed) or Warn (it is pushed and the
	// SizeBudget condition says it is over).
	// +kubebuilder:default=Enforce
	// +optional
	Enforcement Enforcement `json:"enforcement,omitempty"`
}

// Phase is a one-word summary of an ImageBuild for humans; conditions are the contract.
// +kubebuilder:validation:Enum=Pending;Queued;WaitingForCache;Building;Succeeded;Failed;BudgetExceeded;Suspended
type Phase string

// The phases of an ImageBuild.
const (
	PhasePending         Phase = "Pending"
	PhaseQueued          Phase = "Queued"
	PhaseWaitingForCache Phase = "WaitingForCache"
	PhaseBuilding        Phase = "Building"
	PhaseSucceeded       Phase = "Succeeded"
	PhaseFailed          Phase = "Failed"
	PhaseBudgetExceeded  Phase = "BudgetExceeded"
	// PhaseSuspended: spec.suspend stopped a build before it ended (or before it began). An
	// ImageBuild suspended after its build ended keeps that build's phase.
	PhaseSuspended Phase = "Suspended"
)

// Phases are every phase, as the enum of status.phase lists them.
var Phases = []Phase{PhasePending, PhaseQueued, PhaseWaitingForCache, PhaseBuilding, PhaseSucceeded, PhaseFailed, PhaseBudgetExceeded, PhaseSuspended}

// ImageBuildStatus is what kiln observed. GitOps tools read the conditions and observedGeneration.
type ImageBuildStatus struct {
	// ObservedGeneration is the generation whose outcome is final (Ready or Stalled); -1 before.
	// +kubebuilder:default=-1
	// +optional
	ObservedGeneration int64 `json:"observedGeneration"`

	// Conditions: Ready, Reconciling and Stalled (the last two only while True), SizeBudget.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Phase is a one-word summary for humans.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// Image is the pushed image as repository@digest.
	// +optional
	Image string `json:"image,omitempty"`

	// Digest of the pushed manifest or index.
	// +optional
	Digest string `json:"digest,omitempty"`

	// Tags that point at Digest.
	// +optional
	Tags []string `json:"tags,omitempty"`

	// Revision is the git commit the last build used.
	// +optional
	Revision string `json:"revision,omitempty"`

	// Size of the last built image.
	// +optional
	Size *ImageSize `json:"size,omitempty"`

	// Attestations are the attestation manifests of the image in Image, one per platform image
	// (spec.output.provenance). Empty when it has none; an entry without statement digests when
	// the runner's result had no room for them (the manifest holds them).
	// +optional
	Attestations []AttestationStatus `json:"attestations,omitempty"`

	// Signature says where the cosign signature of the image in Image is (spec.output.signing).
	// +optional
	Signature *SignatureStatus `json:"signature,omitempty"`

	// Budget is the last build's verdict against spec.budget.
	// +optional
	Budget *BudgetStatus `json:"budget,omitempty"`

	// Cache is the claim used and how much of the last build it served.
	// +optional
	Cache *CacheStatus `json:"cache,omitempty"`

	// Advice lists the most valuable ways to make the image smaller or the build faster.
	// +optional
	Advice []Advice `json:"advice,omitempty"`

	// LastBuild describes the latest build pod.
	// +optional
	LastBuild *LastBuild `json:"lastBuild,omitempty"`

	// BuildCount numbers the build pods: the latest is <name>-build-<buildCount>.
	// +optional
	BuildCount int64 `json:"buildCount,omitempty"`

	// PolledRevision is the source revision kiln last observed, when it differs from the built
	// one: the commit the last poll of spec.source.git found, or a ConfigMap source's content
	// digest (sha256:…). It is part of the build key, so a new value starts a build.
	// +optional
	PolledRevision string `json:"polledRevision,omitempty"`

	// LastPolledAt is when spec.source.git was last polled.
	// +optional
	LastPolledAt *metav1.Time `json:"lastPolledAt,omitempty"`

	// DecodeError is set, instead of any other field, when the stored status does not decode into
	// these types; it is never serialized. See UnmarshalJSON.
	DecodeError string `json:"-"`

	// LastHandledResetCacheAt is the value of the kiln.dev/reset-cache-requested-at annotation
	// whose cache reset a build has carried out (or started).
	// +optional
	LastHandledResetCacheAt string `json:"lastHandledResetCacheAt,omitempty"`
}

// ImageSize is the measured size of an image.
type ImageSize struct {
	// Image is the measured image as repository@digest: the last image kiln built and measured,
	// whether or not it was pushed (status.image is the last one pushed).
	// +optional
	Image string `json:"image,omitempty"`

	// Pushed says whether the measured image reached the registry; false when the budget (or a
	// failed push) kept it out.
	// +optional
	Pushed bool `json:"pushed"`

	// Compressed is the largest platform image's compressed size in human form, e.g. "12.3MiB".
	// +optional
	Compressed string `json:"compressed,omitempty"`

	// Platforms has one entry per platform image; attestations are not counted.
	// +optional
	Platforms []PlatformSize `json:"platforms,omitempty"`

	// AttestationBytes is the size of attestation manifests (provenance, SBOM), reported apart.
	// +optional
	AttestationBytes int64 `json:"attestationBytes,omitempty"`
}

// SignatureStatus locates the cosign signature and signed attestations of the pushed image.
type SignatureStatus struct {
	// Signature is the tag that holds the image's signature, <repository>:sha256-<hex>.sig, as
	// cosign stores it.
	Signature string `json:"signature"`
	// Attestations is the tag that holds the signed provenance, <repository>:sha256-<hex>.att;
	// empty without provenance.
	// +optional
	Attestations string `json:"attestations,omitempty"`
	// KeyID is the SHA-256 of the public key's DER form, hex: which key signed.
	// +optional
	KeyID string `json:"keyID,omitempty"`
}

// AttestationStatus names the attestations of one platform image of the pushed index.
type AttestationStatus struct {
	// Platform of the image, as os/arch[/variant].
	// +optional
	Platform string `json:"platform,omitempty"`
	// Manifest is the digest of the attestation manifest in the index (BuildKit's
	// vnd.docker.reference.type: attestation-manifest), which holds the statements.
	Manifest string `json:"manifest"`
	// Provenance is the digest of the in-toto statement with the SLSA provenance.
	// +optional
	Provenance string `json:"provenance,omitempty"`
	// SBOM is the digest of the in-toto statement with the SPDX SBOM.
	// +optional
	SBOM string `json:"sbom,omitempty"`
}

// PlatformSize is the measured size of one platform's image.
type PlatformSize struct {
	// Platform as os/arch[/variant].
	Platform string `json:"platform"`
	// CompressedBytes is the config blob plus every layer blob, as stored in the registry.
	CompressedBytes int64 `json:"compressedBytes"`
	// UncompressedBytes is the sum of the uncompressed layer tarballs.
	UncompressedBytes int64 `json:"uncompressedBytes"`
	// Layers is the number of layers.
	Layers int32 `json:"layers"`
	// WastedBytes is the size of file copies that later layers delete or overwrite.
	// +optional
	WastedBytes int64 `json:"wastedBytes,omitempty"`
	// LargestLayers are the biggest layers, largest first.
	// +optional
	LargestLayers []LayerSize `json:"largestLayers,omitempty"`
	// LargestPackages are the packages of the SBOM (spec.output.sbom) whose files take the most
	// bytes of the final filesystem, largest first; files several packages own (every Go module
	// of one binary) count once, for all of them together.
	// +optional
	LargestPackages []PackageSize `json:"largestPackages,omitempty"`
	// UnpackagedBytes are the bytes of the final filesystem's files that no package owns.
	// +optional
	UnpackagedBytes int64 `json:"unpackagedBytes,omitempty"`
}

// PackageSize is the bytes of the final filesystem that a package owns.
type PackageSize struct {
	// Name of the package, or of the packages that own the same files ("a, b (+3 more)").
	Name string `json:"name"`
	// Type as syft names it: deb, apk, rpm, go-module, npm, python, binary, ...
	// +optional
	Type string `json:"type,omitempty"`
	// Bytes of its files (uncompressed), hard links counted once.
	Bytes int64 `json:"bytes"`
	// Files it owns.
	// +optional
	Files int32 `json:"files,omitempty"`
}

// LayerSize is one layer and what created it.
type LayerSize struct {
	// Index of the layer in the manifest, 0 for the base.
	Index int32 `json:"index"`
	// CompressedBytes of the layer blob.
	CompressedBytes int64 `json:"compressedBytes"`
	// CreatedBy is the Dockerfile instruction that made the layer, shortened.
	// +optional
	CreatedBy string `json:"createdBy,omitempty"`
	// Line in the Dockerfile, when BuildKit reports one; 0 for base image layers.
	// +optional
	Line int32 `json:"line,omitempty"`
}

// Verdict of a build's image against its budget.
type Verdict string

// The verdicts; they are also the reasons of the SizeBudget condition.
const (
	VerdictWithinBudget Verdict = "WithinBudget"
	VerdictOverBudget   Verdict = "OverBudget"
	VerdictNotMeasured  Verdict = "NotMeasured"
)

// BudgetStatus is a build's verdict against spec.budget.
type BudgetStatus struct {
	// Verdict is WithinBudget, OverBudget or NotMeasured.
	Verdict Verdict `json:"verdict"`
	// Enforcement in force when the verdict was given.
	// +optional
	Enforcement Enforcement `json:"enforcement,omitempty"`
	// Summary for the printer column, e.g. "12.3MiB/50Mi" or "61.2MiB/50Mi (+11.2MiB)".
	// +optional
	Summary string `json:"summary,omitempty"`
	// Checks has one entry per limit and platform, the worst first.
	// +optional
	Checks []BudgetCheck `json:"checks,omitempty"`
}

// BudgetCheck is one limit applied to one platform image.
type BudgetCheck struct {
	// Limit is the budget field: maxImageSize, maxLayerSize, maxLayers, maxWastedSize, maxGrowth.
	Limit string `json:"limit"`
	// Platform the check applies to.
	// +optional
	Platform string `json:"platform,omitempty"`
	// LimitValue is the limit, in bytes (in layers for maxLayers).
	LimitValue int64 `json:"limitValue"`
	// Actual is the measured value, in the same unit.
	Actual int64 `json:"actual"`
	// Headroom is limit minus actual: negative when over.
	Headroom int64 `json:"headroom"`
	// Message says it for humans, with the limit and the excess.
	// +optional
	Message string `json:"message,omitempty"`
}

// CacheStatus is the cache claim and how much of the last build it served.
type CacheStatus struct {
	// ClaimName is the PersistentVolumeClaim holding BuildKit's state.
	// +optional
	ClaimName string `json:"claimName,omitempty"`
	// CachedSteps of the last build that BuildKit served from cache.
	// +optional
	CachedSteps int32 `json:"cachedSteps,omitempty"`
	// TotalSteps of the last build.
	// +optional
	TotalSteps int32 `json:"totalSteps,omitempty"`
	// Registry is what the last build did with spec.cache.registry.
	// +optional
	Registry *RegistryCacheStatus `json:"registry,omitempty"`
}

// RegistryCacheStatus is what a build did with its registry cache.
type RegistryCacheStatus struct {
	// Image is spec.cache.registry.image as the build used it.
	Image string `json:"image"`
	// Imported says that BuildKit read the cache's manifest; false when the cache does not
	// exist yet, could not be read, or the build did not need it (everything was on the claim).
	// +optional
	Imported bool `json:"imported,omitempty"`
	// Exported is the digest of the cache manifest the build pushed; empty when it pushed none.
	// +optional
	Exported string `json:"exported,omitempty"`
	// Message says why the import or export failed; empty when neither did.
	// +optional
	Message string `json:"message,omitempty"`
}

// Advice is one finding about the Dockerfile or the image.
type Advice struct {
	// Rule is the finding's id, e.g. final-stage-toolchain.
	Rule string `json:"rule"`
	// Message explains what to change.
	Message string `json:"message"`
	// Line in the Dockerfile the finding is about; 0 when none.
	// +optional
	Line int32 `json:"line,omitempty"`
	// SavingBytes is the estimated saving in bytes; 0 when unknown.
	// +optional
	SavingBytes int64 `json:"savingBytes,omitempty"`
}

// BuildKey is what one build answers: a generation of the spec, a rebuild request and a source
// revision. A new value of any of them starts a new build; a build whose key is not the
// ImageBuild's current key is outdated.
type BuildKey struct {
	// Generation of the spec the build used.
	Generation int64 `json:"generation"`
	// RebuildRequestedAt is the value of the kiln.dev/rebuild-requested-at annotation the build
	// answered.
	// +optional
	RebuildRequestedAt string `json:"rebuildRequestedAt,omitempty"`
	// PolledRevision is the source revision the build was started for: a commit that git polling
	// found, or a ConfigMap source's content digest (status.polledRevision at the build's start).
	// +optional
	PolledRevision string `json:"polledRevision,omitempty"`
}

// LastBuild describes the latest build pod.
type LastBuild struct {
	// PodName of the build pod.
	PodName string `json:"podName"`
	// PodUID is the UID of the build pod kiln created. kiln follows, and reads the result of,
	// only the pod with this UID: a pod that merely has the name (or claims the ImageBuild as its
	// owner) is not the build. Empty for builds recorded before kiln recorded UIDs.
	// +optional
	PodUID types.UID `json:"podUID,omitempty"`
	// Attempt counts the tries of this build, from 1.
	Attempt int32 `json:"attempt"`
	// SecurityProfile is the profile the build pod was created with (spec.securityProfile, or
	// the manager's --build-pod-security-profile). Empty when no pod was created.
	// +optional
	SecurityProfile SecurityProfile `json:"securityProfile,omitempty"`
	// BuildKey is what the build answers; the build pod carries the same key.
	BuildKey `json:",inline"`
	// StartTime of the build pod.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime of the build pod.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Duration of the build, e.g. "1m12s".
	// +optional
	Duration string `json:"duration,omitempty"`
	// FailureReason classifies a failure: BadInput, BuildFailed, OverBudget, PushFailed, Timeout, ...;
	// absent when the build succeeded.
	// +optional
	FailureReason FailureClass `json:"failureReason,omitempty"`
	// Message from the build, on failure.
	// +optional
	Message string `json:"message,omitempty"`
	// LogTail is the end of the runner's log on failure.
	// +optional
	LogTail string `json:"logTail,omitempty"`
}

// ImageBuild builds a container image in the cluster with rootless BuildKit, checks it against a
// size budget, and pushes it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ib,categories=kiln
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters: kiln uses it as a label value on the build pods and the cache claim"
// The columns describe one image: the last one kiln built and measured, and whether it was
// pushed (status.image keeps the last pushed one).
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.status.size.image`
// +kubebuilder:printcolumn:name="Size",type=string,JSONPath=`.status.size.compressed`
// +kubebuilder:printcolumn:name="Budget",type=string,JSONPath=`.status.budget.summary`
// +kubebuilder:printcolumn:name="Pushed",type=boolean,JSONPath=`.status.size.pushed`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ImageBuild struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says what to build.
	// +required
	Spec ImageBuildSpec `json:"spec"`

	// Status is what kiln observed.
	// +kubebuilder:default={"observedGeneration":-1}
	// +optional
	Status ImageBuildStatus `json:"status,omitempty"`
}

// ImageBuildList is a list of ImageBuilds.
//
// +kubebuilder:object:root=true
type ImageBuildList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the ImageBuilds.
	Items []ImageBuild `json:"items"`
}
