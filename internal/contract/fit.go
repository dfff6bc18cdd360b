package contract

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Fit encodes r in at most limit bytes. It first cuts texts and each platform's layers to the
// limits of limits.go; then, while the encoding is too long, it drops the least valuable parts
// step by step: findings beyond the first three, layers beyond each platform's three largest,
// checks beyond the four worst, then the same down to one each, then every finding and layer;
// then it keeps only each attestation manifest's digest (not its statements'), shortens the log
// tail and the message, drops the log tail, keeps one tag, and drops the attestations. The
// version, failure class, digest, image, revision, every platform's sizes, the enforcement and
// the worst check always stay; an error says when even they do not fit.
func (r Result) Fit(limit int) ([]byte, error) {
	r = r.clone()
	r.Message = Truncate(r.Message, MaxMessage)
	r.LogTail = TruncateStart(r.LogTail, MaxLogTail)
	for i := range r.Advice {
		r.Advice[i].Message = Truncate(r.Advice[i].Message, MaxAdviceMessage)
	}
	for i := range r.Platforms {
		p := &r.Platforms[i]
		trimSlice(&p.LargestLayers, MaxLayersPerPlatform)
		trimSlice(&p.LargestPackages, MaxPackagesPerPlatform)
		for j := range p.LargestPackages {
			p.LargestPackages[j].Name = Truncate(p.LargestPackages[j].Name, MaxCreatedBy)
		}
		for j := range p.LargestLayers {
			p.LargestLayers[j].CreatedBy = Truncate(p.LargestLayers[j].CreatedBy, MaxCreatedBy)
		}
		if w := p.LargestWaste; w != nil {
			w.Largest = Truncate(w.Largest, MaxCreatedBy)
			w.Added.CreatedBy, w.Removed.CreatedBy = Truncate(w.Added.CreatedBy, MaxCreatedBy), Truncate(w.Removed.CreatedBy, MaxCreatedBy)
		}
	}
	steps := []func(){
		func() { trimPackages(&r, 1) },
		func() { trimSlice(&r.Advice, 3) },
		func() { trimLayers(&r, 3) },
		func() { trimChecks(&r, 4) },
		func() { trimSlice(&r.Advice, 1) },
		func() { trimLayers(&r, 1) },
		func() { trimChecks(&r, 1) },
		func() { trimSlice(&r.Advice, 0) },
		func() { trimLayers(&r, 0) },
		func() { trimPackages(&r, 0) },
		func() {
			for i := range r.Attestations {
				r.Attestations[i].Provenance, r.Attestations[i].SBOM = "", ""
			}
		},
		func() { r.LogTail = TruncateStart(r.LogTail, fitLogTail) },
		func() { r.Message = Truncate(r.Message, fitMessage) },
		func() { r.LogTail = "" },
		func() { trimSlice(&r.Tags, 1) },
		func() { r.Attestations = nil },
	}
	for _, step := range steps {
		b, err := json.Marshal(r)
		if err != nil || len(b) <= limit {
			return b, err
		}
		step()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("result needs %d bytes even when shortened, more than the %d a termination message holds", len(b), limit)
	}
	return b, nil
}

// Truncate shortens s to at most n bytes, cutting at a rune boundary and marking the cut with "…".
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ell = "…"
	cut := n - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if cut <= 0 {
		return ""
	}
	return s[:cut] + ell
}

// TruncateStart keeps the last n bytes of s (its end matters more: a log's last lines), marking
// the cut with "…".
func TruncateStart(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ell = "…"
	cut := len(s) - n + len(ell)
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++
	}
	return ell + s[cut:]
}

func (r Result) clone() Result {
	c := r
	c.Tags = append([]string(nil), r.Tags...)
	c.Advice = append([]Advice(nil), r.Advice...)
	c.Attestations = append([]Attestation(nil), r.Attestations...)
	c.Platforms = make([]Platform, len(r.Platforms))
	for i, p := range r.Platforms {
		p.LargestLayers = append([]Layer(nil), p.LargestLayers...)
		p.LargestPackages = append([]PackageSize(nil), p.LargestPackages...)
		if p.LargestWaste != nil {
			w := *p.LargestWaste
			p.LargestWaste = &w
		}
		c.Platforms[i] = p
	}
	if r.Budget != nil {
		b := *r.Budget
		b.Checks = append([]Check(nil), r.Budget.Checks...)
		for i, ch := range b.Checks {
			if ch.Layer != nil {
				l := *ch.Layer
				b.Checks[i].Layer = &l
			}
		}
		c.Budget = &b
	}
	return c
}

func trimSlice[T any](s *[]T, n int) {
	if len(*s) > n {
		*s = (*s)[:n]
	}
}

// trimLayers keeps each platform's n largest layers; with none, it drops the largest waste and
// the layers checks blame too.
func trimLayers(r *Result, n int) {
	for i := range r.Platforms {
		trimSlice(&r.Platforms[i].LargestLayers, n)
		if n == 0 {
			r.Platforms[i].LargestWaste = nil
		}
	}
	if r.Budget != nil && n == 0 {
		for i := range r.Budget.Checks {
			r.Budget.Checks[i].Layer = nil
		}
	}
}

func trimChecks(r *Result, n int) {
	if r.Budget != nil {
		trimSlice(&r.Budget.Checks, n)
	}
}

// trimPackages keeps each platform's n largest packages.
func trimPackages(r *Result, n int) {
	for i := range r.Platforms {
		trimSlice(&r.Platforms[i].LargestPackages, n)
	}
}
