// Package controllers holds kiln's ImageBuild controller.
package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/gitremote"
	"github.com/kiln-dev/kiln/internal/version"
)

// ImageBuildReconciler runs one BuildKit pod per build of an ImageBuild and records its result.
type ImageBuildReconciler struct {
	client.Client
	// APIReader reads around the cache where a stale read could let two builds share a claim.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder

	// BuildKitImage is the rootless BuildKit image of the buildkitd sidecar.
	BuildKitImage string
	// BuildKitRootfulImage is the rootful BuildKit image of the userns security profile.
	BuildKitRootfulImage string
	// BuildKitUserNSSeccompProfile is the Localhost seccomp profile of buildkitd in the userns
	// profile, relative to the kubelet's seccomp directory; empty means Unconfined.
	BuildKitUserNSSeccompProfile string
	// RunnerImage is kiln's own image, which runs `kiln runner`.
	RunnerImage string
	// DefaultCacheSize is the size of a cache claim whose ImageBuild does not say.
	DefaultCacheSize resource.Quantity
	// DefaultStorageClass is the class of a cache claim whose ImageBuild does not say; empty
	// means the cluster's default class.
	DefaultStorageClass string
	// MaxConcurrentBuilds caps running build pods across the cluster; 0 means no cap.
	MaxConcurrentBuilds int
	// MaxConcurrentBuildsPerNamespace caps running build pods in one namespace; 0 means no cap.
	MaxConcurrentBuildsPerNamespace int
	// BuildKitResources are buildkitd's default requests and limits; spec.resources overrides
	// them name by name.
	BuildKitResources corev1.ResourceRequirements
	// RetryBackoff is the wait before the second attempt of a transient failure; it doubles for
	// each further attempt, up to five minutes.
	RetryBackoff time.Duration
	// WaitRefresh is how often an ImageBuild waiting for a build slot or its cache claim looks
	// again by itself, refreshing its place in the queue; watches wake it as soon as it may go
	// on. Default one minute.
	WaitRefresh time.Duration
	// MaxPending is how long a build pod may stay unscheduled before its build fails as
	// Unschedulable (--max-pending, default 10m): activeDeadlineSeconds only counts from the
	// pod's start, so without it an unschedulable pod would hold its build slot and claim forever.
	MaxPending time.Duration
	// MaxBuildTimeout clamps every ImageBuild's spec.timeout (--max-build-timeout); 0 means the
	// API's own bound of 24h.
	MaxBuildTimeout time.Duration
	// MaxSourceBytes bounds what the runner unpacks from an OCI source (--max-source-size); 0
	// means contract.DefaultMaxSourceBytes.
	MaxSourceBytes int64
	// Policy is what the manager's flags allow ImageBuilds to ask for (imagebuild_policy.go).
	Policy Policy
	// Now returns the current time; tests may replace it.
	Now func() time.Time

	// Poller looks at git sources that poll; nil means a poller that reaches public addresses
	// only (the manager's --poll-allowed-cidrs names the private ones it may reach).
	Poller *gitremote.Client
	// PollWorkers caps the polls running at once (default 4), PollsPerHost those of one git
	// host (default 2). Polls run off the reconcile workers.
	PollWorkers, PollsPerHost int

	slots buildSlots
	// wake carries ImageBuilds to reconcile now: the next in the queue after an admission, one
	// whose poll has ended.
	wake chan event.GenericEvent
	// polls runs the polls of git sources.
	polls *pollPool
}

// +kubebuilder:rbac:groups=kiln.dev,resources=imagebuilds,verbs=get;list;watch
// +kubebuilder:rbac:groups=kiln.dev,resources=imagebuilds/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get

