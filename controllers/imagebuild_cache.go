package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// claimPendingWarning is how long a cache claim may stay Pending before kiln says so.
const claimPendingWarning = 2 * time.Minute

// leaseGrace is how long a Lease whose holder pod does not exist yet is still honoured: the
// holder takes the Lease first and creates its pod right after.
const leaseGrace = time.Minute

// cacheClaim is the claim a build of ib runs on.
type cacheClaim struct {
	Name   string
	Shared bool
	// UID is the claim's UID: its Lease is owned by it, and goes with it.
	UID types.UID
	// Bytes is the size the claim requests (its capacity when it requests none), for BuildKit's GC.
	Bytes int64
	// Deleting says that the claim is being deleted (a pod still uses it): no build may start on
	// it, since the scheduler never places a pod whose claim is being deleted.
	Deleting bool
}

// claimName is the cache claim of ib: the shared claimName, or the owned <name>-cache.
func claimName(ib *kilnv1.ImageBuild) string {
	if ib.Spec.Cache.ClaimName != "" {
		return ib.Spec.Cache.ClaimName
	}
	return truncateName(ib.Name, "-cache")
}

// reconcileCache makes sure the cache claim exists: it creates the owned claim, and checks that
// a shared one is there. A missing shared claim stalls the ImageBuild with the claim's name.
//
// The manager's cache holds kiln's own claims only (CacheOptions): a shared claim is a tenant's,
// without kiln's label, and is read from the API server. A claim named like the owned one that
// is not kiln's is found the same way, when creating the owned one says it exists.
func (r *ImageBuildReconciler) reconcileCache(ctx context.Context, ib *kilnv1.ImageBuild, st *buildState) (cacheClaim, error) {
	claim := cacheClaim{Name: claimName(ib), Shared: ib.Spec.Cache.ClaimName != ""}
	key := types.NamespacedName{Namespace: ib.Namespace, Name: claim.Name}
	pvc := &corev1.PersistentVolumeClaim{}
	var err error
	if claim.Shared {
		err = r.APIReader.Get(ctx, key, pvc)
	} else {
		err = r.Get(ctx, key, pvc)
	}
	switch {
	case err == nil:
	case apierrors.IsNotFound(err) && claim.Shared:
		st.stall(kilnv1.ReasonClaimNotFound, fmt.Sprintf("cache claim %q (spec.cache.claimName) does not exist in namespace %q; the build starts when it is created", claim.Name, ib.Namespace))
		return claim, nil // the claim watch wakes it
	case apierrors.IsNotFound(err):
		pvc = r.renderCacheClaim(ib, claim.Name)
		if err := controllerutil.SetControllerReference(ib, pvc, r.Scheme); err != nil {
			return claim, err
		}
		err := r.Create(ctx, pvc)
		if apierrors.IsAlreadyExists(err) {
			// Not in the cache: someone else's claim has the name (checked below), or the
			// cache has not seen kiln's own yet.
			pvc = &corev1.PersistentVolumeClaim{}
			if err := r.APIReader.Get(ctx, key, pvc); err != nil {
				return claim, fmt.Errorf("reading cache claim %s: %w", claim.Name, err)
			}
		} else if err != nil {
			switch quota, rejected := apiRefusal(err); {
			case quota:
				st.progress(kilnv1.PhasePending, kilnv1.ReasonQuotaExceeded, fmt.Sprintf("a ResourceQuota refused cache claim %s for now; kiln tries again every %s: %v", claim.Name, quotaRetry, err))
				st.requeueAfter(quotaRetry)
				st.waiting = true
				return claim, nil
			case rejected:
				st.stall(kilnv1.ReasonClaimRejected, fmt.Sprintf("the API server refused cache claim %s (from spec.cache): %v", claim.Name, err))
				return claim, nil
			}
			return claim, fmt.Errorf("creating cache claim %s: %w", claim.Name, err)
		}
	default:
		return claim, fmt.Errorf("reading cache claim %s: %w", claim.Name, err)
	}
	if !claim.Shared && !metav1.IsControlledBy(pvc, ib) && pvc.UID != "" {
		st.stall(kilnv1.ReasonClaimNotFound, fmt.Sprintf("a PersistentVolumeClaim named %q already exists and is not this ImageBuild's: rename one of them (spec.cache.claimName shares only a claim marked for sharing)", claim.Name))
		return claim, nil
	}
	if claim.Shared {
		if why := notShareable(pvc); why != "" {
			st.stall(kilnv1.ReasonClaimNotShared, why)
			return claim, nil // a change to the claim (its label) wakes it
		}
	}
	claim.UID = pvc.UID
	claim.Deleting = pvc.DeletionTimestamp != nil
	if pvc.Status.Phase == corev1.ClaimPending && !pvc.CreationTimestamp.IsZero() {
		pending := r.now().Sub(pvc.CreationTimestamp.Time)
		if pending <= claimPendingWarning {
			// Nothing else may wake this object when the claim stays Pending: come back when
			// the warning is due.
			st.requeueAfter(claimPendingWarning - pending + time.Second)
		} else {
			class := "the cluster's default class"
			if pvc.Spec.StorageClassName != nil {
				class = fmt.Sprintf("StorageClass %q", *pvc.Spec.StorageClassName)
			}
			st.claimWarning = fmt.Sprintf("cache claim %s has been Pending for more than %s (since %s): no volume is bound to it; check that %s exists and can provision in this zone (kubectl describe pvc %s)",
				claim.Name, claimPendingWarning, pvc.CreationTimestamp.UTC().Format(time.RFC3339), class, claim.Name)
		}
	}
	// BuildKit's garbage collection is sized from what the claim asks for: a volume may be bound
	// with more capacity than that (a larger PV, or a hostPath that reports its whole disk), and
	// the extra room is not the cache's to fill.
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; ok {
		claim.Bytes = q.Value()
	} else if c, ok := pvc.Status.Capacity[corev1.ResourceStorage]; ok {
		claim.Bytes = c.Value()
	}
	return claim, nil
}

