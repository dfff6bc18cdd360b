package measure

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type file struct {
	name string
	size int
	dir  bool
	link string // a hard link (tar TypeLink) to this earlier name of the same layer
	sym  string // a symbolic link to this path
}

func layer(t *testing.T, files ...file) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(f.size), Typeflag: tar.TypeReg}
		switch {
		case f.dir:
			h = &tar.Header{Name: f.name, Mode: 0o755, Typeflag: tar.TypeDir}
		case f.link != "":
			h = &tar.Header{Name: f.name, Mode: 0o644, Typeflag: tar.TypeLink, Linkname: f.link}
		case f.sym != "":
			h = &tar.Header{Name: f.name, Mode: 0o777, Typeflag: tar.TypeSymlink, Linkname: f.sym}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bytes.Repeat([]byte{'x'}, f.size)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestWastedBytes(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name   string
		layers [][]file
		want   int64
	}{
		{"nothing hidden", [][]file{{{name: "a", size: 100}}, {{name: "b", size: 200}}}, 0},
		{"added then deleted", [][]file{{{name: "big", size: 10 * mib}}, {{name: ".wh.big"}}}, 10 * mib},
		{"overwritten: the lower copy counts, not the one that stays", [][]file{{{name: "etc/conf", size: 300}}, {{name: "etc/conf", size: 50}}}, 300},
		{"overwritten twice", [][]file{{{name: "f", size: 10}}, {{name: "f", size: 20}}, {{name: "f", size: 30}}}, 30},
		{"directory deleted", [][]file{{{name: "var/cache", dir: true}, {name: "var/cache/a", size: 1000}, {name: "var/cache/b", size: 24}}, {{name: "var/.wh.cache"}}}, 1024},
		{"opaque directory", [][]file{{{name: "d", dir: true}, {name: "d/a", size: 500}}, {{name: "d", dir: true}, {name: "d/.wh..wh..opq"}, {name: "d/new", size: 7}}}, 500},
		{"same-layer files are not hidden by that layer's opaque marker", [][]file{{{name: "d", dir: true}, {name: "d/.wh..wh..opq"}, {name: "d/x", size: 9}}}, 0},
		{"deleted in the same layer it was added is not counted", [][]file{{{name: "a", size: 5}}}, 0},
		{"sibling with a common prefix survives", [][]file{{{name: "cache", size: 1}, {name: "cache2", size: 100}}, {{name: ".wh.cache"}}}, 1},
		{"a symbolic link does not keep the data", [][]file{{{name: "a", size: 100}, {name: "s", sym: "a"}}, {{name: ".wh.a"}}}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := empty.Image
			for _, files := range tc.layers {
				var err error
				img, err = mutate.AppendLayers(img, layer(t, files...))
				if err != nil {
					t.Fatal(err)
				}
			}
			m, err := MeasureImage(img, "linux/amd64")
			if err != nil {
				t.Fatal(err)
			}
			if m.WastedBytes != tc.want {
				t.Errorf("wasted %d, want %d (%+v)", m.WastedBytes, tc.want, m.Waste)
			}
			var grouped int64
			for _, g := range m.WasteGroups {
				grouped += g.Bytes
			}
			if grouped != m.WastedBytes {
				t.Errorf("waste groups sum to %d, want %d", grouped, m.WastedBytes)
			}
		})
	}
}