// SetupWithManager registers the controller: it watches ImageBuilds, the pods and claims they
// own, and the ConfigMaps their sources name. The manager's cache must be built with
// CacheOptions.
func (r *ImageBuildReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	registerCollector.Do(func() { metrics.Registry.MustRegister(NewPhaseCollector(mgr.GetClient())) })
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &kilnv1.ImageBuild{}, indexConfigMapSource, configMapSourceName); err != nil {
		return fmt.Errorf("indexing ImageBuilds by ConfigMap source: %w", err)
	}
	for field, fn := range map[string]client.IndexerFunc{indexPhase: phaseOf, indexClaim: claimOf} {
		if err := mgr.GetFieldIndexer().IndexField(context.Background(), &kilnv1.ImageBuild{}, field, fn); err != nil {
			return fmt.Errorf("indexing ImageBuilds by %s: %w", field, err)
		}
	}
	r.wake = make(chan event.GenericEvent, 64)
	if err := r.setupPolls(mgr); err != nil {
		return err
	}
	claimNames, err := r.claimNameSource(mgr)
	if err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Status-only updates (kiln's own patches) need no reconcile.
		For(&kilnv1.ImageBuild{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}, undecodableStatus))).
		Owns(&corev1.Pod{}).
		Watches(&corev1.Pod{}, r.buildPodEvents()).
		Owns(&corev1.PersistentVolumeClaim{}).
		WatchesRawSource(claimNames).
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(r.claimWaiters)).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.imageBuildsForConfigMap)).
		WatchesRawSource(source.Channel(r.wake, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

var registerCollector sync.Once

// undecodableStatus lets through the status-only update that wrote a status nobody can decode,
// so that kiln replaces it at once rather than at the object's next change.
var undecodableStatus = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	ib, ok := e.ObjectNew.(*kilnv1.ImageBuild)
	return ok && ib.Status.DecodeError != ""
}}

// CacheOptions are the manager's cache settings the controller relies on: only kiln's own pods,
// claims and Leases are cached, ConfigMaps as metadata plus a content digest (transformConfigMap),
// and nothing cached keeps its managedFields (kiln never reads them; they were about a tenth of
// the manager's memory, hack/bench/manager). Shared claims are read from the API server
// (reconcileCache) and followed by their names (claimNameSource).
func CacheOptions() cache.Options {
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:                   {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: "kiln"})},
		&corev1.PersistentVolumeClaim{}: {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: "kiln"})},
		&coordinationv1.Lease{}:         {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: "kiln"})},
		&corev1.ConfigMap{}:             {Transform: transformConfigMap},
	}}
}

// SetMaxConcurrentBuilds changes the limit while the manager runs.
func (r *ImageBuildReconciler) SetMaxConcurrentBuilds(n int) {
	r.slots.mu.Lock()
	defer r.slots.mu.Unlock()
	r.MaxConcurrentBuilds = n
}

// SetMaxConcurrentBuildsPerNamespace changes the per-namespace limit while the manager runs.
func (r *ImageBuildReconciler) SetMaxConcurrentBuildsPerNamespace(n int) {
	r.slots.mu.Lock()
	defer r.slots.mu.Unlock()
	r.MaxConcurrentBuildsPerNamespace = n
}

// namespaceLimit is MaxConcurrentBuildsPerNamespace, read under the slots' lock.
func (r *ImageBuildReconciler) namespaceLimit() int {
	r.slots.mu.Lock()
	defer r.slots.mu.Unlock()
	return r.MaxConcurrentBuildsPerNamespace
}

// buildState is what the steps found; the deferred summary turns it into conditions.
type buildState struct {
	phase     kilnv1.Phase
	reason    string
	message   string
	stalled   bool
	suspended bool
	requeue   time.Duration
	// claimWarning explains a cache claim that has stayed Pending too long.
	claimWarning string
	// waiting stops the steps after the current one: it waits for something outside kiln.
	waiting bool
}

func (s *buildState) progress(phase kilnv1.Phase, reason, message string) {
	s.phase, s.reason, s.message = phase, reason, message
}

func (s *buildState) stall(reason, message string) {
	s.stalled, s.reason, s.message = true, reason, message
}

