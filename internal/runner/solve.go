package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	"github.com/moby/buildkit/session/sshforward/sshprovider"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/util/progress/progressui"
	digest "github.com/opencontainers/go-digest"
	"github.com/tonistiigi/fsutil"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/advice"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/dockerfile"
	"github.com/kiln-dev/kiln/internal/units"
	"github.com/kiln-dev/kiln/internal/version"
)

// connect opens the BuildKit client and waits until buildkitd has a worker, or the wait ends.
func connect(ctx context.Context, addr string, wait time.Duration, log io.Writer) (*client.Client, error) {
	deadline := time.Now().Add(wait)
	var lastErr error
	announced := false
	for {
		c, err := client.New(ctx, addr)
		if err == nil {
			var ws []*client.WorkerInfo
			ws, err = c.ListWorkers(ctx)
			if err == nil && len(ws) > 0 {
				return c, nil
			}
			if err == nil {
				err = errors.New("no worker yet")
			}
			c.Close()
		}
		lastErr = err
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fail(kilnv1.FailureBuildKitNotUp, "buildkitd at %s did not become ready within %s: %v", addr, wait, lastErr)
		}
		if !announced {
			fmt.Fprintf(log, "Waiting for buildkitd at %s ...\n", addr)
			announced = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // the runner starts with buildkitd: it is ready within moments
		}
	}
}

// resetCache empties BuildKit's cache before the build (kiln.dev/reset-cache-requested-at).
func resetCache(ctx context.Context, c *client.Client, log io.Writer) error {
	ch := make(chan client.UsageInfo)
	var freed int64
	var n int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for u := range ch {
			freed += u.Size
			n++
		}
	}()
	err := c.Prune(ctx, ch, client.PruneAll)
	close(ch)
	<-done
	if err != nil {
		return fail(kilnv1.FailureBuildKitNotUp, "emptying the cache as kiln.dev/reset-cache-requested-at asks: %v", err)
	}
	fmt.Fprintf(log, "Cache reset: removed %d records, %s\n", n, units.Bytes(freed))
	return nil
}

// solveOutput is what a solve gives besides the OCI layout on disk.
type solveOutput struct {
	revision string
	cached   int32
	total    int32
	// failure is a classified failure of the build function itself: its class does not survive
	// the trip through BuildKit's gateway, so solve returns it from here.
	failure error
	// cache is what the build did with spec.cache.registry; nil without one.
	cache *contract.CacheReport
}

// solve builds the Dockerfile and exports the image as an OCI layout in layoutDir.
func (r *run) solve(ctx context.Context, c *client.Client, in *inputs, layoutDir string) (solveOutput, error) {
	attrs := r.frontendAttrs(in)
	mounts, err := localMounts(in, attrs)
	if err != nil {
		return solveOutput{}, err
	}
	attachables, err := sessionAttachables(in)
	if err != nil {
		return solveOutput{}, err
	}
	opt := client.SolveOpt{
		FrontendAttrs: r.provenanceAttrs(in),
		LocalMounts:   mounts,
		Session:       attachables,
		Exports: []client.ExportEntry{{
			Type: client.ExporterOCI, OutputDir: layoutDir, Attrs: r.exportAttrs(),
		}},
	}
	if p, ok := attrs["platform"]; ok {
		// BuildKit checks the result's platforms against the root request's (exporter/verifier),
		// not the Dockerfile frontend's: without them there it warns that the requested (its
		// default) platform does not match.
		if opt.FrontendAttrs == nil {
			opt.FrontendAttrs = map[string]string{}
		}
		opt.FrontendAttrs["platform"] = p
	}
	if err := r.addRegistryCache(&opt, attrs); err != nil {
		return solveOutput{}, err
	}

	var out solveOutput
	statusCh := make(chan *client.SolveStatus)
	steps, wait := r.showProgress(ctx, statusCh)
	resp, err := c.Build(ctx, opt, "kiln", r.buildFunc(in, attrs, &out), statusCh)
	wait()
	out.cached, out.total = steps.counts()
	out.cache = r.cacheReport(steps, resp)
	if err != nil && out.failure != nil {
		return out, out.failure
	}
	if err != nil {
		return out, classifySolveError(err, in)
	}
	return out, nil
}

