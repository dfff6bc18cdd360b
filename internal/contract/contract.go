// Package contract is what the manager and the runner agree on: where the build pod mounts
// things, what the runner is asked to do, and the result it writes to the termination message.
package contract

import (
	"encoding/json"
	"fmt"
	"sort"
	"unicode/utf8"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// Paths inside the build pod. They live under /var/kiln: kiln's image holds its binary at /kiln,
// so nothing can be mounted below that path.
const (
	// SocketDir is the emptyDir both containers mount; buildkitd listens on Socket inside it.
	SocketDir = "/run/buildkit"
	// Socket is buildkitd's address as the BuildKit client takes it.
	Socket = "unix://" + SocketDir + "/buildkitd.sock"
	// BuildKitStateDir is rootless buildkitd's root, on the cache claim.
	BuildKitStateDir = "/home/user/.local/share/buildkit"
	// WorkDir is scratch space for the runner (the OCI layout before push).
	WorkDir = "/var/kiln/work"
	// ContextDir is where a ConfigMap context is mounted.
	ContextDir = "/var/kiln/context"
	// PushSecretDir holds the push Secret's .dockerconfigjson.
	PushSecretDir = "/var/kiln/secrets/push"
	// GitSecretDir holds the git Secret's keys (token, ssh-privatekey, known_hosts).
	GitSecretDir = "/var/kiln/secrets/git"
	// BuildSecretsDir holds one directory per build secret id, with the value in BuildSecretFile.
	BuildSecretsDir = "/var/kiln/secrets/build"
	// BuildSecretFile is the file name of a build secret's value inside its directory.
	BuildSecretFile = "value"
	// ResultPath is where the runner writes its Result.
	ResultPath = "/dev/termination-log"
)

// MaxResultBytes is the kubelet's limit on a termination message.
const MaxResultBytes = 4096

// Exit codes of the runner, one per failure class.
const (
	ExitOK           = 0
	ExitInternal     = 1
	ExitBadInput     = 2
	ExitBuildFailed  = 3
	ExitOverBudget   = 4
	ExitPushFailed   = 5
	ExitBuildKitDown = 6
)

// ExitCode maps a failure class to the runner's exit code.
func ExitCode(class string) int {
	switch class {
	case "":
		return ExitOK
	case kilnv1.FailureBadInput:
		return ExitBadInput
	case kilnv1.FailureBuildFailed:
		return ExitBuildFailed
	case kilnv1.FailureOverBudget:
		return ExitOverBudget
	case kilnv1.FailurePushFailed:
		return ExitPushFailed
	case kilnv1.FailureBuildKitNotUp:
		return ExitBuildKitDown
	}
	return ExitInternal
}

// Request is what the manager asks the runner to do. It travels as files (RequestFiles,
// ReadRequestDir): it holds references to Secrets, never their values.
type Request struct {
	// Namespace and Name of the ImageBuild.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Build is the build number (the pod is <name>-build-<n>).
	Build int64 `json:"build"`
	// Spec is the ImageBuild's spec at the generation being built.
	Spec kilnv1.ImageBuildSpec `json:"spec"`
	// ResetCache empties BuildKit's cache before this build (kiln.dev/reset-cache-requested-at).
	ResetCache bool `json:"resetCache,omitempty"`
	// InlineDockerfile says that spec.dockerfile.inline is in InlineDockerfileFile, beside the
	// request; only RequestFiles and ReadRequestDir use it.
	InlineDockerfile bool `json:"inlineDockerfile,omitempty"`
}

// Result is what the runner reports. Field names are short because the whole encoding must fit
// in MaxResultBytes; Fit makes sure it does.
type Result struct {
	// Digest of the pushed manifest or index ("" when nothing was pushed).
	Digest string `json:"digest,omitempty"`
	// Image is repository@digest of the pushed image.
	Image string `json:"image,omitempty"`
	// Tags pushed.
	Tags []string `json:"tags,omitempty"`
	// Pushed is true when the image reached the registry (always, on success; also under Warn).
	Pushed bool `json:"pushed,omitempty"`
	// Revision is the resolved git commit.
	Revision string `json:"rev,omitempty"`
	// Platforms are the measured platform images.
	Platforms []kilnv1.PlatformSize `json:"platforms,omitempty"`
	// AttestationBytes is the size of attestation manifests, counted apart.
	AttestationBytes int64 `json:"attBytes,omitempty"`
	// Budget is the verdict.
	Budget *kilnv1.BudgetStatus `json:"budget,omitempty"`
	// CachedSteps and TotalSteps count the build's vertices.
	CachedSteps int32 `json:"cached,omitempty"`
	TotalSteps  int32 `json:"total,omitempty"`
	// Advice is the runner's most valuable findings, best first.
	Advice []kilnv1.Advice `json:"advice,omitempty"`
	// FailureClass is empty on success, else one of kilnv1.Failure*.
	FailureClass string `json:"failure,omitempty"`
	// Message explains a failure, naming the field, line or Secret at fault.
	Message string `json:"message,omitempty"`
	// LogTail is the end of the build log on failure, with known secret values redacted.
	LogTail string `json:"logTail,omitempty"`
}

// Encode returns the JSON encoding of r, shortened by Fit to at most MaxResultBytes.
func (r Result) Encode() ([]byte, error) {
	return r.Fit(MaxResultBytes)
}

// Fit encodes r in at most limit bytes. It first shortens long strings, then drops the least
// valuable parts one by one: advice beyond the first, small layers, passed budget checks, extra
// platforms' details. The digest, sizes, verdict and failure always stay.
func (r Result) Fit(limit int) ([]byte, error) {
	r = r.clone()
	r.Message = Truncate(r.Message, 1024)
	r.LogTail = TruncateStart(r.LogTail, 1200)
	for i := range r.Advice {
		r.Advice[i].Message = Truncate(r.Advice[i].Message, 200)
	}
	for i := range r.Platforms {
		for j := range r.Platforms[i].LargestLayers {
			r.Platforms[i].LargestLayers[j].CreatedBy = Truncate(r.Platforms[i].LargestLayers[j].CreatedBy, 80)
		}
	}
	if r.Budget != nil {
		sort.SliceStable(r.Budget.Checks, func(i, j int) bool { return r.Budget.Checks[i].Headroom < r.Budget.Checks[j].Headroom })
		for i := range r.Budget.Checks {
			r.Budget.Checks[i].Message = Truncate(r.Budget.Checks[i].Message, 240)
		}
	}
	steps := []func() bool{
		func() bool { return trimSlice(&r.Advice, 3) },
		func() bool { return trimLayers(&r, 3) },
		func() bool { return trimChecks(&r, 4) },
		func() bool { return trimSlice(&r.Advice, 1) },
		func() bool { return trimLayers(&r, 1) },
		func() bool { return trimChecks(&r, 1) },
		func() bool { return trimSlice(&r.Advice, 0) },
		func() bool { return trimLayers(&r, 0) },
		func() bool { r.LogTail = TruncateStart(r.LogTail, 400); return true },
		func() bool { r.Message = Truncate(r.Message, 256); return true },
		func() bool { r.LogTail = ""; return true },
		func() bool { return trimChecksMessages(&r) },
		func() bool { return trimSlice(&r.Tags, 1) },
	}
	for _, step := range steps {
		b, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		if len(b) <= limit {
			return b, nil
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

// Decode parses a termination message written by Encode.
func Decode(msg string) (Result, error) {
	var r Result
	if err := json.Unmarshal([]byte(msg), &r); err != nil {
		return Result{}, fmt.Errorf("runner result is not valid JSON: %w", err)
	}
	return r, nil
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
	c.Advice = append([]kilnv1.Advice(nil), r.Advice...)
	c.Platforms = make([]kilnv1.PlatformSize, len(r.Platforms))
	for i, p := range r.Platforms {
		p.LargestLayers = append([]kilnv1.LayerSize(nil), p.LargestLayers...)
		c.Platforms[i] = p
	}
	if r.Budget != nil {
		b := *r.Budget
		b.Checks = append([]kilnv1.BudgetCheck(nil), r.Budget.Checks...)
		c.Budget = &b
	}
	return c
}

func trimSlice[T any](s *[]T, n int) bool {
	if len(*s) <= n {
		return false
	}
	*s = (*s)[:n]
	return true
}

func trimLayers(r *Result, n int) bool {
	trimmed := false
	for i := range r.Platforms {
		trimmed = trimSlice(&r.Platforms[i].LargestLayers, n) || trimmed
	}
	return trimmed
}

func trimChecks(r *Result, n int) bool {
	if r.Budget == nil {
		return false
	}
	return trimSlice(&r.Budget.Checks, n)
}

func trimChecksMessages(r *Result) bool {
	if r.Budget == nil {
		return false
	}
	for i := range r.Budget.Checks {
		r.Budget.Checks[i].Message = ""
	}
	return true
}
