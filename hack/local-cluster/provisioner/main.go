// Command provisioner is the local cluster's dynamic volume provisioner: hack/local-cluster/up runs
// it on the host (with the admin kubeconfig) for the life of the cluster.
//
// It serves the StorageClasses whose provisioner is -name (kiln.dev/local-hostpath; up makes one,
// "local", the default class). For each claim of such a class it makes a directory under -root
// (owned by -uid:-gid, mode 0777: hostPath volumes ignore fsGroup) and a hostPath PersistentVolume
// of the requested size, pinned to the node the scheduler chose and pre-bound to the claim (claimRef);
// the PV controller completes the binding. When the claim is deleted and the PV is Released with
// reclaim policy Delete, the directory is deleted and then the PV.
//
// The controller is sigs.k8s.io/sig-storage-lib-external-provisioner's (the machinery the
// external provisioners of real clusters use: claim and volume informers, retries, events on the
// claim); this file is only the storage side. Sizes are not enforced: a hostPath volume is a
// directory on the node's disk.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// hostnameLabel is the node label the volumes' node affinity names.
const hostnameLabel = "kubernetes.io/hostname"

// hostPathProvisioner makes and removes the volumes' directories.
type hostPathProvisioner struct {
	root     string // every volume's directory is a direct child of root
	node     string // the node for claims without a selected node (Immediate binding)
	uid, gid int
}

var _ controller.Provisioner = (*hostPathProvisioner)(nil)

// Provision makes the claim's directory and returns its PV (the library sets claimRef, the
// provisioned-by annotation and the class, and creates it).
func (p *hostPathProvisioner) Provision(ctx context.Context, o controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	claim := o.PVC
	if claim.Spec.Selector != nil {
		return nil, controller.ProvisioningFinished, errors.New("claims with a selector are not supported by the local hostPath provisioner")
	}
	if claim.Spec.VolumeMode != nil && *claim.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, errors.New("block volumes are not supported by the local hostPath provisioner")
	}
	size, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok || size.IsZero() {
		return nil, controller.ProvisioningFinished, errors.New("the claim requests no storage size")
	}
	node := o.SelectedNodeName
	if node == "" {
		node = p.node
	}
	if node == "" {
		return nil, controller.ProvisioningFinished, errors.New("no node selected for the claim and the provisioner has no -node")
	}
	if node != p.node && p.node != "" {
		// Only this machine's node has the directory.
		return nil, controller.ProvisioningReschedule, fmt.Errorf("the local hostPath provisioner makes volumes on node %s only, not %s", p.node, node)
	}

	dir, err := p.dir(o.PVName, claim)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if err := os.Chown(dir, p.uid, p.gid); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if err := os.Chmod(dir, 0o777); err != nil { // past the umask
		return nil, controller.ProvisioningFinished, err
	}

	reclaim := corev1.PersistentVolumeReclaimDelete
	if o.StorageClass.ReclaimPolicy != nil {
		reclaim = *o.StorageClass.ReclaimPolicy
	}
	modes := claim.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	dirType := corev1.HostPathDirectory
	fs := corev1.PersistentVolumeFilesystem
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:   o.PVName,
			Labels: map[string]string{"kiln.dev/local-hostpath": "true"},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: reclaim,
			MountOptions:                  o.StorageClass.MountOptions,
			VolumeMode:                    &fs,
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &dirType},
			},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
					{Key: hostnameLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{node}},
				}}},
			}},
		},
	}
	klog.FromContext(ctx).Info("provisioned", "claim", klog.KObj(claim), "pv", o.PVName, "size", size.String(), "dir", dir)
	return pv, controller.ProvisioningFinished, nil
}

// Delete removes the PV's directory (the library then deletes the PV). PVs whose path is not a
// directory this provisioner made are left alone.
func (p *hostPathProvisioner) Delete(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Spec.HostPath == nil {
		return &controller.IgnoredError{Reason: "not a hostPath volume"}
	}
	dir := pv.Spec.HostPath.Path
	if !p.owns(dir) {
		return &controller.IgnoredError{Reason: fmt.Sprintf("%s is not under %s", dir, p.root)}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	klog.FromContext(ctx).Info("deleted", "pv", pv.Name, "dir", dir)
	return nil
}

// dir is the volume's directory: root/<pv name>_<namespace>_<claim>, so that a look at the
// directory says whose data it is. Names of namespaces and claims have no "/" or "_".
func (p *hostPathProvisioner) dir(pvName string, claim *corev1.PersistentVolumeClaim) (string, error) {
	base := pvName + "_" + claim.Namespace + "_" + claim.Name
	if strings.ContainsAny(base, "/\x00") || strings.HasPrefix(base, ".") {
		return "", fmt.Errorf("unusable volume name %q", base)
	}
	return filepath.Join(p.root, base), nil
}

// owns says whether dir is a direct child of root.
func (p *hostPathProvisioner) owns(dir string) bool {
	return filepath.IsAbs(dir) && filepath.Clean(dir) == dir && filepath.Dir(dir) == p.root && filepath.Base(dir) != "."
}

func main() {
	var (
		kubeconfig = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
		name       = flag.String("name", "kiln.dev/local-hostpath", "provisioner name: serve the StorageClasses with this provisioner")
		root       = flag.String("root", "", "directory under which volumes are made (required)")
		node       = flag.String("node", "", "the node whose disk root is on: volumes are pinned to it")
		uid        = flag.Int("uid", 1000, "owner of new volume directories")
		gid        = flag.Int("gid", 1000, "group of new volume directories")
	)
	klog.InitFlags(nil)
	flag.Parse()
	logger := klog.Background()
	if *root == "" || !filepath.IsAbs(*root) {
		logger.Error(nil, "-root must be an absolute directory")
		os.Exit(2)
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		logger.Error(err, "making the volumes' root")
		os.Exit(1)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		logger.Error(err, "loading the kubeconfig")
		os.Exit(1)
	}
	cfg.UserAgent = "kiln-local-hostpath-provisioner"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		logger.Error(err, "making the client")
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx = klog.NewContext(ctx, logger)
	p := &hostPathProvisioner{root: filepath.Clean(*root), node: *node, uid: *uid, gid: *gid}
	pc := controller.NewProvisionController(ctx, client, *name, p,
		// One process per cluster, started by up: no leader election.
		controller.LeaderElection(false),
		// Retry a failed provisioning or deletion every 15s, not with backoff up to 1000s.
		controller.ExponentialBackOffOnError(false),
	)
	logger.Info("serving", "provisioner", *name, "root", p.root, "node", p.node)
	pc.Run(ctx)
	logger.Info("stopped")
}