func (s *buildState) requeueAfter(d time.Duration) {
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

// Reconcile runs the steps for one ImageBuild, then patches its status once.
func (r *ImageBuildReconciler) Reconcile(ctx context.Context, req reconcile.Request) (result reconcile.Result, retErr error) {
	ib := &kilnv1.ImageBuild{}
	if err := r.Get(ctx, req.NamespacedName, ib); err != nil {
		if apierrors.IsNotFound(err) {
			forgetImageBuild(req.Namespace, req.Name)
			r.polls.forget(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !ib.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil // owned pods, claims and their leases go with it
	}
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("imagebuild", klog.KObj(ib)))
	before := ib.DeepCopy()
	st := &buildState{}
	defer func() {
		result, retErr = r.summarizeAndPatch(ctx, before, ib, st, retErr)
	}()

	if ib.Status.DecodeError != "" {
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonStatusReset, "%s; kiln replaces the status", ib.Status.DecodeError)
		ib.Status.DecodeError = ""
	}
	if ib.Spec.DecodeError != "" {
		st.stall(kilnv1.ReasonInvalidSpec, ib.Spec.DecodeError+" (it was stored before kiln's validation refused such values): correct the field, or delete and re-create the ImageBuild")
		return reconcile.Result{}, nil
	}
	if err := r.reconcileSource(ctx, ib, st); err != nil || st.stalled {
		return reconcile.Result{}, err
	}
	if r.checkPolicy(ib, st); st.stalled {
		return reconcile.Result{}, nil
	}
	claim, err := r.reconcileCache(ctx, ib, st)
	if err != nil || st.stalled || st.waiting {
		return reconcile.Result{}, err
	}
	r.reconcilePoll(ctx, ib, st)
	if err := r.reconcileBuild(ctx, ib, claim, st); err != nil {
		return reconcile.Result{}, err
	}
	r.schedulePoll(ib, st)
	return reconcile.Result{}, r.pruneHistory(ctx, before, ib)
}

// buildPods lists the pods ib owns, oldest build first.
func (r *ImageBuildReconciler) buildPods(ctx context.Context, ib *kilnv1.ImageBuild) ([]*corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := r.List(ctx, list, client.InNamespace(ib.Namespace), client.MatchingLabels{LabelImageBuild: ib.Name}); err != nil {
		return nil, fmt.Errorf("listing build pods: %w", err)
	}
	var pods []*corev1.Pod
	for i := range list.Items {
		if metav1.IsControlledBy(&list.Items[i], ib) {
			pods = append(pods, &list.Items[i])
		}
	}
	sort.Slice(pods, func(i, j int) bool { return podBuild(pods[i]) < podBuild(pods[j]) })
	return pods, nil
}

// waitForClaim reports a build that waits for the cache claim's Lease, which holder holds. When
// the holder is one of ib's own earlier pods, still stopping (cancelled, or deleted by someone),
// that is no contention: it is said as such, and the pod's end wakes ib.
func (r *ImageBuildReconciler) waitForClaim(ctx context.Context, ib *kilnv1.ImageBuild, claim, holder string, st *buildState) {
	defer st.requeueAfter(r.waitRefresh()) // the Lease's release, or its holder's end, wakes it
	pod := &corev1.Pod{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: ib.Namespace, Name: holder}, pod); err == nil && metav1.IsControlledBy(pod, ib) {
		state := "is still running"
		if pod.DeletionTimestamp != nil {
			state = fmt.Sprintf("is stopping (deleted at %s; killed by %s at the latest)", deletedAt(pod).UTC().Format(time.RFC3339), pod.DeletionTimestamp.UTC().Format(time.RFC3339))
		}
		st.progress(kilnv1.PhasePending, kilnv1.ReasonPending, fmt.Sprintf("this ImageBuild's earlier build pod %s %s and still holds cache claim %s; the build starts as soon as it has ended", holder, state, claim))
		return
	}
	st.progress(kilnv1.PhaseWaitingForCache, kilnv1.ReasonWaitingForCache, fmt.Sprintf("cache claim %s is in use by build pod %s; one build at a time uses a claim", claim, holder))
}

