package controllers

import (
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// Labels and annotations kiln puts on build pods.
const (
	LabelImageBuild = "kiln.dev/imagebuild"
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	// LabelRole tells kiln's own ConfigMaps apart: RoleRequest carries a runner's request.
	LabelRole       = "kiln.dev/role"
	RoleRequest     = "request"
	AnnotationBuild = "kiln.dev/build"
	// AnnotationBuildKey holds the kilnv1.BuildKey the pod's build answers, as JSON.
	AnnotationBuildKey   = "kiln.dev/build-key"
	AnnotationAttempt    = "kiln.dev/attempt"
	AnnotationCacheClaim = "kiln.dev/cache-claim"

	containerBuildKit = "buildkitd"
	containerRunner   = "runner"

	// buildKitUID is the user rootless BuildKit runs as in its official image; the runner uses it
	// too so that it may open buildkitd's socket.
	buildKitUID = 1000
)

// podOptions are the parts of a build pod that do not come from the ImageBuild.
type podOptions struct {
	// BuildKitImage is the buildkitd image: rootless BuildKit for the rootless profile, rootful
	// BuildKit for userns.
	BuildKitImage string
	RunnerImage   string
	// SecurityProfile is the pod's shape (empty means rootless).
	SecurityProfile kilnv1.SecurityProfile
	// UserNSSeccompProfile is buildkitd's Localhost seccomp profile in the userns profile (a
	// path under the kubelet's seccomp directory); empty means Unconfined.
	UserNSSeccompProfile string
	// Build is the build number; the pod is named <name>-build-<Build>.
	Build int64
	// Attempt counts tries of the same build key, from 1.
	Attempt int32
	// ClaimName is the cache claim mounted as BuildKit's state.
	ClaimName string
	// CacheBytes is the claim's size, from which garbage collection is configured.
	CacheBytes int64
	// ResetCache asks the runner to empty BuildKit's cache before building.
	ResetCache bool
	// MaxTimeout clamps spec.timeout (the manager's --max-build-timeout); 0 means no clamp.
	MaxTimeout time.Duration
	// BuildKitResources are buildkitd's default requests and limits (--buildkit-resources);
	// spec.resources overrides them name by name.
	BuildKitResources corev1.ResourceRequirements
	// RequestDigest is contract.RequestFilesDigest of the request ConfigMap's data: the runner
	// builds only that request (contract.RequestDigestEnv).
	RequestDigest string
	// MaxSourceBytes bounds what the runner unpacks from an OCI source; 0 means the default.
	MaxSourceBytes int64
}

// Disk the build pod may use outside its cache claim. The runner writes the exported image (an
// OCI layout) into the work directory, at most the cache's size (BuildKit holds the image in
// the cache first); /tmp and BuildKit's socket directory hold little. The kubelet evicts a pod
// whose emptyDir outgrows its sizeLimit, so one build cannot fill its node's disk.
const (
	socketDirLimit     = 16 << 20
	tmpDirLimit        = 1 << 30
	runnerStorageLimit = 1 << 30 // the runner's log and writable layer (its root is read-only)
)

// workDirLimit is the work directory's sizeLimit for a cache of cacheBytes (1 GiB when unknown).
func workDirLimit(cacheBytes int64) *resource.Quantity {
	return resource.NewQuantity(max(cacheBytes, 1<<30), resource.BinarySI)
}

// requestConfigMapName is the ConfigMap that carries the request of build pod podName.
func requestConfigMapName(podName string) string {
	return truncateName(podName, "-request")
}

// buildTimeout is the deadline of ib's build pods: spec.timeout (default 30m), clamped to
// maxTimeout when that is set.
func buildTimeout(ib *kilnv1.ImageBuild, maxTimeout time.Duration) time.Duration {
	d := 30 * time.Minute
	if ib.Spec.Timeout != nil && ib.Spec.Timeout.Duration > 0 {
		d = ib.Spec.Timeout.Duration
	}
	if maxTimeout > 0 && d > maxTimeout {
		d = maxTimeout
	}
	return max(d, time.Second)
}

// renderRequest is the ConfigMap that carries the runner's request (runnerRequest) into build
// pod podName (contract.RequestFiles); it is owned by the ImageBuild and deleted with its pod.
func renderRequest(ib *kilnv1.ImageBuild, opts podOptions) (*corev1.ConfigMap, error) {
	podName := buildPodName(ib, opts.Build)
	req := runnerRequest(ib, opts.Build, opts.ResetCache)
	if o := req.Spec.Source.OCI; o != nil && opts.MaxSourceBytes > 0 {
		o.MaxBytes = opts.MaxSourceBytes
	}
	files, err := contract.RequestFiles(req)
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      requestConfigMapName(podName),
			Namespace: ib.Namespace,
			Labels:    map[string]string{LabelImageBuild: ib.Name, LabelManagedBy: "kiln", LabelRole: RoleRequest},
			Annotations: map[string]string{
				AnnotationBuild: strconv.FormatInt(opts.Build, 10),
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ib, kilnv1.GroupVersion.WithKind("ImageBuild"))},
		},
		Immutable: ptr.To(true),
		Data:      files,
	}, nil
}

