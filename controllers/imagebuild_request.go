package controllers

import (
	"cmp"
	"slices"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// runnerRequest is the one mapping from an ImageBuild to the runner's request (the contract's
// own types): build number build of ib's spec, with BuildKit's cache emptied first when
// resetCache is set. It copies only what the runner reads, with sizes in bytes.
func runnerRequest(ib *kilnv1.ImageBuild, build int64, resetCache bool) contract.Request {
	s := &ib.Spec
	return contract.Request{
		Namespace: ib.Namespace, Name: ib.Name, Build: build, Generation: ib.Generation, ResetCache: resetCache,
		Previous: requestPrevious(ib),
		Spec: contract.BuildSpec{
			Source:     requestSource(s.Source),
			Dockerfile: requestDockerfile(s.Dockerfile),
			Output: contract.Output{
				Image: s.Output.Image, Tags: slices.Clone(s.Output.Tags), PushSecretRef: secretRef(s.Output.PushSecretRef),
				Compression: s.Output.Compression, Reproducible: s.Output.Reproducible, Insecure: s.Output.Insecure,
				Provenance: cmp.Or(s.Output.Provenance, kilnv1.ProvenanceMax), Signing: requestSigning(s.Output.Signing),
				SBOM: ptr.Deref(s.Output.SBOM, true),
			},
			Budget: requestBudget(s.Budget),
			Advice: requestAdvice(s.Advice),
			Cache:  requestCache(s.Cache),
		},
	}
}

// requestPrevious is the image ib pushed last, and its package sizes when status.size describes
// it: the runner reuses an unchanged platform image's SBOM when it has both.
func requestPrevious(ib *kilnv1.ImageBuild) *contract.PreviousImage {
	st := ib.Status
	if st.Digest == "" {
		return nil
	}
	prev := &contract.PreviousImage{Digest: st.Digest}
	if st.Size == nil || !st.Size.Pushed || st.Size.Image != st.Image {
		return prev // the last measured image is another (the budget refused it): no sizes
	}
	// Bounded as a result bounds them: the request must fit its ConfigMap whatever status holds.
	for _, p := range st.Size.Platforms[:min(len(st.Size.Platforms), contract.MaxPlatforms)] {
		pp := contract.PreviousPlatform{Platform: contract.Truncate(p.Platform, contract.MaxCreatedBy), UnpackagedBytes: p.UnpackagedBytes}
		for _, s := range p.LargestPackages[:min(len(p.LargestPackages), contract.MaxPackagesPerPlatform)] {
			pp.LargestPackages = append(pp.LargestPackages, contract.PackageSize{Name: contract.Truncate(s.Name, contract.MaxCreatedBy), Type: contract.Truncate(s.Type, contract.MaxCreatedBy), Bytes: s.Bytes, Files: s.Files})
		}
		prev.Platforms = append(prev.Platforms, pp)
	}
	return prev
}

// requestCache is the part of spec.cache the runner uses: the registry cache, mode max by default.
func requestCache(c kilnv1.Cache) *contract.Cache {
	if c.Registry == nil {
		return nil
	}
	return &contract.Cache{Registry: &contract.RegistryCache{Image: c.Registry.Image, Mode: cmp.Or(c.Registry.Mode, kilnv1.RegistryCacheMax)}}
}

func requestSource(src kilnv1.Source) contract.Source {
	var out contract.Source
	if g := src.Git; g != nil {
		out.Git = &contract.GitSource{URL: g.URL, Revision: g.Revision, ContextDir: g.ContextDir, SecretRef: secretRef(g.SecretRef), Insecure: g.Insecure}
	}
	if cm := src.ConfigMap; cm != nil {
		out.ConfigMap = &contract.ConfigMapSource{Name: cm.Name}
	}
	if o := src.OCI; o != nil {
		out.OCI = &contract.OCISource{Image: o.Image, PullSecretRef: secretRef(o.PullSecretRef), Insecure: o.Insecure,
			MaxBytes: contract.DefaultMaxSourceBytes, MaxEntries: contract.MaxSourceEntries}
	}
	return out
}

func requestDockerfile(df kilnv1.Dockerfile) contract.Dockerfile {
	out := contract.Dockerfile{Path: df.Path, Inline: df.Inline, Target: df.Target, Platforms: slices.Clone(df.Platforms), AllowPlatformMismatch: df.AllowPlatformMismatch}
	for _, a := range df.BuildArgs {
		out.BuildArgs = append(out.BuildArgs, contract.BuildArg{Name: a.Name, Value: a.Value})
	}
	for _, sec := range df.Secrets {
		out.Secrets = append(out.Secrets, contract.BuildSecret{ID: sec.ID, SecretRef: contract.SecretKeyRef{Name: sec.SecretRef.Name, Key: sec.SecretRef.Key}})
	}
	return out
}

// requestBudget is spec.budget in bytes; Quantity.Value rounds a fraction of a byte up.
func requestBudget(b *kilnv1.Budget) *contract.BudgetSpec {
	if b == nil {
		return nil
	}
	bytes := func(q *resource.Quantity) *int64 {
		if q == nil {
			return nil
		}
		n := q.Value()
		return &n
	}
	out := &contract.BudgetSpec{
		MaxImageSize: bytes(b.MaxImageSize), MaxLayerSize: bytes(b.MaxLayerSize), MaxWastedSize: bytes(b.MaxWastedSize),
		MaxGrowth: bytes(b.MaxGrowth), Enforcement: b.Enforcement,
	}
	if b.MaxLayers != nil {
		n := *b.MaxLayers
		out.MaxLayers = &n
	}
	return out
}

func requestAdvice(a *kilnv1.AdviceSpec) *contract.AdviceSpec {
	if a == nil {
		return nil
	}
	return &contract.AdviceSpec{Ignore: slices.Clone(a.Ignore)}
}

func secretRef(ref *kilnv1.LocalObjectReference) *contract.SecretRef {
	if ref == nil {
		return nil
	}
	return &contract.SecretRef{Name: ref.Name}
}

// requestSigning is spec.output.signing for the runner.
func requestSigning(s *kilnv1.Signing) *contract.Signing {
	if s == nil {
		return nil
	}
	return &contract.Signing{SecretRef: contract.SecretRef{Name: s.SecretRef.Name}}
}