// startBuild takes a concurrency slot and the cache claim's Lease, then creates the build pod.
func (r *ImageBuildReconciler) startBuild(ctx context.Context, ib *kilnv1.ImageBuild, claim cacheClaim, n int64, attempt int32, st *buildState) error {
	podName := buildPodName(ib, n)
	slotKey := types.NamespacedName{Namespace: ib.Namespace, Name: podName}
	if claim.Deleting {
		// Its last pod still holds it. Once it is gone, the claim watch wakes this ImageBuild
		// and kiln makes a new, empty claim (or, for a shared one, says it is missing).
		st.progress(kilnv1.PhaseWaitingForCache, kilnv1.ReasonWaitingForCache, fmt.Sprintf("cache claim %s is being deleted: the build starts once it is gone, on a new claim", claim.Name))
		st.requeueAfter(r.waitRefresh())
		return nil
	}
	a, err := r.admit(ctx, ib, slotKey)
	if err != nil {
		return err
	}
	if !a.ok && a.nsFull {
		st.progress(kilnv1.PhaseQueued, kilnv1.ReasonQueued, fmt.Sprintf("waiting for a build slot: namespace %s runs %d builds, its limit (--max-concurrent-builds-per-namespace)",
			ib.Namespace, a.nsRunning))
		st.requeueAfter(r.waitRefresh())
		return nil
	}
	if !a.ok {
		st.progress(kilnv1.PhaseQueued, kilnv1.ReasonQueued, fmt.Sprintf("waiting for a build slot: position %d of %d in the queue (namespaces take turns); %d of %d slots in use (--max-concurrent-builds)",
			a.position, a.queued, a.running, a.limit))
		st.requeueAfter(r.waitRefresh()) // a slot that frees wakes the oldest queued ImageBuild
		return nil
	}
	created := false
	defer func() {
		r.slots.confirm(slotKey, created)
		if created && a.limit > 0 {
			r.wakeNext(ctx, ib) // the next in the queue may have a slot too
		}
	}()

	lease, holder, err := r.acquireCacheLease(ctx, ib, claim, podName)
	if err != nil {
		return err
	}
	if holder != "" {
		r.waitForClaim(ctx, ib, claim.Name, holder, st)
		return nil
	}
	resetAt := ib.Annotations[kilnv1.AnnotationResetCacheRequestedAt]
	profile := r.Policy.securityProfile(ib)
	opts := podOptions{
		BuildKitImage: r.BuildKitImage, RunnerImage: r.RunnerImage, SecurityProfile: profile, UserNSSeccompProfile: r.BuildKitUserNSSeccompProfile,
		Build: n, Attempt: attempt, ClaimName: claim.Name, CacheBytes: claim.Bytes,
		ResetCache: resetRequested(ib), MaxTimeout: r.MaxBuildTimeout, BuildKitResources: r.BuildKitResources, MaxSourceBytes: r.MaxSourceBytes,
	}
	if profile == kilnv1.SecurityProfileUserNS {
		opts.BuildKitImage = cmp.Or(r.BuildKitRootfulImage, version.DefaultBuildKitRootfulImage)
	}
	req, err := renderRequest(ib, opts)
	if err == nil {
		opts.RequestDigest = contract.RequestFilesDigest(req.Data)
		err = r.createOwned(ctx, ib, req, &corev1.ConfigMap{}, "the build request ConfigMap")
	}
	pod := renderBuildPod(ib, opts)
	if err == nil {
		err = r.createOwned(ctx, ib, pod, &corev1.Pod{}, "build pod")
	}
	if err != nil {
		_ = r.releaseCacheLease(ctx, ib.Namespace, claim.Name, podName)
		return r.refused(ib, podName, n, attempt, err, st)
	}
	created = true
	r.slots.recordMade(pod.UID)
	if err := r.confirmCacheLease(ctx, lease, podName); err != nil {
		return err
	}
	ib.Status.LastHandledResetCacheAt = resetAt
	ib.Status.BuildCount = n
	ib.Status.LastBuild = &kilnv1.LastBuild{PodName: podName, PodUID: pod.UID, Attempt: attempt, SecurityProfile: profile, BuildKey: keyOf(ib)}
	ib.Status.Cache = &kilnv1.CacheStatus{ClaimName: claim.Name}
	msg := fmt.Sprintf("Started build pod %s (attempt %d, security profile %s) on cache claim %s", podName, attempt, profile, claim.Name)
	r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonBuildStarted, "%s", msg)
	st.progress(kilnv1.PhasePending, kilnv1.ReasonBuildStarted, msg)
	return nil
}

