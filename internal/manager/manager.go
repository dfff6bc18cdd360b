// Package manager runs kiln's controller manager.
package manager

import (
	"crypto/tls"
	"flag"
	"fmt"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/controllers"
	"github.com/kiln-dev/kiln/internal/gitremote"
	"github.com/kiln-dev/kiln/internal/version"
)

// Options are the manager's settings, from its flags.
type Options struct {
	MetricsAddr      string
	ProbeAddr        string
	LeaderElect      bool
	LeaderElectionNS string
	BuildKitImage    string
	// BuildKitRootfulImage is the rootful BuildKit image of the userns security profile.
	BuildKitRootfulImage string
	// BuildKitUserNSSeccompProfile is buildkitd's Localhost seccomp profile in the userns
	// security profile; empty means Unconfined.
	BuildKitUserNSSeccompProfile string
	RunnerImage                  string
	MaxConcurrentBuilds          int
	// MaxConcurrentBuildsPerNamespace caps the build pods of one namespace; 0 means none.
	MaxConcurrentBuildsPerNamespace int
	// BuildKitResources is buildkitd's default resources, "requests.cpu=500m,limits.memory=8Gi".
	BuildKitResources   string
	Workers             int
	DefaultCacheSize    string
	DefaultStorageClass string
	RetryBackoff        time.Duration
	MaxBuildTimeout     time.Duration
	MaxSourceSize       string
	MaxPending          time.Duration
	PollAllowedCIDRs    string
	// MetricsSecure serves metrics over HTTPS to callers that authenticate and may get /metrics.
	MetricsSecure bool
	// MetricsCertDir holds tls.crt and tls.key for the metrics endpoint; empty: self-signed.
	MetricsCertDir string

	// The policy clamps (controllers.Policy); empty means no limit.
	MaxCacheSize           string
	AllowedPriorityClasses string
	BuildServiceAccount    string
	// SecurityProfile is the default build pod shape, rootless or userns;
	// AllowedSecurityProfiles the comma-separated others an ImageBuild may ask for.
	SecurityProfile         string
	AllowedSecurityProfiles string
}

// LeaderElectionID names the Lease in the manager's namespace that elects the leader.
const LeaderElectionID = "kiln-manager.kiln.dev"