// frontendAttrs are the Dockerfile frontend's options: the Dockerfile's name, the target, the
// platforms and the build arguments.
func (r *run) frontendAttrs(in *inputs) map[string]string {
	spec := r.req.Spec
	attrs := map[string]string{"filename": in.dockerfileName}
	if spec.Dockerfile.Target != "" {
		attrs["target"] = spec.Dockerfile.Target
	}
	if len(spec.Dockerfile.Platforms) > 0 {
		attrs["platform"] = strings.Join(spec.Dockerfile.Platforms, ",")
	}
	for _, a := range spec.Dockerfile.BuildArgs {
		attrs["build-arg:"+a.Name] = a.Value
	}
	// Reproducible builds take SOURCE_DATE_EPOCH from the git commit (set by buildFunc, once it
	// is resolved); a local context has no history, so it gets the Unix epoch.
	if spec.Output.Reproducible && in.gitURL == "" {
		attrs["build-arg:SOURCE_DATE_EPOCH"] = "0"
	}
	return attrs
}

// builderID is the SLSA builder.id of kiln's provenance: kiln's runner driving BuildKit.
const builderID = "https://kiln.dev/runner"

// provenanceAttrs are the build request's own options (BuildKit's root request): SLSA
// provenance as spec.output.provenance asks (BuildKit's attest:provenance), and what kiln
// records in it as the request's arguments, which BuildKit copies into the predicate
// (buildDefinition.externalParameters.request.root.request.args, in min mode too): the ImageBuild
// (namespace/name, generation, build number), the runner's version and, for a ConfigMap
// source, its name and content digest (a git source's URL and commit are the predicate's
// resolved dependency and its VCS metadata, set in buildFunc). Nothing secret is among them.
// None for provenance none: BuildKit then exports the image without an attestation.
func (r *run) provenanceAttrs(in *inputs) map[string]string {
	mode := r.req.Spec.Output.Provenance
	if mode != kilnv1.ProvenanceMax && mode != kilnv1.ProvenanceMin {
		return nil
	}
	attrs := map[string]string{
		"attest:provenance": "mode=" + string(mode) + ",builder-id=" + builderID,
		"kiln:imagebuild":   r.req.Namespace + "/" + r.req.Name,
		"kiln:build":        strconv.FormatInt(r.req.Build, 10),
		"kiln:runner":       version.Version,
	}
	if r.req.Generation != 0 {
		attrs["kiln:generation"] = strconv.FormatInt(r.req.Generation, 10)
	}
	if cm := r.req.Spec.Source.ConfigMap; cm != nil {
		attrs["kiln:source"] = "configmap:" + cm.Name
		attrs["kiln:source-digest"] = in.contextDigest
	}
	if o := r.req.Spec.Source.OCI; o != nil {
		attrs["kiln:source"] = "oci:" + o.Image // pinned by digest
		attrs["kiln:source-digest"] = in.contextDigest
	}
	return attrs
}

// localMounts are the local directories the build reads (the context, the Dockerfile's
// directory); a git context is a frontend input instead (buildFunc).
func localMounts(in *inputs, attrs map[string]string) (map[string]fsutil.FS, error) {
	mounts := map[string]fsutil.FS{}
	if in.contextDir != "" {
		fs, err := fsutil.NewFS(in.contextDir)
		if err != nil {
			return nil, err
		}
		mounts["context"] = fs
	}
	if in.dockerfileDir != "" {
		fs, err := fsutil.NewFS(in.dockerfileDir)
		if err != nil {
			return nil, err
		}
		mounts["dockerfile"] = fs
		if in.gitURL != "" {
			// The Dockerfile is local, the context is git: dockerui reads the Dockerfile from
			// this local mount, not from the "dockerfile" frontend input.
			attrs["dockerfilekey"] = "dockerfile"
		}
	}
	return mounts, nil
}

// exportAttrs are the OCI exporter's options: the image's name, compression and timestamps.
func (r *run) exportAttrs() map[string]string {
	spec := r.req.Spec
	compression := string(spec.Output.Compression)
	if compression == "" {
		compression = string(kilnv1.CompressionGzip)
	}
	attrs := map[string]string{
		"name":              r.imageName(),
		"oci-mediatypes":    "true",
		"compression":       compression,
		"force-compression": "true",
		"tar":               "false", // write into the layout's content store, not a tarball
	}
	if spec.Output.Reproducible {
		attrs["rewrite-timestamp"] = "true"
	}
	return attrs
}

