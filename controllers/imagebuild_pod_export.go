package controllers

import (
	corev1 "k8s.io/api/core/v1"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// RenderBuildPodForTest is the pod kiln creates for the first build of ib (a UID-carrying
// ImageBuild, as stored) in security profile profile, with the given BuildKit and runner images:
// renderBuildPod with a 10 GiB cache claim and the digest of the request kiln would write. It is
// for tests outside this package: test/policy has a real API server admit it through the
// chart's build namespace guard.
func RenderBuildPodForTest(ib *kilnv1.ImageBuild, profile kilnv1.SecurityProfile, buildKitImage, runnerImage string) (*corev1.Pod, error) {
	opts := podOptions{
		BuildKitImage: buildKitImage, RunnerImage: runnerImage, SecurityProfile: profile,
		Build: 1, Attempt: 1, ClaimName: claimName(ib), CacheBytes: 10 << 30,
	}
	req, err := renderRequest(ib, opts)
	if err != nil {
		return nil, err
	}
	opts.RequestDigest = contract.RequestFilesDigest(req.Data)
	return renderBuildPod(ib, opts), nil
}
