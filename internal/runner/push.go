package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/registry"
)

// keychain serves registry credentials from a docker config (the push Secret).
type keychain struct{ cf *configfile.ConfigFile }

func (k keychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	if k.cf == nil {
		return authn.Anonymous, nil
	}
	host := res.RegistryStr()
	if host == name.DefaultRegistry {
		host = "https://index.docker.io/v1/"
	}
	ac, err := k.cf.GetAuthConfig(host)
	if err != nil {
		return nil, err
	}
	if ac.Username == "" && ac.Password == "" && ac.Auth == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
	}), nil
}

func (r *run) nameOptions() []name.Option {
	if r.req.Spec.Output.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

func (r *run) remoteOptions(ctx context.Context, kc authn.Keychain) []remote.Option {
	rt := remote.DefaultTransport
	if !r.req.Spec.Output.Insecure {
		rt = httpsOnly{rt}
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(rt),
		remote.WithAuthFromKeychain(kc),
		// kiln retries around whole operations, with its own backoff and messages.
		remote.WithRetryBackoff(remote.Backoff{Duration: time.Second, Factor: 1, Steps: 1}),
		remote.WithUserAgent("kiln"),
	}
}

// imageName is the repository with the first tag.
func (r *run) imageName() string {
	out := r.req.Spec.Output
	tag := "latest"
	if len(out.Tags) > 0 {
		tag = out.Tags[0]
	}
	return out.Image + ":" + tag
}

// baselineImage is the image the first tag points to now, for one platform: its compressed
// size, and the digests of its layers.
type baselineImage struct {
	bytes  int64
	layers map[string]bool
}

// baseline returns the image the first tag points to now, per platform; nil when there is none.
func (r *run) baseline(ctx context.Context, kc authn.Keychain) (map[string]baselineImage, error) {
	ref, err := name.NewTag(r.imageName(), r.nameOptions()...)
	if err != nil {
		return nil, err
	}
	var desc *remote.Descriptor
	err = r.withRetry(ctx, "reading the current image "+ref.String(), func() error {
		var err error
		desc, err = remote.Get(ref, r.remoteOptions(ctx, kc)...)
		return err
	})
	if registry.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sizes := map[string]baselineImage{}
	add := func(img v1.Image, platform string) error {
		m, err := img.Manifest()
		if err != nil {
			return err
		}
		base := baselineImage{bytes: measure.ManifestSize(m), layers: map[string]bool{}}
		for _, l := range m.Layers {
			base.layers[l.Digest.String()] = true
		}
		if platform == "" {
			cf, err := img.ConfigFile()
			if err != nil {
				return err
			}
			platform = measure.PlatformString(v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant})
		}
		sizes[platform] = base
		return nil
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, d := range im.Manifests {
			if d.Platform == nil || d.Platform.OS == "unknown" || !d.MediaType.IsImage() {
				continue
			}
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, err
			}
			if err := add(img, measure.PlatformString(*d.Platform)); err != nil {
				return nil, err
			}
		}
		return sizes, nil
	}
	img, err := desc.Image()
	if err != nil {
		return nil, err
	}
	return sizes, add(img, "")
}

