//go:build bench

package runner

// The benchmark of issue 15: what provenance, the SBOM and signing add to a warm rebuild of the
// Go hello-world (every step cached), in seconds and in bytes pushed. Runs alternate between the
// plain build (provenance none, no SBOM, unsigned) and the full one (provenance max, SBOM,
// cosign signing), on one buildkitd and registry.
//
//	go test -tags bench -count=1 -v -run TestBenchSupplyChain ./internal/runner/
//
// or hack/bench/runner.sh (which runs it after TestBenchRunnerVsBuildctl). KILN_BENCH_RUNS sets
// the runs per variant (default 5); KILN_BENCH_OUT receives the table too (appended).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/testenv"
)

func TestBenchSupplyChain(t *testing.T) {
	testenv.SkipUnlessBuildKitPossible(t)
	runs := benchRuns(t)
	reg := testenv.StartRegistry(t)
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{InsecureRegistries: []string{reg.Addr}})
	golang := testenv.GoImage(t, reg)
	pair := newKeyPair(t, "supply-chain-bench-pw")
	files := helloFiles(golang, "hello from kiln")

	type variant struct {
		name   string
		mutate func(*contract.BuildSpec)
		// previous passes the variant's last result as the request's Previous, as the manager
		// does from status: an unchanged image keeps its SBOM.
		previous bool
	}
	full := func(s *contract.BuildSpec) {
		s.Output.Provenance, s.Output.SBOM = kilnv1.ProvenanceMax, true
		s.Output.Signing = &contract.Signing{SecretRef: contract.SecretRef{Name: "cosign"}}
	}
	variants := []variant{
		{"plain", func(s *contract.BuildSpec) { s.Output.Provenance = kilnv1.ProvenanceNone }, false},
		{"provenance+SBOM+signed", full, true},
		{"the same, SBOM made anew", full, false},
	}
	last := map[string]contract.Result{}
	type sample struct {
		total, sbom, sign time.Duration
		attBytes          int64
	}
	build := func(v variant) sample {
		req := request(func(s *contract.BuildSpec) {
			s.Output.Image = reg.Addr + "/bench/" + strings.ToLower(strings.NewReplacer("+", "-", " ", "-", ",", "").Replace(v.name))
			s.Output.Tags = []string{"v1"}
			s.Output.Insecure = true
			v.mutate(s)
		})
		p := Paths{Context: configMapDir(t, files), Work: t.TempDir(), PushSecret: filepath.Join(t.TempDir(), "none"),
			GitSecret: filepath.Join(t.TempDir(), "none"), BuildSecrets: t.TempDir(), SigningSecret: pair.secretDir(t)}
		if prev, ok := last[v.name]; ok && v.previous {
			req.Previous = &contract.PreviousImage{Digest: prev.Digest}
			for _, p := range prev.Platforms {
				req.Previous.Platforms = append(req.Previous.Platforms, contract.PreviousPlatform{Platform: p.Platform, LargestPackages: p.LargestPackages, UnpackagedBytes: p.UnpackagedBytes})
			}
		}
		var log bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		res := Run(ctx, Config{Request: req, Addr: bk.Addr, Paths: p, ConnectTimeout: 30 * time.Second, PushAttempts: 1, Out: &log})
		s := sample{total: time.Since(start), attBytes: res.AttestationBytes}
		if res.FailureClass != "" {
			t.Fatalf("%s: %s: %s\n%s", v.name, res.FailureClass, res.Message, log.String())
		}
		last[v.name] = res
		if m := regexp.MustCompile(`(?m)^SBOMs (?:made with syft|reused from the last pushed image) in (\S+)$`).FindStringSubmatch(log.String()); m != nil {
			s.sbom, _ = time.ParseDuration(m[1])
		}
		if m := regexp.MustCompile(`(?m)^Signed .* in (\S+)$`).FindStringSubmatch(log.String()); m != nil {
			s.sign, _ = time.ParseDuration(m[1])
		}
		return s
	}
	for _, v := range variants {
		build(v) // warm-up: every later build is fully cached
	}
	samples := map[string][]sample{}
	for round := range runs {
		for i := range variants {
			v := variants[(i+round)%len(variants)]
			s := build(v)
			samples[v.name] = append(samples[v.name], s)
			t.Logf("%-24s run %d: %s (SBOM %s, signing %s, attestations %d bytes)", v.name, round+1, fmtDur(s.total), fmtDur(s.sbom), fmtDur(s.sign), s.attBytes)
		}
	}
	med := func(name string, f func(sample) time.Duration) time.Duration {
		var ds []time.Duration
		for _, s := range samples[name] {
			ds = append(ds, f(s))
		}
		return median(ds)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nwarm rebuild of the Go hello-world, %d runs each, medians\n", runs)
	tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "variant\ttotal\tSBOM\tsigning\tattestation bytes")
	for _, v := range variants {
		ss := samples[v.name]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", v.name, fmtDur(med(v.name, func(s sample) time.Duration { return s.total })),
			fmtDur(med(v.name, func(s sample) time.Duration { return s.sbom })), fmtDur(med(v.name, func(s sample) time.Duration { return s.sign })), ss[len(ss)-1].attBytes)
	}
	_ = tw.Flush()
	total := func(s sample) time.Duration { return s.total }
	added := med(variants[1].name, total) - med(variants[0].name, total)
	verdict := "meets"
	if added > time.Second {
		verdict = "MISSES"
	}
	fmt.Fprintf(&out, "added by provenance, SBOM and signing to a warm rebuild: %s (%s the target <= 1s)\n", fmtDur(added), verdict)
	fmt.Fprintf(&out, "added when the image changed (the SBOM made anew): %s\n", fmtDur(med(variants[2].name, total)-med(variants[0].name, total)))
	fmt.Print(out.String())
	if f := os.Getenv("KILN_BENCH_OUT"); f != "" {
		fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = fh.WriteString(out.String())
			_ = fh.Close()
		}
	}
}
