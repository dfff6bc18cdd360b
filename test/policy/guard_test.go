package policy

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/controllers"
)

// The build namespace guard (policies.buildNamespaceGuard) is a ValidatingAdmissionPolicy on
// Pods: in namespaces labelled kiln.dev/build-namespace=true it holds every pod to Pod Security
// restricted, except kiln's own build pod's buildkitd. These tests render it with the chart,
// apply it to the real API server, and create pods as a tenant and as kiln's ServiceAccount
// (impersonated), in namespaces that also carry the Pod Security label privileged, as a build
// namespace does: only the guard stands between the tenant and a privileged pod.

const (
	guardOn   = "crds: {enabled: false}\npolicies: {buildNamespaceGuard: {enabled: true}}\n"
	guardName = "kiln-build-namespace-guard"
	// connectGuard is the guard's policy on exec and attach, claimsGuard on kiln's claims.
	connectGuard = guardName + "-connect"
	claimsGuard  = guardName + "-claims"
	// kilnSA is the chart's service account for release kiln in kiln-system.
	kilnSA   = "system:serviceaccount:kiln-system:kiln"
	tenant   = "alice"
	rootless = "docker.io/moby/buildkit:v0.33.0-rootless" // buildkit.image
	rootful  = "docker.io/moby/buildkit:v0.33.0"          // buildkit.rootfulImage
	runner   = "ghcr.io/kiln-dev/kiln:v0.1.0-dev"
	// restricted is the message's marker of a Pod Security restricted control.
	restricted = "(Pod Security restricted"
	// notKilns is the hint for a tenant's pod that has a setting kiln's buildkitd may have.
	notKilns = "only kiln's build pods are exempt, on their buildkitd init container"
	// notBuildKit is the hint for a setting on a container of kiln's pod other than buildkitd.
	notBuildKit = "in kiln's build pods only the init container buildkitd running one of kiln's BuildKit images (" + rootless + ", " + rootful + ") is exempt"
	usernsOnly  = "kiln's buildkitd is exempt only in a pod with hostUsers: false"
	// claimRefused is the refusal of a claim in a pod that is not kiln's build pod.
	claimRefused = "is not allowed: in a build namespace only kiln's build pods mount claims, so that no other pod can change a build cache; use an emptyDir, or another namespace"
)

var guardApplied atomic.Bool

