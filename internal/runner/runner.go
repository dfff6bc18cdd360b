// Package runner is `kiln runner`: inside a build pod it builds the Dockerfile with the buildkitd
// sidecar, exports the image to an OCI layout, measures it, judges it against the budget, pushes
// it when the budget allows, and writes the result to the termination message.
package runner

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/moby/buildkit/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/budget"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/sbom"
	"github.com/kiln-dev/kiln/internal/units"
	"github.com/kiln-dev/kiln/internal/version"
)

// Config is one run of the runner.
type Config struct {
	Request contract.Request
	// Addr is buildkitd's address.
	Addr  string
	Paths Paths
	// ConnectTimeout bounds the wait for buildkitd's worker.
	ConnectTimeout time.Duration
	// PushAttempts and PushBackoff govern retries of registry operations.
	PushAttempts int
	PushBackoff  time.Duration
	// Out receives the build log and the report.
	Out io.Writer
}

type run struct {
	req          contract.Request
	out          io.Writer
	pushAttempts int
	pushBackoff  time.Duration
	// red hides credentials and build-arg values in the log (out) and in the result.
	red *redactor
	// measured is the built image as measure saw it (its final files among the rest).
	measured measure.Index
	// clock times the steps for the log's last line.
	clock *phases
	// warnings are what BuildKit warned about during the solve (its Dockerfile checks).
	warnings []client.VertexWarning
}

// Run does one build and returns its result; it never panics on bad input.
func Run(ctx context.Context, cfg Config) contract.Result {
	tail := newTailWriter(contract.LogTailLines)
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	red := &redactor{}
	for _, a := range cfg.Request.Spec.Dockerfile.BuildArgs {
		red.addBuildArg(a.Name, a.Value)
	}
	log := &redactWriter{w: io.MultiWriter(out, tail), red: red}
	defer log.Flush()
	r := &run{req: cfg.Request, out: log, red: red, pushAttempts: max(cfg.PushAttempts, 1), pushBackoff: cfg.PushBackoff, clock: newPhases(time.Now())}
	if r.pushBackoff <= 0 {
		r.pushBackoff = 2 * time.Second
	}
	res, err := r.doRecovered(ctx, cfg)
	if err != nil && ctx.Err() != nil {
		// SIGTERM: the pod was deleted, evicted or drained mid-build. That says nothing about the
		// build itself, so it is the retryable PodLost, not whatever the cancelled solve returned.
		err = fail(kilnv1.FailurePodLost, "the build pod was stopped before the build finished (deleted, evicted or its node drained): %v", err)
	}
	if err != nil {
		res.FailureClass = classOf(err)
		res.Pushed = false
		log.Flush()
		res.LogTail = red.String(tail.String()) // lines are redacted already; a value cut by maxHeldBytes is not
		msg := red.String(err.Error())
		if res.FailureClass != kilnv1.FailureOverBudget { // the manager says that one from res.Budget
			res.Message = msg
		}
		fmt.Fprintf(r.out, "\nBuild failed (%s): %s\n", res.FailureClass, msg)
	}
	r.clock.print(r.out, time.Now())
	return res
}

// doRecovered is do, with a panic turned into an InternalError result: the panic's value and
// stack go through the redacting log like every other line, so a crash still reports, and
// reports nothing secret.
func (r *run) doRecovered(ctx context.Context, cfg Config) (res contract.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(r.out, "\nkiln runner panicked: %v\n%s\n", p, debug.Stack())
			err = fail(kilnv1.FailureInternal, "the runner failed (a bug in kiln; its log has the trace): panic: %v", p)
		}
	}()
	return r.do(ctx, cfg)
}

