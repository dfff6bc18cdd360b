// Package budget judges measured images against an ImageBuild's size budget. It is pure: Judge
// turns the same measurements and budget into the same checks, in numbers, for the runner's
// result; Status turns the same checks into the same verdict and messages, for the status.
package budget

import (
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/units"
)

// The limits of spec.budget, as contract.Check.Limit names them.
const (
	MaxImageSize  = "maxImageSize"
	MaxLayerSize  = "maxLayerSize"
	MaxLayers     = "maxLayers"
	MaxWastedSize = "maxWastedSize"
	MaxGrowth     = "maxGrowth"
)

// Judge checks every platform image against every limit of b (the request's budget, in bytes),
// and returns the checks in Order; nil when there is no budget. baseline maps a platform to the
// compressed size of the image the first tag points to now; platforms missing from it (or a nil
// baseline) have no maxGrowth check.
func Judge(b *contract.BudgetSpec, images []contract.Platform, baseline map[string]int64) *contract.Budget {
	if b == nil {
		return nil
	}
	out := &contract.Budget{Enforcement: b.Enforcement}
	if out.Enforcement == "" {
		out.Enforcement = kilnv1.EnforcementEnforce
	}
	for _, img := range images {
		check := func(limit string, limitValue *int64, actual int64) {
			if limitValue != nil {
				out.Checks = append(out.Checks, contract.Check{Limit: limit, Platform: img.Platform, LimitValue: *limitValue, Actual: actual})
			}
		}
		check(MaxImageSize, b.MaxImageSize, img.CompressedBytes)
		layer, _ := largest(img)
		check(MaxLayerSize, b.MaxLayerSize, layer.CompressedBytes)
		if b.MaxLayers != nil {
			out.Checks = append(out.Checks, contract.Check{Limit: MaxLayers, Platform: img.Platform, LimitValue: int64(*b.MaxLayers), Actual: int64(img.Layers)})
		}
		check(MaxWastedSize, b.MaxWastedSize, img.WastedBytes)
		if before, ok := baseline[img.Platform]; ok {
			check(MaxGrowth, b.MaxGrowth, img.CompressedBytes-before)
		}
	}
	Order(out.Checks)
	return out
}

// Order sorts checks by how far each goes past its limit relative to the limit (actual/limit),
// the largest first, so that broken checks lead, the worst of them first, and passed ones
// follow, the nearest to their limit first. Checks that go as far keep their order. Comparing
// relative excess lets a check in layers rank against one in bytes.
func Order(checks []contract.Check) {
	sort.SliceStable(checks, func(i, j int) bool { return usage(checks[i]).Cmp(usage(checks[j])) > 0 })
}

// usage is actual/limit, as a number that compares exactly. A limit of 0 (maxGrowth 0) makes any
// growth infinitely far over it, no change exactly at it, and shrinking far within it.
func usage(c contract.Check) *big.Rat {
	if c.LimitValue > 0 {
		return big.NewRat(c.Actual, c.LimitValue)
	}
	const huge = 1 << 62 // beyond any actual/limit of positive int64 limits
	switch {
	case c.Actual > c.LimitValue:
		return big.NewRat(huge, 1)
	case c.Actual == c.LimitValue:
		return big.NewRat(1, 1)
	}
	return big.NewRat(-huge, 1)
}

