package runner

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/bundle"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/units"
)

// fetchOCIContext pulls spec.source.oci's artifact and unpacks its one layer into the work
// directory as the build context (bundle.Unpack refuses what could leave it, and more than the
// manager's limits). It runs while buildkitd starts. The revision built is the artifact's
// digest.
func (r *run) fetchOCIContext(ctx context.Context, in *inputs, p Paths, o *contract.OCISource) error {
	start := time.Now()
	var opts []name.Option
	if o.Insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewDigest(o.Image, opts...)
	if err != nil {
		return fail(kilnv1.FailureBadInput, "spec.source.oci.image %q: %v", o.Image, err)
	}
	cf := in.sourceConfig
	if cf == nil {
		cf = in.dockerConfig
	}
	rt := remote.DefaultTransport
	if !o.Insecure {
		rt = httpsOnly{rt}
	}
	var desc *remote.Descriptor
	err = r.withRetry(ctx, "reading the source "+ref.String(), func() error {
		desc, err = remote.Get(ref, remote.WithContext(ctx), remote.WithTransport(rt), remote.WithAuthFromKeychain(keychain{cf: cf}), remote.WithUserAgent("kiln"))
		return err
	})
	if err != nil {
		return r.sourcePullFailure(ref.String(), o, err)
	}
	img, err := desc.Image()
	if err != nil {
		return fail(kilnv1.FailureBadInput, "spec.source.oci.image %s is not an image manifest (%s): push the context as an OCI artifact (kiln build, or flux push artifact)", ref, desc.MediaType)
	}
	layer, err := bundle.FromImage(img)
	if err != nil {
		return fail(kilnv1.FailureBadInput, "spec.source.oci.image %s: %v", ref, err)
	}
	defer func() { _ = layer.Close() }()
	dir := filepath.Join(p.Work, "context")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	stats, err := bundle.Unpack(layer, dir, bundle.Limits{MaxBytes: o.MaxBytes, MaxEntries: o.MaxEntries})
	if err != nil {
		var ee *bundle.EntryError
		if errors.As(err, &ee) {
			return fail(kilnv1.FailureBadInput, "spec.source.oci.image %s: %v", ref, err)
		}
		if transient(err) {
			return fail(kilnv1.FailureSourceUnavailable, "reading the source %s: %v (a transient failure, which kiln retries)", ref, err)
		}
		return fail(kilnv1.FailureBadInput, "spec.source.oci.image %s: %v", ref, err)
	}
	in.contextDir, in.contextDigest = dir, desc.Digest.String()
	in.contextName = "OCI artifact " + ref.String()
	fmt.Fprintf(r.out, "Source %s: %d entries, %s, unpacked in %s\n", ref, stats.Entries, units.Bytes(stats.Bytes), time.Since(start).Round(time.Millisecond))
	return nil
}

// sourcePullFailure classifies a failure to read the source artifact: not found and refused
// credentials are the user's to fix, anything else (after the retries) may pass.
func (r *run) sourcePullFailure(ref string, o *contract.OCISource, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusNotFound:
			return fail(kilnv1.FailureBadInput, "spec.source.oci.image %s: the registry has no such artifact (404)", ref)
		case http.StatusUnauthorized, http.StatusForbidden:
			secret := "no pull Secret is set (spec.source.oci.pullSecretRef), and the push Secret's credentials were refused or absent"
			if o.PullSecretRef != nil {
				secret = fmt.Sprintf("check pull Secret %q (spec.source.oci.pullSecretRef)", o.PullSecretRef.Name)
			}
			return fail(kilnv1.FailureBadInput, "the registry refused to let kiln read %s (%d): %s", ref, te.StatusCode, secret)
		}
	}
	if plainHTTPRefused(err) {
		return fail(kilnv1.FailureBadInput, "reading %s: the registry answers plain HTTP; serve it over HTTPS, or set spec.source.oci.insecure: true", ref)
	}
	if transient(err) {
		return fail(kilnv1.FailureSourceUnavailable, "reading the source %s failed after %d attempts: %v (a transient failure, which kiln retries)", ref, r.pushAttempts, err)
	}
	return fail(kilnv1.FailureBadInput, "reading the source %s: %v", ref, err)
}
