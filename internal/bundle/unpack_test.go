package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostile are archives Unpack must refuse, each with the entry it must name.
var hostile = []struct {
	name  string
	ents  []ent
	entry string
}{
	{"dot-dot", []ent{file("../x", "x")}, "../x"},
	{"absolute", []ent{file("/etc/x", "x")}, "/etc/x"},
	{"dot-dot inside", []ent{dir("a/"), file("a/../../x", "x")}, "a/../../x"},
	{"dot-dot that stays inside", []ent{dir("a/"), file("a/../x", "x")}, "a/../x"},
	{"symlink to /etc", []ent{symlink("l", "/etc"), file("l/passwd", "x")}, "l"},
	{"through a symlink", []ent{dir("d/"), symlink("l", "d"), file("l/passwd", "x")}, "l/passwd"},
	{"dir through a symlink", []ent{dir("d/"), symlink("l", "d"), dir("l/sub/")}, "l/sub/"},
	{"symlink up two", []ent{symlink("l", "../..")}, "l"},
	{"symlink up one", []ent{symlink("l", "..")}, "l"},
	{"nested symlink out", []ent{dir("a/"), symlink("a/l", "../../etc")}, "a/l"},
	{"symlink dot-dot after a name", []ent{dir("d/"), symlink("d/s", ".."), symlink("d/t", "s/..")}, "d/t"},
	{"symlink empty target", []ent{symlink("l", "")}, "l"},
	{"hard link to /etc/passwd", []ent{hardlink("h", "/etc/passwd")}, "h"},
	{"hard link up", []ent{hardlink("h", "../x")}, "h"},
	{"hard link to a symlink", []ent{file("f", "x"), symlink("s", "f"), hardlink("h", "s")}, "h"},
	{"hard link to a directory", []ent{dir("d/"), hardlink("h", "d")}, "h"},
	{"hard link to nothing yet", []ent{hardlink("h", "f"), file("f", "x")}, "h"},
	{"character device", []ent{{name: "tty", typ: tar.TypeChar}}, "tty"},
	{"block device", []ent{{name: "sda", typ: tar.TypeBlock}}, "sda"},
	{"fifo", []ent{{name: "pipe", typ: tar.TypeFifo}}, "pipe"},
	{"unknown type", []ent{{name: "odd", typ: 'Z'}}, "odd"},
	{"duplicate file", []ent{file("f", "one"), file("f", "two")}, "f"},
	{"file over a directory", []ent{dir("d/"), file("d", "x")}, "d"},
	{"directory over a symlink", []ent{symlink("l", "."), dir("l/")}, "l/"},
	{"file over a symlink", []ent{file("f", "x"), symlink("l", "f"), file("l", "y")}, "l"},
	{"through a file", []ent{file("f", "x"), file("f/y", "y")}, "f/y"},
	{"top as a file", []ent{file(".", "x")}, "."},
	{"empty name", []ent{file("", "x")}, ""},
}

// TestUnpackRefusesHostile: each hostile archive is refused with an *EntryError naming the
// entry, and nothing is written beside the target directory.
func TestUnpackRefusesHostile(t *testing.T) {
	for _, tc := range hostile {
		t.Run(tc.name, func(t *testing.T) {
			outer := t.TempDir()
			inner := filepath.Join(outer, "inner")
			if err := os.Mkdir(inner, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Unpack(bytes.NewReader(archive(t, tc.ents...)), inner, Limits{})
			var ee *EntryError
			if !errors.As(err, &ee) || ee.Entry != tc.entry {
				t.Fatalf("err = %v; want an *EntryError for %q", err, tc.entry)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.entry)) {
				t.Errorf("the error %q does not name %q", err, tc.entry)
			}
			checkContained(t, outer, inner)
		})
	}
}