// buildPodName is the deterministic name of an ImageBuild's n-th build pod.
func buildPodName(ib *kilnv1.ImageBuild, n int64) string {
	return truncateName(ib.Name, "-build-"+strconv.FormatInt(n, 10))
}

// gcKeepStorage renders buildkitd's --oci-worker-gc-keepstorage value for a cache of the given
// size: "reserved,free,maximum" in megabytes of 10^6 bytes (BuildKit multiplies by 1e6, not 2^20).
// BuildKit keeps at least 10% of the volume and prunes down once it uses more than 80%.
func gcKeepStorage(cacheBytes int64) string {
	const mb = 1_000_000
	return fmt.Sprintf("%d,0,%d", cacheBytes/10/mb, cacheBytes*8/10/mb)
}

// renderBuildPod is the build pod for one attempt of one build of ib. It is a pure function of
// its inputs: the controller's tests and the pod rendering tests both rely on that.
func renderBuildPod(ib *kilnv1.ImageBuild, opts podOptions) *corev1.Pod {
	podName := buildPodName(ib, opts.Build)
	volumes, runnerMounts := buildPodVolumes(ib, opts, podName)
	deadline := ptr.To(int64(buildTimeout(ib, opts.MaxTimeout).Round(time.Second).Seconds()))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      podName,
			Namespace: ib.Namespace,
			Labels: map[string]string{
				LabelImageBuild: ib.Name,
				LabelManagedBy:  "kiln",
			},
			Annotations: map[string]string{
				AnnotationBuild:      strconv.FormatInt(opts.Build, 10),
				AnnotationBuildKey:   encodeKey(keyOf(ib)),
				AnnotationAttempt:    strconv.Itoa(int(opts.Attempt)),
				AnnotationCacheClaim: opts.ClaimName,
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ib, kilnv1.GroupVersion.WithKind("ImageBuild"))},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			ServiceAccountName:            ib.Spec.ServiceAccountName,
			ActiveDeadlineSeconds:         deadline,
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			NodeSelector:                  ib.Spec.NodeSelector,
			Tolerations:                   ib.Spec.Tolerations,
			Affinity:                      ib.Spec.Affinity,
			PriorityClassName:             ib.Spec.PriorityClassName,
			SecurityContext: &corev1.PodSecurityContext{
				// The cache claim and emptyDirs become writable by BuildKit's user.
				FSGroup:             ptr.To[int64](buildKitUID),
				FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
				SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			HostUsers:      hostUsers(opts.SecurityProfile),
			InitContainers: []corev1.Container{buildKitContainer(ib, opts)},
			Containers:     []corev1.Container{runnerContainer(opts.RunnerImage, opts.RequestDigest, runnerMounts)},
			Volumes:        volumes,
		},
	}
}

