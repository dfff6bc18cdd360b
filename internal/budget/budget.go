// Package budget judges measured images against an ImageBuild's size budget. It is pure: the same
// measurements and budget always give the same verdict and messages.
package budget

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/units"
)

// Judge checks every platform image against every limit of b. baseline maps a platform to the
// compressed size of the image the first tag points to now; platforms missing from it (or a nil
// baseline) have no maxGrowth check.
func Judge(b *kilnv1.Budget, images []kilnv1.PlatformSize, baseline map[string]int64) kilnv1.BudgetStatus {
	st := kilnv1.BudgetStatus{Verdict: kilnv1.VerdictWithinBudget}
	if b == nil {
		st.Summary = "no budget"
		return st
	}
	st.Enforcement = b.Enforcement
	if st.Enforcement == "" {
		st.Enforcement = kilnv1.EnforcementEnforce
	}
	for _, img := range images {
		p := img.Platform
		if q := b.MaxImageSize; q != nil {
			limit := q.Value()
			c := check("maxImageSize", p, limit, img.CompressedBytes)
			if c.Headroom < 0 {
				c.Message = fmt.Sprintf("%s: %s is %s over maxImageSize %s", p, units.Bytes(img.CompressedBytes), units.Bytes(-c.Headroom), qty(q))
				if l, ok := largest(img); ok {
					c.Message += fmt.Sprintf("; largest layer %s from %s", units.Bytes(l.CompressedBytes), origin(l))
				}
			} else {
				c.Message = fmt.Sprintf("%s: %s is within maxImageSize %s (%s to spare)", p, units.Bytes(img.CompressedBytes), qty(q), units.Bytes(c.Headroom))
			}
			st.Checks = append(st.Checks, c)
		}
		if q := b.MaxLayerSize; q != nil {
			l, _ := largest(img)
			c := check("maxLayerSize", p, q.Value(), l.CompressedBytes)
			if c.Headroom < 0 {
				c.Message = fmt.Sprintf("%s: layer %d is %s, %s over maxLayerSize %s, from %s", p, l.Index, units.Bytes(l.CompressedBytes), units.Bytes(-c.Headroom), qty(q), origin(l))
			} else {
				c.Message = fmt.Sprintf("%s: largest layer %s is within maxLayerSize %s", p, units.Bytes(l.CompressedBytes), qty(q))
			}
			st.Checks = append(st.Checks, c)
		}
		if b.MaxLayers != nil {
			c := check("maxLayers", p, int64(*b.MaxLayers), int64(img.Layers))
			if c.Headroom < 0 {
				c.Message = fmt.Sprintf("%s: %d layers is %d over maxLayers %d", p, img.Layers, -c.Headroom, *b.MaxLayers)
			} else {
				c.Message = fmt.Sprintf("%s: %d layers is within maxLayers %d", p, img.Layers, *b.MaxLayers)
			}
			st.Checks = append(st.Checks, c)
		}
		if q := b.MaxWastedSize; q != nil {
			c := check("maxWastedSize", p, q.Value(), img.WastedBytes)
			if c.Headroom < 0 {
				c.Message = fmt.Sprintf("%s: %s wasted is %s over maxWastedSize %s (files a layer adds and a later layer deletes or overwrites)", p, units.Bytes(img.WastedBytes), units.Bytes(-c.Headroom), qty(q))
			} else {
				c.Message = fmt.Sprintf("%s: %s wasted is within maxWastedSize %s", p, units.Bytes(img.WastedBytes), qty(q))
			}
			st.Checks = append(st.Checks, c)
		}
		if q := b.MaxGrowth; q != nil {
			before, ok := baseline[p]
			if !ok {
				continue
			}
			growth := img.CompressedBytes - before
			c := check("maxGrowth", p, q.Value(), growth)
			if c.Headroom < 0 {
				c.Message = fmt.Sprintf("%s: grew %s (%s to %s), %s over maxGrowth %s", p, units.Bytes(growth), units.Bytes(before), units.Bytes(img.CompressedBytes), units.Bytes(-c.Headroom), qty(q))
			} else {
				c.Message = fmt.Sprintf("%s: changed by %s (%s to %s), within maxGrowth %s", p, signed(growth), units.Bytes(before), units.Bytes(img.CompressedBytes), qty(q))
			}
			st.Checks = append(st.Checks, c)
		}
	}
	// Broken limits first, the worst (largest excess) first; the rest keep their order.
	sort.SliceStable(st.Checks, func(i, j int) bool {
		oi, oj := st.Checks[i].Headroom < 0, st.Checks[j].Headroom < 0
		if oi != oj {
			return oi
		}
		return oi && st.Checks[i].Headroom < st.Checks[j].Headroom
	})
	if len(st.Checks) > 0 && st.Checks[0].Headroom < 0 {
		st.Verdict = kilnv1.VerdictOverBudget
	}
	st.Summary = summary(b, images, st)
	return st
}