// BindFlags registers the manager's flags on fs with their defaults.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8443", "address the Prometheus metrics endpoint listens on; 0 turns it off")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", true, "serve metrics over HTTPS, only to callers whose token the API server accepts (TokenReview) and who may get /metrics (SubjectAccessReview); false serves plain HTTP to anyone")
	fs.StringVar(&o.MetricsCertDir, "metrics-cert-dir", "", "directory with tls.crt and tls.key for the metrics endpoint, reloaded when they change (default: a self-signed certificate)")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "address the /healthz and /readyz probes listen on")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "elect a leader, so that only one of several replicas reconciles")
	fs.StringVar(&o.LeaderElectionNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: the manager's own)")
	fs.StringVar(&o.BuildKitImage, "buildkit-image", version.DefaultBuildKitImage, "rootless BuildKit image run as each build pod's buildkitd sidecar")
	fs.StringVar(&o.BuildKitRootfulImage, "buildkit-rootful-image", version.DefaultBuildKitRootfulImage, "rootful BuildKit image run as root of the pod's user namespace by build pods of the userns security profile")
	fs.StringVar(&o.BuildKitUserNSSeccompProfile, "buildkit-userns-seccomp-profile", "", "Localhost seccomp profile of buildkitd in the userns security profile, relative to the kubelet's seccomp directory (such as kiln/buildkitd-userns.json, installed on every build node): the runtime's default profile plus keyctl and pivot_root; empty means Unconfined")
	fs.StringVar(&o.SecurityProfile, "build-pod-security-profile", string(kilnv1.SecurityProfileRootless), "how build pods isolate buildkitd: rootless (rootless BuildKit, seccomp and AppArmor Unconfined) or userns (rootful BuildKit in the pod's own user namespace, hostUsers: false; needs node support); an ImageBuild's spec.securityProfile overrides it where --allowed-security-profiles allows")
	fs.StringVar(&o.AllowedSecurityProfiles, "allowed-security-profiles", "", "comma-separated security profiles an ImageBuild may name in spec.securityProfile besides --build-pod-security-profile; another ends Stalled (PolicyViolation)")
	fs.StringVar(&o.RunnerImage, "runner-image", version.DefaultRunnerImage(), "kiln image run as each build pod's runner container")
	fs.IntVar(&o.MaxConcurrentBuilds, "max-concurrent-builds", 10, "most build pods running at once in the cluster; 0 means no limit")
	fs.IntVar(&o.MaxConcurrentBuildsPerNamespace, "max-concurrent-builds-per-namespace", 0, "most build pods running at once in one namespace; 0 means no limit (namespaces take turns for slots either way)")
	fs.IntVar(&o.Workers, "workers", 4, "ImageBuilds reconciled in parallel")
	fs.StringVar(&o.BuildKitResources, "buildkit-resources", "", "buildkitd's default requests and limits, comma-separated: requests.cpu=500m,requests.memory=1Gi,limits.memory=8Gi; spec.resources overrides them name by name")
	fs.StringVar(&o.DefaultCacheSize, "default-cache-size", "10Gi", "size of a cache claim whose ImageBuild sets no spec.cache.size")
	fs.StringVar(&o.DefaultStorageClass, "default-storage-class", "", "StorageClass of cache claims whose ImageBuild sets none (default: the cluster's default class)")
	fs.DurationVar(&o.RetryBackoff, "retry-backoff", 10*time.Second, "wait before retrying a transient build failure; doubles per attempt")
	fs.DurationVar(&o.MaxPending, "max-pending", 10*time.Minute, "longest a build pod may stay unscheduled before its build fails as Unschedulable")
	fs.DurationVar(&o.MaxBuildTimeout, "max-build-timeout", 24*time.Hour, "longest build allowed: a longer spec.timeout is lowered to it (the API allows at most 24h)")
	fs.StringVar(&o.MaxSourceSize, "max-source-size", "1Gi", "largest build context the runner unpacks from spec.source.oci (its files' bytes), such as 1Gi; a larger one fails the build as BadInput")
	fs.StringVar(&o.MaxCacheSize, "max-cache-size", "", "largest cache claim kiln creates, such as 100Gi: an ImageBuild whose spec.cache.size is larger ends Stalled (PolicyViolation); empty means no maximum")
	fs.StringVar(&o.AllowedPriorityClasses, "allowed-priority-classes", "", "comma-separated priority classes build pods may use: an ImageBuild whose spec.priorityClassName is another ends Stalled (PolicyViolation); empty allows any")
	fs.StringVar(&o.BuildServiceAccount, "build-service-account", "", "the only service account build pods may run as: an ImageBuild whose spec.serviceAccountName is another ends Stalled (PolicyViolation); empty allows any")
	fs.StringVar(&o.PollAllowedCIDRs, "poll-allowed-cidrs", "", "comma-separated private or cluster addresses git polling may reach: CIDRs (10.0.0.0/8), addresses (10.1.2.3) or address:port (10.1.2.3:443); public addresses need none, link-local ones are never reached, loopback only when an entry lies inside it")
}

// Main parses args and runs the manager until it is signalled; it returns the exit code.
func Main(args []string) int {
	fs := flag.NewFlagSet("kiln manager", flag.ContinueOnError)
	var o Options
	o.BindFlags(fs)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if err := Run(ctrl.GetConfigOrDie(), o); err != nil {
		ctrl.Log.Error(err, "Manager stopped")
		return 1
	}
	return 0
}

// Scheme holds the types the manager reads and writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = kilnv1.AddToScheme(s)
	return s
}