// TestUnpackAccepts: archives that are odd but safe extract as expected: "./" prefixes, the
// top directory as an entry, implicit parents, in-tree symlinks, hard links, a pax global
// header, and modes reduced to 0644/0755.
func TestUnpackAccepts(t *testing.T) {
	setuid := file("bin/tool", "#!/bin/sh")
	setuid.mode = 0o4777
	world := file("w", "w")
	world.mode = 0o666
	ents := []ent{
		{name: "pax_global_header", typ: tar.TypeXGlobalHeader},
		dir("./"), dir("./a/"), file("./a/f", "f"), file("deep/er/g", "g"), setuid, world,
		symlink("a/up", "../deep/er/g"), symlink("a/self", "."), symlink("top", "a"),
		hardlink("a/h", "a/f"), dir("a/"),
	}
	d := t.TempDir()
	st, err := Unpack(bytes.NewReader(archive(t, ents...)), d, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]node{
		"a": {typ: "dir", mode: 0o755}, "a/f": {typ: "file", mode: 0o644, data: "f"},
		"a/h": {typ: "file", mode: 0o644, data: "f"}, "a/up": {typ: "symlink", data: "../deep/er/g"},
		"a/self": {typ: "symlink", data: "."}, "top": {typ: "symlink", data: "a"},
		"deep": {typ: "dir", mode: 0o755}, "deep/er": {typ: "dir", mode: 0o755},
		"deep/er/g": {typ: "file", mode: 0o644, data: "g"},
		"bin":       {typ: "dir", mode: 0o755}, "bin/tool": {typ: "file", mode: 0o755, data: "#!/bin/sh"},
		"w": {typ: "file", mode: 0o644, data: "w"},
	}
	got := tree(t, d)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tree\n got %v\nwant %v", got, want)
	}
	if st.Entries != len(ents) || st.Bytes != int64(len("f")+len("g")+len("#!/bin/sh")+len("w")) {
		t.Errorf("stats %+v", st)
	}
}

// TestUnpackNeedsEmptyGzip: a directory that is not empty, and a stream that is not gzip, are
// errors before anything is written.
func TestUnpackNeedsEmptyGzip(t *testing.T) {
	d := t.TempDir()
	writeTree(t, d, "old")
	if _, err := Unpack(bytes.NewReader(archive(t, file("f", "x"))), d, Limits{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("into a non-empty directory: %v", err)
	}
	if _, err := Unpack(strings.NewReader("plain text"), t.TempDir(), Limits{}); err == nil || !strings.Contains(err.Error(), "not a gzip") {
		t.Errorf("not gzip: %v", err)
	}
	trailing := append(archive(t, file("f", "x")), archive(t, file("g", strings.Repeat("y", 2<<20)))...)
	if _, err := Unpack(bytes.NewReader(trailing), t.TempDir(), Limits{}); err == nil || !strings.Contains(err.Error(), "after the tar's end") {
		t.Errorf("2 MiB after the tar's end: %v", err)
	}
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// bomb streams a gzip tar of files of zeros (each fileSize bytes, total bytes in all) through
// a pipe, counting the tar bytes produced; the producer stops when the reader is closed.
func bomb(fileSize, total int64) (*io.PipeReader, *countingWriter, chan struct{}) {
	pr, pw := io.Pipe()
	gz, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed)
	cw := &countingWriter{w: gz}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tw := tar.NewWriter(cw)
		zeros := make([]byte, 1<<20)
		for i := int64(0); i*fileSize < total; i++ {
			if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("zero-%05d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: fileSize}); err != nil {
				pw.CloseWithError(err)
				return
			}
			for left := fileSize; left > 0; left -= int64(len(zeros)) {
				if _, err := tw.Write(zeros[:min(left, int64(len(zeros)))]); err != nil {
					pw.CloseWithError(err)
					return
				}
			}
		}
		tw.Close()
		gz.Close()
		pw.Close()
	}()
	return pr, cw, done
}

// TestUnpackBomb: 10 GiB of zeros, as one file or as many, is refused by MaxBytes after at most
// about MaxBytes were decompressed; nothing near 10 GiB is read or written.
func TestUnpackBomb(t *testing.T) {
	const tenGiB, limit = 10 << 30, 64 << 20
	for _, fileSize := range []int64{tenGiB, 16 << 20} {
		t.Run(fmt.Sprintf("files of %d bytes", fileSize), func(t *testing.T) {
			pr, produced, done := bomb(fileSize, tenGiB)
			st, err := Unpack(pr, t.TempDir(), Limits{MaxBytes: limit})
			pr.CloseWithError(errors.New("test done"))
			<-done
			var ee *EntryError
			if !errors.As(err, &ee) || !strings.Contains(ee.Reason, "over the limit") {
				t.Fatalf("err = %v; want an *EntryError over the limit", err)
			}
			if st.Bytes > limit {
				t.Errorf("wrote %d bytes, over the limit %d", st.Bytes, limit)
			}
			t.Logf("decompressed %d bytes, wrote %d", produced.n, st.Bytes)
			// The producer runs ahead of the reader by at most the pipe's and gzip's buffers
			// and one file.
			if produced.n > limit+fileSize%tenGiB+(8<<20) {
				t.Errorf("%d bytes were decompressed for a limit of %d", produced.n, limit)
			}
		})
	}
}

