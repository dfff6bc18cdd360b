//go:build bench

package runner

// The benchmark of issue 3: on the Go hello-world, against the same buildkitd and cache, the
// runner (build + export to an OCI layout + measure + push with go-containerregistry) versus
// `buildctl build --output type=image,push=true` (BuildKit builds and pushes by itself).
//
//	go test -tags bench -count=1 -v -timeout 30m -run TestBenchRunnerVsBuildctl ./internal/runner/
//
// or hack/bench/runner.sh. KILN_BENCH_RUNS sets the measured runs per scenario and tool (default
// 5); KILN_BENCH_OUT names a file that receives the table too; KILN_BENCH_SHOW_LOGS=1 prints the
// runner's and buildctl's logs of every run.
//
// Scenarios, each timed end to end (wall clock, time.Now) for both tools:
//
//   - cold: `buildctl prune --all` empties BuildKit's cache (build steps, the go build cache
//     mount, pulled layers) before every cold run, outside the timing. The Go base image stays in
//     the local registry, so both tools pull and unpack the same bytes from 127.0.0.1: the base
//     image costs both the same.
//   - warm: the same files again; every step is cached; the image is pushed to the same tag.
//   - source change: one line of main.go differs (a counter, and the tool's name so that the
//     other tool's build never serves as cache); COPY main.go, RUN go build and the final COPY
//     run again (the go build cache mount is warm), then the image is pushed.
//
// Runs are interleaved and the order alternates per round (runner, buildctl, buildctl, runner,
// ...) so that drift of the machine weighs on both tools alike. Both push gzip layers with OCI
// media types (compression=gzip,force-compression=true,oci-mediatypes=true) and no
// attestations, to <registry>/bench/runner:v1 and <registry>/bench/buildctl:v1.
//
// Phases come from buildkitd's build history (outside the timing): each build's record gives the
// daemon's start and end, and its replayed progress the exact times of the export vertex (and of
// buildctl's pushing statuses) and which steps were cached. For the runner, the push is its "Pushed
// in" line, and connect and measure are re-timed on the same inputs after the run.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	contentlocal "github.com/containerd/containerd/v2/plugins/content/local"
	clog "github.com/containerd/log"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/testenv"
	"github.com/kiln-dev/kiln/internal/units"
)

// benchSample is one timed build.
type benchSample struct {
	total         time.Duration
	cached, steps int
	// phases are the parts of total the logs (or a re-timing) account for, by name.
	phases map[string]time.Duration
	// layout is the runner's exported OCI layout (kept until the test ends).
	layout string
}

type benchTool struct {
	name  string
	build func(t *testing.T, files map[string]string) benchSample
}

type benchScenario struct {
	name string
	// prepare runs before every measured build, outside the timing.
	prepare func(t *testing.T)
	// files gives the build's files for tool and round.
	files func(tool string, round int) map[string]string
	// wantRan, when >= 0, is how many steps must run (not be cached) in every build.
	wantRan int
	// warmup builds each tool once, unmeasured, before the rounds.
	warmup bool
}

// benchRuns is KILN_BENCH_RUNS, the measured runs per scenario and tool (default 5).
func benchRuns(t *testing.T) int {
	t.Helper()
	v := os.Getenv("KILN_BENCH_RUNS")
	if v == "" {
		return 5
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("KILN_BENCH_RUNS=%q: want a positive integer", v)
	}
	return n
}