// New builds a manager with kiln's controller registered, without starting it.
func New(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	size, err := resource.ParseQuantity(o.DefaultCacheSize)
	if err != nil {
		return nil, fmt.Errorf("--default-cache-size %q is not a quantity: %w", o.DefaultCacheSize, err)
	}
	maxSource, err := resource.ParseQuantity(o.MaxSourceSize)
	if err != nil || maxSource.Value() <= 0 {
		return nil, fmt.Errorf("--max-source-size %q must be a positive quantity such as 1Gi", o.MaxSourceSize)
	}
	if o.MaxBuildTimeout < time.Minute {
		return nil, fmt.Errorf("--max-build-timeout must be at least 1m, not %s", o.MaxBuildTimeout)
	}
	if o.MaxConcurrentBuilds < 0 {
		return nil, fmt.Errorf("--max-concurrent-builds must be 0 (no limit) or more, not %d", o.MaxConcurrentBuilds)
	}
	if o.MaxConcurrentBuildsPerNamespace < 0 {
		return nil, fmt.Errorf("--max-concurrent-builds-per-namespace must be 0 (no limit) or more, not %d", o.MaxConcurrentBuildsPerNamespace)
	}
	if err := checkLocalhostProfile(o.BuildKitUserNSSeccompProfile); err != nil {
		return nil, err
	}
	bkResources, err := ParseResources(o.BuildKitResources)
	if err != nil {
		return nil, fmt.Errorf("--buildkit-resources: %w", err)
	}
	policy, err := o.policy(size)
	if err != nil {
		return nil, err
	}
	allow, err := gitremote.ParseAllowList(strings.Split(o.PollAllowedCIDRs, ","))
	if err != nil {
		return nil, fmt.Errorf("--poll-allowed-cidrs: %w", err)
	}
	scheme := Scheme()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOptions(o),
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: o.LeaderElectionNS,
		// A manager that stops (SIGTERM in a rolling update) gives the Lease back once its
		// reconciles have ended, so the next one leads at once instead of after the Lease's
		// 15s. Safe because Main returns, and the process exits, as soon as Start does.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	r := &controllers.ImageBuildReconciler{
		Client:                          mgr.GetClient(),
		APIReader:                       mgr.GetAPIReader(),
		Scheme:                          scheme,
		Recorder:                        mgr.GetEventRecorder("kiln"),
		BuildKitImage:                   o.BuildKitImage,
		BuildKitRootfulImage:            o.BuildKitRootfulImage,
		BuildKitUserNSSeccompProfile:    o.BuildKitUserNSSeccompProfile,
		RunnerImage:                     o.RunnerImage,
		DefaultCacheSize:                size,
		DefaultStorageClass:             o.DefaultStorageClass,
		MaxConcurrentBuilds:             o.MaxConcurrentBuilds,
		MaxConcurrentBuildsPerNamespace: o.MaxConcurrentBuildsPerNamespace,
		BuildKitResources:               bkResources,
		RetryBackoff:                    o.RetryBackoff,
		MaxBuildTimeout:                 o.MaxBuildTimeout,
		MaxSourceBytes:                  maxSource.Value(),
		MaxPending:                      o.MaxPending,
		Policy:                          policy,
		Poller:                          gitremote.New(gitremote.Options{Allow: allow}),
	}
	if err := r.SetupWithManager(mgr, o.Workers); err != nil {
		return nil, fmt.Errorf("registering the ImageBuild controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	return mgr, nil
}

// policy is the controller's Policy from the clamp flags; defaultCacheSize (--default-cache-size)
// must be within --max-cache-size, or every ImageBuild without spec.cache.size would be refused.
func (o Options) policy(defaultCacheSize resource.Quantity) (controllers.Policy, error) {
	var p controllers.Policy
	if o.MaxCacheSize != "" {
		q, err := resource.ParseQuantity(o.MaxCacheSize)
		if err != nil {
			return p, fmt.Errorf("--max-cache-size %q is not a quantity: %w", o.MaxCacheSize, err)
		}
		if q.Cmp(defaultCacheSize) < 0 {
			return p, fmt.Errorf("--max-cache-size %s is less than --default-cache-size %s", q.String(), defaultCacheSize.String())
		}
		p.MaxCacheSize = &q
	}
	for _, name := range strings.Split(o.AllowedPriorityClasses, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return p, fmt.Errorf("--allowed-priority-classes: %q is not a priority class name: %s", name, strings.Join(errs, "; "))
		}
		p.AllowedPriorityClasses = append(p.AllowedPriorityClasses, name)
	}
	if name := o.BuildServiceAccount; name != "" {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return p, fmt.Errorf("--build-service-account: %q is not a service account name: %s", name, strings.Join(errs, "; "))
		}
		p.BuildServiceAccount = name
	}
	prof, err := parseSecurityProfile("--build-pod-security-profile", o.SecurityProfile)
	if err != nil {
		return p, err
	}
	p.SecurityProfile = prof
	for _, name := range strings.Split(o.AllowedSecurityProfiles, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		prof, err := parseSecurityProfile("--allowed-security-profiles", name)
		if err != nil {
			return p, err
		}
		p.AllowedSecurityProfiles = append(p.AllowedSecurityProfiles, prof)
	}
	return p, nil
}

