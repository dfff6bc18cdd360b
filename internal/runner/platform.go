package runner

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/measure"
)

// checkPlatforms refuses, before the push, a platform image whose executables are mostly for
// another architecture: more of the executable ELF files of its final filesystem are of other
// machines than of the platform's own. That is what building a platform from a base image that lacks it
// makes (BuildKit v0.33 then uses the base it has, runs its RUN steps with it, and labels the
// result with the requested platform), and such an image fails with "exec format error" on
// every node of that platform. spec.dockerfile.allowPlatformMismatch lets it through.
func (r *run) checkPlatforms(ctx context.Context, m measure.Index, in *inputs, kc authn.Keychain) error {
	if r.req.Spec.Dockerfile.AllowPlatformMismatch {
		return nil
	}
	buildArgs := map[string]string{}
	for _, a := range r.req.Spec.Dockerfile.BuildArgs {
		buildArgs[a.Name] = a.Value
	}
	var problems []string
	for _, img := range m.Images {
		want := platformArch(img.Platform)
		if want == "" {
			continue
		}
		foreign := map[string][]string{} // architecture: paths
		layerOf := map[string]int{}
		native, others := 0, 0
		for p, f := range img.Files {
			switch f.Arch {
			case "":
			case want:
				native++
			default:
				others++
				foreign[f.Arch] = append(foreign[f.Arch], p)
				layerOf[p] = f.Layer
			}
		}
		// Some foreign executables beside the platform's own are a cross toolchain's target
		// libraries, or firmware: only an image whose executables are mostly foreign is the
		// wrong platform's.
		if others == 0 || others <= native {
			continue
		}
		origins := attributeWith(in, r.req.Spec.Dockerfile.Target, buildArgs, img.Layers)
		for arch, paths := range foreign {
			sort.Strings(paths)
			first := paths[0]
			from := ""
			if o, ok := origins[layerOf[first]]; ok && o.createdBy != "" {
				from = fmt.Sprintf(", from layer %d (%s", layerOf[first], r.red.String(o.createdBy))
				if o.line > 0 {
					from += fmt.Sprintf(", Dockerfile:%d", o.line)
				}
				from += ")"
			}
			problems = append(problems, fmt.Sprintf("the %s image holds %d executable(s) for %s (of its %d ELF executables), not %s, such as /%s%s", img.Platform, len(paths), arch, native+others, want, first, from))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	msg := strings.Join(problems, "; ")
	if base := r.baseImage(in, buildArgs); base != "" {
		msg += fmt.Sprintf("; the final stage's base image %s has %s", base, r.basePlatforms(ctx, base, kc))
	}
	return fail(kilnv1.FailureBadInput, "%s: such an image fails with \"exec format error\" on that platform's nodes, so nothing was pushed. Build from a base image that has every platform in spec.dockerfile.platforms (an index), or, if the content is meant for other machines, set spec.dockerfile.allowPlatformMismatch: true", msg)
}

// platformArch is the architecture part of os/arch[/variant]; "" when p has no architecture.
func platformArch(p string) string {
	parts := strings.Split(p, "/")
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}

// baseImage is the image the built stage starts from, as the Dockerfile names it; "" when the
// Dockerfile is not at hand (a git context's) or the stage starts from scratch.
func (r *run) baseImage(in *inputs, buildArgs map[string]string) string {
	if in == nil || in.file == nil {
		return ""
	}
	stage := in.file.Select(r.req.Spec.Dockerfile.Target)
	if stage < 0 || stage >= len(in.file.Stages) {
		return ""
	}
	_, base := stageChain(in, stage)
	if base == "" || base == "scratch" || strings.Contains(base, "$") {
		return ""
	}
	return base
}

// maxBaseConfig bounds the base image config basePlatforms reads (a tenant's registry may
// declare any size).
const maxBaseConfig = 4 << 20

// basePlatforms says which platforms base has, read from its registry: "only linux/amd64 (a
// single image, not an index)", "linux/amd64, linux/arm64", or why it could not be read.
func (r *run) basePlatforms(ctx context.Context, base string, kc authn.Keychain) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The output's transport rules: credentials never travel over plain HTTP unless
	// spec.output.insecure allows it.
	ref, err := name.ParseReference(base, r.nameOptions()...)
	if err != nil {
		return "platforms kiln could not read (" + err.Error() + ")"
	}
	desc, err := remote.Get(ref, r.remoteOptions(ctx, kc)...)
	if err != nil {
		return "platforms kiln could not read (" + err.Error() + ")"
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return "platforms kiln could not read (" + err.Error() + ")"
		}
		if m, err := img.Manifest(); err != nil || m.Config.Size > maxBaseConfig {
			return "platforms kiln could not read (its config is not a small JSON document)"
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return "platforms kiln could not read (" + err.Error() + ")"
		}
		return "only " + cf.OS + "/" + cf.Architecture + " (a single image, not an index of platforms)"
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return "platforms kiln could not read (" + err.Error() + ")"
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return "platforms kiln could not read (" + err.Error() + ")"
	}
	var ps []string
	for _, d := range im.Manifests {
		if d.Platform != nil && !measure.IsAttestation(d) {
			ps = append(ps, measure.PlatformString(*d.Platform))
		}
	}
	return "the platforms " + strings.Join(ps, ", ")
}