// createOwned creates one of a build's objects (its request ConfigMap, its pod). One that
// exists already must be this ImageBuild's (a retry of the same create); one that is not, such
// as a tenant's pod or ConfigMap that happens to have the name, is refused: kiln would otherwise
// wait forever for a build it does not own.
func (r *ImageBuildReconciler) createOwned(ctx context.Context, ib *kilnv1.ImageBuild, obj, existing client.Object, what string) error {
	err := r.Create(ctx, obj)
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("creating %s %s: %w", what, obj.GetName(), err)
		}
		return nil
	}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(obj), existing); err != nil {
		return fmt.Errorf("reading %s %s: %w", what, obj.GetName(), err)
	}
	if !metav1.IsControlledBy(existing, ib) || !sameRequest(obj, existing) {
		return &refusal{class: kilnv1.FailurePodNameTaken, msg: fmt.Sprintf("%s %q already exists in namespace %q and kiln did not create it: kiln needs that name and does not adopt what it did not make; delete it", what, obj.GetName(), ib.Namespace)}
	}
	return nil
}

// sameRequest reports whether an existing object with the name of one kiln creates is the one kiln
// would create: a request ConfigMap with the same data (kiln writes the same request again when
// the pod's creation failed after it). Never a pod: kiln creates each build pod name once, and
// takes the result only from the pod whose UID it recorded, so an existing pod is someone else's.
func sameRequest(want, existing client.Object) bool {
	w, ok1 := want.(*corev1.ConfigMap)
	e, ok2 := existing.(*corev1.ConfigMap)
	return ok1 && ok2 && maps.Equal(w.Data, e.Data) && len(e.BinaryData) == 0
}

// refusal is a build that kiln itself refuses to start: its failure class (PodRejected when
// empty), and a message that says why.
type refusal struct {
	class kilnv1.FailureClass
	msg   string
}

func (e *refusal) Error() string { return e.msg }

// apiRefusal classifies an error from creating a build's objects: quota says the refusal is
// for now (the caller waits and tries again); rejected says the API server refused what kiln
// rendered from the spec, which will not change until the spec or the cluster's policy does.
// Anything else (a timeout, a conflict, the API server unavailable) is neither: retried with
// the controller's backoff.
func apiRefusal(err error) (quota, rejected bool) {
	var own *refusal
	switch {
	case errors.As(err, &own):
		return false, true
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota"):
		return true, false
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsForbidden(err),
		apierrors.IsRequestEntityTooLargeError(err), apierrors.IsMethodNotSupported(err):
		return false, true
	}
	return false, false
}

// refusalMessage says who refused the build: kiln itself (a name taken by someone else's object)
// or the API server.
func refusalMessage(err error) string {
	if own := (*refusal)(nil); errors.As(err, &own) {
		return "kiln refused to start the build: " + err.Error()
	}
	return "the API server refused the build: " + err.Error()
}

// quotaRetry is how often kiln tries again after a ResourceQuota refused a claim or pod.
const quotaRetry = 30 * time.Second

// refused handles a build whose pod or request the API server did not create. A quota refusal
// waits; a rejection ends the build as PodRejected with the server's message, which stalls the
// ImageBuild until its spec changes (no loop: the failed build answers the build key).
func (r *ImageBuildReconciler) refused(ib *kilnv1.ImageBuild, podName string, n int64, attempt int32, err error, st *buildState) error {
	quota, rejected := apiRefusal(err)
	switch {
	case quota:
		st.progress(kilnv1.PhasePending, kilnv1.ReasonQuotaExceeded, fmt.Sprintf("a ResourceQuota refused build pod %s for now; kiln tries again every %s: %v", podName, quotaRetry, err))
		st.requeueAfter(quotaRetry)
		return nil
	case !rejected:
		return err
	}
	class := kilnv1.FailurePodRejected
	if own := (*refusal)(nil); errors.As(err, &own) && own.class != "" {
		class = own.class
	}
	now := metav1.NewTime(r.now())
	ib.Status.BuildCount = n
	ib.Status.LastBuild = &kilnv1.LastBuild{
		PodName: podName, Attempt: attempt, BuildKey: keyOf(ib),
		CompletionTime: &now, FailureReason: class,
		Message: contract.Truncate(refusalMessage(err), contract.MaxMessage),
	}
	r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBuildFailed, "Build pod %s was not created (%s): %s", podName, class, contract.Truncate(err.Error(), contract.MaxEventMessage))
	r.reportOutcome(ib, st)
	return nil
}