// manyFiles returns a gzip tar of n one-byte files, 1000 to a directory.
func manyFiles(t testing.TB, n int) []byte {
	ents := make([]ent, 0, n)
	for i := range n {
		ents = append(ents, file(fmt.Sprintf("d%03d/f%04d", i/1000, i%1000), "x"))
	}
	return archive(t, ents...)
}

// TestUnpackManyEntries: 100,000 tiny files are refused with MaxEntries 10,000, naming entry
// 10,001, and 20,000 are extracted with a limit they fit in.
func TestUnpackManyEntries(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 30,000 files")
	}
	// 100,000 tiny files against a limit of 10,000: refused at entry 10,001 (the disk makes
	// about 1,500 files a second here, so the test stops early, as the limit does).
	b := manyFiles(t, 100_000)
	_, err := Unpack(bytes.NewReader(b), t.TempDir(), Limits{MaxEntries: 10_000})
	var ee *EntryError
	if !errors.As(err, &ee) || ee.Entry != "d010/f0000" {
		t.Fatalf("err = %v; want an *EntryError for d010/f0000, entry 10,001", err)
	}
	// Within the limit, everything arrives (20,000 of them: the disk, not the code, is slow).
	d := t.TempDir()
	start := time.Now()
	st, err := Unpack(bytes.NewReader(manyFiles(t, 20_000)), d, Limits{MaxEntries: 20_000})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("20,000 files unpacked in %s (logged, not asserted: the time is the disk's)", time.Since(start))
	if st.Entries != 20_000 || st.Bytes != 20_000 {
		t.Errorf("stats %+v", st)
	}
	if got, err := os.ReadFile(filepath.Join(d, "d019", "f0999")); err != nil || string(got) != "x" {
		t.Errorf("the last file: %q, %v", got, err)
	}
}

// checkContained fails unless outer holds only inner, and every symlink under inner points
// inside inner.
func checkContained(t testing.TB, outer, inner string) {
	t.Helper()
	names, err := os.ReadDir(outer)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0].Name() != filepath.Base(inner) {
		t.Fatalf("%s holds %v; want only %s", outer, names, filepath.Base(inner))
	}
	realInner, err := filepath.EvalSymlinks(inner)
	if err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(inner, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Type()&os.ModeSymlink == 0 {
			return nil
		}
		target, _ := os.Readlink(p)
		if filepath.IsAbs(target) {
			t.Errorf("%s is a symlink to the absolute %s", p, target)
		}
		lexical := filepath.Join(filepath.Dir(p), target)
		if rel, _ := filepath.Rel(inner, lexical); rel == ".." || strings.HasPrefix(rel, "../") {
			t.Errorf("%s -> %s points outside %s", p, target, inner)
		}
		if resolved, err := filepath.EvalSymlinks(p); err == nil {
			if rel, _ := filepath.Rel(realInner, resolved); rel == ".." || strings.HasPrefix(rel, "../") {
				t.Errorf("%s -> %s resolves to %s, outside %s", p, target, resolved, inner)
			}
		}
		return nil
	})
}

// FuzzUnpack feeds arbitrary bytes to Unpack: it must not panic, and whether it succeeds or
// fails, nothing may exist beside the target directory and no symlink in it may point out.
func FuzzUnpack(f *testing.F) {
	f.Add(archive(f, dir("a/"), file("a/f", "f"), symlink("a/l", "f"), hardlink("h", "a/f")))
	f.Add(archive(f, dir("./"), file("./x", "x"), symlink("up", "a/.."), symlink("a", ".")))
	for _, tc := range hostile {
		f.Add(archive(f, tc.ents...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		outer := t.TempDir()
		inner := filepath.Join(outer, "inner")
		if err := os.Mkdir(inner, 0o755); err != nil {
			t.Fatal(err)
		}
		_, _ = Unpack(bytes.NewReader(b), inner, Limits{MaxBytes: 1 << 20, MaxEntries: 1000})
		checkContained(t, outer, inner)
	})
}
