package runner

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/moby/buildkit/util/gitutil"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// BuildKit reports a git fetch that failed as "failed to fetch remote <url>: git stderr:\n<git's
// stderr>: exit status 128", or "error fetching default branch for repository <url>: …" when no
// revision is given (source/git and util/gitutil in BuildKit v0.33), and a revision the
// repository lacks as "repository does not contain ref <ref>". The cause is in git's stderr,
// after the line break that cleanError cuts at.
var (
	fetchRemoteRe = regexp.MustCompile(`(?:failed to fetch remote|error fetching default branch for repository) (\S+?):? git stderr:`)
	missingRefRe  = regexp.MustCompile(`repository does not contain ref (\S+?),`)
)

// gitProblem is one kind of git fetch failure: the phrases of git's stderr that show it (in
// lower case), its failure class, and what the user should do.
type gitProblem struct {
	phrases []string
	class   kilnv1.FailureClass
	advice  string
}

// gitProblems are checked in order; the first whose phrase git's message holds decides. A
// failure none matches is SourceUnavailable: retried a few times, then reported with git's line.
var gitProblems = []gitProblem{
	{[]string{"authentication failed", "could not read username", "could not read password", "terminal prompts disabled",
		"invalid username or password", "returned error: 401", "returned error: 403", "permission denied"},
		kilnv1.FailureBadInput, "the git host refused the credentials"},
	{[]string{"host key verification failed"}, kilnv1.FailureBadInput, "the git host's SSH key is not the one expected"}, // hostKeyAdvice says more
	{[]string{"certificate"}, kilnv1.FailureBadInput, "the git host's TLS certificate is not trusted"},
	{[]string{"repository not found", "not found", "returned error: 404", "does not appear to be a git repository",
		"not exported", "couldn't find remote ref", "no such repository"},
		kilnv1.FailureBadInput, "check spec.source.git.url and spec.source.git.revision"},
	{[]string{"could not resolve host", "unable to look up", "name or service not known", "temporary failure in name resolution",
		"failed to connect", "couldn't connect", "connection refused", "connection timed out", "timed out", "network is unreachable",
		"no route to host", "connection reset", "early eof", "rpc failed", "hung up unexpectedly", "returned error: 5",
		"context deadline exceeded"},
		kilnv1.FailureSourceUnavailable, "the git host could not be reached, or failed: a transient failure, which kiln retries (spec.retries)"},
}

// sourceFailure recognises a git source that could not be fetched in BuildKit's error message
// msg (the whole message, all lines), and says what happened with git's own line, the URL
// without credentials and, when the URL is spec.source.git's, the Secret that was offered; nil
// for any other error. Unreachable hosts and server errors are the transient SourceUnavailable;
// a repository or revision that does not exist, or credentials refused, are BadInput.
func sourceFailure(msg string, in *inputs) error {
	if m := missingRefRe.FindStringSubmatch(msg); m != nil {
		return fail(kilnv1.FailureBadInput, "git source %s has no revision %q: check spec.source.git.revision (a branch, tag or full commit)",
			redactURL(in.gitURL), m[1])
	}
	m := fetchRemoteRe.FindStringSubmatchIndex(msg)
	if m == nil {
		return nil
	}
	remote := redactURL(msg[m[2]:m[3]])
	stderr := msg[m[1]:]
	line := gitErrorLine(stderr)
	problem := gitProblem{class: kilnv1.FailureSourceUnavailable, advice: "taken as a transient failure, which kiln retries (spec.retries)"}
	for _, p := range gitProblems {
		if l := lineWithAny(stderr, p.phrases); l != "" {
			problem, line = p, l
			break
		}
	}
	advice := problem.advice
	if strings.Contains(strings.ToLower(line), strings.ToLower(hostKeyFailed)) {
		advice = hostKeyAdvice(remote, stderr, in)
	}
	if problem.class == kilnv1.FailureBadInput && strings.HasPrefix(advice, "the git host refused") && sameRepo(remote, in.gitURL) {
		if in.gitSecret != "" {
			advice += fmt.Sprintf(": check the token or ssh-privatekey in Secret %q (spec.source.git.secretRef)", in.gitSecret)
		} else {
			advice += ": the repository needs credentials; name a Secret in spec.source.git.secretRef"
		}
	}
	what := "git source"
	if !sameRepo(remote, in.gitURL) {
		what = "the git repository a Dockerfile step reads" // ADD <git url>, or a git build context of a stage
	}
	return fail(problem.class, "%s %s could not be fetched: %s (%s)", what, remote, line, advice)
}