// imagePullGrace is how long a build pod may wait for an image before the build fails
// (ImagePullFailed, retried): the kubelet itself backs off forever.
const imagePullGrace = 5 * time.Minute

// observeRunning reports a build pod that has not finished, and ends the build when a container
// cannot start: the kubelet would wait or back off forever, holding a build slot and the cache.
func (r *ImageBuildReconciler) observeRunning(ctx context.Context, ib *kilnv1.ImageBuild, pod *corev1.Pod, st *buildState) error {
	lb := ib.Status.LastBuild
	if lb.StartTime == nil && pod.Status.StartTime != nil {
		lb.StartTime = pod.Status.StartTime.DeepCopy()
	}
	class, msg, wait := r.startFailure(pod)
	if class == "" {
		var err error
		if msg, err = r.userNSUnsupported(ctx, pod); err != nil {
			return err
		} else if msg != "" {
			class = kilnv1.FailurePodStartFailed
		}
	}
	if class != "" {
		now := metav1.NewTime(r.now())
		lb.CompletionTime, lb.FailureReason, lb.Message = &now, class, contract.Truncate(msg, contract.MaxMessage)
		if lb.StartTime != nil {
			lb.Duration = now.Sub(lb.StartTime.Time).Round(time.Second).String()
		}
		observeBuild(ib, 0, class)
		r.event(ib, corev1.EventTypeWarning, kilnv1.ReasonBuildFailed, "Build pod %s failed (%s): %s", pod.Name, class, contract.Truncate(msg, contract.MaxEventMessage))
		if err := r.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting build pod %s: %w", pod.Name, err)
		}
		st.progress(kilnv1.PhaseFailed, kilnv1.ReasonBuildFailed, msg)
		st.requeueAfter(time.Second)
		return nil
	} else if wait > 0 {
		st.requeueAfter(wait)
	}
	if pod.Status.Phase == corev1.PodRunning {
		st.progress(kilnv1.PhaseBuilding, kilnv1.ReasonBuilding, fmt.Sprintf("build pod %s is running", pod.Name))
		return nil
	}
	st.progress(kilnv1.PhasePending, kilnv1.ReasonPending, pendingMessage(pod))
	return nil
}

// userNSUnsupported says why the node that build pod pod is bound to cannot run it, when the pod
// asks for a user namespace (the userns profile) and the node's container runtime reports that
// its handler has none (status.runtimeHandlers). The kubelet would only retry creating the pod's
// sandbox until the build's deadline, with the reason in an Event. A node that reports nothing
// about its handlers (an older kubelet) is given the benefit of the doubt.
func (r *ImageBuildReconciler) userNSUnsupported(ctx context.Context, pod *corev1.Pod) (string, error) {
	if ptr.Deref(pod.Spec.HostUsers, true) || pod.Spec.NodeName == "" || pod.Status.Phase != corev1.PodPending {
		return "", nil
	}
	node := &corev1.Node{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Name: pod.Spec.NodeName}, node); err != nil {
		return "", client.IgnoreNotFound(fmt.Errorf("reading node %s of build pod %s: %w", pod.Spec.NodeName, pod.Name, err))
	}
	handler := ptr.Deref(pod.Spec.RuntimeClassName, "")
	for _, h := range node.Status.RuntimeHandlers {
		if h.Name == handler && (h.Features == nil || !ptr.Deref(h.Features.UserNamespaces, false)) {
			return fmt.Sprintf("node %s cannot run build pod %s of the userns security profile: its container runtime does not support user namespaces "+
				"(node status.runtimeHandlers; it needs containerd >= 2.0 with runc >= 1.2): use the rootless profile (spec.securityProfile), "+
				"or build on nodes that support it (spec.nodeSelector)", node.Name, pod.Name), nil
		}
	}
	return "", nil
}