func (r *run) do(ctx context.Context, cfg Config) (contract.Result, error) {
	var res contract.Result
	spec := r.req.Spec
	fmt.Fprintf(r.out, "kiln runner %s: building %s/%s (build %d) into %s, as uid %d\n", version.Version, r.req.Namespace, r.req.Name, r.req.Build, r.imageName(), os.Getuid())
	in, err := prepare(r.req, cfg.Paths)
	if err != nil {
		return res, err
	}
	r.red.addSecrets(in.secretValues())
	var scanner *sbom.Scanner
	if spec.Output.SBOM {
		scanner = sbom.Prepare(ctx) // overlaps waiting for buildkitd and the build
	}
	if err := r.fetchSource(ctx, in, cfg.Paths, &res); err != nil {
		return res, err
	}
	r.clock.done("prepare", time.Now())
	c, err := connect(ctx, cfg.Addr, cfg.ConnectTimeout, r.out)
	if err != nil {
		return res, err
	}
	defer c.Close()
	r.clock.done("wait-buildkitd", time.Now())
	if r.req.ResetCache {
		if err := resetCache(ctx, c, r.out); err != nil {
			return res, err
		}
	}

	dir, err := layoutDir(cfg.Paths.Work)
	if err != nil {
		return res, err
	}
	start := time.Now()
	out, err := r.solve(ctx, c, in, dir)
	res.Revision, res.CachedSteps, res.TotalSteps, res.Cache = out.revision, out.cached, out.total, out.cache
	if in.contextDigest != "" {
		res.Revision = in.contextDigest // what the kubelet mounted, which the manager compares with the ConfigMap it sees
	}
	if err != nil {
		return res, err
	}
	fmt.Fprintf(r.out, "\nBuilt in %s: %d of %d steps cached\n", time.Since(start).Round(time.Millisecond), out.cached, out.total)
	r.clock.done("solve", time.Now())

	kc := keychain{cf: in.dockerConfig}
	idx, err := r.measure(ctx, in, dir, kc, &res)
	r.clock.done("measure", time.Now())
	if err != nil {
		return res, err
	}
	if spec.Output.SBOM {
		if err := os.MkdirAll(os.TempDir(), 0o700); err != nil {
			return res, err
		}
		if idx, err = r.attachSBOMs(ctx, scanner, idx, kc, &res); err != nil {
			return res, fmt.Errorf("making the SBOM: %w", err)
		}
		r.clock.done("sbom", time.Now())
	}
	if in.signer != nil {
		if res.Signature, err = r.sign(ctx, in.signer, idx, kc); err != nil {
			return res, err
		}
		r.clock.done("sign", time.Now())
	}
	digest, err := r.push(ctx, idx, kc)
	if err != nil {
		return res, err
	}
	r.clock.done("push", time.Now())
	res.Digest = digest
	res.Image = spec.Output.Image + "@" + digest
	res.Tags = spec.Output.Tags
	if len(res.Tags) == 0 {
		res.Tags = []string{"latest"}
	}
	res.Pushed = true
	fmt.Fprintf(r.out, "Image: %s\n", res.Image)
	return res, nil
}

// fetchSource pulls and unpacks spec.source.oci's context, while buildkitd starts, and reads its
// Dockerfile; other sources need nothing here.
func (r *run) fetchSource(ctx context.Context, in *inputs, p Paths, res *contract.Result) error {
	o := r.req.Spec.Source.OCI
	if o == nil {
		return nil
	}
	if err := r.fetchOCIContext(ctx, in, p, o); err != nil {
		return err
	}
	res.Revision = in.contextDigest
	return in.readDockerfile(r.req.Spec.Dockerfile, p.Work)
}