// applyGuard renders the guard, applies it once, lets every authenticated user write pods (as
// a tenant with edit rights may), and waits until the guard refuses a privileged pod.
func applyGuard(t *testing.T) {
	t.Helper()
	if guardApplied.Load() {
		return
	}
	ctx := context.Background()
	objs, err := render(t, guardOn)
	if err != nil {
		t.Fatal(err)
	}
	vaps := ofKind(objs, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
	names := map[string]int{}
	for _, o := range vaps {
		names[o.GetKind()+" "+o.GetName()]++
	}
	if len(vaps) != 6 || len(names) != 6 || names["ValidatingAdmissionPolicy "+guardName] != 1 || names["ValidatingAdmissionPolicy "+connectGuard] != 1 || names["ValidatingAdmissionPolicy "+claimsGuard] != 1 {
		t.Fatalf("the guard renders %v, want %s, %s and %s and their bindings", names, guardName, connectGuard, claimsGuard)
	}
	for _, o := range vaps {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatalf("the API server refuses %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "guard-test-pod-writer"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "pods/ephemeralcontainers", "pods/exec", "pods/attach", "persistentvolumeclaims"}, Verbs: []string{"get", "create", "update", "patch", "delete"}},
	}}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "guard-test-pod-writer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: "system:authenticated"}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ns := buildNamespace(t, true)
	probe := tenantPod(ns, "probe", func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	deadline := time.Now().Add(inForce)
	for {
		err := as(t, tenant).Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), "'"+guardName+"'") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guard is not in force after %s; the probe got: %v", inForce, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	guardApplied.Store(true)
}

// as is a client that acts as user (a service account's user name gets its groups).
func as(t *testing.T, user string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(restConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// buildNamespace makes a namespace with Pod Security privileged, guarded when guarded.
func buildNamespace(t *testing.T, guarded bool) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   fmt.Sprintf("builds-%d", nsCounter.Add(1)),
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"},
	}}
	if guarded {
		ns.Labels["kiln.dev/build-namespace"] = "true"
	}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// tenantPod is a pod that meets Pod Security restricted, changed by mutate.
func tenantPod(ns, name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "registry.example.com/app:1",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// app changes the security context of a tenant pod's container.
func app(change func(*corev1.SecurityContext)) func(*corev1.Pod) {
	return func(p *corev1.Pod) { change(p.Spec.Containers[0].SecurityContext) }
}

// userns makes a pod a user-namespace pod.
func userns(p *corev1.Pod) { p.Spec.HostUsers = ptr.To(false) }

// buildPod is the pod kiln renders for an ImageBuild in ns, with buildkit.image, changed by mutate.
func buildPod(t *testing.T, ns, name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	ib := imageBuild(ns, name)
	ib.UID = types.UID("5b1c2d3e-0000-4000-8000-000000000001")
	p, err := controllers.RenderBuildPodForTest(ib, kilnv1.SecurityProfileRootless, rootless, runner)
	if err != nil {
		t.Fatal(err)
	}
	if p.Labels[controllers.LabelManagedBy] != "kiln" || p.Spec.InitContainers[0].Name != "buildkitd" || p.Spec.Containers[0].Name != "runner" {
		t.Fatalf("kiln's build pod changed shape: labels %v, init containers %d, containers %d; the guard may need to follow",
			p.Labels, len(p.Spec.InitContainers), len(p.Spec.Containers))
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// buildKit changes the security context of a build pod's buildkitd.
func buildKit(change func(*corev1.Container)) func(*corev1.Pod) {
	return func(p *corev1.Pod) { change(&p.Spec.InitContainers[0]) }
}

// usernsProfile turns kiln's rootless build pod into the pod kiln renders for the same
// ImageBuild in the userns profile: a user-namespace pod whose buildkitd runs BuildKit's rootful
// image as root of that namespace, with SYS_ADMIN.
func usernsProfile(p *corev1.Pod) {
	ib := imageBuild(p.Namespace, p.Labels[controllers.LabelImageBuild])
	ib.UID = p.OwnerReferences[0].UID
	u, err := controllers.RenderBuildPodForTest(ib, kilnv1.SecurityProfileUserNS, rootful, runner)
	if err != nil {
		panic(err)
	}
	p.Spec = u.Spec
}

// privileged makes buildkitd privileged, as BuildKit's examples/kubernetes/*.userns.yaml have
// it in a user-namespace pod ("not really privileged"); kiln renders no such pod.
func privileged(p *corev1.Pod) {
	p.Spec.InitContainers[0].SecurityContext.Privileged = ptr.To(true)
}

type guardCase struct {
	name string
	user string
	pod  func(t *testing.T, ns, name string) *corev1.Pod
	// want are the words of the refusal; none: the pod is admitted.
	want []string
}

// tenantCase is a tenant's pod, restricted but for mutate.
func tenantCase(name string, mutate func(*corev1.Pod), want ...string) guardCase {
	return guardCase{name, tenant, func(_ *testing.T, ns, n string) *corev1.Pod { return tenantPod(ns, n, mutate) }, want}
}

// kilnCase is kiln's build pod changed by mutate, created by user.
func kilnCase(name, user string, mutate func(*corev1.Pod), want ...string) guardCase {
	return guardCase{name, user, func(t *testing.T, ns, n string) *corev1.Pod { return buildPod(t, ns, n, mutate) }, want}
}

func same(*corev1.Pod) {}

// kubectlRun is the pod `kubectl run guard-probe --image=busybox -- true` makes, changed by mutate.
func kubectlRun(name string, mutate func(*corev1.Pod), want ...string) guardCase {
	return guardCase{name, tenant, func(_ *testing.T, ns, _ string) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "guard-probe", Labels: map[string]string{"run": "guard-probe"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "guard-probe", Image: "busybox", Args: []string{"true"}}}},
		}
		mutate(p)
		return p
	}, want}
}