// sessionAttachables serve the build's secrets, the registry credentials and the git ssh key
// to BuildKit. The key is an agent under kiln's private id (gitSSHID), not "default": BuildKit
// serves a session's agent to whatever names its id, and a Dockerfile's
// RUN --mount=type=ssh names "default".
func sessionAttachables(in *inputs) ([]session.Attachable, error) {
	attachables := []session.Attachable{
		secretsprovider.FromMap(in.secrets),
		authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
			AuthConfigProvider: authprovider.LoadAuthConfig(in.dockerConfig),
		}),
	}
	if in.sshKey != "" {
		ssh, err := sshprovider.NewSSHAgentProvider([]sshprovider.AgentConfig{{ID: gitSSHID, Paths: []string{in.sshKey}}})
		if err != nil {
			return nil, fail(kilnv1.FailureBadInput, "git Secret (spec.source.git.secretRef): ssh-privatekey is not a usable key: %v", err)
		}
		attachables = append(attachables, ssh)
	}
	return attachables, nil
}

// showProgress prints the build's progress to the log as it comes on statusCh, and counts its
// steps; wait returns once statusCh is closed and everything is printed.
func (r *run) showProgress(ctx context.Context, statusCh <-chan *client.SolveStatus) (steps *stepCounter, wait func()) {
	displayCh := make(chan *client.SolveStatus)
	steps = newStepCounter()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(displayCh)
		for s := range statusCh {
			steps.observe(s)
			displayCh <- s
		}
	}()
	go func() {
		defer wg.Done()
		d, err := progressui.NewDisplay(r.out, progressui.PlainMode)
		if err != nil {
			for range displayCh {
			}
			return
		}
		warnings, _ := d.UpdateFrom(context.WithoutCancel(ctx), displayCh)
		r.printWarnings(warnings)
	}()
	return steps, wg.Wait
}

// printWarnings says in the log what BuildKit warned about (its Dockerfile checks, such as
// FromAsCasing or SecretsUsedInArgOrEnv, and its own notes): progressui returns them rather
// than printing them, so without this they were lost.
func (r *run) printWarnings(warnings []client.VertexWarning) {
	r.warnings = warnings
	if len(warnings) == 0 {
		return
	}
	fmt.Fprintf(r.out, "\nBuildKit warned (%d):\n", len(warnings))
	for _, w := range warnings {
		short := strings.TrimSpace(string(w.Short))
		where := ""
		if len(w.Range) > 0 && w.Range[0] != nil && w.Range[0].Start != nil && !strings.Contains(short, "(line ") {
			file := "Dockerfile"
			if w.SourceInfo != nil && w.SourceInfo.Filename != "" {
				file = w.SourceInfo.Filename
			}
			where = fmt.Sprintf(" (%s:%d)", file, w.Range[0].Start.Line)
		}
		more := ""
		if w.URL != "" {
			more = " " + w.URL
		}
		fmt.Fprintf(r.out, "  - %s%s%s\n", short, where, more)
	}
}