func (r *ImageBuildReconciler) renderCacheClaim(ib *kilnv1.ImageBuild, name string) *corev1.PersistentVolumeClaim {
	size := r.DefaultCacheSize
	if ib.Spec.Cache.Size != nil {
		size = *ib.Spec.Cache.Size
	}
	class := ib.Spec.Cache.StorageClassName
	if class == nil && r.DefaultStorageClass != "" {
		class = ptr.To(r.DefaultStorageClass)
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: ib.Namespace,
			Labels:    map[string]string{LabelImageBuild: ib.Name, LabelManagedBy: "kiln"},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: class,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: size.DeepCopy()},
			},
		},
	}
}

// leaseName is the Lease that serializes builds on one claim.
func leaseName(claim string) string {
	return truncateName("kiln-cache-"+claim, "")
}

// acquireCacheLease takes the claim's Lease for the build pod podName. It returns the Lease when
// it is now held for podName, or the name of the pod that holds it. Creating the Lease is
// atomic, and taking over a free or stale one is an update guarded by its resourceVersion, so
// two managers (or two workers) never both win.
//
// The Lease is owned by its claim (an ownerReference, not a controller one): it lives as long as
// the claim, is given back by clearing its holder (releaseCacheLease), and the garbage collector
// deletes it with the claim. The manager never deletes a Lease.
func (r *ImageBuildReconciler) acquireCacheLease(ctx context.Context, ib *kilnv1.ImageBuild, claim cacheClaim, podName string) (*coordinationv1.Lease, string, error) {
	now := metav1.NewMicroTime(r.now())
	key := types.NamespacedName{Namespace: ib.Namespace, Name: leaseName(claim.Name)}
	// Most claims are free: try to create the Lease first, and read it only when it exists.
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: key.Name, Namespace: key.Namespace,
			Labels:      map[string]string{LabelManagedBy: "kiln"},
			Annotations: map[string]string{AnnotationCacheClaim: claim.Name},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(podName), AcquireTime: &now, RenewTime: &now},
	}
	ownLease(lease, claim)
	err := r.Create(ctx, lease)
	if err == nil {
		return lease, "", nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, "", fmt.Errorf("creating lease %s: %w", key.Name, err)
	}
	lease = &coordinationv1.Lease{}
	if err := r.APIReader.Get(ctx, key, lease); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, "(another build)", nil // deleted meanwhile (with its claim): try again soon
		}
		return nil, "", fmt.Errorf("reading lease %s: %w", key.Name, err)
	}
	holder := ptr.Deref(lease.Spec.HolderIdentity, "")
	if holder == podName && ownedBy(lease, claim) {
		return lease, "", nil
	}
	if holder != "" && holder != podName {
		busy, err := r.holderBusy(ctx, ib.Namespace, holder, lease)
		if err != nil || busy {
			return nil, holder, err
		}
	}
	lease.Spec.HolderIdentity = ptr.To(podName)
	lease.Spec.AcquireTime = &now
	lease.Spec.RenewTime = &now
	delete(lease.Annotations, annotationHolderCreated)
	ownLease(lease, claim)
	if err := r.Update(ctx, lease); err != nil {
		if apierrors.IsConflict(err) {
			return nil, "(another build)", nil
		}
		return nil, "", fmt.Errorf("taking over lease %s from %s: %w", key.Name, orFree(holder), err)
	}
	return lease, "", nil
}