// buildPodVolumes returns the build pod's volumes and the runner's mounts of them: the cache
// claim, BuildKit's socket directory, scratch space, the request ConfigMap, and the source
// ConfigMap and Secrets the spec names.
func buildPodVolumes(ib *kilnv1.ImageBuild, opts podOptions, podName string) ([]corev1.Volume, []corev1.VolumeMount) {
	emptyDir := func(limit *resource.Quantity) corev1.VolumeSource {
		return corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: limit}}
	}
	volumes := []corev1.Volume{
		{Name: "cache", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: opts.ClaimName}}},
		{Name: "buildkit-run", VolumeSource: emptyDir(resource.NewQuantity(socketDirLimit, resource.BinarySI))},
		{Name: "work", VolumeSource: emptyDir(workDirLimit(opts.CacheBytes))},
		{Name: "tmp", VolumeSource: emptyDir(resource.NewQuantity(tmpDirLimit, resource.BinarySI))},
		{Name: "request", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: requestConfigMapName(podName)},
		}}},
	}
	if opts.SecurityProfile == kilnv1.SecurityProfileUserNS {
		// buildkitd's root filesystem is read-only there: what it writes outside its state.
		volumes = append(volumes,
			corev1.Volume{Name: "buildkitd-tmp", VolumeSource: emptyDir(resource.NewQuantity(tmpDirLimit, resource.BinarySI))},
			corev1.Volume{Name: "runc-state", VolumeSource: emptyDir(resource.NewQuantity(socketDirLimit, resource.BinarySI))})
	}
	runnerMounts := []corev1.VolumeMount{
		{Name: "request", MountPath: contract.RequestDir, ReadOnly: true},
		{Name: "buildkit-run", MountPath: contract.SocketDir},
		{Name: "work", MountPath: contract.WorkDir},
		{Name: "tmp", MountPath: "/tmp"},
	}
	// Secrets are optional volumes so that a missing one reaches the runner, which fails with
	// the Secret's name, instead of leaving the pod Pending with nothing in the ImageBuild.
	addSecret := func(volume, secret, mountPath string, items []corev1.KeyToPath) {
		volumes = append(volumes, corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: secret, Items: items, Optional: ptr.To(true), DefaultMode: ptr.To[int32](0o400),
		}}})
		runnerMounts = append(runnerMounts, corev1.VolumeMount{Name: volume, MountPath: mountPath, ReadOnly: true})
	}
	if cm := ib.Spec.Source.ConfigMap; cm != nil {
		volumes = append(volumes, corev1.Volume{Name: "context", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}, Optional: ptr.To(true),
		}}})
		runnerMounts = append(runnerMounts, corev1.VolumeMount{Name: "context", MountPath: contract.ContextDir, ReadOnly: true})
	}
	if g := ib.Spec.Source.Git; g != nil && g.SecretRef != nil {
		addSecret("git-secret", g.SecretRef.Name, contract.GitSecretDir, nil)
	}
	if o := ib.Spec.Source.OCI; o != nil && o.PullSecretRef != nil {
		addSecret("source-secret", o.PullSecretRef.Name, contract.SourceSecretDir, nil)
	}
	if ps := ib.Spec.Output.PushSecretRef; ps != nil {
		addSecret("push-secret", ps.Name, contract.PushSecretDir, nil)
	}
	if s := ib.Spec.Output.Signing; s != nil {
		// A Secret volume is memory-backed (tmpfs): the signing key never reaches a disk.
		addSecret("signing-secret", s.SecretRef.Name, contract.SigningSecretDir, nil)
	}
	for i, s := range ib.Spec.Dockerfile.Secrets {
		addSecret(fmt.Sprintf("build-secret-%d", i), s.SecretRef.Name, contract.BuildSecretsDir+"/"+s.ID,
			[]corev1.KeyToPath{{Key: s.SecretRef.Key, Path: contract.BuildSecretFile}})
	}
	return volumes, runnerMounts
}

