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
	"github.com/moby/buildkit/util/gitutil"
	"golang.org/x/crypto/ssh"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/dockerfile"
)

// Paths are where the runner finds its inputs; the defaults are the build pod's mounts.
type Paths struct {
	Context       string
	Work          string
	PushSecret    string
	GitSecret     string
	BuildSecrets  string
	SigningSecret string
	SourceSecret  string
}

// DefaultPaths are the build pod's mount points.
func DefaultPaths() Paths {
	return Paths{
		Context: contract.ContextDir, Work: contract.WorkDir, PushSecret: contract.PushSecretDir,
		GitSecret: contract.GitSecretDir, BuildSecrets: contract.BuildSecretsDir, SigningSecret: contract.SigningSecretDir,
		SourceSecret: contract.SourceSecretDir,
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
	// contextDigest is the revision built of a context kiln hands to BuildKit: a ConfigMap's
	// contract.ConfigMapDigest, an OCI artifact's manifest digest.
	contextDigest string
	// contextName names that context in messages: ConfigMap "app-src", OCI artifact repo@digest.
	contextName string
	// sourceConfig is spec.source.oci.pullSecretRef's docker config; nil without one.
	sourceConfig *configfile.ConfigFile
	// gitURL, gitRevision and gitSubdir are spec.source.git's url, revision and contextDir
	// (without its slashes); gitURL is "" for a ConfigMap context. gitSecret is the name of
	// spec.source.git.secretRef ("" when none), for messages.
	gitURL, gitRevision, gitSubdir, gitSecret string
	// gitInsecure is spec.source.git.insecure.
	gitInsecure bool
	// gitSSH says gitURL is an ssh URL (ssh://… or user@host:path), whose host BuildKit checks
	// against knownHosts, the git Secret's known_hosts, and reaches with sshKey.
	gitSSH     bool
	knownHosts string
	// dockerfileDir and dockerfileName locate the Dockerfile when it is local (inline, or
	// inside a local context); dockerfileDir is empty when BuildKit reads it from git.
	dockerfileDir  string
	dockerfileName string
	// dockerfile is the Dockerfile's text when it is local; file is its model, and stages
	// file's stages.
	dockerfile []byte
	file       *dockerfile.File
	stages     []*dockerfile.Stage
	// buildArgs are spec.dockerfile.buildArgs by name, with which the Dockerfile is parsed so
	// that its words (a mount's id among them) expand as in the build.
	buildArgs map[string]string
	// secrets are BuildKit session secrets: build secrets by id, and the git token.
	secrets map[string][]byte
	// sshKey is the git SSH private key file, offered to BuildKit under gitSSHID only.
	sshKey string
	// dockerConfig holds registry credentials, for pulls (BuildKit) and the push.
	dockerConfig *configfile.ConfigFile
	// signer is spec.output.signing's key; nil when the image is not signed. hide is what of
	// it the log must not show.
	signer *signer
	hide   []string
}

// prepare reads and checks everything the spec refers to. Every error it returns is BadInput,
// and names the field, Secret or Dockerfile line at fault.
func prepare(req contract.Request, p Paths) (*inputs, error) {
	spec := req.Spec
	in := &inputs{secrets: map[string][]byte{}, dockerfileName: "Dockerfile"}
	if spec.Dockerfile.Path != "" {
		in.dockerfileName = spec.Dockerfile.Path
	}
	if len(spec.Dockerfile.BuildArgs) > 0 {
		in.buildArgs = make(map[string]string, len(spec.Dockerfile.BuildArgs))
		for _, a := range spec.Dockerfile.BuildArgs {
			if a.Name == "BUILDKIT_SYNTAX" {
				// It picks another frontend image, which would run with the build's session
				// and so could ask for the git credentials: kiln builds with the Dockerfile
				// frontend it knows.
				return nil, fail(kilnv1.FailureBadInput, "spec.dockerfile.buildArgs: BUILDKIT_SYNTAX is not allowed: it would run another frontend with the build's credentials")
			}
			in.buildArgs[a.Name] = a.Value
		}
	}

	switch {
	case spec.Source.ConfigMap != nil:
		dir, digest, err := copyConfigMap(p.Context, filepath.Join(p.Work, "context"))
		if err != nil {
			return nil, fail(kilnv1.FailureBadInput, "ConfigMap %q (spec.source.configMap.name) in namespace %q: %v", spec.Source.ConfigMap.Name, req.Namespace, err)
		}
		in.contextDir, in.contextDigest = dir, digest
		in.contextName = fmt.Sprintf("ConfigMap %q", spec.Source.ConfigMap.Name)
	case spec.Source.Git != nil:
		if err := in.prepareGit(spec.Source.Git, p.GitSecret, req.Namespace); err != nil {
			return nil, err
		}
	case spec.Source.OCI != nil:
		// Pulled and unpacked by fetchOCIContext, while buildkitd starts; its Dockerfile is
		// read then (readDockerfile).
		if err := in.readSourceSecret(spec.Source.OCI, p.SourceSecret, req.Namespace); err != nil {
			return nil, err
		}
	default:
		return nil, fail(kilnv1.FailureBadInput, "spec.source must set git, configMap or oci")
	}
	if err := in.readDockerfile(spec.Dockerfile, p.Work); err != nil {
		return nil, err
	}
	if err := in.readBuildSecrets(spec.Dockerfile.Secrets, p.BuildSecrets, req.Namespace); err != nil {
		return nil, err
	}
	if err := in.readOutputSecrets(spec.Output, p, req.Namespace); err != nil {
		return nil, err
	}
	return in, nil
}

// readDockerfile takes the inline Dockerfile, or reads the Dockerfile from a context kiln holds
// (a ConfigMap's, an OCI artifact's once unpacked), and parses it. A git context's Dockerfile is
// BuildKit's to read.
func (in *inputs) readDockerfile(df contract.Dockerfile, work string) error {
	switch {
	case in.dockerfile != nil:
		return nil // read already
	case df.Inline != "":
		in.dockerfileDir = filepath.Join(work, "dockerfile")
		in.dockerfileName = "Dockerfile"
		in.dockerfile = []byte(df.Inline)
		if err := os.MkdirAll(in.dockerfileDir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(in.dockerfileDir, in.dockerfileName), in.dockerfile, 0o644); err != nil {
			return err
		}
	case in.contextDir != "":
		in.dockerfileDir = in.contextDir
		dt, err := os.ReadFile(filepath.Join(in.contextDir, in.dockerfileName))
		if err != nil {
			return fail(kilnv1.FailureBadInput, "the context (%s) has no %s (spec.dockerfile.path); its files are: %s",
				in.contextName, in.dockerfileName, listFiles(in.contextDir))
		}
		in.dockerfile = dt
	}
	if in.dockerfile != nil {
		return in.parseDockerfile(df.Target)
	}
	return nil
}

// readSourceSecret reads spec.source.oci.pullSecretRef's docker config, mounted at dir.
func (in *inputs) readSourceSecret(o *contract.OCISource, dir, namespace string) error {
	if o.PullSecretRef == nil {
		return nil
	}
	cf, err := readDockerConfig(dir, "pull", o.PullSecretRef.Name, "spec.source.oci.pullSecretRef", namespace)
	in.sourceConfig = cf
	return err
}

// readDockerConfig reads the .dockerconfigjson of the kubernetes.io/dockerconfigjson Secret
// mounted at dir; what ("push", "pull"), name and field name the Secret in errors, all BadInput.
func readDockerConfig(dir, what, name, field, namespace string) (*configfile.ConfigFile, error) {
	dt, err := os.ReadFile(filepath.Join(dir, ".dockerconfigjson"))
	if err != nil {
		return nil, fail(kilnv1.FailureBadInput, "%s Secret %q (%s) is missing in namespace %q or has no .dockerconfigjson key: it must be a kubernetes.io/dockerconfigjson Secret", what, name, field, namespace)
	}
	cf, err := config.LoadFromReader(bytes.NewReader(dt))
	if err != nil {
		return nil, fail(kilnv1.FailureBadInput, "%s Secret %q (%s): .dockerconfigjson is not a docker config: %v", what, name, field, err)
	}
	return cf, nil
}

// readOutputSecrets reads the push Secret's docker config and loads the signing key.
func (in *inputs) readOutputSecrets(out contract.Output, p Paths, namespace string) error {
	if ps := out.PushSecretRef; ps != nil {
		cf, err := readDockerConfig(p.PushSecret, "push", ps.Name, "spec.output.pushSecretRef", namespace)
		if err != nil {
			return err
		}
		in.dockerConfig = cf
	} else {
		in.dockerConfig = configfile.New("")
	}
	if s := out.Signing; s != nil {
		var err error
		if in.signer, in.hide, err = loadSigner(s, p.SigningSecret, namespace); err != nil {
			return err
		}
	}
	return nil
}

// prepareGit takes spec.source.git, and reads its Secret (mounted at secretDir) when it names one.
func (in *inputs) prepareGit(g *contract.GitSource, secretDir, namespace string) error {
	in.gitURL, in.gitRevision, in.gitSubdir, in.gitInsecure = g.URL, g.Revision, strings.Trim(g.ContextDir, "/"), g.Insecure
	in.gitSSH = isSSHURL(g.URL)
	switch {
	case g.SecretRef != nil:
		in.gitSecret = g.SecretRef.Name
		return in.readGitSecret(secretDir, g.SecretRef.Name, namespace)
	case in.gitSSH:
		return fail(kilnv1.FailureBadInput, "spec.source.git.url %s is an ssh URL, which needs a Secret in spec.source.git.secretRef with the keys known_hosts "+
			"(the git server's host keys, which BuildKit checks before it trusts the server) and ssh-privatekey", redactURL(g.URL))
	}
	return nil
}

// parseDockerfile parses the Dockerfile with BuildKit's own parser (dockerfile.Parse), so that
// syntax errors, an unknown target stage and undeclared secrets fail with their line before
// anything runs.
func (in *inputs) parseDockerfile(target string) error {
	f, err := dockerfile.Parse(in.dockerfile, target, in.buildArgs)
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
	provided := providedSecrets(specs)
	if err := checkPrivateIDs(in.file, in.dockerfileName, provided); err != nil {
		return err
	}
	uses := in.file.Secrets()
	ids := make([]string, 0, len(uses))
	for id := range uses {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if !provided[id] {
			return fail(kilnv1.FailureBadInput, "%s:%d mounts secret id=%s, which spec.dockerfile.secrets does not provide", in.dockerfileName, uses[id], id)
		}
	}
	return nil
}

// checkPrivateIDs refuses a Dockerfile whose RUN steps mount the ids under which kiln offers
// the git Secret to BuildKit, for fetching the source only: the token's secret ids
// (GIT_AUTH_…) and the SSH agent's id (gitSSHID). BuildKit serves a session's secrets and
// agents to every step that names them, so without this check a step could read the token or
// use the key. It is checked for a local Dockerfile before anything runs, and for a Dockerfile
// in the git context once BuildKit has fetched it (checkGitDockerfile). A secret id that
// spec.dockerfile.secrets provides is the build secret's, which replaces the token under it.
func checkPrivateIDs(f *dockerfile.File, name string, provided map[string]bool) error {
	secrets := f.Secrets()
	ids := make([]string, 0, len(secrets))
	for id := range secrets {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if strings.HasPrefix(id, "GIT_AUTH_") && !provided[id] {
			return fail(kilnv1.FailureBadInput, "%s:%d mounts secret id=%s: kiln offers the git Secret's token under such ids for fetching the source only, and no step may mount it (name a build secret in spec.dockerfile.secrets)", name, secrets[id], id)
		}
	}
	if line, ok := f.SSH()[gitSSHID]; ok {
		return fail(kilnv1.FailureBadInput, "%s:%d mounts ssh id=%s: kiln offers the git Secret's SSH key under that id for fetching the source only, and no step may use it", name, line, gitSSHID)
	}
	return nil
}

// providedSecrets are the ids of spec.dockerfile.secrets.
func providedSecrets(specs []contract.BuildSecret) map[string]bool {
	provided := map[string]bool{}
	for _, s := range specs {
		provided[s.ID] = true
	}
	return provided
}

// readGitSecret reads the git Secret mounted at dir: for an ssh URL its known_hosts and
// ssh-privatekey, else a token, offered to BuildKit for the source's host only.
//
// BuildKit looks a git token up as the secret GIT_AUTH_TOKEN.<host> first and GIT_AUTH_TOKEN
// second, for every git fetch of the build (source/git's authSecretNames), a Dockerfile's
// ADD <git URL> included. Offered under the host's name alone, the token goes to the source's
// host and to no other.
func (in *inputs) readGitSecret(dir, name, namespace string) error {
	if in.gitSSH {
		return in.readGitSSH(dir, name, namespace)
	}
	if dt, err := os.ReadFile(filepath.Join(dir, "token")); err == nil {
		u, err := url.Parse(in.gitURL)
		if err != nil || u.Host == "" {
			return fail(kilnv1.FailureBadInput, "git Secret %q (spec.source.git.secretRef) holds a token, which only an http(s) URL can use, not %s: use an ssh-privatekey for ssh", name, redactURL(in.gitURL))
		}
		in.secrets[gitTokenSecretID(u.Host)] = bytes.TrimSpace(dt)
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "ssh-privatekey")); err == nil {
		return fail(kilnv1.FailureBadInput, "git Secret %q (spec.source.git.secretRef) holds an ssh-privatekey, which only an ssh URL (ssh://… or user@host:path) can use, not %s: use a token for https", name, redactURL(in.gitURL))
	}
	return fail(kilnv1.FailureBadInput, "git Secret %q (spec.source.git.secretRef) is missing in namespace %q or has neither a token nor an ssh-privatekey key", name, namespace)
}

