// Package advice tells users why an image is big or a build is slow, and what to change: static
// rules on the Dockerfile (parsed with BuildKit's own parser) and, after a build, findings from
// the measured image, each with the bytes it would save where kiln can estimate them.
package advice

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// DocBase is where each rule is documented: DocBase + "#" + rule id.
const DocBase = "https://github.com/kiln-dev/kiln/blob/main/docs/advice.md"

// Kinds of findings.
const (
	KindSize     = "size"
	KindSpeed    = "speed"
	KindSecurity = "security"
	KindBuild    = "build" // the build fails, or will as the Dockerfile grows
)

// Finding is one piece of advice.
type Finding struct {
	Rule        string `json:"rule"`                  // stable id, kebab-case, e.g. "final-stage-toolchain"
	Message     string `json:"message"`               // what to change and why, one or two sentences
	Line        int    `json:"line,omitempty"`        // Dockerfile line, 0 when none
	SavingBytes int64  `json:"savingBytes,omitempty"` // estimated saving, 0 when unknown
	Doc         string `json:"doc"`                   // DocBase + "#" + rule id
	Kind        string `json:"kind"`                  // "size", "speed", "security" or "build"
}

// Input is what Analyze looks at.
type Input struct {
	Dockerfile     []byte
	DockerfileName string // for messages, default "Dockerfile"
	Target         string // stage built; "" = last
	// BuildArgs are the build's --build-arg values (spec.dockerfile.buildArgs), by name: they
	// override ARG defaults, as in BuildKit. nil = none.
	BuildArgs map[string]string
	// ContextFiles lists the context's top-level paths when known (nil = unknown, e.g. a git
	// context: the context rules are skipped).
	ContextFiles []string
	// Dockerignore is the context's .dockerignore; nil with ContextFiles != nil means there is none.
	Dockerignore []byte
	Ignore       []string // rule ids silenced by spec.advice.ignore
	Image        *Image   // measurements of the built image; nil before a build
}

// Image is the measured image (one platform).
type Image struct {
	CompressedBytes int64
	Layers          []Layer // in manifest order
	Waste           []Waste // hidden lower copies, largest first
}

// Layer is one measured layer, attributed to the instruction that made it.
type Layer struct {
	Index                              int
	CompressedBytes, UncompressedBytes int64
	CreatedBy                          string
	Line                               int  // Dockerfile line of the instruction, 0 when unknown
	Base                               bool // the layer comes from the base image
}

// Waste is a copy of a file in a lower layer that an upper layer deletes or overwrites.
type Waste struct {
	Path               string
	Bytes              int64
	AddedIn, RemovedIn int // layer indexes
	Deleted            bool
}

// RuleInfo describes a rule.
type RuleInfo struct{ ID, Kind, Summary string }

// rule is a rule and its check.
type rule struct {
	RuleInfo
	check func(*analysis)
}

// Rules lists every rule id with a one-line description.
func Rules() []RuleInfo {
	out := make([]RuleInfo, 0, len(rules))
	for _, r := range rules {
		out = append(out, r.RuleInfo)
	}
	return out
}

// analysis is one run of the rules.
type analysis struct {
	in       Input
	m        *model // nil when the Dockerfile does not parse
	name     string
	findings []Finding
	rule     rule // the rule being checked
	fired    map[string]bool
}

func (a *analysis) add(line int, saving int64, format string, args ...any) {
	if saving < 0 {
		saving = 0
	}
	if line < 0 {
		line = 0
	}
	a.findings = append(a.findings, Finding{
		Rule: a.rule.ID, Message: fmt.Sprintf(format, args...), Line: line, SavingBytes: saving,
		Doc: DocBase + "#" + a.rule.ID, Kind: a.rule.Kind,
	})
	a.fired[a.rule.ID] = true
}

// Analyze returns every finding, ordered by estimated saving (largest first), then by line
// (findings without a line last), then by rule id. A Target that names no stage analyzes the
// last one (kiln advise and the runner reject it first). A Dockerfile that does not parse yields no
// static findings (the runner and `kiln advise` report the parse error themselves). It never
// panics, whatever the input.
func Analyze(in Input) (out []Finding) {
	a := &analysis{in: in, name: in.DockerfileName, fired: map[string]bool{}}
	if a.name == "" {
		a.name = "Dockerfile"
	}
	if m, err := parse(in.Dockerfile, in.Target, in.BuildArgs); err == nil {
		a.m = m
	}
	ignored := map[string]bool{}
	for _, id := range in.Ignore {
		ignored[strings.TrimSpace(id)] = true
	}
	for _, id := range IgnoreComments(in.Dockerfile) {
		ignored[id] = true
	}
	for _, r := range rules {
		a.rule = r
		a.safely(r.check)
	}
	out = []Finding{}
	seen := map[string]bool{}
	for _, f := range a.findings {
		key := fmt.Sprintf("%s\x00%d\x00%s", f.Rule, f.Line, f.Message)
		if ignored[f.Rule] || seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, f)
	}
	sort.SliceStable(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if x.SavingBytes != y.SavingBytes {
			return x.SavingBytes > y.SavingBytes
		}
		if x.Line != y.Line {
			if x.Line == 0 || y.Line == 0 {
				return y.Line == 0
			}
			return x.Line < y.Line
		}
		return x.Rule < y.Rule
	})
	return out
}

// safely runs a check; a check that panics on a strange Dockerfile loses its findings, not the
// others'.
func (a *analysis) safely(check func(*analysis)) {
	n := len(a.findings)
	defer func() {
		if r := recover(); r != nil {
			a.findings = a.findings[:n]
			if panicHook != nil {
				panicHook(a.rule.ID, r)
			}
		}
	}()
	check(a)
}

// panicHook, when set (by tests), is told about the panics Analyze recovers from, so that the
// fuzzer sees them.
var panicHook func(where string, recovered any)

var ignoreComment = regexp.MustCompile(`kiln:ignore=([A-Za-z0-9_,\- \t]*)`)

// IgnoreComments returns the rule ids a Dockerfile silences with "# kiln:ignore=<id>[,<id>]"
// comments (anywhere in the file).
func IgnoreComments(dockerfile []byte) []string {
	var out []string
	for _, line := range strings.Split(string(dockerfile), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "#") {
			continue
		}
		for _, m := range ignoreComment.FindAllStringSubmatch(line, -1) {
			out = append(out, strings.FieldsFunc(m[1], func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })...)
		}
	}
	return out
}

// KnownRule reports whether id is a rule id.
func KnownRule(id string) bool {
	for _, r := range rules {
		if r.ID == id {
			return true
		}
	}
	return false
}
