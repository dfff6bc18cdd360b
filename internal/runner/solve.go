package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// solveOutput is what a solve gives besides the OCI layout on disk.
type solveOutput struct {
	revision string
	cached   int32
	total    int32
}

// solve builds the Dockerfile and exports the image as an OCI layout in layoutDir.
func (r *run) solve(ctx context.Context, c *client.Client, in *inputs, layoutDir string) (solveOutput, error) {
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
	if spec.Output.Reproducible {
		// "context" makes the Dockerfile frontend take the git commit's time; a local context
		// has no history, so it gets the epoch.
		attrs["build-arg:SOURCE_DATE_EPOCH"] = "0"
		if in.gitRef != "" {
			attrs["build-arg:SOURCE_DATE_EPOCH"] = "context"
		}
	}

	mounts := map[string]fsutil.FS{}
	if in.contextDir != "" {
		fs, err := fsutil.NewFS(in.contextDir)
		if err != nil {
			return solveOutput{}, err
		}
		mounts["context"] = fs
	} else {
		attrs["context"] = in.gitRef
	}
	if in.dockerfileDir != "" {
		fs, err := fsutil.NewFS(in.dockerfileDir)
		if err != nil {
			return solveOutput{}, err
		}
		mounts["dockerfile"] = fs
		if in.gitRef != "" {
			attrs["dockerfilekey"] = "dockerfile" // the Dockerfile is local, the context is git
		}
	}

	compression := string(spec.Output.Compression)
	if compression == "" {
		compression = string(kilnv1.CompressionGzip)
	}
	exportAttrs := map[string]string{
		"name":              r.imageName(),
		"oci-mediatypes":    "true",
		"compression":       compression,
		"force-compression": "true",
	}
	if spec.Output.Reproducible {
		exportAttrs["rewrite-timestamp"] = "true"
	}

	attachables := []session.Attachable{
		secretsprovider.FromMap(in.secrets),
		authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
			AuthConfigProvider: authprovider.LoadAuthConfig(in.dockerConfig),
		}),
	}
	if in.sshKey != "" {
		ssh, err := sshprovider.NewSSHAgentProvider([]sshprovider.AgentConfig{{ID: "default", Paths: []string{in.sshKey}}})
		if err != nil {
			return solveOutput{}, fail(kilnv1.FailureBadInput, "git Secret (spec.source.git.secretRef): ssh-privatekey is not a usable key: %v", err)
		}
		attachables = append(attachables, ssh)
	}

	opt := client.SolveOpt{
		LocalMounts: mounts,
		Session:     attachables,
		Exports: []client.ExportEntry{{
			Type: client.ExporterOCI, OutputDir: layoutDir, Attrs: exportAttrs,
		}},
	}

	var out solveOutput
	statusCh := make(chan *client.SolveStatus)
	displayCh := make(chan *client.SolveStatus)
	steps := newStepCounter()
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
		_, _ = d.UpdateFrom(context.WithoutCancel(ctx), displayCh)
	}()

	build := func(ctx context.Context, gw gateway.Client) (*gateway.Result, error) {
		if in.gitRef != "" {
			rev, err := resolveGitRevision(ctx, gw, spec.Source.Git.URL, spec.Source.Git.Revision)
			if err != nil {
				return nil, err
			}
			out.revision = rev
			fmt.Fprintf(r.out, "Resolved %s %s to commit %s\n", spec.Source.Git.URL, orHEAD(spec.Source.Git.Revision), rev)
		}
		return gw.Solve(ctx, gateway.SolveRequest{Frontend: "dockerfile.v0", FrontendOpt: attrs})
	}
	_, err := c.Build(ctx, opt, "kiln", build, statusCh)
	wg.Wait()
	out.cached, out.total = steps.counts()
	if err != nil {
		return out, classifySolveError(err, in.dockerfileName)
	}
	return out, nil
}

// resolveGitRevision asks BuildKit (which holds the network and the credentials) which commit
// the revision names.
func resolveGitRevision(ctx context.Context, gw gateway.Client, url, revision string) (string, error) {
	st := llb.Git(url, revision)
	def, err := st.Marshal(ctx)
	if err != nil {
		return "", err
	}
	var src *pb.SourceOp
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err == nil && op.GetSource() != nil {
			src = op.GetSource()
		}
	}
	if src == nil {
		return "", fmt.Errorf("git source %s did not marshal to a source op", url)
	}
	md, err := gw.ResolveSourceMetadata(ctx, src, sourceresolver.Opt{
		LogName: "[internal] resolve git revision",
		GitOpt:  &sourceresolver.ResolveGitOpt{},
	})
	if err != nil {
		return "", fail(kilnv1.FailureBadInput, "spec.source.git: cannot resolve %s of %s: %s", orHEAD(revision), url, cleanError(err))
	}
	if md.Git == nil {
		return "", nil
	}
	if md.Git.CommitChecksum != "" {
		return md.Git.CommitChecksum, nil
	}
	return md.Git.Checksum, nil
}

func orHEAD(rev string) string {
	if rev == "" {
		return "HEAD"
	}
	return rev
}

// classifySolveError turns a BuildKit error into a failure class and a message users can act on.
func classifySolveError(err error, dockerfile string) error {
	var f *failure
	if errors.As(err, &f) {
		return err
	}
	msg := cleanError(err)
	lower := strings.ToLower(msg)
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
}

func newStepCounter() *stepCounter { return &stepCounter{steps: map[digest.Digest]bool{}} }

func (s *stepCounter) observe(st *client.SolveStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range st.Vertexes {
		if v.Completed == nil || v.Error != "" || !isStep(v.Name) {
			continue
		}
		s.steps[v.Digest] = v.Cached
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