// ownLease makes the claim the only owner of its Lease. A Lease made by an older kiln has no
// owner, and one whose claim was deleted and created again names the old claim's UID (the
// garbage collector will delete it): both are fixed the next time a build takes them, by an
// update the garbage collector sees (it deletes only a Lease whose owners it has checked).
func ownLease(lease *coordinationv1.Lease, claim cacheClaim) {
	if claim.UID != "" {
		lease.OwnerReferences = []metav1.OwnerReference{claimOwner(claim)}
	}
}

// ownedBy reports whether the Lease is owned by the claim and nothing else.
func ownedBy(lease *coordinationv1.Lease, claim cacheClaim) bool {
	return claim.UID == "" || (len(lease.OwnerReferences) == 1 && lease.OwnerReferences[0] == claimOwner(claim))
}

func claimOwner(claim cacheClaim) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "PersistentVolumeClaim", Name: claim.Name, UID: claim.UID}
}

func orFree(holder string) string {
	if holder == "" {
		return "nobody"
	}
	return holder
}

// holderBusy reports whether the pod holding a Lease may still be using the claim: it exists and
// has not finished (a pod being deleted still runs buildkitd until it is gone), or it does not
// exist yet but took the Lease moments ago.
func (r *ImageBuildReconciler) holderBusy(ctx context.Context, namespace, holder string, lease *coordinationv1.Lease) (bool, error) {
	pod := &corev1.Pod{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: holder}, pod)
	if apierrors.IsNotFound(err) {
		if lease.Annotations[annotationHolderCreated] == holder {
			return false, nil // the holder pod existed and is gone: deleted or garbage-collected
		}
		acquired := lease.CreationTimestamp.Time
		if lease.Spec.AcquireTime != nil {
			acquired = lease.Spec.AcquireTime.Time
		}
		return r.now().Sub(acquired) < leaseGrace, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading build pod %s that holds the cache lease: %w", holder, err)
	}
	return !podFinished(pod), nil
}

// annotationHolderCreated on a Lease names the holder pod once it has been created, so that the
// Lease is free as soon as that pod is gone instead of after leaseGrace.
const annotationHolderCreated = "kiln.dev/holder-created"