// measure measures the image exported into dir, judges it against the budget and adds the advice,
// into res; it returns the layout's image index for the push, and an OverBudget failure when the
// budget is broken and enforced.
func (r *run) measure(ctx context.Context, in *inputs, dir string, kc keychain, res *contract.Result) (v1.ImageIndex, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the exported OCI layout: %w", err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading the exported OCI layout: %w", err)
	}
	measured, err := measureLayout(idx)
	if err != nil {
		return nil, fmt.Errorf("measuring the image: %w", err)
	}
	r.measured = measured
	res.AttestationBytes = measured.AttestationBytes
	res.Attestations = attestations(measured.Attestations)
	res.Platforms = r.platformSizes(measured, in)
	if im, err := idx.IndexManifest(); err == nil && len(im.Manifests) > 0 {
		// What the push would write: the status names the image even when it is refused.
		res.Digest = im.Manifests[0].Digest.String()
		res.Image = r.req.Spec.Output.Image + "@" + res.Digest
	}
	if err := r.checkPlatforms(ctx, measured, in, kc); err != nil {
		return nil, err
	}

	spec := r.req.Spec
	var baseline map[string]baselineImage
	if spec.Budget != nil && spec.Budget.MaxGrowth != nil {
		baseline, err = r.baseline(ctx, kc)
		if err != nil {
			fmt.Fprintf(r.out, "Cannot read the current %s to check maxGrowth: %v\n", r.imageName(), err)
		}
	}
	sizes := map[string]int64{}
	for p, b := range baseline {
		sizes[p] = b.bytes
	}
	res.Budget = budget.Judge(spec.Budget, res.Platforms, sizes)
	blameGrowth(res.Budget, measured, res.Platforms, baseline)
	verdict := budget.Status(res.Budget, res.Platforms)
	r.report(measured, res.Platforms, verdict)
	for _, a := range r.advise(in, measured) {
		res.Advice = append(res.Advice, contract.Advice{Rule: a.Rule, Message: r.red.String(a.Message), Line: a.Line, SavingBytes: a.SavingBytes})
	}
	if res.Budget.Over() && res.Budget.Enforcement == kilnv1.EnforcementEnforce {
		return nil, fail(kilnv1.FailureOverBudget, "%s; not pushed (budget enforcement is Enforce)", budget.Message(verdict))
	}
	return idx, nil
}

// blameGrowth names, in each broken maxGrowth check, the largest layer of the new image that the
// current one lacks (among the largest layers the result keeps).
func blameGrowth(b *contract.Budget, m measure.Index, sizes []contract.Platform, baseline map[string]baselineImage) {
	if b == nil {
		return
	}
	for i, c := range b.Checks {
		if c.Limit != budget.MaxGrowth || !c.Over() {
			continue
		}
		for j, img := range m.Images {
			if img.Platform != c.Platform {
				continue
			}
			added := map[int32]bool{}
			for _, l := range img.Layers {
				added[int32(l.Index)] = !baseline[c.Platform].layers[l.Digest]
			}
			for _, l := range sizes[j].LargestLayers { // largest first
				if added[l.Index] {
					b.Checks[i].Layer = &l
					break
				}
			}
		}
	}
}

// attestations names the measured attestation manifests and their provenance and SBOM
// statements for the result.
func attestations(in []measure.Attestation) []contract.Attestation {
	var out []contract.Attestation
	for _, a := range in {
		c := contract.Attestation{Platform: a.Platform, Manifest: a.Manifest}
		for _, s := range a.Statements {
			switch s.PredicateType {
			case measure.PredicateSLSAProvenance1, measure.PredicateSLSAProvenance02:
				c.Provenance = s.Digest
			case measure.PredicateSPDX:
				c.SBOM = s.Digest
			}
		}
		out = append(out, c)
	}
	return out
}

// measureLayout measures the one image or index BuildKit exported into the layout.
func measureLayout(lay v1.ImageIndex) (measure.Index, error) {
	im, err := lay.IndexManifest()
	if err != nil {
		return measure.Index{}, err
	}
	if len(im.Manifests) == 0 {
		return measure.Index{}, fmt.Errorf("the exported layout is empty")
	}
	desc := im.Manifests[0]
	if desc.MediaType.IsIndex() {
		idx, err := lay.ImageIndex(desc.Digest)
		if err != nil {
			return measure.Index{}, err
		}
		return measure.MeasureIndex(idx)
	}
	img, err := lay.Image(desc.Digest)
	if err != nil {
		return measure.Index{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return measure.Index{}, err
	}
	m, err := measure.MeasureImage(img, measure.PlatformString(v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}))
	if err != nil {
		return measure.Index{}, err
	}
	return measure.Index{Images: []measure.Image{m}}, nil
}

