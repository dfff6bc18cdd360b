package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// digestKey holds, in the binaryData of ConfigMaps in the manager's cache only, the digest of
// the content that transformConfigMap removed. It is not a valid ConfigMap key (it has a '/'), so
// no object from the API server can carry it: a tenant cannot forge a digest.
const digestKey = "kiln.dev/content-digest"

// indexConfigMapSource indexes ImageBuilds by the ConfigMap their source names.
const indexConfigMapSource = "spec.source.configMap.name"

// transformConfigMap is the manager's cache transform for ConfigMaps: it keeps their metadata
// and the digest of their content (contract.ConfigMapDigest), and drops the content itself, so
// that watching every ConfigMap a source may name costs metadata, not data. It is idempotent, as
// client-go requires: an object it already transformed is returned as it is.
func transformConfigMap(obj any) (any, error) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok || (cm.Data == nil && len(cm.BinaryData) == 1 && cm.BinaryData[digestKey] != nil) {
		return obj, nil
	}
	digest := configMapContentDigest(cm)
	cm.Data, cm.BinaryData = nil, map[string][]byte{digestKey: []byte(digest)}
	cm.ManagedFields = nil
	return cm, nil
}

// cachedContentDigest is the content digest of a ConfigMap read from the manager's cache, or
// computed from its data when it was read from elsewhere.
func cachedContentDigest(cm *corev1.ConfigMap) string {
	if d, ok := cm.BinaryData[digestKey]; ok && cm.Data == nil && len(cm.BinaryData) == 1 {
		return string(d)
	}
	return configMapContentDigest(cm)
}

// configMapContentDigest is the digest of a ConfigMap's files as the kubelet mounts them: each
// data and binaryData key is a file.
func configMapContentDigest(cm *corev1.ConfigMap) string {
	files := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		files[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		files[k] = v
	}
	return contract.ConfigMapDigest(files)
}

// reconcileSource follows a ConfigMap source. A missing ConfigMap stalls the ImageBuild with its
// name, and the ConfigMap watch starts the build once it is created. A content digest other than
// the one of the current build key is recorded in status.polledRevision, which is part of the
// build key: an edited ConfigMap starts a build, as a new commit found by git polling does (and as
// a Deployment rolls when its template changes). The digest, not the resourceVersion, decides, so
// that a label or annotation change builds nothing.
func (r *ImageBuildReconciler) reconcileSource(ctx context.Context, ib *kilnv1.ImageBuild, st *buildState) error {
	src := ib.Spec.Source.ConfigMap
	if src == nil || ib.Spec.Suspend {
		return nil
	}
	cm := &corev1.ConfigMap{}
	err := r.Get(ctx, types.NamespacedName{Namespace: ib.Namespace, Name: src.Name}, cm)
	if apierrors.IsNotFound(err) {
		if lb := ib.Status.LastBuild; lb != nil && lb.CompletionTime == nil {
			return nil // the build under way has its files; it is followed to its end first
		}
		st.stall(kilnv1.ReasonSourceNotFound, fmt.Sprintf("ConfigMap %q (spec.source.configMap.name) not found in namespace %q; the build starts when it is created", src.Name, ib.Namespace))
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading ConfigMap %s (spec.source.configMap.name): %w", src.Name, err)
	}
	digest := cachedContentDigest(cm)
	if digest == ib.Status.PolledRevision {
		return nil
	}
	if ib.Status.LastBuild != nil {
		r.event(ib, corev1.EventTypeNormal, kilnv1.ReasonSourceChanged, "ConfigMap %s changed (content %s); building it", src.Name, shortDigest(digest))
	}
	ib.Status.PolledRevision = digest
	return nil
}

// imageBuildsForConfigMap maps a ConfigMap event to the ImageBuilds whose source names it.
func (r *ImageBuildReconciler) imageBuildsForConfigMap(ctx context.Context, obj client.Object) []reconcile.Request {
	if obj.GetLabels()[LabelRole] == RoleRequest {
		return nil // kiln's own request ConfigMaps are nobody's source
	}
	list := &kilnv1.ImageBuildList{}
	if err := r.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{indexConfigMapSource: obj.GetName()}); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

func configMapSourceName(obj client.Object) []string {
	ib, ok := obj.(*kilnv1.ImageBuild)
	if !ok || ib.Spec.Source.ConfigMap == nil {
		return nil
	}
	return []string{ib.Spec.Source.ConfigMap.Name}
}

// shortDigest is "sha256:" and the first 12 hex digits, for messages.
func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}