// buildFunc is the build BuildKit runs: for a git source it resolves the revision to its
// commit (into out.revision, and SOURCE_DATE_EPOCH for a reproducible build) and builds the
// git context (gitContext), then solves the Dockerfile.
//
// The git context goes to the Dockerfile frontend as its "context" input (and "dockerfile"
// input, when the Dockerfile is in it), as buildx passes named contexts, rather than as a
// url#ref "context" option: from that option dockerui would build the git source itself, with
// neither known hosts (llb.Git then runs ssh-keyscan and trusts whatever answers) nor kiln's
// ssh id. With inputs, dockerui's initContext takes inputs["context"] as the context and,
// unless "dockerfilekey" names a local mount, inputs["dockerfile"] as where the Dockerfile is
// read (spec.dockerfile.path, relative to the contextDir as before).
func (r *run) buildFunc(in *inputs, attrs map[string]string, out *solveOutput) gateway.BuildFunc {
	spec := r.req.Spec
	return func(ctx context.Context, gw gateway.Client) (*gateway.Result, error) {
		var epoch string
		req := gateway.SolveRequest{Frontend: "dockerfile.v0", FrontendOpt: attrs}
		if in.gitURL != "" {
			if in.gitInsecure && (strings.HasPrefix(in.gitURL, "http://") || strings.HasPrefix(in.gitURL, "git://")) {
				fmt.Fprintf(r.out, "Fetching %s over a plain transport (spec.source.git.insecure): the server is not authenticated and the repository travels in clear\n", redactURL(in.gitURL))
			}
			rev, commitTime, err := resolveGitRevision(ctx, gw, in)
			if err != nil {
				out.failure = err
				return nil, err
			}
			out.revision = rev
			fmt.Fprintf(r.out, "Resolved %s %s to commit %s\n", redactURL(in.gitURL), orHEAD(in.gitRevision), rev)
			if p := spec.Output.Provenance; p == kilnv1.ProvenanceMax || p == kilnv1.ProvenanceMin {
				// The keys buildx sets for a git context: BuildKit moves them from the
				// Dockerfile frontend's arguments into the provenance's VCS metadata.
				attrs["vcs:source"], attrs["vcs:revision"] = redactURL(in.gitURL), rev
			}
			if spec.Output.Reproducible && !commitTime.IsZero() {
				// dockerui changes nothing in a context given as an input (it would add
				// GitMTimeCommit to a url#ref one, which fails for a sub-directory), so RUN
				// steps that declare ARG SOURCE_DATE_EPOCH get it with a contextDir too.
				epoch = strconv.FormatInt(commitTime.Unix(), 10)
				attrs["build-arg:SOURCE_DATE_EPOCH"] = epoch
			}
			st, err := in.gitContext(spec.Output.Reproducible)
			if err != nil {
				out.failure = err
				return nil, err
			}
			def, err := st.Marshal(ctx, llb.WithCaps(gw.BuildOpts().LLBCaps))
			if err != nil {
				return nil, err
			}
			req.FrontendInputs = map[string]*pb.Definition{"context": def.ToPB()}
			if in.dockerfile == nil {
				if err := checkGitDockerfile(ctx, gw, in, def.ToPB(), spec.Dockerfile); err != nil {
					if classOf(err) == kilnv1.FailureBadInput {
						out.failure = err
					}
					return nil, err
				}
				req.FrontendInputs["dockerfile"] = def.ToPB()
			}
		}
		res, err := gw.Solve(ctx, req)
		if err == nil && epoch != "" {
			if _, set := res.Metadata[exporterEpochKey]; !set {
				res.AddMeta(exporterEpochKey, []byte(epoch))
			}
		}
		return res, err
	}
}

// exporterEpochKey is the result metadata BuildKit's image exporters take SOURCE_DATE_EPOCH from.
const exporterEpochKey = "source.date.epoch"

// gitContext is the git source of the build context: spec.source.git's URL at its revision,
// the contextDir only. For an ssh URL it carries the known_hosts of the git Secret, which
// BuildKit's git source writes to a file for ssh's UserKnownHostsFile (without them llb.Git
// would run ssh-keyscan and BuildKit would trust what it got), and fetches with the SSH agent
// kiln offers under gitSSHID. A reproducible build without a contextDir gets the commit's time
// on its files, as dockerui gives a url#ref context when SOURCE_DATE_EPOCH is set (BuildKit
// v0.33 cannot do it for a sub-directory: it asks git for the time in the checkout it removed).
func (in *inputs) gitContext(reproducible bool) (llb.State, error) {
	opts, err := in.gitOptions()
	if err != nil {
		return llb.State{}, err
	}
	if in.gitSubdir != "" {
		opts = append(opts, llb.GitSubDir(in.gitSubdir))
	}
	if reproducible && in.gitSubdir == "" {
		opts = append(opts, llb.GitMTimeCommit())
	}
	name := "[internal] load git source " + redactURL(in.gitURL)
	if in.gitRevision != "" || in.gitSubdir != "" {
		name += "#" + in.gitRevision
		if in.gitSubdir != "" {
			name += ":" + in.gitSubdir
		}
	}
	opts = append(opts, llb.WithCustomName(name))
	return llb.Git(in.gitURL, "", opts...), nil
}

// gitOptions are the options of every git source of spec.source.git: its revision and, for an
// ssh URL, the known hosts and kiln's ssh id. It refuses an ssh URL without known hosts, which
// prepare has refused already: llb.Git would otherwise scan the host for its key.
func (in *inputs) gitOptions() ([]llb.GitOption, error) {
	var opts []llb.GitOption
	if in.gitRevision != "" {
		opts = append(opts, llb.GitRef(in.gitRevision))
	}
	if in.gitSSH {
		if strings.TrimSpace(in.knownHosts) == "" {
			return nil, fail(kilnv1.FailureBadInput, "spec.source.git.url %s is an ssh URL and the git Secret has no known_hosts", redactURL(in.gitURL))
		}
		opts = append(opts, llb.KnownSSHHosts(in.knownHosts), llb.MountSSHSock(gitSSHID))
	}
	return opts, nil
}