// Message is the verdict in one sentence: every broken limit, or the headline when none is.
func Message(st kilnv1.BudgetStatus) string {
	var over []string
	for _, c := range st.Checks {
		if c.Headroom < 0 {
			over = append(over, c.Message)
		}
	}
	if len(over) == 0 {
		return "within budget: " + st.Summary
	}
	return strings.Join(over, "; ")
}

func check(limit, platform string, lim, actual int64) kilnv1.BudgetCheck {
	return kilnv1.BudgetCheck{Limit: limit, Platform: platform, LimitValue: lim, Actual: actual, Headroom: lim - actual}
}

// summary is the printer column: size over limit for the largest image, or the broken limits.
func summary(b *kilnv1.Budget, images []kilnv1.PlatformSize, st kilnv1.BudgetStatus) string {
	if b.MaxImageSize != nil && len(images) > 0 {
		big := images[0]
		for _, img := range images[1:] {
			if img.CompressedBytes > big.CompressedBytes {
				big = img
			}
		}
		s := fmt.Sprintf("%s/%s", units.Bytes(big.CompressedBytes), qty(b.MaxImageSize))
		if excess := big.CompressedBytes - b.MaxImageSize.Value(); excess > 0 {
			s += fmt.Sprintf(" (+%s)", units.Bytes(excess))
		}
		if st.Verdict == kilnv1.VerdictOverBudget && excessOf(st, "maxImageSize") == 0 {
			s += " over " + strings.Join(brokenLimits(st), ",")
		}
		return s
	}
	if st.Verdict == kilnv1.VerdictOverBudget {
		return "over " + strings.Join(brokenLimits(st), ",")
	}
	return "within budget"
}

func excessOf(st kilnv1.BudgetStatus, limit string) int64 {
	for _, c := range st.Checks {
		if c.Limit == limit && c.Headroom < 0 {
			return -c.Headroom
		}
	}
	return 0
}

func brokenLimits(st kilnv1.BudgetStatus) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range st.Checks {
		if c.Headroom < 0 && !seen[c.Limit] {
			seen[c.Limit] = true
			out = append(out, c.Limit)
		}
	}
	return out
}

func largest(img kilnv1.PlatformSize) (kilnv1.LayerSize, bool) {
	var best kilnv1.LayerSize
	found := false
	for _, l := range img.LargestLayers {
		if !found || l.CompressedBytes > best.CompressedBytes {
			best, found = l, true
		}
	}
	return best, found
}

// origin says where a layer came from: its instruction, and the Dockerfile line when known.
func origin(l kilnv1.LayerSize) string {
	s := l.CreatedBy
	if s == "" {
		s = fmt.Sprintf("layer %d", l.Index)
	}
	if l.Line > 0 {
		s += fmt.Sprintf(" (Dockerfile:%d)", l.Line)
	} else if l.CreatedBy != "" && !strings.HasPrefix(l.CreatedBy, "base image") {
		s += " (base image)"
	}
	return s
}

func qty(q *resource.Quantity) string { return q.String() }

func signed(n int64) string {
	if n >= 0 {
		return "+" + units.Bytes(n)
	}
	return units.Bytes(n)
}
