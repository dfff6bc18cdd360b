package runner

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// testSentinels (issue 13 item 4): the build's credentials (a git token, a registry password, and
// a build secret that is a PEM block with a blank line in it) never appear in anything the
// runner writes: its whole log and its result, the termination message the manager copies into
// status and Events. The build prints the build secret on purpose; one build fails, one pushes.
func (e *env) testSentinels(t *testing.T) {
	const (
		token  = "sentinel-git-token-4f1c9a"
		pushPW = "sentinel-push-password-77d2"
		pem    = "-----BEGIN SENTINEL KEY-----\nsentinelPemLineOneAAAAAAAA\n\nsentinelPemLineTwoBBBBBBBB\n-----END SENTINEL KEY-----\n"
	)
	work, git := testenv.GitRepo(t, map[string]string{"hello.txt": "from git\n"})
	base := t.TempDir()
	git("clone", "-q", "--bare", work, filepath.Join(base, "app.git"))
	locked := testenv.StartGitHTTP(t, base, token)
	private := testenv.StartRegistry(t, testenv.WithBasicAuth("kiln", pushPW))

	paths := func(t *testing.T) Paths {
		p := e.paths(t, nil)
		p.GitSecret = filepath.Join(t.TempDir(), "git")
		for dir, files := range map[string]map[string]string{
			p.GitSecret:                          {"token": token},
			filepath.Join(p.BuildSecrets, "key"): {contract.BuildSecretFile: pem},
		} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, v := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o400); err != nil {
					t.Fatal(err)
				}
			}
		}
		cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{private.Addr: map[string]string{
			"auth": base64.StdEncoding.EncodeToString([]byte("kiln:" + pushPW))}}})
		_ = os.MkdirAll(p.PushSecret, 0o755)
		if err := os.WriteFile(filepath.Join(p.PushSecret, ".dockerconfigjson"), cfg, 0o400); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sentinels := []string{token, pushPW, base64.StdEncoding.EncodeToString([]byte("kiln:" + pushPW)),
		"sentinelPemLineOneAAAAAAAA", "sentinelPemLineTwoBBBBBBBB"}

	for _, tc := range []struct {
		name, run string
		class     kilnv1.FailureClass
	}{
		{"failing", "cat /run/secrets/key; echo \"token? $(cat /run/secrets/key | tail -n 2)\"; exit 3", kilnv1.FailureBuildFailed},
		{"pushing", "cat /run/secrets/key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := e.request("sentinel-"+tc.name, func(s *contract.BuildSpec) {
				s.Source = contract.Source{Git: &contract.GitSource{URL: locked.URL + "/app.git", SecretRef: &contract.SecretRef{Name: "git-creds"}}}
				s.Dockerfile.Inline = "FROM " + e.busybox + "\nRUN --mount=type=secret,id=key " + tc.run + "\nCOPY hello.txt /\n"
				s.Dockerfile.Secrets = []contract.BuildSecret{{ID: "key", SecretRef: contract.SecretKeyRef{Name: "keys", Key: "key.pem"}}}
				s.Output.Image = private.Addr + "/test/sentinel"
				s.Output.PushSecretRef = &contract.SecretRef{Name: "regcred"}
			})
			var log bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			res := Run(ctx, Config{Request: req, Addr: e.bk.Addr, Paths: paths(t), ConnectTimeout: 30 * time.Second, PushAttempts: 1, Out: &log})
			if res.FailureClass != tc.class {
				t.Fatalf("class %q (%s), want %q\n%s", res.FailureClass, res.Message, tc.class, log.String())
			}
			if !strings.Contains(log.String(), "***") {
				t.Errorf("the build printed its secret, yet the log shows no redaction:\n%s", log.String())
			}
			result, err := res.Encode()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sentinels {
				for where, text := range map[string]string{"runner log": log.String(), "result (termination message)": string(result)} {
					if strings.Contains(text, s) {
						t.Errorf("the %s holds the credential %q", where, s)
					}
				}
			}
		})
	}
}