// TestBuildNamespaceGuardHoldsTenantsToRestricted: each Pod Security restricted control, broken
// by a tenant's pod in a build namespace (whose Pod Security label is privileged), is refused
// with the control and the container named; what restricted allows is admitted.
func TestBuildNamespaceGuardHoldsTenantsToRestricted(t *testing.T) {
	applyGuard(t)
	ns := buildNamespace(t, true)
	for i, tc := range []guardCase{
		tenantCase("restricted", same),
		tenantCase("restricted, with what restricted allows", func(p *corev1.Pod) {
			p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "net.ipv4.ip_local_port_range", Value: "1024 65535"}}
			p.Spec.SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Type: "container_t", Level: "s0:c1,c2"}
			p.Spec.SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}
			p.Spec.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"}
			p.Spec.Containers[0].SecurityContext.RunAsUser = ptr.To[int64](1000)
			p.Spec.Volumes = []corev1.Volume{
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("1Gi"))}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}}},
				{Name: "info", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}}}}},
			}
		}),
		tenantCase("Windows (Pod Security exempts it from seccomp, capabilities and privilege escalation)", func(p *corev1.Pod) {
			p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
			p.Spec.SecurityContext.SeccompProfile = nil
			p.Spec.Containers[0].SecurityContext = nil
		}),
		tenantCase("many containers and volumes (the policy's CEL cost)", func(p *corev1.Pod) {
			for i := range 100 {
				c := *p.Spec.Containers[0].DeepCopy()
				c.Name = fmt.Sprintf("c%d", i)
				c.Ports = []corev1.ContainerPort{{ContainerPort: int32(8000 + i)}}
				c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(80)}}}
				p.Spec.Containers = append(p.Spec.Containers, c)
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: c.Name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
			}
		}),
		tenantCase("user namespace, root inside (Pod Security lifts runAsNonRoot and runAsUser)", func(p *corev1.Pod) {
			userns(p)
			p.Spec.SecurityContext.RunAsNonRoot = ptr.To(false)
			p.Spec.SecurityContext.RunAsUser = ptr.To[int64](0)
			p.Spec.Containers[0].SecurityContext.RunAsUser = ptr.To[int64](0)
		}),

		// docs/policy.md's dry runs: kubectl run --privileged, and with the overrides that make it restricted
		kubectlRun("kubectl run --privileged", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		}, "pod guard-probe: container guard-probe: securityContext.privileged is not allowed (Pod Security restricted) (and 4 more)"),
		kubectlRun("kubectl run with overrides", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65534),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
		}),

		// baseline controls
		tenantCase("hostProcess", func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.SecurityContext.WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: ptr.To(true)}
		}, "securityContext.windowsOptions.hostProcess is not allowed "+restricted, "(and 1 more)"),
		tenantCase("hostNetwork", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "hostNetwork is not allowed "+restricted+")"),
		tenantCase("hostPID", func(p *corev1.Pod) { p.Spec.HostPID = true }, "hostPID is not allowed"),
		tenantCase("hostIPC", func(p *corev1.Pod) { p.Spec.HostIPC = true }, "hostIPC is not allowed"),
		tenantCase("privileged", app(func(sc *corev1.SecurityContext) {
			sc.Privileged, sc.AllowPrivilegeEscalation = ptr.To(true), nil
		}), "container app: securityContext.privileged is not allowed "+restricted+")"),
		tenantCase("privileged, in a user namespace", func(p *corev1.Pod) {
			userns(p)
			p.Spec.Containers[0].SecurityContext.Privileged = ptr.To(true)
			p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
		}, "container app: securityContext.privileged is not allowed "+restricted+")", "(and 1 more)"),
		tenantCase("capabilities beyond the baseline set", app(func(sc *corev1.SecurityContext) {
			sc.Capabilities.Add = []corev1.Capability{"NET_ADMIN", "NET_BIND_SERVICE"}
		}), "container app: securityContext.capabilities.add NET_ADMIN is not allowed (Pod Security restricted allows only NET_BIND_SERVICE)"),
		tenantCase("SYS_ADMIN", app(func(sc *corev1.SecurityContext) { sc.Capabilities.Add = []corev1.Capability{"SYS_ADMIN"} }),
			"container app: securityContext.capabilities.add SYS_ADMIN is not allowed", notKilns+" in a pod with hostUsers: false"),
		tenantCase("baseline capability (CHOWN)", app(func(sc *corev1.SecurityContext) { sc.Capabilities.Add = []corev1.Capability{"CHOWN"} }),
			"securityContext.capabilities.add CHOWN is not allowed"),
		tenantCase("hostPath volume", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}, "volume host: hostPath volumes are not allowed "+restricted),
		tenantCase("hostPort", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 8443, HostPort: 443}}
		}, "container app: hostPort 443 is not allowed "+restricted),
		tenantCase("probe host", func(p *corev1.Pod) {
			p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Host: "10.0.0.1", Port: intstr.FromInt32(80)}}}
		}, "container app: probe or lifecycle host 10.0.0.1 is not allowed"),
		tenantCase("lifecycle host", func(p *corev1.Pod) {
			p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Host: "169.254.169.254", Port: intstr.FromInt32(80)}}}
		}, "container app: probe or lifecycle host 169.254.169.254 is not allowed"),
		tenantCase("AppArmor Unconfined", app(func(sc *corev1.SecurityContext) {
			sc.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		}), "container app: appArmorProfile Unconfined is not allowed "+restricted+"); "+notKilns),
		tenantCase("AppArmor Unconfined for the pod", func(p *corev1.Pod) {
			p.Spec.SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		}, "securityContext.appArmorProfile Unconfined is not allowed"),
		tenantCase("AppArmor annotation unconfined", func(p *corev1.Pod) {
			p.Annotations = map[string]string{"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
		}, "container app: appArmorProfile Unconfined is not allowed", "(and 1 more)"), // the annotation, and the field the API server sets from it
		tenantCase("SELinux user", app(func(sc *corev1.SecurityContext) { sc.SELinuxOptions = &corev1.SELinuxOptions{User: "system_u"} }),
			"container app: securityContext.seLinuxOptions is not allowed"),
		tenantCase("SELinux type for the pod", func(p *corev1.Pod) { p.Spec.SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t"} },
			"securityContext.seLinuxOptions is not allowed"),
		tenantCase("/proc unmasked, in a user namespace", func(p *corev1.Pod) {
			userns(p)
			p.Spec.Containers[0].SecurityContext.ProcMount = ptr.To(corev1.UnmaskedProcMount)
		}, "container app: securityContext.procMount Unmasked is not allowed "+restricted+")"),

		// beyond restricted: claims, which kiln's cache is
		tenantCase("a claim", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "app-cache"}}}}
		}, "volume cache: persistentVolumeClaim app-cache "+claimRefused),
		tenantCase("an ephemeral volume (it mounts an existing claim <pod>-<volume> the pod controls)", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}}}}}
		}, "volume cache: an ephemeral volume (a claim) "+claimRefused),
		tenantCase("seccomp Unconfined", app(func(sc *corev1.SecurityContext) {
			sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}), "container app: seccompProfile Unconfined is not allowed "+restricted+"); "+notKilns),
		tenantCase("seccomp Unconfined for the pod", func(p *corev1.Pod) {
			p.Spec.SecurityContext.SeccompProfile.Type = corev1.SeccompProfileTypeUnconfined
		}, "securityContext.seccompProfile Unconfined is not allowed"),
		tenantCase("sysctl outside the safe set", func(p *corev1.Pod) {
			p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "kernel.msgmax", Value: "65536"}}
		}, "sysctl kernel.msgmax is not allowed"),

		// restricted controls
		tenantCase("nfs volume", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "share", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example.com", Path: "/"}}}}
		}, "volume share: nfs volumes are not allowed (Pod Security restricted allows configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected and secret; in a build namespace, claims only in kiln's build pods)"),
		tenantCase("privilege escalation", app(func(sc *corev1.SecurityContext) { sc.AllowPrivilegeEscalation = nil }),
			"container app: securityContext.allowPrivilegeEscalation must be false "+restricted+"); "+notKilns),
		tenantCase("runAsNonRoot unset", func(p *corev1.Pod) { p.Spec.SecurityContext.RunAsNonRoot = nil },
			"container app: runAsNonRoot is not true, on the container or the pod"),
		tenantCase("runAsNonRoot false", app(func(sc *corev1.SecurityContext) { sc.RunAsNonRoot = ptr.To(false) }),
			"container app: securityContext.runAsNonRoot false is not allowed (Pod Security restricted, unless the pod has hostUsers: false)"),
		tenantCase("runAsUser 0", app(func(sc *corev1.SecurityContext) { sc.RunAsUser = ptr.To[int64](0) }),
			"container app: securityContext.runAsUser 0 is not allowed"),
		tenantCase("runAsUser 0 for the pod", func(p *corev1.Pod) { p.Spec.SecurityContext.RunAsUser = ptr.To[int64](0) },
			"securityContext.runAsUser 0 is not allowed"),
		tenantCase("no seccomp profile", func(p *corev1.Pod) { p.Spec.SecurityContext.SeccompProfile = nil },
			"container app: seccompProfile is not set, on the container or the pod"),
		tenantCase("capabilities not dropped", app(func(sc *corev1.SecurityContext) { sc.Capabilities = nil }),
			"container app: securityContext.capabilities.drop must include ALL "+restricted+"); "+notKilns),

		// every container, the first failing one named
		tenantCase("an init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "busybox", SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				RunAsUser: ptr.To[int64](0),
			}}}
		}, "container setup: securityContext.runAsUser 0 is not allowed"),
		tenantCase("an init container named buildkitd, with kiln's image", func(p *corev1.Pod) {
			p.Labels = map[string]string{controllers.LabelManagedBy: "kiln"}
			p.Spec.InitContainers = []corev1.Container{{Name: "buildkitd", Image: rootless, SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(true),
				SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
			}}}
		}, "container buildkitd: seccompProfile Unconfined is not allowed", "the request is from alice, not from kiln's ServiceAccount "+kilnSA, "(and 2 more)"),
	} {
		t.Run(tc.name, func(t *testing.T) { runGuardCase(t, ns, fmt.Sprintf("case-%d", i), tc) })
	}
}