func TestBenchRunnerVsBuildctl(t *testing.T) {
	testenv.SkipUnlessBuildKitPossible(t)
	runs := benchRuns(t)
	showLogs := os.Getenv("KILN_BENCH_SHOW_LOGS") != ""

	reg := testenv.StartRegistry(t)
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{InsecureRegistries: []string{reg.Addr}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("buildkitd log:\n%s", bk.Log())
		}
	})
	golang := testenv.GoImage(t, reg)
	buildctl := filepath.Join(testenv.BuildKitBinDir(t), "buildctl")
	hc := bk.Client(t) // reads the build history, never inside a timing
	t.Logf("bench: registry %s, buildkitd %s (snapshotter %s), base image %s, %d runs per scenario and tool",
		reg.Addr, bk.Addr, bk.Snapshotter, golang, runs)

	runnerTool := benchTool{name: "runner", build: func(t *testing.T, files map[string]string) benchSample {
		req := request(func(s *contract.BuildSpec) {
			s.Output.Image = reg.Addr + "/bench/runner"
			s.Output.Tags = []string{"v1"}
			s.Output.Insecure = true
			s.Output.Compression = kilnv1.CompressionGzip
		})
		req.Name = "bench-runner"
		p := Paths{Context: configMapDir(t, files), Work: t.TempDir(), PushSecret: filepath.Join(t.TempDir(), "none"),
			GitSecret: filepath.Join(t.TempDir(), "none"), BuildSecrets: t.TempDir()}
		var log bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()

		start := time.Now()
		res := Run(ctx, Config{Request: req, Addr: bk.Addr, Paths: p, ConnectTimeout: 30 * time.Second, PushAttempts: 1, Out: &log})
		total := time.Since(start)

		if showLogs || res.FailureClass != "" {
			t.Logf("runner log:\n%s", log.String())
		}
		if res.FailureClass != "" {
			t.Fatalf("runner: %s: %s", res.FailureClass, res.Message)
		}
		s := daemonPhases(t, hc, start, total)
		if m := regexp.MustCompile(`(?m)^Pushed \S+ in (\S+)$`).FindStringSubmatch(log.String()); m != nil {
			s.phases["push"], _ = time.ParseDuration(m[1])
		}
		s.phases["client"] = total - s.phases["daemon"] - s.phases["push"]
		if int(res.CachedSteps) != s.cached || int(res.TotalSteps) != s.steps {
			t.Logf("note: the runner reports %d of %d steps cached, buildkitd's history %d of %d", res.CachedSteps, res.TotalSteps, s.cached, s.steps)
		}
		// Re-timed after the run, on the same inputs: connecting (client + ListWorkers) and
		// reading + measuring the layout (which decompresses every layer).
		c0 := time.Now()
		if c, err := connect(ctx, bk.Addr, 30*time.Second, &bytes.Buffer{}); err == nil {
			s.phases["connect"] = time.Since(c0)
			c.Close()
		}
		s.layout = filepath.Join(p.Work, "oci")
		m0 := time.Now()
		if lp, err := layout.FromPath(s.layout); err == nil {
			if idx, err := lp.ImageIndex(); err == nil {
				if _, err := measureLayout(idx); err == nil {
					s.phases["measure"] = time.Since(m0)
				}
			}
		}
		return s
	}}

	buildctlTool := benchTool{name: "buildctl", build: func(t *testing.T, files map[string]string) benchSample {
		dir := t.TempDir()
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, buildctl, "--addr", bk.Addr, "build", "--progress=plain",
			"--frontend", "dockerfile.v0", "--local", "context="+dir, "--local", "dockerfile="+dir,
			"--output", "type=image,name="+reg.Addr+"/bench/buildctl:v1,push=true,registry.insecure=true,"+
				"oci-mediatypes=true,compression=gzip,force-compression=true")
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log

		start := time.Now()
		err := cmd.Run()
		total := time.Since(start)

		if showLogs || err != nil {
			t.Logf("buildctl log:\n%s", log.String())
		}
		if err != nil {
			t.Fatalf("buildctl build: %v", err)
		}
		s := daemonPhases(t, hc, start, total)
		s.phases["client"] = total - s.phases["daemon"]
		return s
	}}

	prune := func(t *testing.T) {
		start := time.Now()
		out, err := exec.Command(buildctl, "--addr", bk.Addr, "prune", "--all").CombinedOutput()
		if err != nil {
			t.Fatalf("buildctl prune --all: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("pruned BuildKit's cache in %s: %s", time.Since(start).Round(time.Millisecond), lines[len(lines)-1])
	}
	const baseMessage = "hello from kiln"
	same := func(string, int) map[string]string { return helloFiles(golang, baseMessage) }
	scenarios := []benchScenario{
		{name: "cold", prepare: prune, files: same, wantRan: 6},
		{name: "warm", files: same, wantRan: 0, warmup: true},
		{name: "source change", files: func(tool string, round int) map[string]string {
			return helloFiles(golang, fmt.Sprintf("hello from kiln (%s, change %d)", tool, round+1))
		}, wantRan: 3},
	}
	tools := []benchTool{runnerTool, buildctlTool}

	// One unmeasured build each first: the daemons, the page cache and the registry's storage
	// see their first requests outside the measurements.
	for _, tool := range tools {
		s := tool.build(t, helloFiles(golang, baseMessage))
		t.Logf("warm-up %-8s %s (%d of %d steps cached)", tool.name, fmtDur(s.total), s.cached, s.steps)
	}

	samples := map[string]map[string][]benchSample{} // scenario -> tool -> samples
	for _, sc := range scenarios {
		samples[sc.name] = map[string][]benchSample{}
		if sc.warmup {
			for _, tool := range tools {
				s := tool.build(t, sc.files(tool.name, -1))
				t.Logf("%s warm-up %-8s %s (%d of %d steps cached)", sc.name, tool.name, fmtDur(s.total), s.cached, s.steps)
			}
		}
		for round := 0; round < runs; round++ {
			order := tools
			if round%2 == 1 {
				order = []benchTool{tools[1], tools[0]}
			}
			for _, tool := range order {
				if sc.prepare != nil {
					sc.prepare(t)
				}
				s := tool.build(t, sc.files(tool.name, round))
				samples[sc.name][tool.name] = append(samples[sc.name][tool.name], s)
				t.Logf("%-13s %-8s run %d: %s (%d of %d steps cached) %s", sc.name, tool.name, round+1, fmtDur(s.total), s.cached, s.steps, fmtPhases(s.phases))
				if ran := s.steps - s.cached; sc.wantRan >= 0 && ran != sc.wantRan {
					t.Errorf("%s %s run %d: %d of %d steps ran, want %d: the scenario did not measure what it says", sc.name, tool.name, round+1, ran, s.steps, sc.wantRan)
				}
			}
		}
	}

	table := benchTable(scenarios, tools, samples, runs)
	if warm := samples["warm"]["runner"]; len(warm) > 0 {
		table += measureBreakdown(t, warm[len(warm)-1].layout)
	}
	fmt.Print("\n" + table)
	if out := os.Getenv("KILN_BENCH_OUT"); out != "" {
		// Appended: hack/bench/runner.sh empties the file, and TestBenchSupplyChain adds its own.
		f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, err = f.WriteString(table)
			_ = f.Close()
		}
		if err != nil {
			t.Errorf("writing KILN_BENCH_OUT: %v", err)
		}
	}
	if warm := samples["warm"]; len(warm["runner"]) > 0 {
		ratio := median(totals(warm["runner"])).Seconds() / median(totals(warm["buildctl"])).Seconds()
		verdict := "meets"
		if ratio > 1.15 {
			verdict = "MISSES"
		}
		t.Logf("warm-rebuild ratio runner/buildctl %.2f %s the target <= 1.15", ratio, verdict)
	}
}

