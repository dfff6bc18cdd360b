package bundle

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPackReproducible: the same files made in another order, with other mtimes and other
// permission bits of the same class, pack to the same bytes and the same artifact digest.
func TestPackReproducible(t *testing.T) {
	spec := []string{"Dockerfile", "src/main.go", "src/lib/a.go", "empty/", "link -> src/main.go", "run.sh"}
	a, b := t.TempDir(), t.TempDir()
	writeTree(t, a, spec...)
	rev := slices.Clone(spec)
	slices.Reverse(rev)
	writeTree(t, b, rev...)
	for i, d := range []string{a, b} {
		exec := os.FileMode(0o755)
		if i == 1 {
			exec = 0o700
			if err := os.Chmod(filepath.Join(d, "src", "main.go"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(filepath.Join(d, "run.sh"), exec); err != nil {
			t.Fatal(err)
		}
		when := time.Date(2020+i, 1, 2, 3, 4, 5, 0, time.UTC)
		_ = filepath.Walk(d, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, when, when) })
	}
	var pa, pb bytes.Buffer
	sa, err := Pack(a, &pa)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Pack(b, &pb); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pa.Bytes(), pb.Bytes()) {
		t.Errorf("the same files packed to different bytes")
	}
	want := []string{"Dockerfile", "empty/", "link", "run.sh", "src/", "src/lib/", "src/lib/a.go", "src/main.go"}
	if got := tarNames(t, pa.Bytes()); !slices.Equal(got, want) {
		t.Errorf("entries %q; want %q", got, want)
	}
	if sa.Entries != len(want) {
		t.Errorf("stats %+v", sa)
	}
	ia, _, err := Image(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	ib, _, err := Image(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := ia.Digest()
	db, _ := ib.Digest()
	if da != db {
		t.Errorf("artifact digests %s and %s differ", da, db)
	}
}

// TestPackDockerignore: .dockerignore is honoured as BuildKit does ("**", "!" exceptions, an
// excluded directory entered for an exception inside it), and Dockerfile and .dockerignore
// are kept even when excluded.
func TestPackDockerignore(t *testing.T) {
	files := []string{"Dockerfile", "app.log", "keep.log", "src/a.go", "src/deep/b.log", "src/deep/c.go",
		"build/out.bin", "build/keep/x", "node_modules/m/i.js", ".git/HEAD", "docs/readme.md"}
	tests := []struct {
		name, ignore string
		want         []string
	}{
		{"none", "", []string{".dockerignore", ".git/", ".git/HEAD", "Dockerfile", "app.log", "build/", "build/keep/", "build/keep/x", "build/out.bin", "docs/", "docs/readme.md", "keep.log", "node_modules/", "node_modules/m/", "node_modules/m/i.js", "src/", "src/a.go", "src/deep/", "src/deep/b.log", "src/deep/c.go"}},
		{"double star and exception", "**/*.log\n!keep.log\n.git\nnode_modules\ndocs/", []string{".dockerignore", "Dockerfile", "build/", "build/keep/", "build/keep/x", "build/out.bin", "keep.log", "src/", "src/a.go", "src/deep/", "src/deep/c.go"}},
		{"excluded dir with an exception inside", "build\n!build/keep", []string{".dockerignore", ".git/", ".git/HEAD", "Dockerfile", "app.log", "build/", "build/keep/", "build/keep/x", "docs/", "docs/readme.md", "keep.log", "node_modules/", "node_modules/m/", "node_modules/m/i.js", "src/", "src/a.go", "src/deep/", "src/deep/b.log", "src/deep/c.go"}},
		{"everything but src, Dockerfile kept", "*\n!src/**/*.go\n# a comment\n", []string{".dockerignore", "Dockerfile", "src/", "src/a.go", "src/deep/", "src/deep/c.go"}},
		{"ignore files excluded by name", "Dockerfile\n.dockerignore\n/src\n*/*/*.log\n**/*.js\n**/.git\n*.md\n", []string{".dockerignore", "Dockerfile", "app.log", "build/", "build/keep/", "build/keep/x", "build/out.bin", "docs/", "docs/readme.md", "keep.log", "node_modules/", "node_modules/m/"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			writeTree(t, d, files...)
			if err := os.WriteFile(filepath.Join(d, ".dockerignore"), []byte(tc.ignore), 0o644); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := Pack(d, &buf); err != nil {
				t.Fatal(err)
			}
			if got := tarNames(t, buf.Bytes()); !slices.Equal(got, tc.want) {
				t.Errorf("entries\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestPackRefuses: a FIFO, a socket, a symlink out of the context and an absolute symlink are
// each an *EntryError naming the path; a bad .dockerignore pattern is an error.
func TestPackRefuses(t *testing.T) {
	tests := []struct {
		name, entry string
		make        func(t *testing.T, d string)
	}{
		{"fifo", "sub/pipe", func(t *testing.T, d string) {
			if err := syscall.Mkfifo(filepath.Join(d, "sub", "pipe"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"socket", "sock", func(t *testing.T, d string) {
			l, err := net.Listen("unix", filepath.Join(d, "sock"))
			if err != nil {
				t.Skip(err)
			}
			t.Cleanup(func() { l.Close() })
		}},
		{"symlink out", "sub/out", func(t *testing.T, d string) { writeTree(t, d, "sub/out -> ../..") }},
		{"absolute symlink", "abs", func(t *testing.T, d string) { writeTree(t, d, "abs -> /etc/passwd") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			writeTree(t, d, "Dockerfile", "sub/a")
			tc.make(t, d)
			_, err := Pack(d, &bytes.Buffer{})
			var ee *EntryError
			if !errors.As(err, &ee) || ee.Entry != tc.entry {
				t.Fatalf("err = %v; want an *EntryError for %q", err, tc.entry)
			}
		})
	}
	d := t.TempDir()
	writeTree(t, d, "Dockerfile")
	if err := os.WriteFile(filepath.Join(d, ".dockerignore"), []byte("!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Pack(d, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), ".dockerignore") {
		t.Errorf("a bad pattern: %v", err)
	}
}

// TestPackUnpackRoundTrip: Unpack(Pack(dir)) is dir, modes reduced to 0644/0755 and a hard
// link stored as a copy.
func TestPackUnpackRoundTrip(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, "Dockerfile", "a/b/c.txt", "a/empty/", "a/link -> b/c.txt", "a/b/up -> ../../Dockerfile", "dotdir/.hidden", "x y/ü.txt")
	if err := os.WriteFile(filepath.Join(src, "tool"), []byte("#!/bin/sh\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "a", "b", "c.txt"), filepath.Join(src, "hard")); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789"), 300_000)
	if err := os.WriteFile(filepath.Join(src, "big"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	ps, err := Pack(src, &buf)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	us, err := Unpack(&buf, dst, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := tree(t, src)
	want["tool"] = node{typ: "file", mode: 0o755, data: "#!/bin/sh\n"}
	want["big"] = node{typ: "file", mode: 0o644, data: string(big)}
	got := tree(t, dst)
	if len(got) != len(want) {
		t.Errorf("%d paths unpacked; want %d", len(got), len(want))
	}
	for p, n := range want {
		if got[p] != n {
			t.Errorf("%s: got %+.40v, want %+.40v", p, got[p], n)
		}
	}
	if ps != us {
		t.Errorf("Pack's stats %+v, Unpack's %+v", ps, us)
	}
}