// TestBuildNamespaceGuardAdmitsKilnsBuildPods: kiln's build pod, as the controller renders it
// (rootless) and in the userns profile's shape, is admitted when kiln's ServiceAccount creates
// it, and only then; its exceptions hold for its buildkitd container, running kiln's image,
// and the userns ones in a user-namespace pod only.
func TestBuildNamespaceGuardAdmitsKilnsBuildPods(t *testing.T) {
	applyGuard(t)
	ns := buildNamespace(t, true)
	runnerSC := func(change func(*corev1.SecurityContext)) func(*corev1.Pod) {
		return func(p *corev1.Pod) { change(p.Spec.Containers[0].SecurityContext) }
	}
	for i, tc := range []guardCase{
		kilnCase("rootless", kilnSA, same),
		kilnCase("userns", kilnSA, usernsProfile),
		kilnCase("userns with the rootless image", kilnSA, func(p *corev1.Pod) {
			usernsProfile(p)
			p.Spec.InitContainers[0].Image = rootless
		}),
		kilnCase("AppArmor annotation unconfined on buildkitd", kilnSA, func(p *corev1.Pod) {
			p.Annotations["container.apparmor.security.beta.kubernetes.io/buildkitd"] = "unconfined"
		}),

		// kiln's shape, another identity
		kilnCase("rootless, created by a tenant", tenant, same,
			claimRefused+"; only kiln's build pods are exempt, and this pod is not one: it has kiln's label app.kubernetes.io/managed-by=kiln, but the request is from alice, not from kiln's ServiceAccount "+kilnSA,
			"(and 4 more)"),
		kilnCase("rootless, created by a tenant, without the cache claim", tenant, func(p *corev1.Pod) { p.Spec.Volumes = dropClaims(p.Spec.Volumes) },
			"container buildkitd: appArmorProfile Unconfined is not allowed "+restricted+"); only kiln's build pods are exempt, and this pod is not one: it has kiln's label app.kubernetes.io/managed-by=kiln, but the request is from alice, not from kiln's ServiceAccount "+kilnSA,
			"(and 3 more)"),
		kilnCase("rootless, created by a service account named kiln in another namespace", "system:serviceaccount:"+ns+":kiln", same,
			"volume cache: persistentVolumeClaim build-6-cache "+claimRefused, "the request is from system:serviceaccount:"+ns+":kiln, not from kiln's ServiceAccount "+kilnSA),
		kilnCase("userns, created by a tenant", tenant, func(p *corev1.Pod) { usernsProfile(p); p.Spec.Volumes = dropClaims(p.Spec.Volumes) },
			"container buildkitd: appArmorProfile Unconfined is not allowed "+restricted+"); only kiln's build pods are exempt, and this pod is not one", "the request is from alice"),
		kilnCase("rootless, without kiln's label", kilnSA, func(p *corev1.Pod) { delete(p.Labels, controllers.LabelManagedBy) },
			claimRefused, "(and 4 more)"),
		kilnCase("rootless, without kiln's label or the cache claim", kilnSA, func(p *corev1.Pod) {
			delete(p.Labels, controllers.LabelManagedBy)
			p.Spec.Volumes = dropClaims(p.Spec.Volumes)
		}, "container buildkitd: appArmorProfile Unconfined is not allowed "+restricted+"); "+notKilns),

		// kiln's identity, not kiln's shape
		kilnCase("runner not restricted", kilnSA, runnerSC(func(sc *corev1.SecurityContext) {
			sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}), "container runner: seccompProfile Unconfined is not allowed "+restricted+"); "+notBuildKit),
		kilnCase("runner escalates", kilnSA, runnerSC(func(sc *corev1.SecurityContext) { sc.AllowPrivilegeEscalation = ptr.To(true) }),
			"container runner: securityContext.allowPrivilegeEscalation must be false", notBuildKit),
		kilnCase("runner runs as root", kilnSA, runnerSC(func(sc *corev1.SecurityContext) { sc.RunAsUser = ptr.To[int64](0) }),
			"container runner: securityContext.runAsUser 0 is not allowed"),
		kilnCase("buildkitd's exceptions on another init container", kilnSA, func(p *corev1.Pod) {
			helper := *p.Spec.InitContainers[0].DeepCopy()
			helper.Name, helper.StartupProbe, helper.RestartPolicy = "helper", nil, nil
			p.Spec.InitContainers = append([]corev1.Container{helper}, p.Spec.InitContainers...)
		}, "container helper: appArmorProfile Unconfined is not allowed", notBuildKit, "(and 3 more)"),
		kilnCase("buildkitd as a regular container", kilnSA, func(p *corev1.Pod) {
			bk := p.Spec.InitContainers[0]
			bk.RestartPolicy, bk.StartupProbe = nil, nil
			p.Spec.InitContainers = nil
			p.Spec.Containers = append(p.Spec.Containers, bk)
		}, "container buildkitd: appArmorProfile Unconfined is not allowed", notBuildKit),
		kilnCase("another image in buildkitd", kilnSA, buildKit(func(c *corev1.Container) { c.Image = "docker.io/moby/buildkit:latest" }),
			"container buildkitd: appArmorProfile Unconfined is not allowed", notBuildKit),
		kilnCase("privileged without a user namespace", kilnSA, privileged,
			"container buildkitd: securityContext.privileged is not allowed "+restricted+")"),
		kilnCase("privileged in a user namespace (BuildKit's userns example; kiln needs only SYS_ADMIN)", kilnSA, func(p *corev1.Pod) { usernsProfile(p); privileged(p) },
			"container buildkitd: securityContext.privileged is not allowed "+restricted+")"),
		kilnCase("/proc unmasked in a user namespace", kilnSA, func(p *corev1.Pod) {
			usernsProfile(p)
			p.Spec.InitContainers[0].SecurityContext.ProcMount = ptr.To(corev1.UnmaskedProcMount)
		}, "container buildkitd: securityContext.procMount Unmasked is not allowed "+restricted+")"),
		kilnCase("SYS_ADMIN on the runner, in a user namespace", kilnSA, func(p *corev1.Pod) {
			usernsProfile(p)
			p.Spec.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"SYS_ADMIN"}
		}, "container runner: securityContext.capabilities.add SYS_ADMIN is not allowed", notBuildKit+", in a pod with hostUsers: false"),
		kilnCase("SYS_ADMIN without a user namespace", kilnSA, buildKit(func(c *corev1.Container) {
			c.SecurityContext.Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}
		}), "container buildkitd: securityContext.capabilities.add SYS_ADMIN is not allowed", usernsOnly),
		kilnCase("root without a user namespace", kilnSA, func(p *corev1.Pod) {
			usernsProfile(p)
			p.Spec.HostUsers = nil
			p.Spec.InitContainers[0].SecurityContext.ProcMount = nil
		}, "container buildkitd: securityContext.runAsNonRoot false is not allowed", "(and 2 more)"),
		kilnCase("userns with another capability", kilnSA, func(p *corev1.Pod) {
			usernsProfile(p)
			p.Spec.InitContainers[0].SecurityContext.Capabilities.Add = append(p.Spec.InitContainers[0].SecurityContext.Capabilities.Add, "NET_ADMIN")
		}, "container buildkitd: securityContext.capabilities.add NET_ADMIN is not allowed (Pod Security restricted allows only NET_BIND_SERVICE)"),
		kilnCase("hostPath volume", kilnSA, func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib"}}})
		}, "volume host: hostPath volumes are not allowed"),
		kilnCase("hostNetwork", kilnSA, func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "hostNetwork is not allowed"),
		kilnCase("seccomp Unconfined for the pod", kilnSA, func(p *corev1.Pod) {
			p.Spec.SecurityContext.SeccompProfile.Type = corev1.SeccompProfileTypeUnconfined
		}, "securityContext.seccompProfile Unconfined is not allowed"),
		kilnCase("SELinux on buildkitd", kilnSA, buildKit(func(c *corev1.Container) {
			c.SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t"}
		}), "container buildkitd: securityContext.seLinuxOptions is not allowed"),
		kilnCase("hostPort on buildkitd", kilnSA, buildKit(func(c *corev1.Container) {
			c.Ports = []corev1.ContainerPort{{ContainerPort: 1234, HostPort: 1234}}
		}), "container buildkitd: hostPort 1234 is not allowed"),
	} {
		t.Run(tc.name, func(t *testing.T) { runGuardCase(t, ns, fmt.Sprintf("build-%d", i), tc) })
	}
}

