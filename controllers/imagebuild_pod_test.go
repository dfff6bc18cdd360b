package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

func TestRenderBuildPod(t *testing.T) {
	base := func(mutate ...func(*kilnv1.ImageBuild)) *kilnv1.ImageBuild {
		ib := newImageBuild("team", "app", mutate...)
		ib.UID = "uid-1"
		ib.Generation = 4
		return ib
	}
	opts := podOptions{BuildKitImage: "bk:rootless", RunnerImage: "kiln:v1", Build: 7, Attempt: 2, ClaimName: "app-cache", CacheBytes: 10 << 30}
	userns := opts
	userns.BuildKitImage, userns.SecurityProfile = "bk:rootful", kilnv1.SecurityProfileUserNS
	usernsLocalhost := userns
	usernsLocalhost.UserNSSeccompProfile = "kiln/buildkitd-userns.json"

	for _, tc := range []struct {
		name  string
		ib    *kilnv1.ImageBuild
		opts  podOptions
		check func(t *testing.T, pod *corev1.Pod)
	}{
		{"names, labels and owner", base(), opts, func(t *testing.T, pod *corev1.Pod) {
			if pod.Name != "app-build-7" || pod.Namespace != "team" {
				t.Errorf("pod is %s/%s, want team/app-build-7", pod.Namespace, pod.Name)
			}
			if pod.Labels[LabelImageBuild] != "app" || podKey(pod).Generation != 4 || pod.Annotations[AnnotationAttempt] != "2" {
				t.Errorf("labels %v annotations %v", pod.Labels, pod.Annotations)
			}
			if len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].UID != "uid-1" || !*pod.OwnerReferences[0].Controller {
				t.Errorf("owner references %+v", pod.OwnerReferences)
			}
		}},
		{"no timeout means the 30m default, never no deadline", base(func(ib *kilnv1.ImageBuild) { ib.Spec.Timeout = nil }), opts, func(t *testing.T, pod *corev1.Pod) {
			if d := ptr.Deref(pod.Spec.ActiveDeadlineSeconds, 0); d != 1800 {
				t.Errorf("deadline %d, want 1800", d)
			}
		}},
		{"--max-build-timeout clamps spec.timeout", base(func(ib *kilnv1.ImageBuild) { ib.Spec.Timeout = &metav1.Duration{Duration: 10 * time.Hour} }),
			podOptions{BuildKitImage: "bk", RunnerImage: "r", Build: 1, ClaimName: "c", MaxTimeout: 2 * time.Hour}, func(t *testing.T, pod *corev1.Pod) {
				if d := ptr.Deref(pod.Spec.ActiveDeadlineSeconds, 0); d != 7200 {
					t.Errorf("deadline %d, want 7200", d)
				}
			}},
		{"the request is a mounted file, never an argument", base(func(ib *kilnv1.ImageBuild) {
			ib.Spec.Dockerfile.Inline = strings.Repeat("RUN echo '<&>' \n", 4000)
		}), opts, func(t *testing.T, pod *corev1.Pod) {
			r := pod.Spec.Containers[0]
			if strings.Join(r.Args, " ") != "runner --request-dir="+contract.RequestDir {
				t.Errorf("runner args %q", r.Args)
			}
			v := volume(pod, "request")
			if v == nil || v.ConfigMap == nil || v.ConfigMap.Name != "app-build-7-request" || v.ConfigMap.Optional != nil {
				t.Fatalf("request volume %+v", v)
			}
			if !mounted(r, "request", contract.RequestDir) || mountedAny(pod.Spec.InitContainers[0], "request") {
				t.Error("the request must be mounted in the runner only")
			}
		}},
		{"timeout becomes the deadline", base(func(ib *kilnv1.ImageBuild) { ib.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Minute} }), opts, func(t *testing.T, pod *corev1.Pod) {
			if d := ptr.Deref(pod.Spec.ActiveDeadlineSeconds, 0); d != 300 {
				t.Errorf("deadline %d, want 300", d)
			}
		}},
		{"GC is 10% reserved and 80% max of the claim, in MB", base(), opts, func(t *testing.T, pod *corev1.Pod) {
			want := "--oci-worker-gc-keepstorage=1073,0,8589" // 10 GiB = 10737.4 MB
			if !contains(pod.Spec.InitContainers[0].Args, want) || !contains(pod.Spec.InitContainers[0].Args, "--oci-worker-gc") {
				t.Errorf("buildkitd args %v lack %s", pod.Spec.InitContainers[0].Args, want)
			}
		}},
		{"unknown claim size leaves GC to BuildKit", base(), podOptions{BuildKitImage: "bk", RunnerImage: "r", Build: 1, ClaimName: "c"}, func(t *testing.T, pod *corev1.Pod) {
			for _, a := range pod.Spec.InitContainers[0].Args {
				if strings.HasPrefix(a, "--oci-worker-gc") {
					t.Errorf("unexpected %s", a)
				}
			}
		}},
		{"git secret only in the runner", base(func(ib *kilnv1.ImageBuild) {
			ib.Spec.Source = kilnv1.Source{Git: &kilnv1.GitSource{URL: "https://example.com/x.git", SecretRef: &kilnv1.LocalObjectReference{Name: "git-creds"}}}
		}), opts, func(t *testing.T, pod *corev1.Pod) {
			v := volume(pod, "git-secret")
			if v == nil || v.Secret.SecretName != "git-creds" || !*v.Secret.Optional {
				t.Fatalf("git secret volume %+v", v)
			}
			if volume(pod, "context") != nil {
				t.Error("a git build has no ConfigMap context volume")
			}
			if !mounted(pod.Spec.Containers[0], "git-secret", contract.GitSecretDir) || mountedAny(pod.Spec.InitContainers[0], "git-secret") {
				t.Error("the git secret must be mounted in the runner only")
			}
		}},
		{"buildkitd resources and scheduling knobs", base(func(ib *kilnv1.ImageBuild) {
			ib.Spec.Resources = &kilnv1.BuildKitResources{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("4Gi")}}
			ib.Spec.NodeSelector = map[string]string{"pool": "builders"}
			ib.Spec.Tolerations = []corev1.Toleration{{Key: "builders", Operator: corev1.TolerationOpExists}}
			ib.Spec.PriorityClassName = "low"
			ib.Spec.ServiceAccountName = "builder"
		}), opts, func(t *testing.T, pod *corev1.Pod) {
			if pod.Spec.InitContainers[0].Resources.Limits.Memory().String() != "4Gi" {
				t.Errorf("buildkitd resources %+v", pod.Spec.InitContainers[0].Resources)
			}
			if pod.Spec.NodeSelector["pool"] != "builders" || len(pod.Spec.Tolerations) != 1 || pod.Spec.PriorityClassName != "low" || pod.Spec.ServiceAccountName != "builder" {
				t.Errorf("scheduling knobs not copied: %+v", pod.Spec)
			}
			if *pod.Spec.AutomountServiceAccountToken {
				t.Error("a service account must not bring its token")
			}
		}},
		{"long names stay valid", base(func(ib *kilnv1.ImageBuild) { ib.Name = strings.Repeat("a", 253) }), opts, func(t *testing.T, pod *corev1.Pod) {
			if len(pod.Name) > 253 || !strings.HasSuffix(pod.Name, "-build-7") {
				t.Errorf("pod name %q (%d chars)", pod.Name, len(pod.Name))
			}
		}},
		{"restricted runner, rootless buildkitd", base(), opts, func(t *testing.T, pod *corev1.Pod) {
			r := pod.Spec.Containers[0].SecurityContext
			if !*r.RunAsNonRoot || !*r.ReadOnlyRootFilesystem || *r.AllowPrivilegeEscalation || r.Capabilities.Drop[0] != "ALL" || r.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("runner security context %+v", r)
			}
			b := pod.Spec.InitContainers[0].SecurityContext
			if *b.RunAsUser != 1000 || b.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined || b.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
				t.Errorf("buildkitd security context %+v", b)
			}
			if pod.Spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Error("pod default seccomp must be RuntimeDefault")
			}
		}},
		{"rootless profile: no user namespace of the pod's own, no process sandbox", base(), opts, func(t *testing.T, pod *corev1.Pod) {
			b := pod.Spec.InitContainers[0]
			if pod.Spec.HostUsers != nil || b.Command[0] != "rootlesskit" || !contains(b.Args, "--oci-worker-no-process-sandbox") ||
				!contains(b.Args, "--root="+contract.BuildKitStateDir) {
				t.Errorf("hostUsers %v, buildkitd %q %q", pod.Spec.HostUsers, b.Command, b.Args)
			}
		}},
		{"userns profile: rootful buildkitd as root of the pod's user namespace", base(), userns, func(t *testing.T, pod *corev1.Pod) {
			if pod.Spec.HostUsers == nil || *pod.Spec.HostUsers {
				t.Fatalf("hostUsers %v, want false", pod.Spec.HostUsers)
			}
			b := pod.Spec.InitContainers[0]
			if b.Image != "bk:rootful" || b.Command[0] != "sh" || contains(b.Args, "--oci-worker-no-process-sandbox") ||
				!contains(b.Args, "--root="+contract.BuildKitStateDir+"/userns") || !contains(b.Args, "--group=1000") {
				t.Errorf("buildkitd %s %q %q", b.Image, b.Command, b.Args)
			}
			sc := b.SecurityContext
			if *sc.RunAsUser != 0 || *sc.RunAsNonRoot || sc.Privileged != nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined ||
				sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined || len(sc.Capabilities.Add) != 1 || sc.Capabilities.Add[0] != "SYS_ADMIN" ||
				len(sc.Capabilities.Drop) != 0 || sc.ProcMount != nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation != nil {
				t.Errorf("buildkitd security context %+v", sc)
			}
			if !mounted(b, "buildkitd-tmp", "/tmp") || !mounted(b, "runc-state", "/run/runc") || volume(pod, "runc-state").EmptyDir == nil {
				t.Errorf("buildkitd's writable directories: %+v", b.VolumeMounts)
			}
			r := pod.Spec.Containers[0].SecurityContext
			if !*r.RunAsNonRoot || *r.RunAsUser != 1000 || *r.AllowPrivilegeEscalation || r.Capabilities.Drop[0] != "ALL" {
				t.Errorf("the runner stays restricted: %+v", r)
			}
		}},
		{"userns profile with a Localhost seccomp profile", base(), usernsLocalhost, func(t *testing.T, pod *corev1.Pod) {
			sc := pod.Spec.InitContainers[0].SecurityContext.SeccompProfile
			if sc.Type != corev1.SeccompProfileTypeLocalhost || *sc.LocalhostProfile != "kiln/buildkitd-userns.json" {
				t.Errorf("buildkitd seccomp %+v", sc)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, renderBuildPod(tc.ib, tc.opts))
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func volume(pod *corev1.Pod, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

func mounted(c corev1.Container, name, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == name && m.MountPath == path {
			return true
		}
	}
	return false
}

func mountedAny(c corev1.Container, name string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return true
		}
	}
	return false
}

