package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one line of the table: a span of one build, or false when the build has no such span.
type row struct {
	name string
	of   func(s *sample) (time.Duration, bool)
}

// between is the span from a to b, when both are known.
func between(a, b func(s *sample) time.Time) func(s *sample) (time.Duration, bool) {
	return func(s *sample) (time.Duration, bool) {
		x, y := a(s), b(s)
		return y.Sub(x), !x.IsZero() && !y.IsZero()
	}
}

var (
	applied     = func(s *sample) time.Time { return s.applied }
	podSeen     = func(s *sample) time.Time { return s.podSeen }
	podDone     = func(s *sample) time.Time { return s.podDone }
	runnerDone  = func(s *sample) time.Time { return s.runnerDone }
	ready       = func(s *sample) time.Time { return s.ready }
	bkStart     = func(s *sample) time.Time { return s.buildkitd.start }
	bkReady     = func(s *sample) time.Time { return s.buildkitd.ready }
	bkEnd       = func(s *sample) time.Time { return s.buildkitd.end }
	runnerStart = func(s *sample) time.Time { return s.runner.start }
	runnerEnd   = func(s *sample) time.Time { return s.runner.end }
)

func rows(samples []*sample) []row {
	rs := []row{
		{"apply → pod seen (watch)", between(applied, podSeen)},
		{"pod seen → buildkitd start (1st log line)", between(podSeen, bkStart)},
		{"buildkitd start → ready (\"running server on\")", between(bkStart, bkReady)},
		{"buildkitd ready → runner start (1st log line)", between(bkReady, runnerStart)},
		{"pod seen → runner start", between(podSeen, runnerStart)},
	}
	for _, name := range phaseNames(samples) {
		rs = append(rs, row{"  runner: " + name, func(s *sample) (time.Duration, bool) {
			for _, p := range s.runner.phases {
				if p.name == name {
					return p.d, true
				}
			}
			return 0, false
		}})
	}
	return append(rs,
		row{"runner start → end (1st to last log line)", between(runnerStart, runnerEnd)},
		row{"runner end → buildkitd last log line", between(runnerEnd, bkEnd)},
		row{"runner end → runner terminated in pod status (watch)", between(runnerEnd, runnerDone)},
		row{"runner terminated (watch) → Ready (watch)", between(runnerDone, ready)},
		row{"runner terminated (watch) → pod finished (watch)", between(runnerDone, podDone)},
		row{"runner end → pod finished (watch)", between(runnerEnd, podDone)},
		row{"buildkitd last log line → pod finished (watch)", between(bkEnd, podDone)},
		row{"pod finished → Ready (watch)", between(podDone, ready)},
		row{"runner end → Ready", between(runnerEnd, ready)},
		row{"apply → Ready (total)", between(applied, ready)},
	)
}

// phaseNames are the runner's phases over all samples, in the order they first appear.
func phaseNames(samples []*sample) []string {
	var names []string
	for _, s := range samples {
		for _, p := range s.runner.phases {
			if !slices.Contains(names, p.name) {
				names = append(names, p.name)
			}
		}
	}
	return names
}