// dropClaims is volumes without persistentVolumeClaim volumes (kiln's cache claim), replaced by
// emptyDirs of the same names.
func dropClaims(volumes []corev1.Volume) []corev1.Volume {
	out := make([]corev1.Volume, 0, len(volumes))
	for _, v := range volumes {
		if v.PersistentVolumeClaim != nil {
			v.VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
		}
		out = append(out, v)
	}
	return out
}

// runGuardCase creates the case's pod, as its user, with a server-side dry run. A refusal names
// the pod first.
func runGuardCase(t *testing.T, ns, name string, tc guardCase) {
	t.Helper()
	pod := tc.pod(t, ns, name)
	err := as(t, tc.user).Create(context.Background(), pod, client.DryRunAll)
	if len(tc.want) == 0 {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	checkRefusal(t, err, guardName, append([]string{"denied request: pod " + pod.Name + ": "}, tc.want...)...)
}

// TestBuildNamespaceGuardOnUpdates: an update is checked when it changes an image or adds an
// ephemeral container (kubectl debug), as Pod Security admission checks them; the exceptions
// hold for kiln's own writes only. Other updates (labels, annotations) are not checked.
func TestBuildNamespaceGuardOnUpdates(t *testing.T) {
	applyGuard(t)
	ctx := context.Background()
	ns := buildNamespace(t, true)
	alice := as(t, tenant)
	debug := func(name string, sc *corev1.SecurityContext) corev1.EphemeralContainer {
		return corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: name, Image: "busybox", SecurityContext: sc,
		}}
	}
	restrictedSC := func() *corev1.SecurityContext {
		return &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	}

	own := tenantPod(ns, "own")
	if err := alice.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	own.Spec.EphemeralContainers = []corev1.EphemeralContainer{debug("debug", restrictedSC())}
	if err := alice.SubResource("ephemeralcontainers").Update(ctx, own); err != nil {
		t.Errorf("a restricted ephemeral container: %v", err)
	}
	if err := alice.Get(ctx, client.ObjectKeyFromObject(own), own); err != nil {
		t.Fatal(err)
	}
	own.Spec.EphemeralContainers = append(own.Spec.EphemeralContainers, debug("root", &corev1.SecurityContext{Privileged: ptr.To(true)}))
	checkRefusal(t, alice.SubResource("ephemeralcontainers").Update(ctx, own), guardName, "pod own: container root: securityContext.privileged is not allowed")

	build := buildPod(t, ns, "app")
	if err := as(t, kilnSA).Create(ctx, build); err != nil {
		t.Fatalf("kiln's build pod: %v", err)
	}
	patch := client.MergeFrom(build.DeepCopy())
	build.Labels["team"] = "a"
	build.Annotations = map[string]string{"note": "looked at"}
	if err := alice.Patch(ctx, build, patch); err != nil {
		t.Errorf("a label and an annotation on kiln's build pod: %v", err)
	}
	build.Spec.EphemeralContainers = []corev1.EphemeralContainer{debug("debug", restrictedSC())}
	checkRefusal(t, alice.SubResource("ephemeralcontainers").Update(ctx, build), guardName,
		"volume cache: persistentVolumeClaim app-cache "+claimRefused, "the request is from alice")
	if err := as(t, kilnSA).Get(ctx, client.ObjectKeyFromObject(build), build); err != nil {
		t.Fatal(err)
	}
	patch = client.MergeFrom(build.DeepCopy())
	build.Spec.InitContainers[0].Image = "docker.io/moby/buildkit:latest"
	checkRefusal(t, as(t, kilnSA).Patch(ctx, build, patch), guardName, "container buildkitd: appArmorProfile Unconfined is not allowed", notBuildKit)
}