// TestBuildPodDiskAndResources (issue 12 item 5): every emptyDir has a sizeLimit (the work
// directory sized from the cache), the runner has ephemeral-storage requests and limits, and
// buildkitd takes the manager's default resources, which spec.resources overrides name by name
// without ever making the pod invalid.
func TestBuildPodDiskAndResources(t *testing.T) {
	defaults := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("512Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Gi")},
	}
	render := func(r *kilnv1.BuildKitResources) *corev1.Pod {
		ib := &kilnv1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "team"}}
		ib.Spec.Source.ConfigMap = &kilnv1.ConfigMapSource{Name: "src"}
		ib.Spec.Resources = r
		return renderBuildPod(ib, podOptions{Build: 1, ClaimName: "app-cache", CacheBytes: 5 << 30, BuildKitResources: defaults})
	}
	pod := render(nil)
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil && v.EmptyDir.SizeLimit == nil {
			t.Errorf("emptyDir %s has no sizeLimit", v.Name)
		}
		if v.Name == "work" && v.EmptyDir.SizeLimit.Value() != 5<<30 {
			t.Errorf("work sizeLimit %s, want the 5Gi cache", v.EmptyDir.SizeLimit)
		}
	}
	run := pod.Spec.Containers[0].Resources
	if _, ok := run.Requests[corev1.ResourceEphemeralStorage]; !ok {
		t.Error("the runner requests no ephemeral storage")
	}
	if _, ok := run.Limits[corev1.ResourceEphemeralStorage]; !ok {
		t.Error("the runner has no ephemeral-storage limit")
	}
	if bk := pod.Spec.InitContainers[0].Resources; bk.Requests.Cpu().String() != "250m" || bk.Limits.Memory().String() != "8Gi" {
		t.Errorf("buildkitd defaults: %+v", bk)
	}

	for _, tc := range []struct {
		name         string
		own          *kilnv1.BuildKitResources
		request, lim string // memory
	}{
		{"own limit below the default request lowers the request", &kilnv1.BuildKitResources{Limits: map[corev1.ResourceName]resource.Quantity{corev1.ResourceMemory: resource.MustParse("256Mi")}}, "256Mi", "256Mi"},
		{"own request above the default limit raises the limit", &kilnv1.BuildKitResources{Requests: map[corev1.ResourceName]resource.Quantity{corev1.ResourceMemory: resource.MustParse("12Gi")}}, "12Gi", "12Gi"},
		{"own values replace defaults of the same name", &kilnv1.BuildKitResources{Requests: map[corev1.ResourceName]resource.Quantity{corev1.ResourceMemory: resource.MustParse("1Gi")}, Limits: map[corev1.ResourceName]resource.Quantity{corev1.ResourceMemory: resource.MustParse("2Gi")}}, "1Gi", "2Gi"},
	} {
		bk := render(tc.own).Spec.InitContainers[0].Resources
		if bk.Requests.Memory().String() != tc.request || bk.Limits.Memory().String() != tc.lim || bk.Requests.Cpu().String() != "250m" {
			t.Errorf("%s: requests %v limits %v, want memory %s/%s and the default cpu", tc.name, bk.Requests, bk.Limits, tc.request, tc.lim)
		}
	}
}