// checkLocalhostProfile checks --buildkit-userns-seccomp-profile: empty, or a clean path
// inside the kubelet's seccomp directory (the API server refuses the pod otherwise, at every build).
func checkLocalhostProfile(p string) error {
	if p != "" && (path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../")) {
		return fmt.Errorf("--buildkit-userns-seccomp-profile %q must be a path inside the kubelet's seccomp directory, such as kiln/buildkitd-userns.json", p)
	}
	return nil
}

// parseSecurityProfile checks the value of a security profile flag.
func parseSecurityProfile(flag, value string) (kilnv1.SecurityProfile, error) {
	switch prof := kilnv1.SecurityProfile(value); prof {
	case kilnv1.SecurityProfileRootless, kilnv1.SecurityProfileUserNS:
		return prof, nil
	}
	return "", fmt.Errorf("%s: %q is not a security profile: use rootless or userns", flag, value)
}

// metricsOptions serves metrics as kubebuilder scaffolds it: over HTTPS (HTTP/1.1 only), to
// callers the API server authenticates (TokenReview) and authorizes for a get of the
// non-resource URL /metrics (SubjectAccessReview); or, with --metrics-secure=false, over plain
// HTTP to anyone. The reviews need their own ClusterRole (config/rbac/metrics_auth_role.yaml,
// the chart's metrics.yaml): tokenreviews and subjectaccessreviews create.
func metricsOptions(o Options) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: o.MetricsAddr}
	if !o.MetricsSecure {
		return opts
	}
	opts.SecureServing = true
	opts.CertDir = o.MetricsCertDir
	opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	// HTTP/2 stays off (CVE-2023-44487, CVE-2023-39325), as kubebuilder has it.
	opts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	return opts
}

// Run builds the manager and runs it until SIGTERM or SIGINT.
func Run(cfg *rest.Config, o Options) error {
	mgr, err := New(cfg, o)
	if err != nil {
		return err
	}
	ctrl.Log.Info("Starting kiln manager", "version", version.Version, "buildkitImage", o.BuildKitImage, "runnerImage", o.RunnerImage)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// ParseResources reads requests and limits written as "requests.cpu=500m,limits.memory=8Gi"
// (empty: none). It refuses an unknown part, a value that is not a quantity, and a request
// above the limit of the same name.
func ParseResources(s string) (corev1.ResourceRequirements, error) {
	var out corev1.ResourceRequirements
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		key, value, ok := strings.Cut(item, "=")
		kind, name, ok2 := strings.Cut(key, ".")
		if !ok || !ok2 || name == "" || (kind != "requests" && kind != "limits") {
			return out, fmt.Errorf("%q is not requests.NAME=QUANTITY or limits.NAME=QUANTITY", item)
		}
		q, err := resource.ParseQuantity(value)
		if err != nil {
			return out, fmt.Errorf("%q: %w", item, err)
		}
		list := &out.Requests
		if kind == "limits" {
			list = &out.Limits
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[corev1.ResourceName(name)] = q
	}
	for name, req := range out.Requests {
		if limit, ok := out.Limits[name]; ok && req.Cmp(limit) > 0 {
			return out, fmt.Errorf("requests.%s %s is above limits.%s %s", name, req.String(), name, limit.String())
		}
	}
	return out, nil
}
