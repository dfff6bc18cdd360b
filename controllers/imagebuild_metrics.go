package controllers

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// Metrics on controller-runtime's registry, served at the manager's /metrics.
var (
	buildDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kiln_build_duration_seconds",
		Help:    "Duration of finished builds, from the build pod's start to the runner's end, by result (Succeeded or the failure class).",
		Buckets: []float64{5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600},
	}, []string{"result"})
	buildsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_builds_total",
		Help: "Finished builds by result (Succeeded or the failure class).",
	}, []string{"result"})
	imageBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kiln_image_compressed_bytes",
		Help: "Compressed size (config plus layers) of the last pushed image, per ImageBuild and platform.",
	}, []string{"namespace", "imagebuild", "platform"})
	cacheRatio = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kiln_build_cached_steps_ratio",
		Help: "Cached steps divided by total steps of the last build, per ImageBuild.",
	}, []string{"namespace", "imagebuild"})
	budgetVerdicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_budget_verdicts_total",
		Help: "Budget verdicts of measured builds (WithinBudget, OverBudget), by enforcement.",
	}, []string{"verdict", "enforcement"})
)

func init() {
	metrics.Registry.MustRegister(buildDuration, buildsTotal, imageBytes, cacheRatio, budgetVerdicts)
}

// observeBuild records a finished build once, when its result is stored.
func observeBuild(ib *kilnv1.ImageBuild, duration time.Duration, class kilnv1.FailureClass) {
	afterPatch.add(ib, func() { countBuild(ib, duration, class) })
}

// countBuild updates the build metrics for a finished build of ib.
func countBuild(ib *kilnv1.ImageBuild, duration time.Duration, class kilnv1.FailureClass) {
	result := string(class)
	if result == "" {
		result = "Succeeded"
	}
	buildsTotal.WithLabelValues(result).Inc()
	if duration > 0 {
		buildDuration.WithLabelValues(result).Observe(duration.Seconds())
	}
	if c := ib.Status.Cache; c != nil && c.TotalSteps > 0 {
		cacheRatio.WithLabelValues(ib.Namespace, ib.Name).Set(float64(c.CachedSteps) / float64(c.TotalSteps))
	}
	if b := ib.Status.Budget; b != nil && b.Verdict != kilnv1.VerdictNotMeasured && class != kilnv1.FailureBuildFailed {
		budgetVerdicts.WithLabelValues(string(b.Verdict), string(b.Enforcement)).Inc()
	}
	if class == "" && ib.Status.Size != nil {
		for _, p := range ib.Status.Size.Platforms {
			imageBytes.WithLabelValues(ib.Namespace, ib.Name, p.Platform).Set(float64(p.CompressedBytes))
		}
	}
}

// forgetImageBuild drops the per-ImageBuild series of a deleted ImageBuild.
func forgetImageBuild(namespace, name string) {
	labels := prometheus.Labels{"namespace": namespace, "imagebuild": name}
	imageBytes.DeletePartialMatch(labels)
	cacheRatio.DeletePartialMatch(labels)
}

// phaseCollector reports, at each scrape, how many ImageBuilds are in each phase and how many
// wait for a build slot, from the manager's cache.
type phaseCollector struct {
	reader client.Reader
	phases *prometheus.Desc
	queue  *prometheus.Desc
}

// NewPhaseCollector returns the collector of kiln_imagebuilds and kiln_build_queue_depth.
func NewPhaseCollector(reader client.Reader) prometheus.Collector {
	return &phaseCollector{
		reader: reader,
		phases: prometheus.NewDesc("kiln_imagebuilds", "ImageBuilds by phase.", []string{"phase"}, nil),
		queue:  prometheus.NewDesc("kiln_build_queue_depth", "ImageBuilds waiting for a build slot (phase Queued).", nil, nil),
	}
}

func (c *phaseCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.phases
	ch <- c.queue
}

func (c *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list := &kilnv1.ImageBuildList{}
	if err := c.reader.List(ctx, list); err != nil {
		return
	}
	counts := map[kilnv1.Phase]int{}
	for _, ib := range list.Items {
		counts[ib.Status.Phase]++
	}
	for _, p := range kilnv1.Phases {
		ch <- prometheus.MustNewConstMetric(c.phases, prometheus.GaugeValue, float64(counts[p]), string(p))
	}
	ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(counts[kilnv1.PhaseQueued]))
}