// confirmCacheLease marks on the Lease that its holder pod now exists.
func (r *ImageBuildReconciler) confirmCacheLease(ctx context.Context, lease *coordinationv1.Lease, podName string) error {
	if lease.Annotations[annotationHolderCreated] == podName {
		return nil
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[annotationHolderCreated] = podName
	if err := r.Update(ctx, lease); err != nil {
		return fmt.Errorf("marking lease %s: %w", lease.Name, err)
	}
	return nil
}

// releaseCacheLease gives the claim's Lease back if podName holds it: it clears the holder, and
// the Lease stays for the claim's next build (the garbage collector deletes it with its claim).
func (r *ImageBuildReconciler) releaseCacheLease(ctx context.Context, namespace, claim, podName string) error {
	lease := &coordinationv1.Lease{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: leaseName(claim)}, lease)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading lease of cache claim %s: %w", claim, err)
	}
	if ptr.Deref(lease.Spec.HolderIdentity, "") != podName {
		return nil
	}
	now := metav1.NewMicroTime(r.now())
	lease.Spec.HolderIdentity = nil
	lease.Spec.RenewTime = &now
	delete(lease.Annotations, annotationHolderCreated)
	// Guarded by the resourceVersion just read: a Lease someone changed since is not ours to free.
	err = r.Update(ctx, lease)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("releasing lease of cache claim %s: %w", claim, err)
	}
	return nil
}

// truncateName appends suffix to base, shortening base with a hash so that the result is a valid
// object name (at most 253 characters).
func truncateName(base, suffix string) string {
	const max = 253
	if len(base)+len(suffix) <= max {
		return base + suffix
	}
	sum := sha256.Sum256([]byte(base))
	h := hex.EncodeToString(sum[:])[:10]
	return base[:max-len(suffix)-len(h)-1] + "-" + h + suffix
}

// LabelSharedCache marks a claim that its namespace's ImageBuilds may share as their cache
// (spec.cache.claimName): "true".
const LabelSharedCache = "kiln.dev/cache"

// notShareable says why a claim named by spec.cache.claimName may not be shared: the claim must
// say so (LabelSharedCache "true"), and no object may control it. Every build on a claim reads
// and writes the same BuildKit state, cache mounts included (module caches, tokens a step left
// there), with no process sandbox between them: sharing makes one trust domain, which the
// claim's owner opts into. Without the rule an ImageBuild could name another's own cache, or a
// database's volume (the kubelet would change its files' group to 1000). "" when it may be shared.
func notShareable(pvc *corev1.PersistentVolumeClaim) string {
	if ref := metav1.GetControllerOf(pvc); ref != nil {
		return fmt.Sprintf("cache claim %q (spec.cache.claimName) is controlled by %s %q and cannot be shared: name a claim made for sharing, labelled %s=true",
			pvc.Name, ref.Kind, ref.Name, LabelSharedCache)
	}
	if pvc.Labels[LabelSharedCache] != "true" {
		return fmt.Sprintf("cache claim %q (spec.cache.claimName) is not marked for sharing: if every ImageBuild that names it may share one cache (one trust domain: each build can read and change what the others leave there), label it: kubectl label pvc %s -n %s %s=true",
			pvc.Name, pvc.Name, pvc.Namespace, LabelSharedCache)
	}
	return ""
}

// claimNameSource is the watch that wakes the ImageBuilds building on a claim when any claim
// appears, changes or goes: a shared claim (spec.cache.claimName) is a tenant's, which the
// manager's cache does not hold (CacheOptions keeps kiln's own claims only). It runs on a cache of
// its own that lists and watches every claim as metadata only and keeps of each its namespace and
// name (keepClaimName): a few dozen bytes per claim in the cluster, nothing of their spec, status,
// labels or annotations. The manager's cache is one per kind, so it cannot hold kiln's claims in
// full and the others' names.
func (r *ImageBuildReconciler) claimNameSource(mgr ctrl.Manager) (source.Source, error) {
	names, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient:       mgr.GetHTTPClient(),
		Scheme:           mgr.GetScheme(),
		Mapper:           mgr.GetRESTMapper(),
		DefaultTransform: keepClaimName,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the cache of claim names: %w", err)
	}
	if err := mgr.Add(names); err != nil {
		return nil, err
	}
	claims := &metav1.PartialObjectMetadata{}
	claims.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaim"))
	return source.Kind(names, client.Object(claims), handler.EnqueueRequestsFromMapFunc(r.claimWaiters)), nil
}

// keepClaimName is the transform of the cache of claim names: a claim's namespace, name, UID and
// resourceVersion, nothing else.
func keepClaimName(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{
		TypeMeta: m.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Namespace: m.Namespace, Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion,
		},
	}, nil
}
