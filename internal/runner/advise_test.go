package runner

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
)

// TestAdviseBuildArgs checks that the spec's build args reach the advice engine and override
// ARG defaults, as --build-arg does in the build.
func TestAdviseBuildArgs(t *testing.T) {
	df := []byte("ARG BASE=\"alpine:3.20\"\nFROM ${BASE}\nUSER 65534\nCOPY app /app\n")
	for _, tc := range []struct {
		name string
		args []contract.BuildArg
		want bool // a final-stage-toolchain finding
	}{
		{"the ARG default", nil, false},
		{"a build arg overrides it", []contract.BuildArg{{Name: "BASE", Value: "golang:1.22"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			r := &run{req: request(func(s *contract.BuildSpec) { s.Dockerfile.BuildArgs = tc.args }), out: &out}
			got := r.advise(&inputs{dockerfile: df, dockerfileName: "Dockerfile"}, measure.Index{})
			found := false
			for _, a := range got {
				if a.Rule == "final-stage-toolchain" {
					found = true
					if strings.Contains(a.Message, `"`) {
						t.Errorf("the message keeps the ARG's quotes: %s", a.Message)
					}
				}
			}
			if found != tc.want {
				t.Errorf("final-stage-toolchain = %v, want %v\n%s", found, tc.want, out.String())
			}
		})
	}
}

func TestKebab(t *testing.T) {
	for in, want := range map[string]string{
		"FromAsCasing":             "from-as-casing",
		"SecretsUsedInArgOrEnv":    "secrets-used-in-arg-or-env",
		"JSONArgsRecommended":      "json-args-recommended",
		"InvalidBaseImagePlatform": "invalid-base-image-platform",
	} {
		if got := kebab(in); got != want {
			t.Errorf("kebab(%q) = %q, want %q", in, got, want)
		}
	}
}