// checkGitDockerfile reads the Dockerfile from the git context (def, which the frontend then
// solves again from BuildKit's cache) and refuses it when a step mounts kiln's private ids
// (checkPrivateIDs), as prepare does a local one. A Dockerfile that cannot be read or parsed is
// left to the frontend, which says so with its line.
func checkGitDockerfile(ctx context.Context, gw gateway.Client, in *inputs, def *pb.Definition, df contract.Dockerfile) error {
	res, err := gw.Solve(ctx, gateway.SolveRequest{Definition: def})
	if err != nil {
		return err
	}
	ref, err := res.SingleRef()
	if err != nil || ref == nil {
		return err
	}
	dt, err := ref.ReadFile(ctx, gateway.ReadRequest{Filename: in.dockerfileName})
	if err != nil && path.Base(in.dockerfileName) == "Dockerfile" {
		// dockerui also reads "dockerfile" (moby/moby#10858)
		dt, err = ref.ReadFile(ctx, gateway.ReadRequest{Filename: path.Join(path.Dir(in.dockerfileName), "dockerfile")})
	}
	if err != nil {
		return nil
	}
	f, err := dockerfile.Parse(dt, df.Target, in.buildArgs)
	if err != nil {
		return nil
	}
	return checkPrivateIDs(f, in.dockerfileName, providedSecrets(df.Secrets))
}

// resolveGitRevision asks BuildKit (which holds the network and the credentials) which commit
// the revision names, and when it was committed. It resolves the same source as gitContext,
// known hosts and ssh id included.
func resolveGitRevision(ctx context.Context, gw gateway.Client, in *inputs) (string, time.Time, error) {
	opts, err := in.gitOptions()
	if err != nil {
		return "", time.Time{}, err
	}
	url, revision := in.gitURL, in.gitRevision
	st := llb.Git(url, "", opts...)
	def, err := st.Marshal(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	var src *pb.SourceOp
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err == nil && op.GetSource() != nil {
			src = op.GetSource()
		}
	}
	if src == nil {
		return "", time.Time{}, fmt.Errorf("git source %s did not marshal to a source op", url)
	}
	md, err := gw.ResolveSourceMetadata(ctx, src, sourceresolver.Opt{
		LogName: "[internal] resolve git revision",
		GitOpt:  &sourceresolver.ResolveGitOpt{ReturnObject: true},
	})
	if err != nil {
		if f := sourceFailure(err.Error(), in); f != nil {
			return "", time.Time{}, f
		}
		return "", time.Time{}, fail(kilnv1.FailureBadInput, "spec.source.git: cannot resolve %s of %s: %s", orHEAD(revision), redactURL(url), cleanError(err))
	}
	if md.Git == nil {
		return "", time.Time{}, nil
	}
	rev := md.Git.CommitChecksum
	if rev == "" {
		rev = md.Git.Checksum
	}
	return rev, commitTime(md.Git.CommitObject), nil
}

// commitTime reads the committer time from a raw git commit object; zero when absent.
func commitTime(obj []byte) time.Time {
	for _, line := range strings.Split(string(obj), "\n") {
		if line == "" {
			break // end of the headers
		}
		if !strings.HasPrefix(line, "committer ") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return time.Time{}
		}
		if ts, err := strconv.ParseInt(f[len(f)-2], 10, 64); err == nil {
			return time.Unix(ts, 0).UTC()
		}
	}
	return time.Time{}
}

func orHEAD(rev string) string {
	if rev == "" {
		return "HEAD"
	}
	return rev
}