// benchTable renders the medians, the ratios, the phase medians and every sample.
func benchTable(scenarios []benchScenario, tools []benchTool, samples map[string]map[string][]benchSample, runs int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Go hello-world, runner (build + measure + push) vs buildctl (build + push), same buildkitd and cache; medians of %d runs\n\n", runs)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\trunner (median)\tbuildctl (median)\tratio")
	for _, sc := range scenarios {
		r, c := median(totals(samples[sc.name]["runner"])), median(totals(samples[sc.name]["buildctl"]))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\n", sc.name, fmtDur(r), fmtDur(c), r.Seconds()/c.Seconds())
	}
	_ = tw.Flush()

	fmt.Fprintf(&b, "\nPhase medians (seconds):\n"+
		"  build   buildkitd's record (start to end) minus export: context upload, frontend, steps\n"+
		"  export  the exporter vertex: runner = OCI layout written through the session to the runner;\n"+
		"          buildctl = image exporter, including its push\n"+
		"  push    runner = go-containerregistry (its \"Pushed in\"); buildctl = the exporter's pushing\n"+
		"          statuses, already inside export (*)\n"+
		"  client  total - buildkitd's record (- push for the runner): process/session start, runner's\n"+
		"          prepare + connect + layout read + measure + report\n"+
		"  connect, measure  runner only, re-timed after each run on the same inputs (parts of client)\n\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\ttool\ttotal\tbuild\texport\tpush\tclient\tconnect\tmeasure")
	for _, sc := range scenarios {
		for _, tool := range tools {
			ss := samples[sc.name][tool.name]
			ph := medianPhases(ss)
			cell := func(k string) string {
				v, ok := ph[k]
				if !ok {
					return "-"
				}
				if k == "push" && tool.name == "buildctl" {
					return fmt.Sprintf("(%.3f)*", v.Seconds())
				}
				return fmt.Sprintf("%.3f", v.Seconds())
			}
			fmt.Fprintf(tw, "%s\t%s\t%.3f\t%s\t%s\t%s\t%s\t%s\t%s\n", sc.name, tool.name, median(totals(ss)).Seconds(),
				cell("build"), cell("export"), cell("push"), cell("client"), cell("connect"), cell("measure"))
		}
	}
	_ = tw.Flush()

	fmt.Fprintf(&b, "\nSamples (seconds, in run order):\n\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\ttool\tsamples")
	for _, sc := range scenarios {
		for _, tool := range tools {
			var parts []string
			for _, s := range samples[sc.name][tool.name] {
				parts = append(parts, fmt.Sprintf("%.2f", s.total.Seconds()))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", sc.name, tool.name, strings.Join(parts, " "))
		}
	}
	_ = tw.Flush()
	return b.String()
}

