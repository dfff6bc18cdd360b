package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
)

// A known_hosts line as a git host publishes it (this key is made up, not any host's).
const testKnownHosts = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"

// gitSecretDir lays out a git Secret as the kubelet mounts it (plain files suffice here).
func gitSecretDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sourceOp marshals st and returns its git source op.
func sourceOp(t *testing.T, st llb.State) *pb.SourceOp {
	t.Helper()
	def, err := st.Marshal(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err == nil && op.GetSource() != nil {
			return op.GetSource()
		}
	}
	t.Fatal("no source op")
	return nil
}

func TestIsSSHURL(t *testing.T) {
	for url, want := range map[string]bool{
		"ssh://git@git.example.com/team/app.git":      true,
		"ssh://git@git.example.com:2222/team/app.git": true,
		"git@github.com:team/app.git":                 true,
		"deploy@10.0.0.7:/srv/git/app.git":            true,
		"https://github.com/team/app.git":             false,
		"http://git.example.com/app.git":              false,
		"git://git.example.com/app.git":               false,
	} {
		if got := isSSHURL(url); got != want {
			t.Errorf("isSSHURL(%q) = %v, want %v", url, got, want)
		}
	}
}

// TestPrepareGitSSH: an ssh source needs known_hosts and a key in its Secret, and says which is
// missing before anything connects; https needs a token.
func TestPrepareGitSSH(t *testing.T) {
	const key = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot checked here\n-----END OPENSSH PRIVATE KEY-----\n"
	for _, tc := range []struct {
		name   string
		url    string
		secret map[string]string // nil: no secretRef
		want   string            // substring of the BadInput message; "" means success
	}{
		{"ssh without a Secret", "git@git.example.com:team/app.git", nil,
			"spec.source.git.url git@git.example.com:team/app.git is an ssh URL, which needs a Secret in spec.source.git.secretRef with the keys known_hosts"},
		{"ssh without known_hosts", "ssh://git@git.example.com/team/app.git", map[string]string{"ssh-privatekey": key},
			`git Secret "git-creds" (spec.source.git.secretRef) is missing in namespace "team" or has no known_hosts key, which the ssh URL ssh://git@git.example.com/team/app.git needs`},
		{"ssh with an empty known_hosts", "ssh://git@git.example.com/team/app.git", map[string]string{"ssh-privatekey": key, "known_hosts": "# nothing yet\n\n"},
			`git Secret "git-creds" (spec.source.git.secretRef): known_hosts has no host key`},
		{"ssh with a known_hosts that is not one", "ssh://git@git.example.com/team/app.git", map[string]string{"ssh-privatekey": key, "known_hosts": "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU\n"},
			`known_hosts line 1 is not a known_hosts line`},
		{"ssh without a key", "ssh://git@git.example.com/team/app.git", map[string]string{"known_hosts": testKnownHosts},
			`has no ssh-privatekey key, which the ssh URL ssh://git@git.example.com/team/app.git needs`},
		{"ssh with a token only", "git@git.example.com:team/app.git", map[string]string{"token": "t0ken"}, "has no known_hosts key"},
		{"https with a key only", "https://git.example.com/team/app.git", map[string]string{"ssh-privatekey": key},
			`holds an ssh-privatekey, which only an ssh URL (ssh://… or user@host:path) can use, not https://git.example.com/team/app.git`},
		{"ssh with both", "ssh://git@git.example.com/team/app.git", map[string]string{"ssh-privatekey": key, "known_hosts": "# from git.example.com's docs\n" + testKnownHosts}, ""},
		{"https without a Secret", "https://git.example.com/team/app.git", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(func(s *contract.BuildSpec) {
				s.Source = contract.Source{Git: &contract.GitSource{URL: tc.url}}
				if tc.secret != nil {
					s.Source.Git.SecretRef = &contract.SecretRef{Name: "git-creds"}
				}
				s.Dockerfile.Inline = "FROM scratch\n"
			})
			p := Paths{Work: t.TempDir(), GitSecret: filepath.Join(t.TempDir(), "none")}
			if tc.secret != nil {
				p.GitSecret = gitSecretDir(t, tc.secret)
			}
			in, err := prepare(req, p)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if in.gitSSH && (in.knownHosts != testKnownHosts || in.sshKey != filepath.Join(p.GitSecret, "ssh-privatekey")) {
					t.Errorf("known hosts %q, key %q", in.knownHosts, in.sshKey)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			if classOf(err) != kilnv1.FailureBadInput || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %s %q\nwant BadInput containing %q", classOf(err), err, tc.want)
			}
		})
	}
}