// classifySolveError turns a BuildKit error into a failure class and a message users can act on.
func classifySolveError(err error, in *inputs) error {
	var f *failure
	if errors.As(err, &f) {
		return err
	}
	if f := sourceFailure(err.Error(), in); f != nil {
		return f
	}
	dockerfile := in.dockerfileName
	msg := cleanError(err)
	lower := strings.ToLower(msg)
	if f := layerDepthFailure(msg, in); f != nil {
		return f
	}
	if m := sshAgentRe.FindStringSubmatch(msg); m != nil {
		id := m[1] + m[2]
		return fail(kilnv1.FailureBadInput, "%s: a step requires the SSH agent %q (RUN --mount=type=ssh,required): kiln offers no SSH agent to Dockerfile steps "+
			"(the git Secret's key is for fetching the source only); fetch what the step needs in the git source or with a build secret (spec.dockerfile.secrets)", dockerfile, id)
	}
	switch {
	case strings.Contains(lower, "dockerfile parse error"), strings.Contains(lower, "unknown instruction"),
		strings.Contains(lower, "target stage") && strings.Contains(lower, "could not be found"):
		return fail(kilnv1.FailureBadInput, "%s: %s", dockerfile, msg)
	case strings.Contains(lower, "failed to resolve source metadata"), strings.Contains(lower, "pull access denied"),
		(strings.Contains(lower, "not found") && strings.Contains(lower, "resolve")):
		return fail(kilnv1.FailureBadInput, "a base image cannot be pulled: %s", msg)
	case strings.Contains(lower, "secret") && strings.Contains(lower, "not found"):
		return fail(kilnv1.FailureBadInput, "%s", msg)
	case strings.Contains(lower, "connection refused") && strings.Contains(lower, "buildkit"),
		strings.Contains(lower, "error reading from server: eof"):
		return fail(kilnv1.FailureBuildKitNotUp, "lost buildkitd during the build: %s", msg)
	}
	return fail(kilnv1.FailureBuildFailed, "%s", msg)
}

// sshAgentRe finds the id of an SSH agent a step required and the session does not offer:
// BuildKit's agent provider says "unset ssh forward key <id>" (sshprovider), a session without
// any agent `no SSH key "<id>" forwarded from the client` (solver/llbsolver/mounts).
var sshAgentRe = regexp.MustCompile(`unset ssh forward key (\S+)|no SSH key "([^"]*)" forwarded from the client`)

// processRe finds the command of the step that failed in BuildKit's error.
var processRe = regexp.MustCompile(`process ("(?:[^"\\]|\\.)*") did not complete successfully`)

// layerDepthFailure recognises a step that failed because the layers under it are too many to
// mount, and explains it; nil for any other error. BuildKit mounts a step's root filesystem as
// one overlay whose lower directories are every layer below it, so a long chain of RUN, COPY and
// ADD steps fails in one of two ways, found with a real rootless buildkitd (see
// TestLayerDepthFailure):
//   - Linux refuses more than 500 lower layers (advice.LayerDepthLimit): the mount fails with
//     EINVAL ("mount source: "overlay" … lowerdir=504/fs:503/fs:…, err: invalid argument") at
//     the step that would run on 501 layers (a one-layer base image and 500 steps);
//   - before that, the lower directories' paths must fit in one page of mount options (4 KiB),
//     which fewer layers fill when the paths are long, as snapshot numbers grow on a long-lived
//     cache volume (4 digits allow ~480 layers, 5 digits ~430). Over 4096 bytes containerd fails
//     with "mount options is too long"; at exactly 4096 it mounts, the kernel drops the last
//     byte (no room for the terminating NUL) and the mount fails on the path it cut, usually
//     with ENOENT ("… lowerdir=…/5/fs:4/f…, err: no such file or directory").
func layerDepthFailure(msg string, in *inputs) error {
	layers := 0
	switch {
	case strings.Contains(strings.ToLower(msg), "mount options is too long"):
	case strings.Contains(msg, "fstype: overlay"):
		data := mountData(msg)
		if layers = lowerdirCount(data); layers <= advice.LayerDepthLimit && len(data) < mountOptionsMax {
			return nil // an overlay refused for another reason
		}
	default:
		return nil
	}
	where, line, own := in.dockerfileName, 0, -1
	if m := processRe.FindStringSubmatch(msg); m != nil {
		if cmd, err := strconv.Unquote(m[1]); err == nil {
			line, own = failingStep(in, cmd)
		}
	}
	if line > 0 {
		where = fmt.Sprintf("%s:%d", in.dockerfileName, line)
	}
	var count string
	switch {
	case layers > 0:
		count = fmt.Sprintf("on %d stacked layers", layers)
	case own >= 0:
		count = fmt.Sprintf("on the base image's layers and %d layers made by earlier steps", own)
	default:
		count = "on more stacked layers"
	}
	return fail(kilnv1.FailureBadInput, "%s: too many layers: this step runs %s, more than BuildKit's overlay filesystem can mount "+
		"(Linux stacks at most %d layers, and fewer, down to about 400, when their paths outgrow the 4 KiB a mount's options may hold, as on a long-used cache). "+
		"Merge RUN steps into one (RUN a && b), or build in an earlier stage and COPY --from only its result into a stage with few layers",
		where, count, advice.LayerDepthLimit)
}

