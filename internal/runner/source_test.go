package runner

import (
	"strings"
	"testing"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// TestSourceFailure classes git's messages that the integration test cannot provoke here (it may
// not resolve names or reach other hosts). Each stderr is git's own text as BuildKit wraps it.
func TestSourceFailure(t *testing.T) {
	in := &inputs{gitURL: "https://git.example.com/team/app.git", gitSecret: "git-creds"}
	wrap := func(url, stderr string) string {
		return "failed to solve: failed to fetch remote " + url + ": git stderr:\n" + stderr + "\n: exit status 128"
	}
	for _, tc := range []struct {
		name, msg string
		class     kilnv1.FailureClass
		says      []string
	}{
		{"name does not resolve", wrap(in.gitURL, "fatal: unable to access 'https://git.example.com/team/app.git/': Could not resolve host: git.example.com"),
			kilnv1.FailureSourceUnavailable, []string{"git source https://git.example.com/team/app.git could not be fetched: unable to access", "Could not resolve host: git.example.com", "which kiln retries"}},
		{"git:// name does not resolve", "error fetching default branch for repository git://nohost/app.git: git stderr:\nfatal: unable to look up nohost (port 9418) (Name or service not known)\n: exit status 128",
			kilnv1.FailureSourceUnavailable, []string{"the git repository a Dockerfile step reads git://nohost/app.git", "Name or service not known"}},
		{"timeout", wrap(in.gitURL, "fatal: unable to access 'https://git.example.com/team/app.git/': Failed to connect to git.example.com port 443 after 130000 ms: Connection timed out"),
			kilnv1.FailureSourceUnavailable, []string{"Connection timed out"}},
		{"ssh key refused", wrap("ssh://git@git.example.com/team/app.git", "git@git.example.com: Permission denied (publickey).\r\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists."),
			kilnv1.FailureBadInput, []string{"Permission denied (publickey)", "refused the credentials"}},
		{"host key", wrap(in.gitURL, "Host key verification failed.\nfatal: Could not read from remote repository."),
			kilnv1.FailureBadInput, []string{"Host key verification failed", "SSH key is not the one expected"}},
		{"token refused", wrap(in.gitURL, "remote: Invalid username or password.\nfatal: Authentication failed for 'https://git.example.com/team/app.git/'"),
			kilnv1.FailureBadInput, []string{"Authentication failed", `Secret "git-creds"`}},
		{"untrusted certificate", wrap(in.gitURL, "fatal: unable to access 'https://git.example.com/team/app.git/': server certificate verification failed. CAfile: none CRLfile: none"),
			kilnv1.FailureBadInput, []string{"TLS certificate is not trusted"}},
		{"credentials in a URL are not repeated", wrap("https://user:s3cret@git.example.com/x.git", "fatal: repository 'https://git.example.com/x.git/' not found"),
			kilnv1.FailureBadInput, []string{"https://user:xxxxx@git.example.com/x.git", "not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sourceFailure(tc.msg, in)
			if err == nil {
				t.Fatal("not recognised as a git fetch failure")
			}
			if got := classOf(err); got != tc.class {
				t.Errorf("class %s, want %s: %v", got, tc.class, err)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message does not say %q:\n%v", s, err)
				}
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "exit status") {
				t.Errorf("message leaks a password or BuildKit's exit status:\n%v", err)
			}
		})
	}
	if err := sourceFailure("failed to solve: process \"/bin/sh -c make\" did not complete successfully: exit code: 2", in); err != nil {
		t.Errorf("a failed RUN step is not a source failure: %v", err)
	}
}