// TestGitContext: the git source kiln hands to the Dockerfile frontend carries the revision,
// the contextDir and, for ssh, the Secret's known hosts and kiln's private ssh id: no
// ssh-keyscan result, no "default" agent. Revision resolution asks for the same source.
func TestGitContext(t *testing.T) {
	req := request(func(s *contract.BuildSpec) {
		s.Source = contract.Source{Git: &contract.GitSource{URL: "ssh://git@git.example.com/team/app.git", Revision: "v1.2", ContextDir: "/svc/api/",
			SecretRef: &contract.SecretRef{Name: "git-creds"}}}
		s.Dockerfile.Inline = "FROM scratch\n"
	})
	p := Paths{Work: t.TempDir(), GitSecret: gitSecretDir(t, map[string]string{"ssh-privatekey": "k", "known_hosts": testKnownHosts})}
	in, err := prepare(req, p)
	if err != nil {
		t.Fatal(err)
	}
	st, err := in.gitContext(true)
	if err != nil {
		t.Fatal(err)
	}
	op := sourceOp(t, st)
	if op.Identifier != "git://git.example.com/team/app.git#v1.2:svc/api" {
		t.Errorf("identifier %q", op.Identifier)
	}
	for k, want := range map[string]string{
		pb.AttrKnownSSHHosts: testKnownHosts, pb.AttrMountSSHSock: gitSSHID, pb.AttrFullRemoteURL: "ssh://git@git.example.com/team/app.git",
		pb.AttrGitMTime: "", // not with a contextDir: BuildKit v0.33 fails it
	} {
		if got := op.Attrs[k]; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	opts, err := in.gitOptions()
	if err != nil {
		t.Fatal(err)
	}
	resolve := sourceOp(t, llb.Git(in.gitURL, "", opts...))
	if resolve.Attrs[pb.AttrKnownSSHHosts] != testKnownHosts || resolve.Attrs[pb.AttrMountSSHSock] != gitSSHID {
		t.Errorf("revision resolution uses other ssh settings: %v", resolve.Attrs)
	}

	// Without a contextDir, a reproducible build's files get the commit's time; an https source
	// has no ssh attributes.
	in = &inputs{gitURL: "https://github.com/pressly/goose.git", gitRevision: "v3.26.0"}
	st, err = in.gitContext(true)
	if err != nil {
		t.Fatal(err)
	}
	op = sourceOp(t, st)
	if op.Identifier != "git://github.com/pressly/goose.git#v3.26.0" || op.Attrs[pb.AttrGitMTime] != "commit" {
		t.Errorf("identifier %q, attrs %v", op.Identifier, op.Attrs)
	}
	if _, ok := op.Attrs[pb.AttrKnownSSHHosts]; ok {
		t.Errorf("an https source has known hosts: %v", op.Attrs)
	}

	// An ssh source never goes out without known hosts, whatever prepare did.
	in = &inputs{gitURL: "git@git.example.com:team/app.git", gitSSH: true}
	if _, err := in.gitContext(false); err == nil || classOf(err) != kilnv1.FailureBadInput {
		t.Errorf("an ssh source without known hosts: %v", err)
	}
}
