package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
)

// histogram is a classic Prometheus histogram: cumulative counts per upper bound.
type histogram struct {
	Bounds []float64 // ascending, without +Inf
	Cum    []float64 // cumulative count at each bound
	Count  float64   // total, the +Inf bucket
	Sum    float64
}

// sub is h minus an earlier reading of the same histogram.
func (h histogram) sub(earlier histogram) histogram {
	if len(earlier.Bounds) != len(h.Bounds) {
		return h
	}
	out := histogram{Bounds: h.Bounds, Cum: make([]float64, len(h.Cum)), Count: h.Count - earlier.Count, Sum: h.Sum - earlier.Sum}
	for i := range h.Cum {
		out.Cum[i] = h.Cum[i] - earlier.Cum[i]
	}
	return out
}

// quantile estimates the q-quantile the way PromQL's histogram_quantile does: find the bucket
// that holds rank q*count and interpolate linearly inside it (the first bucket's lower bound is
// 0). An answer in the +Inf bucket is the highest finite bound. NaN without observations.
func (h histogram) quantile(q float64) float64 {
	if h.Count <= 0 || len(h.Bounds) == 0 {
		return math.NaN()
	}
	rank := q * h.Count
	prevBound, prevCum := 0.0, 0.0
	for i, b := range h.Bounds {
		if h.Cum[i] >= rank {
			if h.Cum[i] == prevCum {
				return b
			}
			return prevBound + (b-prevBound)*(rank-prevCum)/(h.Cum[i]-prevCum)
		}
		prevBound, prevCum = b, h.Cum[i]
	}
	return h.Bounds[len(h.Bounds)-1]
}

// bucketOf names the bucket that holds the q-quantile, as "(lower, upper]": for histograms whose
// buckets are too wide for interpolation to mean anything.
func (h histogram) bucketOf(q float64) string {
	if h.Count <= 0 || len(h.Bounds) == 0 {
		return "n/a"
	}
	rank := q * h.Count
	lower := 0.0
	for i, b := range h.Bounds {
		if h.Cum[i] >= rank {
			return fmt.Sprintf("(%s, %s]", fmtDur(lower), fmtDur(b))
		}
		lower = b
	}
	return fmt.Sprintf("> %s", fmtDur(lower))
}

func (h histogram) mean() float64 {
	if h.Count <= 0 {
		return math.NaN()
	}
	return h.Sum / h.Count
}

// scrape is one reading of the manager's /metrics.
type scrape struct {
	families map[string]*dto.MetricFamily
}

func scrapeMetrics(ctx context.Context, url string) (*scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", url, err)
	}
	return &scrape{families: fams}, nil
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// histogram returns the histogram of family name whose labels include want (summed if several
// series match); ok is false when there is none.
func (s *scrape) histogram(name string, want map[string]string) (histogram, bool) {
	if s == nil {
		return histogram{}, false
	}
	fam := s.families[name]
	if fam == nil {
		return histogram{}, false
	}
	var out histogram
	ok := false
	for _, m := range fam.GetMetric() {
		h := m.GetHistogram()
		if h == nil || !labelsMatch(m, want) {
			continue
		}
		var bounds, cum []float64
		for _, b := range h.GetBucket() {
			if math.IsInf(b.GetUpperBound(), +1) {
				continue
			}
			bounds = append(bounds, b.GetUpperBound())
			cum = append(cum, float64(b.GetCumulativeCount()))
		}
		if !ok {
			out = histogram{Bounds: bounds, Cum: cum}
			ok = true
		} else if len(cum) == len(out.Cum) {
			for i := range cum {
				out.Cum[i] += cum[i]
			}
		}
		out.Count += float64(h.GetSampleCount())
		out.Sum += h.GetSampleSum()
	}
	return out, ok
}

// sumBy sums the counter or gauge family name over the series whose labels include want,
// grouped by the value of label by ("" groups everything together).
func (s *scrape) sumBy(name, by string, want map[string]string) map[string]float64 {
	out := map[string]float64{}
	if s == nil || s.families[name] == nil {
		return out
	}
	for _, m := range s.families[name].GetMetric() {
		if !labelsMatch(m, want) {
			continue
		}
		key := ""
		for _, lp := range m.GetLabel() {
			if lp.GetName() == by {
				key = lp.GetValue()
			}
		}
		switch {
		case m.GetCounter() != nil:
			out[key] += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			out[key] += m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			out[key] += m.GetUntyped().GetValue()
		}
	}
	return out
}

// deltaBy is sumBy on later minus sumBy on earlier (earlier may be nil).
func deltaBy(later, earlier *scrape, name, by string, want map[string]string) map[string]float64 {
	a, b := later.sumBy(name, by, want), earlier.sumBy(name, by, want)
	for k, v := range b {
		a[k] -= v
	}
	return a
}

// formatCounts renders {k: v} as "k=v, k=v", sorted by key, without zero entries.
func formatCounts(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s=%.0f", name, m[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// fmtDur renders seconds as ms below 1 s, else as seconds.
func fmtDur(sec float64) string {
	switch {
	case math.IsNaN(sec):
		return "n/a"
	case sec == 0:
		return "0"
	case sec < 0.001:
		return fmt.Sprintf("%.3g µs", sec*1e6)
	case sec < 1:
		return fmt.Sprintf("%.3g ms", sec*1e3)
	case sec < 10:
		return fmt.Sprintf("%.2f s", sec)
	default:
		return fmt.Sprintf("%.1f s", sec)
	}
}

// scrapeAPIServer reads the kube-apiserver's own /metrics with the bench's credentials.
func scrapeAPIServer(ctx context.Context, cfg *rest.Config) (*scrape, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET the API server's /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing the API server's /metrics: %w", err)
	}
	return &scrape{families: fams}, nil
}

// histStat is the count and sum of a group of histogram series.
type histStat struct {
	Key        string
	Count, Sum float64
}

// histTotals sums count and sum of histogram family name, grouped by the values of keys.
func (s *scrape) histTotals(name string, keys []string) map[string]histStat {
	out := map[string]histStat{}
	if s == nil || s.families[name] == nil {
		return out
	}
	for _, m := range s.families[name].GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		vals := make([]string, len(keys))
		for i, k := range keys {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k {
					vals[i] = lp.GetValue()
				}
			}
		}
		key := strings.Join(vals, " ")
		st := out[key]
		st.Key = key
		st.Count += float64(h.GetSampleCount())
		st.Sum += h.GetSampleSum()
		out[key] = st
	}
	return out
}

// histDelta is histTotals on later minus earlier, the groups with observations, by count
// descending.
func histDelta(later, earlier *scrape, name string, keys []string) []histStat {
	a, b := later.histTotals(name, keys), earlier.histTotals(name, keys)
	var out []histStat
	for k, v := range a {
		v.Count -= b[k].Count
		v.Sum -= b[k].Sum
		if v.Count > 0 {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	return out
}