func report(w io.Writer, o options, kiln string, src *source, cold *sample, warm []sample, fresh []freshClaim) {
	fmt.Fprintf(w, "\n== kiln warm path (issue 16): %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "kiln: %s\n", kiln)
	var flags []string
	flag.VisitAll(func(f *flag.Flag) { flags = append(flags, "-"+f.Name+"="+f.Value.String()) })
	fmt.Fprintf(w, "flags: %s\n", strings.Join(flags, " "))
	fmt.Fprintf(w, "project: %s of build context, commit %s\n", mib(src.size), src.commit)
	all := make([]*sample, 0, len(warm)+1)
	for i := range warm {
		all = append(all, &warm[i])
	}
	if cold != nil {
		all = append(all, cold)
	}
	if len(all) > 0 {
		fromLine := "the runner's \"kiln: phases:\" line"
		if !all[0].runner.fromLine {
			fromLine = "the runner's \"Built in\"/\"SBOMs made\"/\"Signed\"/\"Pushed\" lines and log timestamps (no \"kiln: phases:\" line)"
		}
		fmt.Fprintf(w, "runner: %s; phases from %s\n", all[0].runner.version, fromLine)
	}
	fmt.Fprintf(w, "\n%d warm rebuilds (no change)", len(warm))
	if len(warm) > 0 {
		fmt.Fprintf(w, ", %d of %d steps cached in the first", warm[0].runner.cached, warm[0].runner.total)
	}
	fmt.Fprintln(w, "; seconds:")
	table(w, all, warm, cold)
	summary(w, warm, cold)
	freshSummary(w, fresh)
}

// freshSummary compares the builds on a new claim with and without the registry cache.
func freshSummary(w io.Writer, fresh []freshClaim) {
	if len(fresh) == 0 {
		return
	}
	fmt.Fprintln(w, "\nfirst build on a new, empty claim (the same project):")
	var with, without time.Duration
	for _, f := range fresh {
		d := f.s.ready.Sub(f.s.applied)
		solve := "?"
		for _, p := range f.s.runner.phases {
			if p.name == "solve" {
				solve = secs(p.d)
			}
		}
		what := "without a registry cache"
		if f.withCache {
			what, with = "with the registry cache", d
			if f.cache != nil {
				what += fmt.Sprintf(" (imported %t)", f.cache.Imported)
			}
		} else {
			without = d
		}
		fmt.Fprintf(w, "  %-40s apply→Ready %s, solve %s, %d of %d steps cached\n", what, secs(d), solve, f.s.runner.cached, f.s.runner.total)
	}
	if with > 0 && without > 0 {
		fmt.Fprintf(w, "  without/with: %.1fx\n", without.Seconds()/with.Seconds())
	}
}

func table(w io.Writer, all []*sample, warm []sample, cold *sample) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tmedian\tmin\tmax\tcold\t")
	for _, r := range rows(all) {
		var ds []time.Duration
		for i := range warm {
			if d, ok := r.of(&warm[i]); ok {
				ds = append(ds, d)
			}
		}
		c := "-"
		if cold != nil {
			if d, ok := r.of(cold); ok {
				c = secs(d)
			}
		}
		if len(ds) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\t\n", r.name, c)
			continue
		}
		slices.Sort(ds)
		note := ""
		if len(ds) < len(warm) {
			note = fmt.Sprintf(" (%d of %d)", len(ds), len(warm))
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t\n", r.name, note, secs(median(ds)), secs(ds[0]), secs(ds[len(ds)-1]), c)
	}
	_ = tw.Flush()
}

func summary(w io.Writer, warm []sample, cold *sample) {
	var total []time.Duration
	retried := 0
	for _, s := range warm {
		total = append(total, s.ready.Sub(s.applied))
		if s.attempt > 1 {
			retried++
		}
	}
	if retried > 0 {
		fmt.Fprintf(w, "\n%d rebuilds took more than one attempt (a retry): their times include it\n", retried)
	}
	if cold == nil {
		fmt.Fprintln(w, "\nno cold build in this run (-namespace reused an earlier one)")
		return
	}
	solve := "?"
	for _, p := range cold.runner.phases {
		if p.name == "solve" {
			solve = secs(p.d)
		}
	}
	fmt.Fprintf(w, "\ncold build (fresh claim): apply→Ready %s, solve %s, %d of %d steps cached, status.lastBuild.duration %s\n",
		secs(cold.ready.Sub(cold.applied)), solve, cold.runner.cached, cold.runner.total, cold.duration)
	if len(total) > 0 {
		slices.Sort(total)
		m := median(total)
		fmt.Fprintf(w, "warm apply→Ready median %s; cold/warm %.1fx\n", secs(m), cold.ready.Sub(cold.applied).Seconds()/m.Seconds())
	}
}

func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