// Status is the ImageBuild's status for checks b of images: the verdict, each check with its
// message (in Order), and the summary for the printer column. A nil b is "no budget".
func Status(b *contract.Budget, images []contract.Platform) kilnv1.BudgetStatus {
	st := kilnv1.BudgetStatus{Verdict: kilnv1.VerdictWithinBudget}
	if b == nil || b.Enforcement == "" { // 1.0 runners sent a budget without enforcement for none
		st.Summary = "no budget"
		return st
	}
	st.Enforcement = b.Enforcement
	checks := append([]contract.Check(nil), b.Checks...)
	Order(checks) // a 1.0 runner ordered them by headroom
	for _, c := range checks {
		st.Checks = append(st.Checks, kilnv1.BudgetCheck{
			Limit: c.Limit, Platform: c.Platform, LimitValue: c.LimitValue, Actual: c.Actual,
			Headroom: c.LimitValue - c.Actual, Message: message(c, platform(images, c.Platform)),
		})
	}
	if b.Over() {
		st.Verdict = kilnv1.VerdictOverBudget
	}
	st.Summary = summary(checks, images, st.Verdict)
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

// message says check c of image img for humans, with the limit and the excess or the room left.
func message(c contract.Check, img contract.Platform) string {
	p, limit, over := c.Platform, quantity(c.LimitValue), c.Actual-c.LimitValue
	switch c.Limit {
	case MaxImageSize:
		if over <= 0 {
			return fmt.Sprintf("%s: %s is within maxImageSize %s (%s to spare)", p, units.Bytes(c.Actual), limit, units.Bytes(-over))
		}
		s := fmt.Sprintf("%s: %s is %s over maxImageSize %s", p, units.Bytes(c.Actual), units.Bytes(over), limit)
		if l, ok := largest(img); ok {
			s += fmt.Sprintf("; largest layer %s from %s", units.Bytes(l.CompressedBytes), origin(l))
		}
		return s
	case MaxLayerSize:
		if over <= 0 {
			return fmt.Sprintf("%s: largest layer %s is within maxLayerSize %s", p, units.Bytes(c.Actual), limit)
		}
		if l, ok := largest(img); ok && l.CompressedBytes == c.Actual {
			return fmt.Sprintf("%s: layer %d is %s, %s over maxLayerSize %s, from %s", p, l.Index, units.Bytes(c.Actual), units.Bytes(over), limit, origin(l))
		}
		return fmt.Sprintf("%s: a layer is %s, %s over maxLayerSize %s", p, units.Bytes(c.Actual), units.Bytes(over), limit)
	case MaxLayers:
		if over <= 0 {
			return fmt.Sprintf("%s: %d layers is within maxLayers %d", p, c.Actual, c.LimitValue)
		}
		return fmt.Sprintf("%s: %d layers is %d over maxLayers %d", p, c.Actual, over, c.LimitValue)
	case MaxWastedSize:
		if over <= 0 {
			return fmt.Sprintf("%s: %s wasted is within maxWastedSize %s", p, units.Bytes(c.Actual), limit)
		}
		s := fmt.Sprintf("%s: %s wasted is %s over maxWastedSize %s (files a layer adds and a later layer deletes or overwrites)", p, units.Bytes(c.Actual), units.Bytes(over), limit)
		if w := img.LargestWaste; w != nil {
			verb := "overwrote"
			if w.Deleted {
				verb = "deleted"
			}
			files := fmt.Sprintf("%d files (largest %s)", w.Files, w.Largest)
			if w.Files == 1 {
				files = "1 file, " + w.Largest
			}
			s += fmt.Sprintf("; the most, %s in %s, %s added and %s %s: delete them in the step that adds them",
				units.Bytes(w.Bytes), files, origin(w.Added), origin(w.Removed), verb)
		}
		return s
	case MaxGrowth:
		now := img.CompressedBytes
		before := now - c.Actual
		if over <= 0 {
			return fmt.Sprintf("%s: changed by %s (%s to %s), within maxGrowth %s", p, signed(c.Actual), units.Bytes(before), units.Bytes(now), limit)
		}
		s := fmt.Sprintf("%s: grew %s (%s to %s), %s over maxGrowth %s", p, units.Bytes(c.Actual), units.Bytes(before), units.Bytes(now), units.Bytes(over), limit)
		if c.Layer != nil {
			s += fmt.Sprintf("; the largest layer the current image lacks is %s from %s", units.Bytes(c.Layer.CompressedBytes), origin(*c.Layer))
		}
		return s
	}
	return fmt.Sprintf("%s: %s is %d, limit %d", p, c.Limit, c.Actual, c.LimitValue)
}

// summary is the printer column: the largest image's size over maxImageSize (and the excess),
// followed by the other broken limits; or the broken limits; or "within budget".
func summary(checks []contract.Check, images []contract.Platform, verdict kilnv1.Verdict) string {
	broken := brokenLimits(checks)
	big, measured := contract.Largest(images)
	for _, c := range checks {
		if c.Limit != MaxImageSize || !measured {
			continue
		}
		s := fmt.Sprintf("%s/%s", units.Bytes(big.CompressedBytes), quantity(c.LimitValue))
		if excess := big.CompressedBytes - c.LimitValue; excess > 0 {
			s += fmt.Sprintf(" (+%s)", units.Bytes(excess))
		}
		if verdict == kilnv1.VerdictOverBudget && !slices.Contains(broken, MaxImageSize) {
			s += " over " + strings.Join(broken, ",")
		}
		return s
	}
	if verdict == kilnv1.VerdictOverBudget {
		return "over " + strings.Join(broken, ",")
	}
	return "within budget"
}

// brokenLimits names the broken limits, each once, worst first.
func brokenLimits(checks []contract.Check) []string {
	var out []string
	for _, c := range checks {
		if c.Over() && !slices.Contains(out, c.Limit) {
			out = append(out, c.Limit)
		}
	}
	return out
}

func platform(images []contract.Platform, name string) contract.Platform {
	for _, img := range images {
		if img.Platform == name {
			return img
		}
	}
	return contract.Platform{Platform: name}
}

func largest(img contract.Platform) (contract.Layer, bool) {
	var best contract.Layer
	found := false
	for _, l := range img.LargestLayers {
		if !found || l.CompressedBytes > best.CompressedBytes {
			best, found = l, true
		}
	}
	return best, found
}

// origin says where a layer came from: its instruction, and the Dockerfile line when known.
func origin(l contract.Layer) string {
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

// quantity writes a limit in bytes as a Kubernetes quantity: its binary form when that is exact
// (52428800 is 50Mi, 512000 is 500Ki, as a budget is usually written), else its decimal form
// (100000000 is 100M, 5000 is 5k).
func quantity(n int64) string {
	if bin := resource.NewQuantity(n, resource.BinarySI).String(); strings.HasSuffix(bin, "i") {
		return bin
	}
	return resource.NewQuantity(n, resource.DecimalSI).String()
}

func signed(n int64) string {
	if n >= 0 {
		return "+" + units.Bytes(n)
	}
	return units.Bytes(n)
}