// TestBuildNamespaceGuardFollowsTheNamespaceLabel: a namespace without kiln.dev/build-namespace
// is not guarded. Once it is, a pod stored before stays editable where its containers do not
// change; a new image must comply.
func TestBuildNamespaceGuardFollowsTheNamespaceLabel(t *testing.T) {
	applyGuard(t)
	ctx := context.Background()
	ns := buildNamespace(t, false)
	alice := as(t, tenant)
	privileged := func(name string) *corev1.Pod {
		return tenantPod(ns, name, app(func(sc *corev1.SecurityContext) { sc.Privileged, sc.AllowPrivilegeEscalation = ptr.To(true), nil }))
	}
	old := privileged("old")
	if err := alice.Create(ctx, old); err != nil {
		t.Fatalf("a namespace without kiln.dev/build-namespace is guarded: %v", err)
	}
	nsObj := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	nsObj.Labels["kiln.dev/build-namespace"] = "true"
	if err := k8s.Update(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	// The API server sees the label through its namespace informer, a moment later.
	deadline := time.Now().Add(inForce)
	var err error
	for {
		err = alice.Create(ctx, privileged("probe"), client.DryRunAll)
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	checkRefusal(t, err, guardName, "container app: securityContext.privileged is not allowed")

	patch := client.MergeFrom(old.DeepCopy())
	old.Labels = map[string]string{"release": "2"}
	if err := alice.Patch(ctx, old, patch); err != nil {
		t.Errorf("a label on a pod stored before the guard: %v", err)
	}
	patch = client.MergeFrom(old.DeepCopy())
	old.Spec.Containers[0].Image = "registry.example.com/app:2"
	checkRefusal(t, alice.Patch(ctx, old, patch), guardName, "container app: securityContext.privileged is not allowed")
}

// TestBuildNamespaceGuardRefusesExecIntoBuildPods: in a build namespace nobody, a tenant who may
// exec included, runs a command in or attaches to a container of kiln's build pod (buildkitd
// has the guard's exceptions; both reach the cache claim, BuildKit's socket and the build's
// credentials). A tenant's own pods stay open to exec, and an unguarded namespace is not
// checked. With no node, an admitted exec fails later ("does not have a host assigned"): the
// refusal is the guard's.
func TestBuildNamespaceGuardRefusesExecIntoBuildPods(t *testing.T) {
	applyGuard(t)
	ctx := context.Background()
	cfg := rest.CopyConfig(restConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: tenant}
	alice, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	connect := func(ns, pod, sub string, opts runtime.Object) error {
		return alice.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name(pod).SubResource(sub).
			VersionedParams(opts, clientgoscheme.ParameterCodec).Do(ctx).Error()
	}
	exec := func(container string) *corev1.PodExecOptions {
		return &corev1.PodExecOptions{Container: container, Command: []string{"sh"}, Stdin: true, Stdout: true}
	}

	ns := buildNamespace(t, true)
	build := buildPod(t, ns, "app")
	if err := as(t, kilnSA).Create(ctx, build); err != nil {
		t.Fatalf("kiln's build pod: %v", err)
	}
	own := tenantPod(ns, "own")
	if err := as(t, tenant).Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sub string
		opts      runtime.Object
		want      string
	}{
		{"exec into buildkitd", "exec", exec("buildkitd"), "pod app-build-1: exec into container buildkitd is not allowed"},
		{"exec into the runner", "exec", exec("runner"), "pod app-build-1: exec into container runner is not allowed"},
		{"exec into the default container", "exec", exec(""), "pod app-build-1: exec into its default container is not allowed"},
		{"attach to buildkitd", "attach", &corev1.PodAttachOptions{Container: "buildkitd", Stdout: true}, "pod app-build-1: attach into container buildkitd is not allowed"},
		{"exec into a build pod with a negative number", "exec", exec("buildkitd"), "pod app-build--9: exec into container buildkitd is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := build.Name
			if strings.Contains(tc.want, "app-build--9") {
				pod = "app-build--9"
			}
			checkRefusal(t, connect(ns, pod, tc.sub, tc.opts), connectGuard, tc.want,
				"nobody runs commands in kiln's build pods, which hold the build's cache, BuildKit's socket and its credentials")
		})
	}
	t.Run("exec into a tenant's own pod", func(t *testing.T) {
		err := connect(ns, own.Name, "exec", exec("app"))
		if err == nil || strings.Contains(err.Error(), connectGuard) || !strings.Contains(err.Error(), "host") {
			t.Errorf("want the exec admitted (and then failing for want of a node): %v", err)
		}
	})
	t.Run("an unguarded namespace", func(t *testing.T) {
		open := buildNamespace(t, false)
		p := buildPod(t, open, "app")
		if err := as(t, kilnSA).Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		err := connect(open, p.Name, "exec", exec("buildkitd"))
		if err == nil || strings.Contains(err.Error(), connectGuard) || !strings.Contains(err.Error(), "host") {
			t.Errorf("want the exec admitted (and then failing for want of a node): %v", err)
		}
	})
}

