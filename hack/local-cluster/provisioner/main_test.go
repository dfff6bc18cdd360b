package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

func claim(size string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cache"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
}

func TestProvisionThenDelete(t *testing.T) {
	root := t.TempDir()
	p := &hostPathProvisioner{root: root, node: "node1", uid: os.Getuid(), gid: os.Getgid()}
	pv, state, err := p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: &storagev1.StorageClass{}, PVName: "pvc-123", PVC: claim("3Gi"), SelectedNodeName: "node1",
	})
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("Provision: %v %s", err, state)
	}
	dir := filepath.Join(root, "pvc-123_ns_cache")
	if pv.Spec.HostPath == nil || pv.Spec.HostPath.Path != dir {
		t.Fatalf("hostPath %+v, want %s", pv.Spec.HostPath, dir)
	}
	if got := pv.Spec.Capacity[corev1.ResourceStorage]; got.String() != "3Gi" {
		t.Errorf("capacity %s", got.String())
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("reclaim policy %s", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if v := pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values; len(v) != 1 || v[0] != "node1" {
		t.Errorf("node affinity %v", v)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o777 || !fi.IsDir() {
		t.Fatalf("directory %s: %v %v", dir, fi, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := p.Delete(context.Background(), pv); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", dir, err)
	}
}

func TestDeleteLeavesOthersAlone(t *testing.T) {
	root := t.TempDir()
	p := &hostPathProvisioner{root: root}
	outside := t.TempDir()
	for _, path := range []string{outside, root, filepath.Join(root, "a", "b"), root + "/../x", "relative"} {
		pv := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: path},
		}}}
		err := p.Delete(context.Background(), pv)
		if _, ignored := err.(*controller.IgnoredError); !ignored {
			t.Errorf("Delete of %s: %v, want IgnoredError", path, err)
		}
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("%s was removed", outside)
	}
}

func TestProvisionRefusesOtherNodesAndBlock(t *testing.T) {
	p := &hostPathProvisioner{root: t.TempDir(), node: "node1", uid: os.Getuid(), gid: os.Getgid()}
	_, state, err := p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: &storagev1.StorageClass{}, PVName: "pvc-1", PVC: claim("1Gi"), SelectedNodeName: "node2",
	})
	if err == nil || state != controller.ProvisioningReschedule {
		t.Errorf("other node: %v %s", err, state)
	}
	block := claim("1Gi")
	mode := corev1.PersistentVolumeBlock
	block.Spec.VolumeMode = &mode
	if _, _, err := p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: &storagev1.StorageClass{}, PVName: "pvc-2", PVC: block, SelectedNodeName: "node1",
	}); err == nil {
		t.Error("a block claim was provisioned")
	}
}
