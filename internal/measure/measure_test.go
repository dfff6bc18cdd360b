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
}

func layer(t *testing.T, files ...file) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(f.size), Typeflag: tar.TypeReg}
		if f.dir {
			h = &tar.Header{Name: f.name, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if !f.dir {
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