// TestBuildNamespaceGuardKeepsKilnsClaimsKilns: in a build namespace nobody but kiln changes the
// owner references or kiln's labels of kiln's cache claims. Pointing a claim's controller at a
// pod of one's own would let that pod's ephemeral volume mount the cache; dropping the
// ImageBuild's ownership and adding kiln.dev/cache=true would let another ImageBuild share it.
// Other labels, annotations and deleting the claim stay allowed.
func TestBuildNamespaceGuardKeepsKilnsClaimsKilns(t *testing.T) {
	applyGuard(t)
	ctx := context.Background()
	ns := buildNamespace(t, true)
	alice, kiln := as(t, tenant), as(t, kilnSA)
	owner := metav1.OwnerReference{APIVersion: kilnv1.GroupVersion.String(), Kind: "ImageBuild", Name: "app", UID: "5b1c2d3e-0000-4000-8000-000000000001", Controller: ptr.To(true)}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-cache", OwnerReferences: []metav1.OwnerReference{owner},
			Labels: map[string]string{controllers.LabelManagedBy: "kiln", controllers.LabelImageBuild: "app"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}
	if err := kiln.Create(ctx, claim); err != nil {
		t.Fatal(err)
	}
	change := func(c client.Client, mutate func(*corev1.PersistentVolumeClaim)) error {
		cur := &corev1.PersistentVolumeClaim{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(claim), cur); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(cur.DeepCopy())
		mutate(cur)
		return c.Patch(ctx, cur, patch)
	}
	const words = "change only by kiln's ServiceAccount " + kilnSA + " (the request is from alice)"
	checkRefusal(t, change(alice, func(c *corev1.PersistentVolumeClaim) {
		c.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "mine", UID: "5b1c2d3e-0000-4000-8000-000000000002", Controller: ptr.To(true)}}
	}), claimsGuard, "persistentvolumeclaim app-cache: the owner references", words)
	checkRefusal(t, change(alice, func(c *corev1.PersistentVolumeClaim) { c.OwnerReferences = nil }), claimsGuard, words)
	checkRefusal(t, change(alice, func(c *corev1.PersistentVolumeClaim) { c.Labels["kiln.dev/cache"] = "true" }), claimsGuard, words)
	checkRefusal(t, change(alice, func(c *corev1.PersistentVolumeClaim) { delete(c.Labels, controllers.LabelManagedBy) }), claimsGuard, words)
	if err := change(alice, func(c *corev1.PersistentVolumeClaim) {
		c.Labels["team"] = "a"
		c.Annotations = map[string]string{"note": "ours"}
	}); err != nil {
		t.Errorf("another label and an annotation: %v", err)
	}
	if err := change(kiln, func(c *corev1.PersistentVolumeClaim) { c.Labels["kiln.dev/cache"] = "true" }); err != nil {
		t.Errorf("kiln's own change: %v", err)
	}
	if err := alice.Delete(ctx, claim); err != nil {
		t.Errorf("deleting the claim: %v", err)
	}
}