// readGitSSH reads what an ssh URL needs from the git Secret mounted at dir: known_hosts, the
// git server's host keys, and ssh-privatekey. Without known_hosts the build fails here, before
// anything connects: BuildKit would otherwise learn the host's key from the host itself
// (llb.Git runs ssh-keyscan when given no known hosts) and trust whoever answers.
func (in *inputs) readGitSSH(dir, name, namespace string) error {
	dt, err := os.ReadFile(filepath.Join(dir, "known_hosts"))
	if err != nil {
		return fail(kilnv1.FailureBadInput, "git Secret %q (spec.source.git.secretRef) is missing in namespace %q or has no known_hosts key, which the ssh URL %s needs: "+
			"add the git server's host keys in known_hosts format, taken from what the git host publishes (not from an ssh-keyscan that trusts whoever answers)", name, namespace, redactURL(in.gitURL))
	}
	hosts, err := parseKnownHosts(dt)
	if err != nil {
		return fail(kilnv1.FailureBadInput, "git Secret %q (spec.source.git.secretRef): known_hosts %v", name, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ssh-privatekey")); err != nil {
		return fail(kilnv1.FailureBadInput, "git Secret %q (spec.source.git.secretRef) is missing in namespace %q or has no ssh-privatekey key, which the ssh URL %s needs", name, namespace, redactURL(in.gitURL))
	}
	in.knownHosts, in.sshKey = hosts, filepath.Join(dir, "ssh-privatekey")
	return nil
}

// parseKnownHosts checks that dt is an OpenSSH known_hosts file with at least one host key,
// and returns it without comments and blank lines.
func parseKnownHosts(dt []byte) (string, error) {
	var keep []string
	for i, line := range strings.Split(string(dt), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, _, _, _, err := ssh.ParseKnownHosts([]byte(line)); err != nil {
			return "", fmt.Errorf("line %d is not a known_hosts line (hosts, key type, base64 key): %w", i+1, err)
		}
		keep = append(keep, line)
	}
	if len(keep) == 0 {
		return "", errors.New("has no host key: add the git server's host keys in known_hosts format")
	}
	return strings.Join(keep, "\n") + "\n", nil
}

// gitSSHID is the id under which the runner offers the git Secret's SSH key to BuildKit: only
// the git source that fetches the context names it (llb.MountSSHSock), and checkPrivateIDs
// refuses a Dockerfile step that asks for it. A step's RUN --mount=type=ssh without an id asks
// for "default", which kiln does not offer.
const gitSSHID = "kiln-git"

// isSSHURL tells whether BuildKit fetches url over ssh: ssh://… or the scp-like user@host:path,
// as BuildKit's own parser (gitutil.ParseURL, which llb.Git uses) reads it.
func isSSHURL(url string) bool {
	u, err := gitutil.ParseURL(url)
	return err == nil && u.Scheme == gitutil.SSHProtocol
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
	out = append(out, in.hide...)
	if in.sshKey != "" {
		// No step is offered the key, but should its text turn up anyway, it is hidden too.
		if key, err := os.ReadFile(in.sshKey); err == nil {
			out = append(out, string(key))
		}
	}
	return out
}