// pendingMessage says why a build pod has not started running: its phase, the scheduler's
// reason when it is not scheduled, and what its containers wait for.
func pendingMessage(pod *corev1.Pod) string {
	msg := fmt.Sprintf("build pod %s is %s", pod.Name, pod.Status.Phase)
	if c := scheduledCondition(pod); c != nil && c.Status == corev1.ConditionFalse && c.Message != "" {
		msg += ": not scheduled: " + c.Message
	}
	for _, cs := range containerStatuses(pod) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" && w.Reason != "ContainerCreating" {
			msg += fmt.Sprintf("; container %s is waiting: %s %s", cs.Name, w.Reason, w.Message)
		}
	}
	return msg
}

func containerStatuses(pod *corev1.Pod) []corev1.ContainerStatus {
	return append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
}

// startFailure says whether a container of an unfinished build pod cannot start, as a failure
// class and the kubelet's message; or, for an image still being pulled, how long until kiln
// gives up on it. A spec or install problem (an image name the runtime refuses, a container
// config that cannot be made, a binary that cannot be executed) is PodStartFailed and is not
// retried; an image that does not arrive within imagePullGrace is ImagePullFailed, which is.
func (r *ImageBuildReconciler) startFailure(pod *corev1.Pod) (class kilnv1.FailureClass, msg string, wait time.Duration) {
	for _, cs := range containerStatuses(pod) {
		describe := func(reason, message string) string {
			return strings.TrimSpace(fmt.Sprintf("container %s of build pod %s (image %s) cannot start: %s %s", cs.Name, pod.Name, cs.Image, reason, message))
		}
		if t := cs.LastTerminationState.Terminated; t != nil && t.Reason == "StartError" {
			return kilnv1.FailurePodStartFailed, describe(t.Reason, t.Message), 0
		}
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		switch w.Reason {
		case "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError", "RunContainerError":
			return kilnv1.FailurePodStartFailed, describe(w.Reason, w.Message), 0
		case "ErrImagePull", "ImagePullBackOff":
			since := pod.CreationTimestamp.Time
			if pod.Status.StartTime != nil {
				since = pod.Status.StartTime.Time
			}
			left := imagePullGrace - r.now().Sub(since)
			if left <= 0 {
				return kilnv1.FailureImagePullFailed, describe(w.Reason, w.Message) + fmt.Sprintf(" (for more than %s)", imagePullGrace), 0
			}
			wait = left
		}
	}
	if class, msg, left := r.unschedulable(pod); class != "" {
		return class, msg, 0
	} else if left > 0 && (wait == 0 || left < wait) {
		wait = left
	}
	return "", "", wait
}

// defaultMaxPending is MaxPending's default.
const defaultMaxPending = 10 * time.Minute

// unschedulable says whether pod has stayed unscheduled longer than MaxPending, with the
// scheduler's message; or how long until it will have.
func (r *ImageBuildReconciler) unschedulable(pod *corev1.Pod) (class kilnv1.FailureClass, msg string, left time.Duration) {
	limit := r.MaxPending
	if limit <= 0 {
		limit = defaultMaxPending
	}
	c := scheduledCondition(pod)
	if pod.Status.Phase != corev1.PodPending || c == nil || c.Status != corev1.ConditionFalse {
		return "", "", 0
	}
	since := pod.CreationTimestamp.Time
	if !c.LastTransitionTime.IsZero() {
		since = c.LastTransitionTime.Time
	}
	if left = limit - r.now().Sub(since); left > 0 {
		return "", "", left
	}
	return kilnv1.FailureUnschedulable, fmt.Sprintf("build pod %s could not be scheduled for more than %s (--max-pending): %s", pod.Name, limit, c.Message), 0
}