// buildKitContainer is the build pod's rootless buildkitd: a sidecar (an init container that
// restarts always). It has no startup probe: the kubelet starts the runner as soon as buildkitd
// runs, and the runner waits for buildkitd's socket itself (runner.connect, its own timeout and
// BuildKitNotUp), so a build starts the moment BuildKit can take it instead of at the next probe
// period.
func buildKitContainer(ib *kilnv1.ImageBuild, opts podOptions) corev1.Container {
	buildkitArgs := []string{"--addr=" + contract.Socket}
	mounts := []corev1.VolumeMount{
		{Name: "cache", MountPath: contract.BuildKitStateDir},
		{Name: "buildkit-run", MountPath: contract.SocketDir},
	}
	command := []string{"rootlesskit", "sh", "-c", buildKitStop, "buildkitd"}
	security := rootlessSecurityContext()
	if opts.SecurityProfile == kilnv1.SecurityProfileUserNS {
		// Root of the pod's user namespace runs buildkitd; the runner (user 1000) reaches its
		// socket through the group. RUN steps get BuildKit's process sandbox back. Its state
		// lives in a directory of its own on the claim: files that rootless BuildKit stored
		// (owned by rootlesskit's subordinate IDs) would show other owners here, and snapshots
		// with wrong owners would make wrong images.
		buildkitArgs = append(buildkitArgs, "--root="+userNSStateDir, fmt.Sprintf("--group=%d", buildKitUID))
		command = []string{"sh", "-c", buildKitStop, "buildkitd"}
		security = userNSSecurityContext(opts.UserNSSeccompProfile)
		mounts = append(mounts, corev1.VolumeMount{Name: "buildkitd-tmp", MountPath: "/tmp"}, corev1.VolumeMount{Name: "runc-state", MountPath: "/run/runc"})
	} else {
		buildkitArgs = append(buildkitArgs, "--root="+contract.BuildKitStateDir, "--oci-worker-no-process-sandbox")
	}
	if opts.CacheBytes > 0 {
		buildkitArgs = append(buildkitArgs, "--oci-worker-gc", "--oci-worker-gc-keepstorage="+gcKeepStorage(opts.CacheBytes))
	}
	buildkitResources := *opts.BuildKitResources.DeepCopy()
	if r := ib.Spec.Resources; r != nil {
		buildkitResources.Requests = mergeResources(buildkitResources.Requests, r.Requests)
		buildkitResources.Limits = mergeResources(buildkitResources.Limits, r.Limits)
	}
	// Defaults never make the pod invalid: a default request above the ImageBuild's own limit
	// comes down to it, and a default limit below the ImageBuild's own request goes up to it.
	for name, limit := range buildkitResources.Limits {
		req, ok := buildkitResources.Requests[name]
		if !ok || req.Cmp(limit) <= 0 {
			continue
		}
		_, ownLimit := specResources(ib).Limits[name]
		_, ownRequest := specResources(ib).Requests[name]
		switch {
		case ownLimit && !ownRequest:
			buildkitResources.Requests[name] = limit.DeepCopy()
		case ownRequest && !ownLimit:
			buildkitResources.Limits[name] = req.DeepCopy()
		} // both the ImageBuild's own: the API server says what is wrong (PodRejected)
	}

	return corev1.Container{
		Name:                     containerBuildKit,
		Image:                    opts.BuildKitImage,
		Command:                  command,
		Args:                     buildkitArgs,
		RestartPolicy:            ptr.To(corev1.ContainerRestartPolicyAlways),
		Resources:                buildkitResources,
		SecurityContext:          security,
		VolumeMounts:             mounts,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// userNSStateDir is rootful BuildKit's state directory on the cache claim in the userns profile.
const userNSStateDir = contract.BuildKitStateDir + "/userns"

// hostUsers is the pod's hostUsers: false (a user namespace of its own) for the userns profile,
// unset (the node's) otherwise.
func hostUsers(profile kilnv1.SecurityProfile) *bool {
	if profile == kilnv1.SecurityProfileUserNS {
		return ptr.To(false)
	}
	return nil
}

// rootlessSecurityContext is buildkitd's in the rootless profile, as in BuildKit's rootless
// Kubernetes examples: user 1000, seccomp and AppArmor unconfined so that rootlesskit can create
// its user namespace. Nothing else in the pod gets this.
func rootlessSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser:                ptr.To[int64](buildKitUID),
		RunAsGroup:               ptr.To[int64](buildKitUID),
		RunAsNonRoot:             ptr.To(true),
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
		AppArmorProfile:          &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined},
		AllowPrivilegeEscalation: ptr.To(true), // newuidmap/newgidmap are setuid
	}
}

