package runner

import (
	"context"
	"crypto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/registry"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// keyPair is a cosign key pair as `cosign generate-key-pair` writes it.
type keyPair struct{ key, pub, password []byte }

func newKeyPair(t *testing.T, password string) keyPair {
	t.Helper()
	kb, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return []byte(password), nil })
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{key: kb.PrivateBytes, pub: kb.PublicBytes, password: []byte(password)}
}

// secretDir writes the signing Secret's keys as the kubelet mounts them; an empty value is left out.
func (k keyPair) secretDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for f, v := range map[string][]byte{contract.SigningKey: k.key, contract.SigningPassword: k.password, contract.SigningPub: k.pub} {
		if v == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, f), v, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSigningWithRealBuildKit (issue 15): with spec.output.signing, the runner signs the pushed
// image (the index and each platform image) and its provenance in cosign's format; cosign's
// own verification accepts them with the public key, offline, and refuses another key. A key
// that cannot be loaded fails the build as BadInput before anything is pushed, naming the
// Secret and the key and never the password.
func TestSigningWithRealBuildKit(t *testing.T) {
	e := newEnv(t)
	const password = "kiln-signing-pw-5d3e9a"
	pair := newKeyPair(t, password)
	df := "FROM " + e.busybox + "\nCOPY hello.txt /\n"
	files := map[string]string{"Dockerfile": df, "hello.txt": "signed\n"}
	build := func(t *testing.T, img string, secretDir string, mutate func(*contract.BuildSpec)) (contract.Result, string, string) {
		t.Helper()
		req := e.request(img, func(s *contract.BuildSpec) {
			s.Output.Provenance = kilnv1.ProvenanceMax
			s.Output.Signing = &contract.Signing{SecretRef: contract.SecretRef{Name: "cosign"}}
			if mutate != nil {
				mutate(s)
			}
		})
		p := e.paths(t, files)
		p.SigningSecret = secretDir
		return e.runLogged(t, req, p, 5*time.Minute)
	}

	t.Run("signed and attested; cosign verifies offline", func(t *testing.T) {
		res, log, encoded := build(t, "signed", pair.secretDir(t), func(s *contract.BuildSpec) { s.Output.SBOM = true })
		if res.FailureClass != "" {
			t.Fatalf("build failed: %s: %s", res.FailureClass, res.Message)
		}
		if strings.Contains(log, password) || strings.Contains(encoded, password) {
			t.Error("the password is in the log or the result")
		}
		s := res.Signature
		if s == nil || !strings.HasSuffix(s.Signature, ":"+strings.Replace(res.Digest, ":", "-", 1)+".sig") || !strings.HasSuffix(s.Attestations, ".att") || len(s.KeyID) != 64 {
			t.Fatalf("result signature %+v for digest %s", s, res.Digest)
		}
		ref, err := name.NewDigest(res.Image, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		verify := func(pub []byte) error {
			pk, err := cryptoutils.UnmarshalPEMToPublicKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			v, err := signature.LoadVerifier(pk, crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			co := &cosign.CheckOpts{SigVerifier: v, IgnoreTlog: true, IgnoreSCT: true, ClaimVerifier: cosign.SimpleClaimVerifier,
				RegistryClientOpts: []ociremote.Option{ociremote.WithRemoteOptions(e.reg.RemoteOptions(context.Background())...)}}
			if _, _, err := cosign.VerifyImageSignatures(context.Background(), ref, co); err != nil {
				return err
			}
			co.ClaimVerifier = cosign.IntotoSubjectClaimVerifier
			atts, _, err := cosign.VerifyImageAttestations(context.Background(), ref, co)
			if err == nil && len(atts) != 2 {
				t.Errorf("%d verified attestations, want the provenance and the SBOM", len(atts))
			}
			return err
		}
		if err := verify(pair.pub); err != nil {
			t.Errorf("cosign's verification with the public key: %v", err)
		}
		if err := verify(newKeyPair(t, "other").pub); err == nil {
			t.Error("another key verifies the signature")
		}
		if cli := os.Getenv("COSIGN"); cli != "" {
			pub := filepath.Join(t.TempDir(), "cosign.pub")
			if err := os.WriteFile(pub, pair.pub, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"verify", "--key", pub, "--insecure-ignore-tlog", "--allow-insecure-registry", "--allow-http-registry", "--output", "text", res.Image},
				{"verify-attestation", "--key", pub, "--insecure-ignore-tlog", "--allow-insecure-registry", "--allow-http-registry", "--type", "slsaprovenance1", "--output", "text", res.Image},
				{"verify-attestation", "--key", pub, "--insecure-ignore-tlog", "--allow-insecure-registry", "--allow-http-registry", "--type", "spdxjson", "--output", "text", res.Image},
			} {
				out, err := exec.Command(cli, args...).CombinedOutput()
				if err != nil {
					t.Errorf("cosign %s: %v\n%s", args[0], err, out)
				}
			}
		} else if testenv.InCI() {
			t.Error("COSIGN is not set: the Makefile builds the cosign CLI into bin/ and names it")
		}

	})

	t.Run("a rebuild of the same image adds no second signature", func(t *testing.T) {
		// Without provenance a cached rebuild gives the same digest (with it, the new
		// provenance gives a new index).
		none := func(s *contract.BuildSpec) { s.Output.Provenance = kilnv1.ProvenanceNone }
		first, _, _ := build(t, "signed-twice", pair.secretDir(t), none)
		again, _, _ := build(t, "signed-twice", pair.secretDir(t), none)
		if first.FailureClass != "" || again.FailureClass != "" || first.Digest != again.Digest || again.Signature == nil || again.Signature.Attestations != "" {
			t.Fatalf("builds %s/%s, digests %s %s, signature %+v", first.FailureClass, again.FailureClass, first.Digest, again.Digest, again.Signature)
		}
		ref, err := name.NewTag(again.Signature.Signature, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref, e.reg.RemoteOptions(context.Background())...)
		if err != nil {
			t.Fatal(err)
		}
		if layers, err := img.Layers(); err != nil || len(layers) != 1 {
			t.Errorf("the signature image has %d layers (%v), want 1", len(layers), err)
		}
	})

	for _, tc := range []struct {
		name string
		pair keyPair
		want string
	}{
		{"wrong password", keyPair{key: pair.key, pub: pair.pub, password: []byte("not-" + password)}, "key cosign.key cannot be loaded with cosign.password"},
		{"no password key", keyPair{key: pair.key}, "is missing or has no key cosign.password"},
		{"not a key", keyPair{key: []byte("-----BEGIN NOTHING-----\n" + password + "\n-----END NOTHING-----\n"), password: pair.password}, "key cosign.key cannot be loaded"},
		{"another key's public key", keyPair{key: pair.key, password: pair.password, pub: newKeyPair(t, "x").pub}, "key cosign.pub is not the public key of cosign.key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := "refused-" + strings.NewReplacer(" ", "-", "'", "").Replace(tc.name)
			res, log, encoded := build(t, img, tc.pair.secretDir(t), nil)
			if res.FailureClass != kilnv1.FailureBadInput || !strings.Contains(res.Message, tc.want) || !strings.Contains(res.Message, `signing Secret "cosign" (spec.output.signing.secretRef)`) {
				t.Errorf("got %s: %s; want BadInput naming the Secret and %q", res.FailureClass, res.Message, tc.want)
			}
			for _, v := range []string{password, "not-" + password} {
				if strings.Contains(log, v) || strings.Contains(encoded, v) {
					t.Errorf("a password is in the log or the result")
				}
			}
			repo, err := name.NewRepository(e.reg.Addr+"/test/"+img, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			tags, err := remote.List(repo, e.reg.RemoteOptions(context.Background())...)
			if err != nil && !registry.IsNotFound(err) {
				t.Fatal(err)
			}
			if len(tags) > 0 {
				t.Errorf("pushed %v though the key could not be loaded", tags)
			}
		})
	}
}