// mountOptionsMax is the room for a mount's options: one page, terminating NUL included.
const mountOptionsMax = 4096

// mountDataRe finds the options of the mount that failed in containerd's error.
var mountDataRe = regexp.MustCompile(`data: ("(?:[^"\\]|\\.)*")`)

// mountData returns the options of the mount that failed, "" when msg names none.
func mountData(msg string) string {
	m := mountDataRe.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	data, err := strconv.Unquote(m[1])
	if err != nil {
		return ""
	}
	return data
}

// lowerdirCount counts the lower directories in overlay mount options; 0 when they name none.
func lowerdirCount(data string) int {
	i := strings.Index(data, "lowerdir=")
	if i < 0 {
		return 0
	}
	dirs := data[i+len("lowerdir="):]
	if end := strings.IndexByte(dirs, ','); end >= 0 {
		dirs = dirs[:end]
	}
	return strings.Count(dirs, ":") + 1
}

// failingStep finds the RUN whose command BuildKit reports as failed: its line, and how many
// layer-making steps come before it in its stage's chain; 0 and -1 when the Dockerfile is not
// local or has no such RUN.
func failingStep(in *inputs, process string) (line, before int) {
	if in == nil {
		return 0, -1
	}
	for idx := range in.stages {
		chain, _ := stageChain(in, idx)
		for j, c := range chain {
			if c.op == "RUN" && c.process() == process {
				return c.line, j
			}
		}
	}
	return 0, -1
}

// cleanError drops BuildKit's stack and grpc wrapping from an error message.
func cleanError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "rpc error: code = Unknown desc = ")
	if i := strings.Index(msg, "\n"); i > 0 {
		msg = msg[:i]
	}
	return msg
}

// stepCounter counts the build's steps and how many BuildKit served from its cache.
type stepCounter struct {
	mu    sync.Mutex
	steps map[digest.Digest]bool
	// cacheIO are BuildKit's registry cache import and export, by their vertex's name: "" when
	// it completed, its error when it failed.
	cacheIO map[string]string
}

func newStepCounter() *stepCounter {
	return &stepCounter{steps: map[digest.Digest]bool{}, cacheIO: map[string]string{}}
}

func (s *stepCounter) observe(st *client.SolveStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range st.Vertexes {
		if v.Completed != nil && (strings.HasPrefix(v.Name, cacheImportVertex) || v.Name == cacheExportVertex) {
			s.cacheIO[v.Name] = v.Error
		}
		if v.Completed == nil || v.Error != "" || !isStep(v.Name) {
			continue
		}
		// A step served from a registry cache is reported CACHED, then again, not cached, as
		// its layers are pulled: once cached, it stays counted so.
		s.steps[v.Digest] = s.steps[v.Digest] || v.Cached
	}
}

func (s *stepCounter) counts() (cached, total int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.steps {
		total++
		if c {
			cached++
		}
	}
	return cached, total
}

// isStep tells a Dockerfile step ("[build 3/5] RUN go build") from BuildKit's bookkeeping
// (loading the context or metadata, exporting).
func isStep(name string) bool {
	// A FROM is a source BuildKit resolves, reported DONE even when nothing was pulled: not a step.
	if i := strings.Index(name, "] "); i > 0 && strings.HasPrefix(name[i+2:], "FROM ") {
		return false
	}
	if strings.HasPrefix(name, "[internal]") || strings.HasPrefix(name, "[auth]") || strings.HasPrefix(name, "exporting") ||
		strings.HasPrefix(name, "resolve image config") || strings.HasPrefix(name, "[context") {
		return false
	}
	return strings.HasPrefix(name, "[")
}

// layoutDir makes an empty directory for the OCI layout.
func layoutDir(work string) (string, error) {
	dir := filepath.Join(work, "oci")
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}