func totals(ss []benchSample) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		out[i] = s.total
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianPhases(ss []benchSample) map[string]time.Duration {
	by := map[string][]time.Duration{}
	for _, s := range ss {
		for k, v := range s.phases {
			by[k] = append(by[k], v)
		}
	}
	out := map[string]time.Duration{}
	for k, v := range by {
		out[k] = median(v)
	}
	return out
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func fmtPhases(p map[string]time.Duration) string {
	order := []string{"build", "export", "push", "client", "connect", "measure"}
	var parts []string
	for _, k := range order {
		if v, ok := p[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.3fs", k, v.Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

// daemonPhases finds the build that started at or after start in buildkitd's history and
// returns its phases: daemon (the record's start to end), export (the exporter vertex; for
// buildctl it includes the push), build (daemon - export), push (buildctl's pushing statuses,
// inside export), and its cached and total steps.
func daemonPhases(t *testing.T, c *client.Client, start time.Time, total time.Duration) benchSample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rec *controlapi.BuildHistoryRecord
	for rec == nil {
		stream, err := c.ControlClient().ListenBuildHistory(ctx, &controlapi.BuildHistoryRequest{EarlyExit: true})
		if err != nil {
			t.Fatalf("reading buildkitd's build history: %v", err)
		}
		for {
			ev, err := stream.Recv()
			if err != nil {
				break // io.EOF after the last record
			}
			r := ev.GetRecord()
			if r == nil || r.GetCompletedAt() == nil || r.GetCreatedAt().AsTime().Before(start.Add(-time.Second)) {
				continue
			}
			if rec == nil || r.GetCreatedAt().AsTime().After(rec.GetCreatedAt().AsTime()) {
				rec = r
			}
		}
		if rec == nil {
			select {
			case <-ctx.Done():
				t.Fatalf("buildkitd's history has no completed build started after %s", start.Format(time.RFC3339Nano))
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	stream, err := c.ControlClient().Status(ctx, &controlapi.StatusRequest{Ref: rec.GetRef()})
	if err != nil {
		t.Fatalf("reading the progress of build %s: %v", rec.GetRef(), err)
	}
	vertexes := map[digest.Digest]*client.Vertex{}
	statuses := map[string]*client.VertexStatus{}
	for {
		resp, err := stream.Recv()
		if err != nil {
			break
		}
		st := client.NewSolveStatus(resp)
		for _, v := range st.Vertexes {
			vertexes[v.Digest] = v
		}
		for _, vs := range st.Statuses {
			statuses[string(vs.Vertex)+" "+vs.ID] = vs
		}
	}
	s := benchSample{total: total, phases: map[string]time.Duration{}}
	daemon := rec.GetCompletedAt().AsTime().Sub(rec.GetCreatedAt().AsTime())
	var export, push time.Duration
	for _, v := range vertexes {
		if isStep(v.Name) {
			s.steps++
			if v.Cached {
				s.cached++
			}
		}
		if strings.HasPrefix(v.Name, "exporting to") && v.Started != nil && v.Completed != nil {
			export += v.Completed.Sub(*v.Started)
		}
	}
	for _, vs := range statuses {
		if (strings.HasPrefix(vs.ID, "pushing layers") || strings.HasPrefix(vs.ID, "pushing manifest")) && vs.Started != nil && vs.Completed != nil {
			push += vs.Completed.Sub(*vs.Started)
		}
	}
	s.phases["daemon"] = daemon
	s.phases["build"] = daemon - export
	s.phases["export"] = export
	if push > 0 {
		s.phases["push"] = push
	}
	return s
}

// measureBreakdown splits the runner's measurement of one exported layout into its parts, each
// the median of 21 repetitions: reading the layout's index, manifest and config; reading the
// compressed layer blobs; decompressing them (gzip, as go-containerregistry does); and the whole
// measureLayout (which adds the tar walk and the overlay bookkeeping).
func measureBreakdown(t *testing.T, dir string) string {
	t.Helper()
	const reps = 21
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Errorf("measure breakdown: %v", err)
		return ""
	}
	timeIt := func(f func() error) time.Duration {
		var ds []time.Duration
		for i := 0; i < reps; i++ {
			start := time.Now()
			if err := f(); err != nil {
				t.Errorf("measure breakdown: %v", err)
				return 0
			}
			ds = append(ds, time.Since(start))
		}
		return median(ds)
	}
	var compressed, uncompressed int64
	var blobs int
	var blobBytes int64
	_ = filepath.Walk(filepath.Join(dir, "blobs"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			blobs++
			blobBytes += fi.Size()
		}
		return nil
	})
	images := func() ([]v1.Image, error) {
		idx, err := lp.ImageIndex()
		if err != nil {
			return nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		var out []v1.Image
		for _, d := range im.Manifests {
			if d.MediaType.IsIndex() {
				return nil, fmt.Errorf("an index: the breakdown handles one image")
			}
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, err
			}
			if _, err := img.Manifest(); err != nil {
				return nil, err
			}
			if _, err := img.ConfigFile(); err != nil {
				return nil, err
			}
			out = append(out, img)
		}
		return out, nil
	}
	eachLayer := func(f func(v1.Layer) error) error {
		imgs, err := images()
		if err != nil {
			return err
		}
		for _, img := range imgs {
			ls, err := img.Layers()
			if err != nil {
				return err
			}
			for _, l := range ls {
				if err := f(l); err != nil {
					return err
				}
			}
		}
		return nil
	}
	meta := timeIt(func() error { _, err := images(); return err })
	read := timeIt(func() error {
		compressed = 0
		return eachLayer(func(l v1.Layer) error {
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			defer rc.Close()
			n, err := io.Copy(io.Discard, rc)
			compressed += n
			return err
		})
	})
	gunzip := timeIt(func() error {
		uncompressed = 0
		return eachLayer(func(l v1.Layer) error {
			rc, err := l.Uncompressed()
			if err != nil {
				return err
			}
			defer rc.Close()
			n, err := io.Copy(io.Discard, rc)
			uncompressed += n
			return err
		})
	})
	whole := timeIt(func() error {
		idx, err := lp.ImageIndex()
		if err != nil {
			return err
		}
		_, err = measureLayout(idx)
		return err
	})
	// What the runner's side of the export costs without the session: a fresh containerd local
	// content store (as the BuildKit client makes for an OCI layout; it probes fsverity) and
	// every blob written into it (each commit fsyncs).
	prevLevel := clog.GetLevel()
	_ = clog.SetLevel("error") // the fsverity probe warns on every store
	defer func() { _ = clog.SetLevel(prevLevel.String()) }()
	scratch := t.TempDir()
	ctx := context.Background()
	newStore := timeIt(func() error {
		d, err := os.MkdirTemp(scratch, "store-")
		if err != nil {
			return err
		}
		_, err = contentlocal.NewStore(d)
		return err
	})
	writeBlobs := timeIt(func() error {
		d, err := os.MkdirTemp(scratch, "store-")
		if err != nil {
			return err
		}
		cs, err := contentlocal.NewStore(d)
		if err != nil {
			return err
		}
		entries, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
		if err != nil {
			return err
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", e.Name()))
			if err != nil {
				return err
			}
			desc := ocispecs.Descriptor{Digest: digest.NewDigestFromEncoded(digest.SHA256, e.Name()), Size: int64(len(data))}
			if err := content.WriteBlob(ctx, cs, e.Name(), bytes.NewReader(data), desc); err != nil {
				return err
			}
		}
		return nil
	})

	var b strings.Builder
	fmt.Fprintf(&b, "\nRunner measurement of the warm image (layout: %d blobs, %s; layers %s compressed, %s uncompressed),\nmedians of %d repetitions:\n\n",
		blobs, units.Bytes(blobBytes), units.Bytes(compressed), units.Bytes(uncompressed), reps)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  read index, manifest, config\t%.1fms\n", ms(meta))
	fmt.Fprintf(tw, "  + read compressed layers\t%.1fms\n", ms(read))
	fmt.Fprintf(tw, "  + read and gunzip layers (instead)\t%.1fms\n", ms(gunzip))
	fmt.Fprintf(tw, "  measureLayout (all, with tar walk)\t%.1fms\n", ms(whole))
	_ = tw.Flush()
	fmt.Fprintf(&b, "\nRunner side of the export to the layout, without the session (medians of %d repetitions):\n\n", reps)
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  new local content store (fsverity probe)\t%.1fms\n", ms(newStore))
	fmt.Fprintf(tw, "  + write the %d blobs (fsync each)\t%.1fms\n", blobs, ms(writeBlobs))
	_ = tw.Flush()
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
