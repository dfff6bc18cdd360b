package runner

import (
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// testGitSSH: a git source over ssh, against a real sshd (issue 13 items 1 and 2). BuildKit
// checks the server's host key against the git Secret's known_hosts, for the context and for
// revision resolution; without known_hosts nothing connects; the key is offered under kiln's
// private id only, which no Dockerfile step may mount.
func (e *env) testGitSSH(t *testing.T) {
	srv := testenv.StartGitSSH(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sshd log:\n%s", srv.Log())
		}
	})
	work, git := testenv.GitRepo(t, map[string]string{
		"README.md":      "outside the context\n",
		"app/hello.txt":  "from git over ssh\n",
		"app/Dockerfile": "FROM " + e.busybox + "\nCOPY hello.txt /\nARG SOURCE_DATE_EPOCH\nRUN echo \"$SOURCE_DATE_EPOCH\" > /epoch\n",
	})
	git("tag", "v1")
	commit := git("rev-parse", "HEAD")
	url := srv.AddRepo(t, "app.git", work)
	commitTime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) // testenv.GitRepo's

	secret := func(t *testing.T, knownHosts string) string {
		files := map[string]string{"ssh-privatekey": string(srv.ClientKey)}
		if knownHosts != "" {
			files["known_hosts"] = knownHosts
		}
		return gitSecretDir(t, files)
	}
	sshRequest := func(name, url string, mutate ...func(*contract.BuildSpec)) contract.Request {
		return e.request(name, append([]func(*contract.BuildSpec){func(s *contract.BuildSpec) {
			s.Source = contract.Source{Git: &contract.GitSource{URL: url, Revision: "v1", ContextDir: "app", SecretRef: &contract.SecretRef{Name: "git-ssh"}}}
		}}, mutate...)...)
	}
	logins := func() int { return strings.Count(srv.Log(), "Accepted publickey") }

	t.Run("the right known host builds the contextDir, reproducibly", func(t *testing.T) {
		req := sshRequest("fromssh", url, func(s *contract.BuildSpec) { s.Output.Reproducible = true })
		p := e.paths(t, nil)
		p.GitSecret = secret(t, "# "+srv.Addr+", as its operator publishes it\n"+srv.KnownHosts())
		res := e.run(t, req, p)
		if res.FailureClass != "" {
			t.Fatalf("ssh build failed: %s: %s", res.FailureClass, res.Message)
		}
		if res.Revision != commit {
			t.Errorf("revision %q, want the tag's commit %s", res.Revision, commit)
		}
		if logins() == 0 {
			t.Error("sshd saw no login: the context did not come over ssh")
		}
		img, err := e.get(t, req.Spec.Output.Image+":v1").Image()
		if err != nil {
			t.Fatal(err)
		}
		files := imageFiles(t, img)
		if files["hello.txt"] != "from git over ssh\n" {
			t.Errorf("hello.txt %q: the context is not the repository's app/", files["hello.txt"])
		}
		if _, ok := files["README.md"]; ok {
			t.Error("the image holds README.md, from outside the contextDir")
		}
		// The RUN step saw SOURCE_DATE_EPOCH, the commit time, although the context is a
		// sub-directory (a url#ref:subdir context could not give it).
		if want := strconv.FormatInt(commitTime.Unix(), 10) + "\n"; files["epoch"] != want {
			t.Errorf("the RUN step saw SOURCE_DATE_EPOCH=%q, want %q", files["epoch"], want)
		}
		cf, _ := img.ConfigFile()
		if !cf.Created.Equal(commitTime) {
			t.Errorf("created %s, want the commit time %s", cf.Created.Time, commitTime)
		}
		// Again, from the same cache: the same digest.
		res2 := e.run(t, req, p)
		if res2.FailureClass != "" || res2.Digest != res.Digest {
			t.Errorf("rebuild: %s %s, digest %s then %s", res2.FailureClass, res2.Message, res.Digest, res2.Digest)
		}
	})

	t.Run("a wrong host key fails as BadInput naming the host", func(t *testing.T) {
		before := logins()
		req := sshRequest("wrongkey", url)
		p := e.paths(t, nil)
		p.GitSecret = secret(t, srv.KnownHostsWith(testenv.NewSSHHostKey(t)))
		res := e.run(t, req, p)
		if res.FailureClass != kilnv1.FailureBadInput {
			t.Errorf("class %q, want BadInput: %s", res.FailureClass, res.Message)
		}
		for _, s := range []string{"Host key verification failed", "the SSH host key of " + srv.Addr + " is not the one",
			`known_hosts in Secret "git-ssh" (spec.source.git.secretRef)`, "the server sent the ED25519 key SHA256:"} {
			if !strings.Contains(res.Message, s) {
				t.Errorf("message does not say %q:\n%s", s, res.Message)
			}
		}
		if n := logins() - before; n != 0 {
			t.Errorf("%d logins to a server whose host key did not match", n)
		}
		t.Logf("%s: %s", res.FailureClass, res.Message)
	})

	t.Run("a host known_hosts does not list fails as BadInput naming the host", func(t *testing.T) {
		req := sshRequest("unknownhost", url)
		p := e.paths(t, nil)
		p.GitSecret = secret(t, "git.example.com "+srv.HostKey+"\n")
		res := e.run(t, req, p)
		if res.FailureClass != kilnv1.FailureBadInput || !strings.Contains(res.Message, `known_hosts in Secret "git-ssh" (spec.source.git.secretRef) lists no SSH host key for `+srv.Addr) {
			t.Errorf("class %q: %s", res.FailureClass, res.Message)
		}
	})

	t.Run("no known_hosts fails before any connection", func(t *testing.T) {
		before := srv.Connections()
		req := sshRequest("noknownhosts", url)
		p := e.paths(t, nil)
		p.GitSecret = secret(t, "")
		res := e.run(t, req, p)
		if res.FailureClass != kilnv1.FailureBadInput || !strings.Contains(res.Message, `git Secret "git-ssh" (spec.source.git.secretRef)`) ||
			!strings.Contains(res.Message, "has no known_hosts key") {
			t.Errorf("class %q: %s", res.FailureClass, res.Message)
		}
		if n := srv.Connections() - before; n != 0 {
			t.Errorf("sshd saw %d connections (an ssh-keyscan?) from a build that had no known_hosts", n)
		}
	})

	t.Run("a step's ssh mount does not get the key", func(t *testing.T) {
		// BuildKit mounts an optional ssh agent (the default) only when the session offers its
		// id; kiln offers its key under kiln-git only, so SSH_AUTH_SOCK names no socket.
		req := sshRequest("sshmount", url, func(s *contract.BuildSpec) {
			s.Dockerfile.Inline = "FROM " + e.busybox + "\n" +
				`RUN --mount=type=ssh if [ -S "$SSH_AUTH_SOCK" ]; then echo "agent at $SSH_AUTH_SOCK"; else echo "no agent at $SSH_AUTH_SOCK"; fi > /ssh.txt` + "\n"
		})
		p := e.paths(t, nil)
		p.GitSecret = secret(t, srv.KnownHosts())
		res := e.run(t, req, p)
		if res.FailureClass != "" {
			t.Fatalf("build failed: %s: %s", res.FailureClass, res.Message)
		}
		img, err := e.get(t, req.Spec.Output.Image+":v1").Image()
		if err != nil {
			t.Fatal(err)
		}
		if got := imageFiles(t, img)["ssh.txt"]; got != "no agent at /run/buildkit/ssh_agent.0\n" {
			t.Errorf("the step's ssh mount: %q", got)
		}

		// A step that requires the agent fails, BuildKit saying "unset ssh forward key default".
		req = sshRequest("sshrequired", url, func(s *contract.BuildSpec) {
			s.Dockerfile.Inline = "FROM " + e.busybox + "\nRUN --mount=type=ssh,required=true true\n"
		})
		res = e.run(t, req, p)
		if res.FailureClass != kilnv1.FailureBadInput || !strings.Contains(res.Message, `Dockerfile: a step requires the SSH agent "default" (RUN --mount=type=ssh,required): kiln offers no SSH agent to Dockerfile steps`) {
			t.Errorf("a required ssh mount: %s: %s", res.FailureClass, res.Message)
		}
	})

	t.Run("a Dockerfile in the repository may not mount kiln's ssh id", func(t *testing.T) {
		evilWork, _ := testenv.GitRepo(t, map[string]string{
			"app/Dockerfile":     "FROM " + e.busybox + "\nRUN --mount=type=ssh,id=kiln-git ssh-add -L > /stolen\n",
			"app/ci/token.build": "FROM " + e.busybox + "\nARG ID=GIT_AUTH_TOKEN\nRUN --mount=type=secret,id=$ID cp /run/secrets/$ID /stolen\n",
		})
		evil := srv.AddRepo(t, "evil.git", evilWork)
		p := e.paths(t, nil)
		p.GitSecret = secret(t, srv.KnownHosts())
		for path, says := range map[string]string{
			"":               "Dockerfile:2 mounts ssh id=kiln-git",
			"ci/token.build": "ci/token.build:3 mounts secret id=GIT_AUTH_TOKEN: kiln offers the git Secret's token",
		} {
			req := sshRequest("sshsteal", evil, func(s *contract.BuildSpec) { s.Source.Git.Revision = "main"; s.Dockerfile.Path = path })
			res := e.run(t, req, p)
			if res.FailureClass != kilnv1.FailureBadInput || !strings.Contains(res.Message, says) {
				t.Errorf("class %q: %s", res.FailureClass, res.Message)
			}
			if res.Pushed || res.Digest != "" {
				t.Errorf("the refused build produced an image: %+v", res)
			}
		}
	})
}

// imageFiles reads the regular files of img, the last layer's copy of each.
func imageFiles(t *testing.T, img v1.Image) map[string]string {
	t.Helper()
	files := map[string]string{}
	eachLayerFile(t, img, func(name string, content io.Reader) {
		b, _ := io.ReadAll(content)
		files[strings.TrimPrefix(filepath.Clean("/"+name), "/")] = string(b)
	})
	return files
}