// push writes the image (or index) to every tag and returns its digest.
func (r *run) push(ctx context.Context, layout v1.ImageIndex, kc authn.Keychain) (string, error) {
	im, err := layout.IndexManifest()
	if err != nil {
		return "", err
	}
	if len(im.Manifests) == 0 {
		return "", errors.New("the exported layout is empty")
	}
	desc := im.Manifests[0]
	var (
		taggable remote.Taggable
		write    func(name.Reference) error
	)
	if desc.MediaType.IsIndex() {
		idx, err := layout.ImageIndex(desc.Digest)
		if err != nil {
			return "", err
		}
		taggable = idx
		write = func(ref name.Reference) error { return remote.WriteIndex(ref, idx, r.remoteOptions(ctx, kc)...) }
	} else {
		img, err := layout.Image(desc.Digest)
		if err != nil {
			return "", err
		}
		taggable = img
		write = func(ref name.Reference) error { return remote.Write(ref, img, r.remoteOptions(ctx, kc)...) }
	}
	tags := r.req.Spec.Output.Tags
	if len(tags) == 0 {
		tags = []string{"latest"}
	}
	for i, tag := range tags {
		ref, err := name.NewTag(r.req.Spec.Output.Image+":"+tag, r.nameOptions()...)
		if err != nil {
			return "", fail(kilnv1.FailureBadInput, "spec.output: %q is not a valid image reference: %v", r.req.Spec.Output.Image+":"+tag, err)
		}
		start := time.Now()
		err = r.withRetry(ctx, "pushing "+ref.String(), func() error {
			if i == 0 {
				return write(ref)
			}
			return remote.Tag(ref, taggable, r.remoteOptions(ctx, kc)...)
		})
		if err != nil {
			return "", r.pushFailure(ref.String(), err)
		}
		fmt.Fprintf(r.out, "Pushed %s in %s\n", ref, time.Since(start).Round(time.Millisecond))
	}
	return desc.Digest.String(), nil
}

// errPlainHTTP is a request to a registry over plain HTTP that spec.output.insecure does not allow.
var errPlainHTTP = errors.New("the registry answers only plain HTTP, which would carry the push credentials and the image unencrypted: " +
	"serve it over HTTPS, or set spec.output.insecure: true to allow plain HTTP (and untrusted certificates) for it")

// httpsOnly refuses plain-HTTP requests. go-containerregistry falls back to HTTP on its own for
// loopback, ".local" and private (RFC 1918) addresses; kiln allows that only with
// spec.output.insecure, everywhere alike.
type httpsOnly struct{ next http.RoundTripper }

func (h httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		return nil, errPlainHTTP
	}
	return h.next.RoundTrip(req)
}

// plainHTTPRefused reports whether err is httpsOnly's refusal (go-containerregistry may keep only
// its text), or the TLS client's finding that the registry speaks plain HTTP.
func plainHTTPRefused(err error) bool {
	return errors.Is(err, errPlainHTTP) || strings.Contains(err.Error(), errPlainHTTP.Error()) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// pushFailure classifies a push error: refused credentials are the user's to fix, anything
// else (after the retries) may pass.
func (r *run) pushFailure(ref string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		secret := "no push Secret is set (spec.output.pushSecretRef)"
		if ps := r.req.Spec.Output.PushSecretRef; ps != nil {
			secret = fmt.Sprintf("check push Secret %q (spec.output.pushSecretRef)", ps.Name)
		}
		return fail(kilnv1.FailureBadInput, "the registry refused to let kiln push %s (%d): %s", ref, te.StatusCode, secret)
	}
	if plainHTTPRefused(err) {
		return fail(kilnv1.FailureBadInput, "pushing %s: %v", ref, errPlainHTTP)
	}
	return fail(kilnv1.FailurePushFailed, "pushing %s failed after %d attempts: %v", ref, r.pushAttempts, err)
}

// withRetry runs op until it succeeds, fails for good, or the attempts are spent.
func (r *run) withRetry(ctx context.Context, what string, op func() error) error {
	var err error
	wait := r.pushBackoff
	for attempt := 1; attempt <= r.pushAttempts; attempt++ {
		err = op()
		if err == nil || !transient(err) || attempt == r.pushAttempts {
			return err
		}
		fmt.Fprintf(r.out, "%s failed (attempt %d of %d): %v; retrying in %s\n", what, attempt, r.pushAttempts, err, wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
	return err
}

// transient reports whether a registry error may go away: the network, 5xx, 429.
func transient(err error) bool {
	if plainHTTPRefused(err) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests || te.StatusCode == http.StatusRequestTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "EOF")
}
