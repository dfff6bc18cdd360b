package runner

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// testGitFailures: a git source that cannot be fetched fails with its own class and git's own
// line in the message, through a real buildkitd and real git servers (issue 19 item 1): an
// unreachable host and a failing host are SourceUnavailable (retried); a missing repository, a
// missing revision and refused credentials are BadInput naming the URL (and the Secret).
func (e *env) testGitFailures(t *testing.T) {
	work, git := testenv.GitRepo(t, map[string]string{"hello.txt": "from git\n"})
	base := t.TempDir()
	git("clone", "-q", "--bare", work, filepath.Join(base, "app.git"))
	daemon := "git://" + testenv.StartGitDaemon(t, base)
	openServer := testenv.StartGitHTTP(t, base, "")
	open := openServer.URL
	locked := testenv.StartGitHTTP(t, base, "the-right-token").URL
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close() // nothing listens there now

	wrongToken := filepath.Join(t.TempDir(), "git-secret")
	if err := os.MkdirAll(wrongToken, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wrongToken, "token"), []byte("a-wrong-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, revision, secret string
		class                       kilnv1.FailureClass
		says                        []string
	}{
		{"nothing listens", "git://" + closed + "/app.git", "", "", kilnv1.FailureSourceUnavailable,
			[]string{"git source git://" + closed + "/app.git could not be fetched", "unable to connect", "Connection refused", "which kiln retries (spec.retries)"}},
		{"the host fails", open + "/status/503/app.git", "", "", kilnv1.FailureSourceUnavailable,
			[]string{"returned error: 503", "which kiln retries (spec.retries)"}},
		{"no such repository (http)", open + "/missing.git", "", "", kilnv1.FailureBadInput,
			[]string{"git source " + open + "/missing.git could not be fetched", "not found", "check spec.source.git.url"}},
		{"no such repository (git daemon)", daemon + "/missing.git", "", "", kilnv1.FailureBadInput,
			[]string{"not exported", "check spec.source.git.url"}},
		{"no such revision", open + "/app.git", "no-such-branch", "", kilnv1.FailureBadInput,
			[]string{`has no revision "no-such-branch"`, "spec.source.git.revision"}},
		{"credentials needed, none given", locked + "/app.git", "", "", kilnv1.FailureBadInput,
			[]string{"the repository needs credentials", "spec.source.git.secretRef"}},
		{"credentials refused", locked + "/app.git", "", "git-token", kilnv1.FailureBadInput,
			[]string{"the git host refused the credentials", `Secret "git-token"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := e.request("gitfail", func(s *contract.BuildSpec) {
				s.Source = contract.Source{Git: &contract.GitSource{URL: tc.url, Revision: tc.revision, Insecure: true}}
				if tc.secret != "" {
					s.Source.Git.SecretRef = &contract.SecretRef{Name: tc.secret}
				}
				s.Dockerfile.Inline = "FROM scratch\nCOPY hello.txt /\n"
			})
			p := e.paths(t, nil)
			if tc.secret != "" {
				p.GitSecret = wrongToken
			}
			res := e.run(t, req, p)
			if res.FailureClass != tc.class {
				t.Errorf("class %q, want %q: %s", res.FailureClass, tc.class, res.Message)
			}
			for _, s := range tc.says {
				if !strings.Contains(res.Message, s) {
					t.Errorf("message does not say %q:\n%s", s, res.Message)
				}
			}
			if strings.Contains(res.Message, "a-wrong-token") || strings.HasSuffix(res.Message, "git stderr:") {
				t.Errorf("message leaks the token or is cut short:\n%s", res.Message)
			}
			t.Logf("%s: %s", res.FailureClass, res.Message)
		})
	}

	// The same host with the right token builds: the refusals above are the host's, not a
	// server that refuses everything. The Dockerfile also ADDs a repository of another git host,
	// which must not receive the token (issue 13 item 2).
	right := filepath.Join(t.TempDir(), "git-secret")
	if err := os.MkdirAll(right, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(right, "token"), []byte("the-right-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	req := e.request("gitok", func(s *contract.BuildSpec) {
		s.Source = contract.Source{Git: &contract.GitSource{URL: locked + "/app.git", SecretRef: &contract.SecretRef{Name: "git-token"}, Insecure: true}}
		s.Dockerfile.Inline = "FROM scratch\nCOPY hello.txt /\nADD " + open + "/app.git /other\n"
	})
	before := len(openServer.Authorizations())
	p := e.paths(t, nil)
	p.GitSecret = right
	if res := e.run(t, req, p); res.FailureClass != "" {
		t.Errorf("the right token did not build: %s: %s", res.FailureClass, res.Message)
	}
	auths := openServer.Authorizations()[before:]
	if len(auths) == 0 {
		t.Fatal("the Dockerfile's ADD never reached the second git host")
	}
	for _, a := range auths {
		if a != "" {
			t.Errorf("the second git host received credentials %q: the token must go to the source's host only", a)
		}
	}
}
