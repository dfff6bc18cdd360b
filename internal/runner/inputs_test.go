package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
)

// configMapDir lays out files the way the kubelet mounts a ConfigMap: real files under a
// timestamped directory, ..data pointing at it, and a symlink per key.
func configMapDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2026_11_22_07_00_00.1")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func request(mutate ...func(*contract.BuildSpec)) contract.Request {
	spec := contract.BuildSpec{
		Source: contract.Source{ConfigMap: &contract.ConfigMapSource{Name: "src"}},
		Output: contract.Output{Image: "registry.example.com/app", Tags: []string{"v1"}},
	}
	for _, m := range mutate {
		m(&spec)
	}
	return contract.Request{Namespace: "team", Name: "app", Build: 1, Spec: spec}
}

func TestPrepare(t *testing.T) {
	const good = "FROM busybox AS build\nRUN --mount=type=secret,id=npmrc cat /run/secrets/npmrc\nFROM scratch\nCOPY --from=build /bin/busybox /busybox\n"
	for _, tc := range []struct {
		name    string
		files   map[string]string // the ConfigMap; nil means not mounted
		spec    func(*contract.BuildSpec)
		secrets map[string]string // build secret id -> value, as mounted
		want    string            // substring of the BadInput message; "" means success
	}{
		{name: "missing ConfigMap", files: nil, want: `ConfigMap "src" (spec.source.configMap.name) in namespace "team": it is missing or empty`},
		{name: "no Dockerfile in the context", files: map[string]string{"main.go": "package main"},
			want: "the context (ConfigMap \"src\") has no Dockerfile (spec.dockerfile.path); its files are: main.go"},
		{name: "syntax error names the line", files: map[string]string{"Dockerfile": "FROM busybox\nRUN true\nRUNN false\n"},
			want: "Dockerfile:3: unknown instruction: RUNN"},
		{name: "unknown target", files: map[string]string{"Dockerfile": good}, secrets: map[string]string{"npmrc": "x"},
			spec: func(s *contract.BuildSpec) { s.Dockerfile.Target = "release" }, want: `spec.dockerfile.target "release" is not a stage of Dockerfile (its named stages: build)`},
		{name: "secret used but not provided", files: map[string]string{"Dockerfile": good},
			want: "Dockerfile:2 mounts secret id=npmrc, which spec.dockerfile.secrets does not provide"},
		{name: "a step may not mount the git token", files: map[string]string{"Dockerfile": "FROM busybox\nRUN --mount=type=secret,id=GIT_AUTH_TOKEN.git.example.com cat /run/secrets/GIT_AUTH_TOKEN.git.example.com\n"},
			want: "Dockerfile:2 mounts secret id=GIT_AUTH_TOKEN.git.example.com: kiln offers the git Secret's token under such ids for fetching the source only"},
		{name: "a step may not mount the git token by source=", files: map[string]string{"Dockerfile": "FROM busybox\nRUN --mount=type=secret,source=GIT_AUTH_TOKEN.github.com,target=/run/secrets/x cat /run/secrets/x\n"},
			spec: func(s *contract.BuildSpec) {
				s.Dockerfile.Secrets = []contract.BuildSecret{{ID: "x", SecretRef: contract.SecretKeyRef{Name: "x", Key: "x"}}}
			}, secrets: map[string]string{"x": "harmless"},
			want: "mounts secret id=GIT_AUTH_TOKEN.github.com"},
		{name: "an ONBUILD trigger may not mount the git token", files: map[string]string{"Dockerfile": "FROM busybox AS a\nONBUILD RUN --mount=type=secret,id=GIT_AUTH_TOKEN.github.com cat /run/secrets/GIT_AUTH_TOKEN.github.com\nFROM a\n"},
			want: "Dockerfile:2 mounts secret id=GIT_AUTH_TOKEN.github.com"},
		{name: "an ONBUILD trigger may not use kiln's ssh agent", files: map[string]string{"Dockerfile": "FROM busybox AS a\nONBUILD RUN --mount=type=ssh,id=kiln-git true\nFROM a\n"},
			want: "Dockerfile:2 mounts ssh id=kiln-git"},
		{name: "BUILDKIT_SYNTAX would pick another frontend", files: map[string]string{"Dockerfile": "FROM scratch\n"},
			spec: func(s *contract.BuildSpec) {
				s.Dockerfile.BuildArgs = []contract.BuildArg{{Name: "BUILDKIT_SYNTAX", Value: "evil/frontend"}}
			},
			want: "BUILDKIT_SYNTAX is not allowed"},
		{name: "secret provided but its Secret is missing", files: map[string]string{"Dockerfile": good},
			spec: func(s *contract.BuildSpec) {
				s.Dockerfile.Secrets = []contract.BuildSecret{{ID: "npmrc", SecretRef: contract.SecretKeyRef{Name: "npm", Key: ".npmrc"}}}
			},
			want: `build secret "npmrc" (spec.dockerfile.secrets): Secret "npm" in namespace "team" is missing or has no key ".npmrc"`},
		{name: "push Secret missing", files: map[string]string{"Dockerfile": "FROM scratch\n"},
			spec: func(s *contract.BuildSpec) { s.Output.PushSecretRef = &contract.SecretRef{Name: "regcred"} },
			want: `push Secret "regcred" (spec.output.pushSecretRef) is missing in namespace "team"`},
		{name: "a step may not mount kiln's ssh id", files: map[string]string{"Dockerfile": "FROM busybox\nRUN true\nRUN --mount=type=ssh,id=kiln-git ssh-add -l\n"},
			want: "Dockerfile:3 mounts ssh id=kiln-git: kiln offers the git Secret's SSH key under that id for fetching the source only"},
		{name: "nor through a build arg", files: map[string]string{"Dockerfile": "FROM busybox\nARG AGENT=default\nRUN --mount=type=ssh,id=$AGENT ssh-add -l\n"},
			spec: func(s *contract.BuildSpec) {
				s.Dockerfile.BuildArgs = []contract.BuildArg{{Name: "AGENT", Value: "kiln-git"}}
			},
			want: "Dockerfile:3 mounts ssh id=kiln-git"},
		{name: "nor the token through a build arg", files: map[string]string{"Dockerfile": "FROM busybox\nARG ID\nRUN --mount=type=secret,id=$ID true\n"},
			spec: func(s *contract.BuildSpec) {
				s.Dockerfile.BuildArgs = []contract.BuildArg{{Name: "ID", Value: "GIT_AUTH_TOKEN.git.example.com"}}
			},
			want: "Dockerfile:3 mounts secret id=GIT_AUTH_TOKEN.git.example.com: kiln offers the git Secret's token"},
		{name: "the default ssh agent may be asked for (kiln offers none)", files: map[string]string{"Dockerfile": "FROM busybox\nRUN --mount=type=ssh true\n"}},
		{name: "inline Dockerfile with a git context", spec: func(s *contract.BuildSpec) {
			s.Source = contract.Source{Git: &contract.GitSource{URL: "https://example.com/x.git", Revision: "v1", ContextDir: "app"}}
			s.Dockerfile.Inline = "FROM scratch\nCOPY . /\n"
		}},
		{name: "all good", files: map[string]string{"Dockerfile": good}, secrets: map[string]string{"npmrc": "token"},
			spec: func(s *contract.BuildSpec) {
				s.Dockerfile.Secrets = []contract.BuildSecret{{ID: "npmrc", SecretRef: contract.SecretKeyRef{Name: "npm", Key: ".npmrc"}}}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Paths{Context: filepath.Join(t.TempDir(), "none"), Work: t.TempDir(), PushSecret: filepath.Join(t.TempDir(), "none"),
				GitSecret: filepath.Join(t.TempDir(), "none"), BuildSecrets: t.TempDir()}
			if tc.files != nil {
				p.Context = configMapDir(t, tc.files)
			}
			for id, v := range tc.secrets {
				_ = os.MkdirAll(filepath.Join(p.BuildSecrets, id), 0o755)
				_ = os.WriteFile(filepath.Join(p.BuildSecrets, id, contract.BuildSecretFile), []byte(v), 0o400)
			}
			var req contract.Request
			if tc.spec != nil {
				req = request(tc.spec)
			} else {
				req = request()
			}
			in, err := prepare(req, p)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if in.contextDir != "" {
					entries, _ := os.ReadDir(in.contextDir)
					for _, e := range entries {
						if strings.HasPrefix(e.Name(), "..") || e.Type()&os.ModeSymlink != 0 {
							t.Errorf("context copy holds the volume's %s", e.Name())
						}
					}
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

func TestAttribute(t *testing.T) {
	df := "FROM golang:1.26 AS build\nWORKDIR /src\nCOPY . .\nRUN go build -o /out/app .\n\nFROM alpine:3.20\nRUN apk add --no-cache ca-certificates\nCOPY --from=build /out/app /app\n"
	in := &inputs{dockerfile: []byte(df), dockerfileName: "Dockerfile"}
	if err := in.parseDockerfile(""); err != nil {
		t.Fatal(err)
	}
	layers := []measure.Layer{
		{Index: 0, CreatedBy: "ADD alpine-minirootfs-3.20.3-x86_64.tar.gz / # buildkit"},
		{Index: 1, CreatedBy: "RUN /bin/sh -c apk add --no-cache ca-certificates # buildkit"},
		{Index: 2, CreatedBy: "COPY /out/app /app # buildkit"},
	}
	got := attributeWith(in, "", nil, layers)
	if got[2].line != 8 || got[2].createdBy != "COPY --from=build /out/app /app" {
		t.Errorf("layer 2: %+v", got[2])
	}
	if got[1].line != 7 || !strings.HasPrefix(got[1].createdBy, "RUN apk add") {
		t.Errorf("layer 1: %+v", got[1])
	}
	if got[0].line != 0 || got[0].createdBy != "base image alpine:3.20: ADD alpine-minirootfs-3.20.3-x86_64.tar.gz /" {
		t.Errorf("layer 0: %+v", got[0])
	}
}

func TestCommitTime(t *testing.T) {
	obj := "tree 1814a004c6f355a70c5da42274c73b6b2567306a\nauthor kiln <kiln@example.com> 1767323045 +0000\ncommitter Kiln Bot <kiln@example.com> 1767323099 +0100\n\ncommitter 1 +0000 in the message\n"
	if got := commitTime([]byte(obj)); got.Unix() != 1767323099 {
		t.Errorf("commit time %v", got)
	}
	if got := commitTime(nil); !got.IsZero() {
		t.Errorf("no object gives %v", got)
	}
}

func TestInterruptedRunIsPodLost(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as SIGTERM does
	p := Paths{Context: configMapDir(t, map[string]string{"Dockerfile": "FROM scratch\n"}), Work: t.TempDir()}
	res := Run(ctx, Config{Request: request(), Addr: "unix:///nonexistent.sock", Paths: p, ConnectTimeout: time.Second})
	if res.FailureClass != kilnv1.FailurePodLost || !kilnv1.Transient(res.FailureClass) {
		t.Errorf("an interrupted build is %q (%s), want the retryable PodLost", res.FailureClass, res.Message)
	}
}

// TestSSHKeyIsRedacted: the git SSH key is among the values the runner hides, line by line.
func TestSSHKeyIsRedacted(t *testing.T) {
	key := filepath.Join(t.TempDir(), "ssh-privatekey")
	const text = "-----BEGIN OPENSSH PRIVATE KEY-----\nsentinelKeyLineAAAAAAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
	if err := os.WriteFile(key, []byte(text), 0o400); err != nil {
		t.Fatal(err)
	}
	red := &redactor{}
	red.addSecrets((&inputs{sshKey: key}).secretValues())
	if got := red.String("step printed: sentinelKeyLineAAAAAAAAAA"); strings.Contains(got, "sentinelKeyLine") {
		t.Errorf("the SSH key's line is not hidden: %q", got)
	}
}
