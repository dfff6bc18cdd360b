package runner

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/dockerfile"
)

// Paths are where the runner finds its inputs; the defaults are the build pod's mounts.
type Paths struct {
	Context      string
	Work         string
	PushSecret   string
	GitSecret    string
	BuildSecrets string
}

// DefaultPaths are the build pod's mount points.
func DefaultPaths() Paths {
	return Paths{
		Context: contract.ContextDir, Work: contract.WorkDir, PushSecret: contract.PushSecretDir,
		GitSecret: contract.GitSecretDir, BuildSecrets: contract.BuildSecretsDir,
	}
}

// failure is an error with a class; its message names what the user must fix.
type failure struct {
	class kilnv1.FailureClass
	msg   string
}

func (f *failure) Error() string { return f.msg }

func fail(class kilnv1.FailureClass, format string, args ...any) error {
	return &failure{class: class, msg: fmt.Sprintf(format, args...)}
}

// classOf returns the failure class of err, InternalError when it has none.
func classOf(err error) kilnv1.FailureClass {
	var f *failure
	if errors.As(err, &f) {
		return f.class
	}
	return kilnv1.FailureInternal
}

// inputs are the build's files and credentials, read and checked before anything is built.
type inputs struct {
	// contextDir is the local context (ConfigMap), copied without the volume's symlinks.
	contextDir string
	// contextDigest is the ConfigMap context's contract.ConfigMapDigest: the revision built.
	contextDigest string
	// gitRef is BuildKit's git context: url#ref:subdir.
	gitRef string
	// gitURL and gitSecret are spec.source.git's url and secretRef name ("" when none), for
	// messages about a fetch that failed.
	gitURL, gitSecret string
	// dockerfileDir and dockerfileName locate the Dockerfile when it is local (inline, or
	// inside a local context); dockerfileDir is empty when BuildKit reads it from git.
	dockerfileDir  string
	dockerfileName string
	// dockerfile is the Dockerfile's text when it is local; file is its model, and stages
	// file's stages.
	dockerfile []byte
	file       *dockerfile.File
	stages     []*dockerfile.Stage
	// secrets are BuildKit session secrets: build secrets by id, and the git token.
	secrets map[string][]byte
	// sshKey is the git SSH private key file, if any.
	sshKey string
	// dockerConfig holds registry credentials, for pulls (BuildKit) and the push.
	dockerConfig *configfile.ConfigFile
}