// userNSSecurityContext is buildkitd's in the userns profile: root of the pod's user namespace
// (an unprivileged user on the node) with CAP_SYS_ADMIN there only, so that it may mount its
// snapshots and give each RUN step BuildKit's process sandbox (namespaces of its own), keeping
// the default capabilities RUN steps get; a read-only root filesystem. seccompProfile is the
// node's Localhost profile that allows what runc needs besides RuntimeDefault (keyctl,
// pivot_root); empty means Unconfined, since RuntimeDefault refuses those calls. AppArmor is
// Unconfined because the runtime's default profile denies mount. docs/security.md records the
// shapes tried on the local cluster.
func userNSSecurityContext(seccompProfile string) *corev1.SecurityContext {
	seccomp := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	if seccompProfile != "" {
		seccomp = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr.To(seccompProfile)}
	}
	return &corev1.SecurityContext{
		RunAsUser:              ptr.To[int64](0),
		RunAsGroup:             ptr.To[int64](0),
		RunAsNonRoot:           ptr.To(false),
		Capabilities:           &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}},
		ReadOnlyRootFilesystem: ptr.To(true),
		SeccompProfile:         seccomp,
		AppArmorProfile:        &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined},
	}
}

// buildKitStop runs buildkitd (with the container's arguments) under rootlesskit, as BuildKit's
// rootless image does, and makes its stop at the end of a build read as what it is. The kubelet
// stops the sidecar with SIGTERM once the runner has ended; buildkitd (v0.33) answers any
// SIGTERM by logging "got SIGTERM/SIGINT, forcing shutdown" with a Go stack trace and exiting
// with status 1, which rootlesskit then reports as an error. The script says beforehand that
// the stop is expected, passes buildkitd one SIGTERM however many arrive, and ends with status 0
// after such a stop; a buildkitd that exits by itself keeps its status.
const buildKitStop = `buildkitd "$@" & pid=$!
stopping=
trap 'trap "" TERM; stopping=1; echo "kiln: the build pod is stopping (the runner has ended, or the pod was deleted): stopping buildkitd; this stop is expected, and the trace buildkitd prints for it is not an error" >&2; kill -TERM "$pid"' TERM
wait "$pid"; status=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done
if [ -n "$stopping" ]; then echo "kiln: buildkitd has stopped (exit status $status, as it always is after SIGTERM)" >&2; exit 0; fi
echo "kiln: buildkitd exited by itself with status $status" >&2
exit "$status"`

// specResources is spec.resources, empty when unset.
func specResources(ib *kilnv1.ImageBuild) kilnv1.BuildKitResources {
	if ib.Spec.Resources == nil {
		return kilnv1.BuildKitResources{}
	}
	return *ib.Spec.Resources
}

// mergeResources is base with over's entries put in place of base's of the same name.
func mergeResources(base, over map[corev1.ResourceName]resource.Quantity) corev1.ResourceList {
	if len(base) == 0 && len(over) == 0 {
		return nil
	}
	out := corev1.ResourceList{}
	for n, q := range base {
		out[n] = q.DeepCopy()
	}
	for n, q := range over {
		out[n] = q.DeepCopy()
	}
	return out
}

// runnerContainer is the build pod's runner: it reads the request, drives BuildKit, pushes, and
// writes its result as the container's termination message.
func runnerContainer(image, requestDigest string, mounts []corev1.VolumeMount) corev1.Container {
	return corev1.Container{
		Name:  containerRunner,
		Image: image,
		Args:  []string{"runner", "--request-dir=" + contract.RequestDir},
		Env: []corev1.EnvVar{
			{Name: "BUILDKIT_HOST", Value: contract.Socket},
			{Name: "HOME", Value: contract.WorkDir},
			// syft unpacks the layers it scans for the SBOM under TMPDIR: the work directory is
			// sized for images, /tmp is small.
			{Name: "TMPDIR", Value: contract.WorkDir + "/tmp"},
			{Name: contract.RequestDigestEnv, Value: requestDigest},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi"),
				corev1.ResourceEphemeralStorage: resource.MustParse("64Mi")},
			Limits: corev1.ResourceList{corev1.ResourceEphemeralStorage: *resource.NewQuantity(runnerStorageLimit, resource.BinarySI)},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To[int64](buildKitUID),
			RunAsGroup:               ptr.To[int64](buildKitUID),
			RunAsNonRoot:             ptr.To(true),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts:           mounts,
		TerminationMessagePath: contract.ResultPath,
		// File, not FallbackToLogsOnError: the kubelet would copy the end of the log, which
		// kiln did not write (a crash's trace), into the pod's status unredacted.
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
}