func TestSizesMatchManifest(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image, layer(t, file{name: "a", size: 4096}), layer(t, file{name: "b", size: 100}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := MeasureImage(img, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	man, _ := img.Manifest()
	want := man.Config.Size + man.Layers[0].Size + man.Layers[1].Size
	if m.CompressedBytes != want {
		t.Errorf("compressed %d, manifest says %d", m.CompressedBytes, want)
	}
	if len(m.Layers) != 2 || m.Layers[1].CompressedBytes != man.Layers[1].Size {
		t.Errorf("layers %+v", m.Layers)
	}
	// A tar of one 4096-byte file: 512 header + 4096 data + 1024 end blocks (the writer pads to a record).
	if m.Layers[0].UncompressedBytes < 4096+512+1024 {
		t.Errorf("uncompressed %d is less than the tarball", m.Layers[0].UncompressedBytes)
	}
	var sum int64
	for _, l := range m.Layers {
		sum += l.UncompressedBytes
	}
	if m.UncompressedBytes != sum {
		t.Errorf("uncompressed total %d, layers sum to %d", m.UncompressedBytes, sum)
	}
}

// TestWastedBytesHardLinks checks that a file's bytes are wasted only when no remaining name,
// hard links included, reaches them; and then once, however many names it had.
func TestWastedBytesHardLinks(t *testing.T) {
	const size = 1000
	// base is a layer with one file and a hard link to it, as a build that runs `ln a b` writes.
	base := []file{{name: "d", dir: true}, {name: "d/a", size: size}, {name: "d/b", link: "d/a"}}
	for _, tc := range []struct {
		name   string
		layers [][]file
		want   []Waste // the hidden copies, in any order; nil = none
	}{
		{"link in the same layer, nothing deleted", [][]file{base}, nil},
		{"the original name deleted, the link stays", [][]file{base, {{name: "d/.wh.a"}}}, nil},
		{"the link deleted, the original stays", [][]file{base, {{name: "d/.wh.b"}}}, nil},
		{"both names deleted in one layer: counted once", [][]file{base, {{name: "d/.wh.a"}, {name: "d/.wh.b"}}},
			[]Waste{{Path: "/d/b", Bytes: size, AddedIn: 0, RemovedIn: 1, Deleted: true}}},
		{"both names deleted in two layers: counted when the last goes", [][]file{base, {{name: "d/.wh.a"}}, {{name: "d/.wh.b"}}},
			[]Waste{{Path: "/d/b", Bytes: size, AddedIn: 0, RemovedIn: 2, Deleted: true}}},
		{"the original overwritten with new content, the link keeps the old", [][]file{base, {{name: "d/a", size: 10}}}, nil},
		{"the link overwritten, the original keeps the data", [][]file{base, {{name: "d/b", size: 10}}}, nil},
		{"both overwritten", [][]file{base, {{name: "d/a", size: 10}, {name: "d/b", size: 20}}},
			[]Waste{{Path: "/d/b", Bytes: size, AddedIn: 0, RemovedIn: 1}}},
		{"one overwritten, the other deleted later", [][]file{base, {{name: "d/a", size: 10}}, {{name: "d/.wh.b"}}},
			[]Waste{{Path: "/d/b", Bytes: size, AddedIn: 0, RemovedIn: 2, Deleted: true}}, // and the 10 bytes stay
		},
		{"the directory holding both names deleted", [][]file{base, {{name: ".wh.d"}}},
			[]Waste{{Path: "/d/b", Bytes: size, AddedIn: 0, RemovedIn: 1, Deleted: true}}},
		{"the directory holding one name deleted, the other name outside it stays",
			[][]file{{{name: "d", dir: true}, {name: "d/a", size: size}, {name: "keep", link: "d/a"}}, {{name: ".wh.d"}}}, nil},
		{"opaque directory hides one name, the other outside it stays",
			[][]file{{{name: "d", dir: true}, {name: "d/a", size: size}, {name: "keep", link: "d/a"}}, {{name: "d", dir: true}, {name: "d/.wh..wh..opq"}}}, nil},
		{"opaque directory hides both names",
			[][]file{base, {{name: "d", dir: true}, {name: "d/.wh..wh..opq"}, {name: "d/new", size: 5}}},
			[]Waste{{Path: "/d/b", Bytes: size, AddedIn: 0, RemovedIn: 1, Deleted: true}}},
		{"a directory replaces one name", [][]file{base, {{name: "d/a", dir: true}}}, nil},
		{"a link made in a later layer keeps the lower file's data",
			[][]file{{{name: "a", size: size}}, {{name: "b", link: "a"}}, {{name: ".wh.a"}}}, nil},
		{"a later layer deletes the old name and links a new one in the same layer",
			[][]file{{{name: "a", size: size}}, {{name: ".wh.a"}, {name: "b", link: "a"}}}, nil},
		{"a link to a name the same layer adds again points at the new file",
			[][]file{{{name: "a", size: size}}, {{name: "a", size: 10}, {name: "b", link: "a"}}, {{name: ".wh.b"}}},
			[]Waste{{Path: "/a", Bytes: size, AddedIn: 0, RemovedIn: 1}}},
		{"three names, two deleted", [][]file{{{name: "a", size: size}, {name: "b", link: "a"}, {name: "c", link: "b"}}, {{name: ".wh.a"}, {name: ".wh.c"}}}, nil},
		{"three names, all deleted over three layers",
			[][]file{{{name: "a", size: size}, {name: "b", link: "a"}, {name: "c", link: "a"}}, {{name: ".wh.a"}}, {{name: ".wh.b"}}, {{name: "c", size: 1}}},
			[]Waste{{Path: "/c", Bytes: size, AddedIn: 0, RemovedIn: 3}}},
		{"a link to nothing is an empty file", [][]file{{{name: "b", link: "missing"}}, {{name: ".wh.b"}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := measureLayers(t, tc.layers...)
			var want int64
			for _, w := range tc.want {
				want += w.Bytes
			}
			if m.WastedBytes != want {
				t.Errorf("wasted %d, want %d (%+v)", m.WastedBytes, want, m.Waste)
			}
			if !sameWaste(m.Waste, tc.want) {
				t.Errorf("waste %+v, want %+v", m.Waste, tc.want)
			}
			var grouped int64
			for _, g := range m.WasteGroups {
				grouped += g.Bytes
			}
			if grouped != m.WastedBytes {
				t.Errorf("waste groups sum to %d, want %d", grouped, m.WastedBytes)
			}
		})
	}
}

func measureLayers(t *testing.T, layers ...[]file) Image {
	t.Helper()
	img := empty.Image
	for _, files := range layers {
		var err error
		img, err = mutate.AppendLayers(img, layer(t, files...))
		if err != nil {
			t.Fatal(err)
		}
	}
	m, err := MeasureImage(img, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameWaste(got, want []Waste) bool {
	if len(got) != len(want) {
		return false
	}
	left := append([]Waste{}, want...)
	for _, g := range got {
		found := false
		for i, w := range left {
			if g == w {
				left = append(left[:i], left[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// TestWasteDeterministic checks that the name reported for a hard-linked file hidden with its
// directory does not depend on map order.
func TestWasteDeterministic(t *testing.T) {
	var first string
	for i := 0; i < 20; i++ {
		m := measureLayers(t, []file{{name: "d", dir: true}, {name: "d/z", size: 7}, {name: "d/y", link: "d/z"}, {name: "d/x", link: "d/z"}}, []file{{name: ".wh.d"}})
		if len(m.Waste) != 1 {
			t.Fatalf("waste %+v", m.Waste)
		}
		if i == 0 {
			first = m.Waste[0].Path
		} else if m.Waste[0].Path != first {
			t.Fatalf("run %d reports %s, run 0 %s", i, m.Waste[0].Path, first)
		}
	}
	if first != "/d/z" {
		t.Errorf("reported %s, want the last name in path order, /d/z", first)
	}
}
