package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ent is one entry of a test archive.
type ent struct {
	name string
	typ  byte
	body string
	link string
	mode int64
}

func file(name, body string) ent      { return ent{name: name, typ: tar.TypeReg, body: body, mode: 0o644} }
func dir(name string) ent             { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent { return ent{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeLink, link: target}
}

// archive returns the gzip tar of ents, in order.
func archive(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range ents {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// node is what a tree holds at a path: its type, mode bits, content or link target.
type node struct {
	typ  string
	mode fs.FileMode
	data string
}

// tree returns what root holds, by slash path.
func tree(t testing.TB, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n := node{mode: fi.Mode().Perm() | (fi.Mode() & (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))}
		switch {
		case d.IsDir():
			n.typ = "dir"
		case d.Type()&fs.ModeSymlink != 0:
			n.typ, n.mode = "symlink", 0
			n.data, err = os.Readlink(p)
		case d.Type().IsRegular():
			n.typ = "file"
			var b []byte
			b, err = os.ReadFile(p)
			n.data = string(b)
		default:
			n.typ = d.Type().String()
		}
		out[filepath.ToSlash(rel)] = n
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tarNames returns the entry names of the gzip tar b, in order.
func tarNames(t testing.TB, b []byte) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
}

// writeTree makes the files of spec under root: "name" is a file with content "content of
// name", "name/" a directory, "name -> target" a symlink.
func writeTree(t testing.TB, root string, spec ...string) {
	t.Helper()
	for _, s := range spec {
		var err error
		switch {
		case strings.Contains(s, " -> "):
			name, target, _ := strings.Cut(s, " -> ")
			mkParent(t, root, name)
			err = os.Symlink(target, filepath.Join(root, name))
		case strings.HasSuffix(s, "/"):
			err = os.MkdirAll(filepath.Join(root, s), 0o755)
		default:
			mkParent(t, root, s)
			err = os.WriteFile(filepath.Join(root, s), []byte("content of "+s), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func mkParent(t testing.TB, root, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755); err != nil {
		t.Fatal(err)
	}
}