// scheduledCondition is the pod's PodScheduled condition, nil when it has none.
func scheduledCondition(pod *corev1.Pod) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodScheduled {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// pruneHistory deletes finished build pods beyond spec.historyLimit, newest kept. A pod whose
// result is not yet stored in the status (as read at the start of this reconcile) is kept.
func (r *ImageBuildReconciler) pruneHistory(ctx context.Context, stored, ib *kilnv1.ImageBuild) error {
	limit := 3
	if ib.Spec.HistoryLimit != nil {
		limit = int(*ib.Spec.HistoryLimit)
	}
	pods, err := r.buildPods(ctx, ib)
	if err != nil {
		return err
	}
	var finished []*corev1.Pod
	for _, pod := range pods {
		if podFinished(pod) && pod.DeletionTimestamp == nil {
			finished = append(finished, pod)
		}
	}
	var errs []error
	for i := 0; i < len(finished)-limit; i++ {
		pod := finished[i]
		if lb := stored.Status.LastBuild; lb != nil && lb.PodName == pod.Name && lb.CompletionTime == nil {
			continue
		}
		if err := r.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting old build pod %s: %w", pod.Name, err))
		}
	}
	return errors.Join(append(errs, r.pruneRequests(ctx, ib, pods))...)
}

// pruneRequests deletes the request ConfigMaps of builds whose pods are gone (pruned, lost or
// never created), except the current build's.
func (r *ImageBuildReconciler) pruneRequests(ctx context.Context, ib *kilnv1.ImageBuild, pods []*corev1.Pod) error {
	list := &corev1.ConfigMapList{}
	if err := r.List(ctx, list, client.InNamespace(ib.Namespace), client.MatchingLabels{LabelImageBuild: ib.Name, LabelRole: RoleRequest}); err != nil {
		return fmt.Errorf("listing build requests: %w", err)
	}
	kept := map[int64]bool{}
	for _, pod := range pods {
		if pod.DeletionTimestamp == nil {
			kept[podBuild(pod)] = true
		}
	}
	var errs []error
	for i := range list.Items {
		cm := &list.Items[i]
		n, _ := strconv.ParseInt(cm.Annotations[AnnotationBuild], 10, 64)
		if kept[n] || n >= ib.Status.BuildCount || !metav1.IsControlledBy(cm, ib) {
			continue
		}
		if err := r.Delete(ctx, cm); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting build request %s: %w", cm.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (r *ImageBuildReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// event announces something that happened to ib, once its status patch has succeeded. The note
// is cut to the API server's limit (eventNote): a longer Event would be refused, and lost.
func (r *ImageBuildReconciler) event(ib *kilnv1.ImageBuild, eventType, reason, note string, args ...any) {
	if r.Recorder != nil {
		note := eventNote(note, args...)
		afterPatch.add(ib, func() { r.Recorder.Eventf(ib, nil, eventType, reason, reason, "%s", note) })
	}
}

// eventNote formats an Event's note and cuts it to contract.MaxEventNote bytes, at a rune
// boundary, marking the cut with "…".
func eventNote(format string, args ...any) string {
	return contract.Truncate(fmt.Sprintf(format, args...), contract.MaxEventNote)
}

// afterPatch holds what a reconcile announces (Events, build metrics) until its status patch has
// succeeded. A failed patch is followed by a reconcile that finds the same things again and
// announces them then; announcing before the patch would count a build twice. Entries are keyed
// by the reconcile's own copy of the ImageBuild, so parallel workers never share one.
var afterPatch = &effects{pending: map[*kilnv1.ImageBuild][]func(){}}

type effects struct {
	mu      sync.Mutex
	pending map[*kilnv1.ImageBuild][]func()
}

func (e *effects) add(ib *kilnv1.ImageBuild, fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pending[ib] = append(e.pending[ib], fn)
}

// take removes and returns what was held for ib.
func (e *effects) take(ib *kilnv1.ImageBuild) []func() {
	e.mu.Lock()
	defer e.mu.Unlock()
	fns := e.pending[ib]
	delete(e.pending, ib)
	return fns
}
