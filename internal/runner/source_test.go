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
	sshIn := &inputs{gitURL: "git@git.example.com:team/app.git", gitSecret: "git-ssh", gitSSH: true}
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
		{"host unknown to known_hosts", wrap("ssh://git@git.example.com:2222/team/app.git", "Host key verification failed.\nfatal: Could not read from remote repository."),
			kilnv1.FailureBadInput, []string{"Host key verification failed", "the known_hosts of the git Secret lists no SSH host key for git.example.com:2222", "impersonating"}},
		{"host key changed", wrap(sshIn.gitURL, changedHostKey),
			kilnv1.FailureBadInput, []string{"git source git@git.example.com:team/app.git could not be fetched: Host key verification failed.",
				`the SSH host key of git.example.com is not the one known_hosts in Secret "git-ssh" (spec.source.git.secretRef) lists for it`,
				"and the server sent the ED25519 key SHA256:pqZqzbT4YH6Eeotr9HUunviJAGfgWGm6S4jC7FB9zHQ; someone may be impersonating", "fingerprints it publishes"}},
		{"token refused", wrap(in.gitURL, "remote: Invalid username or password.\nfatal: Authentication failed for 'https://git.example.com/team/app.git/'"),
			kilnv1.FailureBadInput, []string{"Authentication failed", `Secret "git-creds"`}},
		{"untrusted certificate", wrap(in.gitURL, "fatal: unable to access 'https://git.example.com/team/app.git/': server certificate verification failed. CAfile: none CRLfile: none"),
			kilnv1.FailureBadInput, []string{"TLS certificate is not trusted"}},
		{"credentials in a URL are not repeated", wrap("https://user:s3cret@git.example.com/x.git", "fatal: repository 'https://git.example.com/x.git/' not found"),
			kilnv1.FailureBadInput, []string{"https://user:xxxxx@git.example.com/x.git", "not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := in
			if strings.Contains(tc.msg, sshIn.gitURL) {
				in = sshIn
			}
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

// changedHostKey is OpenSSH 9.2's stderr for a host that known_hosts lists with another key.
const changedHostKey = `@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:pqZqzbT4YH6Eeotr9HUunviJAGfgWGm6S4jC7FB9zHQ.
Please contact your system administrator.
Add correct host key in /tmp/buildkit-known-hosts1234 to get rid of this message.
Offending ED25519 key in /tmp/buildkit-known-hosts1234:1
  remove with:
  ssh-keygen -f "/tmp/buildkit-known-hosts1234" -R "git.example.com"
Host key for git.example.com has changed and you have requested strict checking.
Host key verification failed.
fatal: Could not read from remote repository.

Please make sure you have the correct access rights
and the repository exists.`