// hostKeyFailed is ssh's last word when the server's host key is not one known_hosts lists
// for it (BuildKit runs ssh with -o UserKnownHostsFile=<the known hosts it was given>; ssh has
// no terminal to ask on, so an unknown host fails like a changed key).
const hostKeyFailed = "Host key verification failed."

// hostKeyAdvice says which host's key did not match, where the expected keys come from, and
// the fingerprint of the key the server sent when ssh printed it. OpenSSH prints, for a host
// that known_hosts lists with another key:
//
//	The fingerprint for the ED25519 key sent by the remote host is
//	SHA256:pqZqzbT4YH6Eeotr9HUunviJAGfgWGm6S4jC7FB9zHQ.
//	...
//	Host key for [127.0.0.1]:34567 has changed and you have requested strict checking.
//	Host key verification failed.
//
// and for a host it lists with no key, only the last line.
func hostKeyAdvice(remote, stderr string, in *inputs) string {
	host := remote
	if u, err := gitutil.ParseURL(remote); err == nil && u.Host != "" {
		host = u.Host
	}
	where := "the known_hosts of the git Secret"
	if in.gitSecret != "" && sameRepo(remote, in.gitURL) {
		where = fmt.Sprintf("known_hosts in Secret %q (spec.source.git.secretRef)", in.gitSecret)
	}
	var b strings.Builder
	if strings.Contains(stderr, "has changed and you have requested strict checking") {
		fmt.Fprintf(&b, "the SSH host key of %s is not the one %s lists for it", host, where)
	} else {
		fmt.Fprintf(&b, "%s lists no SSH host key for %s (written [host]:port when the port is not 22)", where, host)
	}
	if m := hostKeySentRe.FindStringSubmatch(stderr); m != nil {
		fmt.Fprintf(&b, ", and the server sent the %s key %s", m[1], m[2])
	}
	b.WriteString("; someone may be impersonating the server: if the git host changed its key, check the new one against the fingerprints it publishes before you add it to known_hosts")
	return b.String()
}

// hostKeySentRe finds the fingerprint of the host key ssh was sent, when it printed it.
var hostKeySentRe = regexp.MustCompile(`fingerprint for the (\S+) key sent by the remote host is\s+(SHA256:[A-Za-z0-9+/=]+)`)

// gitErrorLine is the line of git's stderr that says what failed: its first "fatal:" line, else
// its first "error:" line, else its first "remote:" line (what the server said), with the
// prefix removed and the next line added when git broke the cause onto it (as for git://); else
// its first non-empty line.
func gitErrorLine(stderr string) string {
	stderr = strings.TrimSpace(stderr)
	stderr = strings.TrimSpace(stderr[:len(stderr)-len(exitStatusRe.FindString(stderr))])
	lines := strings.Split(stderr, "\n")
	for _, prefix := range []string{"fatal: ", "error: ", "ERROR: ", "remote: "} {
		for i, l := range lines {
			rest, ok := strings.CutPrefix(strings.TrimSpace(l), prefix)
			if !ok {
				continue
			}
			if strings.HasSuffix(rest, ":") && i+1 < len(lines) && strings.TrimSpace(lines[i+1]) != "" {
				rest += " " + strings.TrimSpace(lines[i+1])
			}
			return rest
		}
	}
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return "git printed nothing"
}

// exitStatusRe is the end BuildKit adds to git's stderr.
var exitStatusRe = regexp.MustCompile(`:? *exit status \d+$`)

// lineWithAny is the first line of git's stderr that holds one of phrases (in lower case), with
// git's "fatal: "-style prefix removed and the line it continues; "" when none does.
func lineWithAny(stderr string, phrases []string) string {
	lines := strings.Split(stderr, "\n")
	for _, p := range phrases {
		for i, l := range lines {
			if !strings.Contains(strings.ToLower(l), p) {
				continue
			}
			if i > 0 && strings.HasSuffix(strings.TrimSpace(lines[i-1]), ":") {
				l = lines[i-1] + "\n" + l // the cause of the line before, broken onto this one
			}
			return gitErrorLine(l)
		}
	}
	return ""
}

// redactURL is u without a password or token in its user part (BuildKit redacts its own
// messages; spec URLs carry none since admission refuses them, but a message must never depend
// on that).
func redactURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil || parsed.User == nil {
		return u
	}
	return parsed.Redacted()
}

// sameRepo reports whether two git URLs name the same repository, ignoring credentials, a
// trailing slash and ".git".
func sameRepo(a, b string) bool {
	norm := func(u string) string {
		if p, err := url.Parse(u); err == nil {
			p.User = nil
			u = p.String()
		}
		return strings.TrimSuffix(strings.TrimSuffix(u, "/"), ".git")
	}
	return b != "" && norm(a) == norm(b)
}