// platformSizes turns measurements into the result's sizes, naming each large layer by the
// Dockerfile instruction (and line) that created it.
func (r *run) platformSizes(m measure.Index, in *inputs) []contract.Platform {
	var out []contract.Platform
	buildArgs := map[string]string{}
	for _, a := range r.req.Spec.Dockerfile.BuildArgs {
		buildArgs[a.Name] = a.Value
	}
	for _, img := range m.Images {
		origins := attributeWith(in, r.req.Spec.Dockerfile.Target, buildArgs, img.Layers)
		ps := contract.Platform{
			Platform: img.Platform, CompressedBytes: img.CompressedBytes, UncompressedBytes: img.UncompressedBytes,
			Layers: int32(len(img.Layers)), WastedBytes: img.WastedBytes,
		}
		layer := func(index int) contract.Layer {
			l := contract.Layer{Index: int32(index), CreatedBy: contract.Truncate(r.red.String(origins[index].createdBy), contract.MaxCreatedBy), Line: int32(origins[index].line)}
			for _, m := range img.Layers {
				if m.Index == index {
					l.CompressedBytes = m.CompressedBytes
				}
			}
			return l
		}
		layers := append([]measure.Layer(nil), img.Layers...)
		sort.SliceStable(layers, func(i, j int) bool { return layers[i].CompressedBytes > layers[j].CompressedBytes })
		for _, l := range layers[:min(len(layers), contract.MaxLayersPerPlatform)] {
			ps.LargestLayers = append(ps.LargestLayers, layer(l.Index))
		}
		if len(img.WasteGroups) > 0 { // largest first
			g := img.WasteGroups[0]
			ps.LargestWaste = &contract.Waste{
				Bytes: g.Bytes, Files: int32(g.Files), Largest: contract.Truncate(r.red.String(g.Largest), contract.MaxCreatedBy), Deleted: g.Deleted,
				Added: layer(g.AddedIn), Removed: layer(g.RemovedIn),
			}
		}
		out = append(out, ps)
	}
	return out
}