// prepare reads and checks everything the spec refers to. Every error it returns is BadInput,
// and names the field, Secret or Dockerfile line at fault.
func prepare(req contract.Request, p Paths) (*inputs, error) {
	spec := req.Spec
	in := &inputs{secrets: map[string][]byte{}, dockerfileName: "Dockerfile"}
	if spec.Dockerfile.Path != "" {
		in.dockerfileName = spec.Dockerfile.Path
	}

	switch {
	case spec.Source.ConfigMap != nil:
		dir, digest, err := copyConfigMap(p.Context, filepath.Join(p.Work, "context"))
		if err != nil {
			return nil, fail(kilnv1.FailureBadInput, "ConfigMap %q (spec.source.configMap.name) in namespace %q: %v", spec.Source.ConfigMap.Name, req.Namespace, err)
		}
		in.contextDir, in.contextDigest = dir, digest
	case spec.Source.Git != nil:
		g := spec.Source.Git
		in.gitRef, in.gitURL = g.URL, g.URL
		if g.Revision != "" || g.ContextDir != "" {
			in.gitRef += "#" + g.Revision
			if g.ContextDir != "" {
				in.gitRef += ":" + strings.Trim(g.ContextDir, "/")
			}
		}
		if g.SecretRef != nil {
			in.gitSecret = g.SecretRef.Name
			if err := in.readGitSecret(p.GitSecret, g.SecretRef.Name, req.Namespace); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fail(kilnv1.FailureBadInput, "spec.source must set git or configMap")
	}

	switch {
	case spec.Dockerfile.Inline != "":
		in.dockerfileDir = filepath.Join(p.Work, "dockerfile")
		in.dockerfileName = "Dockerfile"
		in.dockerfile = []byte(spec.Dockerfile.Inline)
		if err := os.MkdirAll(in.dockerfileDir, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(in.dockerfileDir, in.dockerfileName), in.dockerfile, 0o644); err != nil {
			return nil, err
		}
	case in.contextDir != "":
		in.dockerfileDir = in.contextDir
		dt, err := os.ReadFile(filepath.Join(in.contextDir, in.dockerfileName))
		if err != nil {
			return nil, fail(kilnv1.FailureBadInput, "the context (ConfigMap %q) has no %s (spec.dockerfile.path); its files are: %s",
				spec.Source.ConfigMap.Name, in.dockerfileName, listFiles(in.contextDir))
		}
		in.dockerfile = dt
	}
	if in.dockerfile != nil {
		if err := in.parseDockerfile(spec.Dockerfile.Target); err != nil {
			return nil, err
		}
	}

	if err := in.readBuildSecrets(spec.Dockerfile.Secrets, p.BuildSecrets, req.Namespace); err != nil {
		return nil, err
	}
	if ps := spec.Output.PushSecretRef; ps != nil {
		f := filepath.Join(p.PushSecret, ".dockerconfigjson")
		dt, err := os.ReadFile(f)
		if err != nil {
			return nil, fail(kilnv1.FailureBadInput, "push Secret %q (spec.output.pushSecretRef) is missing in namespace %q or has no .dockerconfigjson key: it must be a kubernetes.io/dockerconfigjson Secret", ps.Name, req.Namespace)
		}
		cf, err := config.LoadFromReader(bytes.NewReader(dt))
		if err != nil {
			return nil, fail(kilnv1.FailureBadInput, "push Secret %q (spec.output.pushSecretRef): .dockerconfigjson is not a docker config: %v", ps.Name, err)
		}
		in.dockerConfig = cf
	} else {
		in.dockerConfig = configfile.New("")
	}
	return in, nil
}

// parseDockerfile parses the Dockerfile with BuildKit's own parser (dockerfile.Parse), so that
// syntax errors, an unknown target stage and undeclared secrets fail with their line before
// anything runs.
func (in *inputs) parseDockerfile(target string) error {
	f, err := dockerfile.Parse(in.dockerfile, target, nil)
	if errors.Is(err, dockerfile.ErrNoFrom) {
		return fail(kilnv1.FailureBadInput, "%s has no FROM instruction", in.dockerfileName)
	}
	if err != nil {
		return fail(kilnv1.FailureBadInput, "%s", dockerfile.Describe(in.dockerfileName, err))
	}
	in.file, in.stages = f, f.Stages
	if target != "" && f.StageIndex(target) < 0 {
		return fail(kilnv1.FailureBadInput, "spec.dockerfile.target %q is not a stage of %s (its named stages: %s)", target, in.dockerfileName, strings.Join(f.Names(), ", "))
	}
	return nil
}

func (in *inputs) readBuildSecrets(specs []contract.BuildSecret, dir, namespace string) error {
	for _, s := range specs {
		dt, err := os.ReadFile(filepath.Join(dir, s.ID, contract.BuildSecretFile))
		if err != nil {
			return fail(kilnv1.FailureBadInput, "build secret %q (spec.dockerfile.secrets): Secret %q in namespace %q is missing or has no key %q",
				s.ID, s.SecretRef.Name, namespace, s.SecretRef.Key)
		}
		in.secrets[s.ID] = dt
	}
	if in.stages == nil {
		return nil
	}
	uses := in.file.Secrets()
	ids := make([]string, 0, len(uses))
	for id := range uses {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	provided := map[string]bool{}
	for _, s := range specs {
		provided[s.ID] = true
	}
	for _, id := range ids {
		switch {
		case provided[id]:
		case strings.HasPrefix(id, "GIT_AUTH_"):
			return fail(kilnv1.FailureBadInput, "%s:%d mounts secret id=%s: kiln offers the git Secret's token under such ids for fetching the source only, and no step may mount it (name a build secret in spec.dockerfile.secrets)", in.dockerfileName, uses[id], id)
		case !provided[id]:
			return fail(kilnv1.FailureBadInput, "%s:%d mounts secret id=%s, which spec.dockerfile.secrets does not provide", in.dockerfileName, uses[id], id)
		}
	}
	return nil
}

// readGitSecret reads the git Secret mounted at dir: a token, offered to BuildKit for the
// source's host only, or an SSH key.
//
// BuildKit looks a git token up as the secret GIT_AUTH_TOKEN.<host> first and GIT_AUTH_TOKEN
// second, for every git fetch of the build (source/git's authSecretNames), a Dockerfile's
// ADD <git URL> included. Offered under the host's name alone, the token goes to the source's
// host and to no other.
func (in *inputs) readGitSecret(dir, name, namespace string) error {
	if dt, err := os.ReadFile(filepath.Join(dir, "token")); err == nil {
		u, err := url.Parse(in.gitURL)
		if err != nil || u.Host == "" {
			return fail(kilnv1.FailureBadInput, "git Secret %q (spec.source.git.secretRef) holds a token, which only an http(s) URL can use, not %s: use an ssh-privatekey for ssh", name, redactURL(in.gitURL))
		}
		in.secrets[gitTokenSecretID(u.Host)] = bytes.TrimSpace(dt)
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "ssh-privatekey")); err == nil {
		in.sshKey = filepath.Join(dir, "ssh-privatekey")
		return nil
	}
	return fail(kilnv1.FailureBadInput, "git Secret %q (spec.source.git.secretRef) is missing in namespace %q or has neither a token nor an ssh-privatekey key", name, namespace)
}

// gitTokenSecretID is the BuildKit secret id under which the git token is offered for host
// (host[:port], as BuildKit takes it from the URL).
func gitTokenSecretID(host string) string { return "GIT_AUTH_TOKEN." + host }

// copyConfigMap copies a mounted ConfigMap into dst as plain files: the volume's ..data
// symlinks would otherwise end up in the build context.
func copyConfigMap(src, dst string) (dir, digest string, err error) {
	entries, err := os.ReadDir(src)
	if err != nil || len(entries) == 0 {
		return "", "", errors.New("it is missing or empty")
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", "", err
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		info, err := os.Stat(filepath.Join(src, e.Name())) // follows the volume's symlinks
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		dt, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return "", "", err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), dt, 0o644); err != nil {
			return "", "", err
		}
		files[e.Name()] = dt
	}
	if len(files) == 0 {
		return "", "", errors.New("it has no files")
	}
	return dst, contract.ConfigMapDigest(files), nil
}

func listFiles(dir string) string {
	var names []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return nil
	})
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

// secretValues lists every credential the build holds, for redaction.
func (in *inputs) secretValues() []string {
	var out []string
	for _, v := range in.secrets {
		out = append(out, string(v))
	}
	if in.dockerConfig != nil {
		for _, ac := range in.dockerConfig.AuthConfigs {
			out = append(out, ac.Password, ac.Auth, ac.IdentityToken, ac.RegistryToken)
		}
	}
	return out
}
