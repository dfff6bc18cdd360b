package runner

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// statement is the part of an in-toto statement with SLSA v1 provenance that the tests read.
type statement struct {
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	Predicate struct {
		BuildDefinition struct {
			ExternalParameters struct {
				Request struct {
					Frontend string            `json:"frontend"`
					Args     map[string]string `json:"args"`
					Secrets  []struct {
						ID string `json:"id"`
					} `json:"secrets"`
					Root *struct {
						Request struct {
							Args map[string]string `json:"args"`
						} `json:"request"`
					} `json:"root"`
				} `json:"request"`
			} `json:"externalParameters"`
			ResolvedDependencies []struct {
				URI    string            `json:"uri"`
				Digest map[string]string `json:"digest"`
			} `json:"resolvedDependencies"`
		} `json:"buildDefinition"`
		RunDetails struct {
			Builder struct {
				ID string `json:"id"`
			} `json:"builder"`
			Metadata struct {
				BuildKit struct {
					VCS map[string]string `json:"vcs"`
				} `json:"buildkit_metadata"`
			} `json:"metadata"`
		} `json:"runDetails"`
	} `json:"predicate"`
}

// TestProvenanceWithRealBuildKit (issue 15): BuildKit's SLSA provenance on kiln's images, read
// back from the registry. It names kiln's runner as the builder, the base image by digest, the
// source exactly (a ConfigMap's name and content digest; a git URL and its commit) and the
// ImageBuild; a build secret appears by id only, and build-arg values only in max mode.
func TestProvenanceWithRealBuildKit(t *testing.T) {
	e := newEnv(t)
	const secretValue, argValue = "prov-secret-93c1d7", "prov-arg-7f3a55"
	df := "FROM " + e.busybox + "\nARG GREETING\nCOPY hello.txt /\n" +
		"RUN --mount=type=secret,id=token test -s /run/secrets/token && echo \"$GREETING\" > /greeting\n"
	build := func(t *testing.T, name string, mode kilnv1.ProvenanceMode, git *contract.GitSource) (contract.Result, *statement, []byte) {
		t.Helper()
		req := e.request(name, func(s *contract.BuildSpec) {
			s.Output.Provenance = mode
			s.Dockerfile.BuildArgs = []contract.BuildArg{{Name: "GREETING", Value: argValue}}
			s.Dockerfile.Secrets = []contract.BuildSecret{{ID: "token", SecretRef: contract.SecretKeyRef{Name: "api", Key: "token"}}}
			if git != nil {
				s.Source = contract.Source{Git: git}
				s.Dockerfile.Inline = df
			}
		})
		req.Namespace, req.Build, req.Generation = "team-a", 7, 3
		files := map[string]string{"Dockerfile": df, "hello.txt": "from a ConfigMap\n"}
		if git != nil {
			files = nil
		}
		p := e.paths(t, files)
		if err := os.MkdirAll(filepath.Join(p.BuildSecrets, "token"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p.BuildSecrets, "token", contract.BuildSecretFile), []byte(secretValue), 0o400); err != nil {
			t.Fatal(err)
		}
		res, log, encoded := e.runLogged(t, req, p, 5*time.Minute)
		if res.FailureClass != "" {
			t.Fatalf("build failed: %s: %s", res.FailureClass, res.Message)
		}
		for _, s := range []string{secretValue} {
			if strings.Contains(log, s) || strings.Contains(encoded, s) {
				t.Errorf("the secret value is in the runner's log or result")
			}
		}
		d := e.get(t, req.Spec.Output.Image+"@"+res.Digest)
		if mode == kilnv1.ProvenanceNone {
			if d.MediaType.IsIndex() || len(res.Attestations) != 0 {
				t.Errorf("provenance none: want a single manifest without attestations, got %s and %+v", d.MediaType, res.Attestations)
			}
			return res, nil, nil
		}
		idx, err := d.ImageIndex()
		if err != nil {
			t.Fatalf("provenance %s: the pushed image is no index: %v", mode, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var image v1.Descriptor
		for _, m := range im.Manifests {
			if m.Annotations["vnd.docker.reference.type"] == "" {
				image = m
			}
		}
		if len(res.Attestations) != 1 {
			t.Fatalf("result attestations %+v: want one, for the one platform", res.Attestations)
		}
		a := res.Attestations[0]
		if a.Platform != "linux/amd64" || a.Provenance == "" || a.SBOM != "" {
			t.Errorf("result attestation %+v: want linux/amd64 with a provenance statement and no SBOM", a)
		}
		att, err := idx.Image(v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(a.Manifest, "sha256:")})
		if err != nil {
			t.Fatalf("the attestation manifest %s the result names: %v", a.Manifest, err)
		}
		layers, err := att.Layers()
		if err != nil {
			t.Fatal(err)
		}
		var raw []byte
		for _, l := range layers {
			if dg, _ := l.Digest(); dg.String() == a.Provenance {
				rc, err := l.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				raw, _ = io.ReadAll(rc)
				_ = rc.Close()
			}
		}
		var st statement
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatalf("provenance statement %s: %v", a.Provenance, err)
		}
		if st.PredicateType != measure.PredicateSLSAProvenance1 || len(st.Subject) != 1 || "sha256:"+st.Subject[0].Digest["sha256"] != image.Digest.String() {
			t.Errorf("statement %s about %+v: want SLSA v1 provenance about the image %s", st.PredicateType, st.Subject, image.Digest)
		}
		if id := st.Predicate.RunDetails.Builder.ID; id != builderID {
			t.Errorf("builder.id %q, want %q", id, builderID)
		}
		base := false
		for _, dep := range st.Predicate.BuildDefinition.ResolvedDependencies {
			if strings.Contains(dep.URI, "busybox") && dep.Digest["sha256"] != "" {
				base = true
			}
		}
		if !base {
			t.Errorf("no base image by digest among the resolved dependencies: %+v", st.Predicate.BuildDefinition.ResolvedDependencies)
		}
		params := st.Predicate.BuildDefinition.ExternalParameters.Request
		if params.Root == nil {
			t.Fatalf("the provenance has no root request: %s", raw)
		}
		root := params.Root.Request.Args
		for k, want := range map[string]string{"kiln:imagebuild": "team-a/" + name, "kiln:build": "7", "kiln:generation": "3"} {
			if root[k] != want {
				t.Errorf("root argument %s = %q, want %q (all: %v)", k, root[k], want, root)
			}
		}
		var ids []string
		for _, s := range params.Secrets {
			ids = append(ids, s.ID)
		}
		// BuildKit's git source also names the ids it would take git credentials from.
		if token := slices.Contains(ids, "token"); mode == kilnv1.ProvenanceMax && !token || mode == kilnv1.ProvenanceMin && len(ids) != 0 {
			t.Errorf("provenance %s, secret ids %v: want the id token in max mode, none in min mode", mode, ids)
		}
		if strings.Contains(string(raw), secretValue) {
			t.Error("the build secret's value is in the provenance")
		}
		if got := strings.Contains(string(raw), argValue); got != (mode == kilnv1.ProvenanceMax) {
			t.Errorf("provenance %s: the build-arg value is there: %v", mode, got)
		}
		return res, &st, raw
	}

	t.Run("max, ConfigMap source", func(t *testing.T) {
		res, st, _ := build(t, "prov-max", kilnv1.ProvenanceMax, nil)
		root := st.Predicate.BuildDefinition.ExternalParameters.Request.Root.Request.Args
		if root["kiln:source"] != "configmap:src" || root["kiln:source-digest"] != res.Revision || res.Revision == "" {
			t.Errorf("ConfigMap source %q digest %q, want configmap:src and the result's revision %q", root["kiln:source"], root["kiln:source-digest"], res.Revision)
		}
		if args := st.Predicate.BuildDefinition.ExternalParameters.Request.Args; args["build-arg:GREETING"] != argValue {
			t.Errorf("max: build arguments %v lack GREETING's value", args)
		}
	})
	t.Run("min", func(t *testing.T) { build(t, "prov-min", kilnv1.ProvenanceMin, nil) })
	t.Run("none", func(t *testing.T) { build(t, "prov-none", kilnv1.ProvenanceNone, nil) })
	t.Run("max, git source", func(t *testing.T) {
		work, git := testenv.GitRepo(t, map[string]string{"app/hello.txt": "from git\n"})
		git("tag", "v1")
		repo := filepath.Join(t.TempDir(), "app.git")
		git("clone", "-q", "--bare", work, repo)
		addr := testenv.StartGitDaemon(t, filepath.Dir(repo))
		url := "git://" + addr + "/app.git"
		res, st, raw := build(t, "prov-git", kilnv1.ProvenanceMax, &contract.GitSource{URL: url, Revision: "v1", ContextDir: "app", Insecure: true})
		if vcs := st.Predicate.RunDetails.Metadata.BuildKit.VCS; vcs["source"] != url || vcs["revision"] != res.Revision || len(res.Revision) != 40 {
			t.Errorf("VCS metadata %v: want source %s and the commit %s\n%s", vcs, url, res.Revision, raw)
		}
		found := false
		for _, dep := range st.Predicate.BuildDefinition.ResolvedDependencies {
			if strings.Contains(dep.URI, addr+"/app.git") && dep.Digest["sha1"] == res.Revision {
				found = true
			}
		}
		if !found {
			t.Errorf("the git source at commit %s is not a resolved dependency: %+v", res.Revision, st.Predicate.BuildDefinition.ResolvedDependencies)
		}
	})
}