// report prints the measurements as a table, largest layers first.
func (r *run) report(m measure.Index, sizes []contract.Platform, verdict kilnv1.BudgetStatus) {
	for i, img := range m.Images {
		ps := sizes[i]
		fmt.Fprintf(r.out, "\nImage %s: %s compressed, %s uncompressed, %d layers, %s wasted\n",
			img.Platform, units.Bytes(img.CompressedBytes), units.Bytes(img.UncompressedBytes), len(img.Layers), units.Bytes(img.WastedBytes))
		tw := tabwriter.NewWriter(r.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  LAYER\tCOMPRESSED\tSHARE\tCREATED BY")
		for _, l := range ps.LargestLayers {
			share := float64(l.CompressedBytes) * 100 / float64(max(img.CompressedBytes, 1))
			fmt.Fprintf(tw, "  %d\t%s\t%.0f%%\t%s\n", l.Index, units.Bytes(l.CompressedBytes), share, budgetOrigin(l))
		}
		_ = tw.Flush()
		for _, w := range img.Waste[:min(len(img.Waste), 5)] {
			verb := "overwritten"
			if w.Deleted {
				verb = "deleted"
			}
			fmt.Fprintf(r.out, "  wasted %s: %s added by layer %d, %s by layer %d\n", units.Bytes(w.Bytes), w.Path, w.AddedIn, verb, w.RemovedIn)
		}
	}
	if m.AttestationBytes > 0 {
		fmt.Fprintf(r.out, "Attestations: %s (not counted in the image size)\n", units.Bytes(m.AttestationBytes))
		for _, a := range m.Attestations {
			for _, s := range a.Statements {
				fmt.Fprintf(r.out, "  %s: %s %s (%s)\n", cmp.Or(a.Platform, a.Subject), s.PredicateType, s.Digest, units.Bytes(s.Size))
			}
		}
	}
	switch verdict.Verdict {
	case kilnv1.VerdictOverBudget:
		fmt.Fprintf(r.out, "\nBudget: OVER (%s): %s\n", verdict.Enforcement, budget.Message(verdict))
	default:
		fmt.Fprintf(r.out, "\nBudget: within (%s)\n", verdict.Summary)
	}
}

func budgetOrigin(l contract.Layer) string {
	if l.Line > 0 {
		return fmt.Sprintf("%s (Dockerfile:%d)", l.CreatedBy, l.Line)
	}
	return l.CreatedBy
}

// Main is `kiln runner`: it parses flags, runs the build, writes the result where the kubelet
// reads the termination message, and returns the exit code of the failure class.
func Main(args []string) int {
	fs := flag.NewFlagSet("kiln runner", flag.ContinueOnError)
	def := DefaultPaths()
	var (
		reqDir     = fs.String("request-dir", "", "read the build request from this directory (the manager mounts it at "+contract.RequestDir+")")
		reqJSON    = fs.String("request", "", "the build request as JSON, for running by hand")
		reqFile    = fs.String("request-file", "", "read the build request as JSON from this file, for running by hand")
		addr       = fs.String("addr", envOr("BUILDKIT_HOST", contract.Socket), "buildkitd address")
		resultPath = fs.String("result-path", contract.ResultPath, "where the result JSON is written")
		wait       = fs.Duration("connect-timeout", 2*time.Minute, "how long to wait for buildkitd to be ready")
		attempts   = fs.Int("push-attempts", 5, "attempts for each registry operation that fails transiently")
		backoff    = fs.Duration("push-backoff", 2*time.Second, "wait before the second registry attempt; doubles after")
	)
	fs.StringVar(&def.Context, "context-dir", def.Context, "mounted ConfigMap context")
	fs.StringVar(&def.Work, "work-dir", def.Work, "scratch directory")
	fs.StringVar(&def.PushSecret, "push-secret-dir", def.PushSecret, "mounted push Secret")
	fs.StringVar(&def.GitSecret, "git-secret-dir", def.GitSecret, "mounted git Secret")
	fs.StringVar(&def.BuildSecrets, "build-secrets-dir", def.BuildSecrets, "mounted build secrets, one directory per id")
	if err := fs.Parse(args); err != nil {
		return contract.ExitBadInput
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	var res contract.Result
	req, err := readRequest(*reqDir, *reqJSON, *reqFile)
	if err != nil {
		class := kilnv1.FailureBadInput
		if errors.As(err, new(*contract.VersionError)) {
			class = kilnv1.FailureInternal // the manager runs a runner image it does not speak with
		}
		res = contract.Result{FailureClass: class, Message: err.Error()}
		fmt.Fprintln(os.Stderr, err)
	} else {
		res = Run(ctx, Config{
			Request: req, Addr: *addr, Paths: def, ConnectTimeout: *wait,
			PushAttempts: *attempts, PushBackoff: *backoff, Out: os.Stdout,
		})
	}
	if err := writeResult(*resultPath, res); err != nil {
		fmt.Fprintf(os.Stderr, "writing the result to %s: %v\n", *resultPath, err)
		return contract.ExitInternal
	}
	return contract.ExitCode(res.FailureClass)
}

func readRequest(dir, inline, file string) (contract.Request, error) {
	if dir != "" {
		if want := os.Getenv(contract.RequestDigestEnv); want != "" {
			if err := contract.CheckRequestDir(dir, want); err != nil {
				return contract.Request{}, err
			}
		}
		return contract.ReadRequestDir(dir)
	}
	data := []byte(inline)
	if file != "" {
		var err error
		if data, err = os.ReadFile(file); err != nil {
			return contract.Request{}, fmt.Errorf("reading --request-file: %w", err)
		}
	}
	if len(data) == 0 {
		return contract.Request{}, fmt.Errorf("no build request: pass --request-dir, --request or --request-file")
	}
	return contract.DecodeRequest(data)
}

func writeResult(path string, res contract.Result) error {
	b, err := res.Encode()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
