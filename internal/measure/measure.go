// Package measure measures images exactly as kiln's design defines: compressed size (config plus
// layer blobs), uncompressed size (layer tarballs), layers, and wasted bytes (lower copies of files
// that upper layers overwrite or delete).
package measure

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Layer is one measured layer.
type Layer struct {
	Index             int
	Digest            string
	CompressedBytes   int64
	UncompressedBytes int64
	// CreatedBy is the history entry that made the layer ("" when the image has no history).
	CreatedBy string
	// Files counts the entries of the layer tarball.
	Files int
}

// Waste is bytes hidden in a lower layer by an upper one.
type Waste struct {
	Path      string
	Bytes     int64
	AddedIn   int // layer index that added the hidden copy
	RemovedIn int // layer index that deleted or overwrote it
	Deleted   bool
}

// Image is one measured platform image.
type Image struct {
	Platform          string
	Digest            string
	CompressedBytes   int64
	UncompressedBytes int64
	ConfigBytes       int64
	Layers            []Layer
	WastedBytes       int64
	// Waste lists the largest hidden copies, largest first (at most MaxWasteItems).
	Waste []Waste
	// WasteGroups sums every hidden copy by the layer that added it and the one that hid it:
	// exact, however many files there are.
	WasteGroups []WasteGroup
}

// WasteGroup is the hidden copies one layer added and a later one deleted or overwrote.
type WasteGroup struct {
	AddedIn, RemovedIn int
	Bytes              int64
	Files              int
	Deleted            bool
	// Largest is the path of the biggest hidden copy in the group.
	Largest      string
	largestBytes int64
}

// MaxWasteItems bounds Image.Waste.
const MaxWasteItems = 50

// Index is a measured multi-platform result.
type Index struct {
	Images []Image
	// AttestationBytes is the size of attestation manifests and their blobs, not counted in
	// any platform's size.
	AttestationBytes int64
}

// MeasureImage measures one platform image. It reads every layer once, decompressing it.
func MeasureImage(img v1.Image, platform string) (Image, error) {
	out := Image{Platform: platform}
	d, err := img.Digest()
	if err != nil {
		return out, err
	}
	out.Digest = d.String()
	m, err := img.Manifest()
	if err != nil {
		return out, fmt.Errorf("reading manifest: %w", err)
	}
	out.ConfigBytes = m.Config.Size
	out.CompressedBytes = ManifestSize(m)
	cfg, err := img.ConfigFile()
	if err != nil {
		return out, fmt.Errorf("reading config: %w", err)
	}
	var history []string
	for _, h := range cfg.History {
		if !h.EmptyLayer {
			history = append(history, h.CreatedBy)
		}
	}
	layers, err := img.Layers()
	if err != nil {
		return out, fmt.Errorf("reading layers: %w", err)
	}
	fs := newOverlay()
	for i, l := range layers {
		desc := m.Layers[i]
		layer := Layer{Index: i, Digest: desc.Digest.String(), CompressedBytes: desc.Size}
		if len(history) == len(layers) {
			layer.CreatedBy = history[i]
		}
		rc, err := l.Uncompressed()
		if err != nil {
			return out, fmt.Errorf("layer %d: %w", i, err)
		}
		n, files, err := fs.apply(i, rc)
		rc.Close()
		if err != nil {
			return out, fmt.Errorf("layer %d (%s): %w", i, desc.Digest, err)
		}
		layer.UncompressedBytes, layer.Files = n, files
		out.UncompressedBytes += n
		out.Layers = append(out.Layers, layer)
	}
	out.WastedBytes = fs.wasted
	sort.Slice(fs.waste, func(i, j int) bool { return fs.waste[i].Bytes > fs.waste[j].Bytes })
	if len(fs.waste) > MaxWasteItems {
		fs.waste = fs.waste[:MaxWasteItems]
	}
	out.Waste = fs.waste
	for _, g := range fs.groups {
		out.WasteGroups = append(out.WasteGroups, *g)
	}
	sort.Slice(out.WasteGroups, func(i, j int) bool { return out.WasteGroups[i].Bytes > out.WasteGroups[j].Bytes })
	return out, nil
}

// MeasureIndex measures every platform image of an index; attestation manifests (platform
// unknown/unknown) are summed apart.
func MeasureIndex(idx v1.ImageIndex) (Index, error) {
	var out Index
	im, err := idx.IndexManifest()
	if err != nil {
		return out, err
	}
	for _, desc := range im.Manifests {
		if isAttestation(desc) {
			img, err := idx.Image(desc.Digest)
			if err != nil {
				return out, err
			}
			m, err := img.Manifest()
			if err != nil {
				return out, err
			}
			out.AttestationBytes += desc.Size + m.Config.Size
			for _, l := range m.Layers {
				out.AttestationBytes += l.Size
			}
			continue
		}
		if !desc.MediaType.IsImage() {
			continue
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return out, err
		}
		platform := ""
		if desc.Platform != nil {
			platform = PlatformString(*desc.Platform)
		}
		if platform == "" {
			if cfg, err := img.ConfigFile(); err == nil {
				platform = PlatformString(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant})
			}
		}
		m, err := MeasureImage(img, platform)
		if err != nil {
			return out, fmt.Errorf("%s: %w", platform, err)
		}
		out.Images = append(out.Images, m)
	}
	if len(out.Images) == 0 {
		return out, errors.New("the index holds no platform image")
	}
	return out, nil
}

func isAttestation(d v1.Descriptor) bool {
	if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
		return true
	}
	return d.Platform != nil && d.Platform.OS == "unknown" && d.Platform.Architecture == "unknown"
}

// ManifestSize is an image's compressed size as DESIGN defines it: its config blob plus every
// layer blob, as the manifest lists them.
func ManifestSize(m *v1.Manifest) int64 {
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size
}

// PlatformString renders a platform as os/arch[/variant].
func PlatformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// overlay replays layers as the union filesystem does, to find hidden lower copies.
type overlay struct {
	live   map[string]fileCopy
	wasted int64
	waste  []Waste
	groups map[[2]int]*WasteGroup
}

type fileCopy struct {
	size  int64
	layer int
}

func newOverlay() *overlay {
	return &overlay{live: map[string]fileCopy{}, groups: map[[2]int]*WasteGroup{}}
}

const whiteoutPrefix = ".wh."
const opaqueWhiteout = ".wh..wh..opq"

// apply reads one layer tarball; it returns the tarball's size and its entry count.
func (o *overlay) apply(layer int, r io.Reader) (int64, int, error) {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	files := 0
	// Within one layer, whiteouts apply to lower layers only: collect this layer's entries first
	// so an opaque directory does not hide files the same layer adds.
	type entry struct {
		name string
		size int64
	}
	var adds []entry
	var deletes []string
	var opaques []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return cr.n, files, err
		}
		files++
		name := clean(h.Name)
		base := path.Base(name)
		dir := path.Dir(name)
		switch {
		case base == opaqueWhiteout:
			opaques = append(opaques, dir)
		case strings.HasPrefix(base, whiteoutPrefix):
			deletes = append(deletes, path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)))
		case h.Typeflag == tar.TypeDir:
			// A directory replacing a file hides the file.
			adds = append(adds, entry{name: name, size: -1})
		default:
			size := int64(0)
			if h.Typeflag == tar.TypeReg {
				size = h.Size
			}
			adds = append(adds, entry{name: name, size: size})
		}
	}
	// Drain anything after the end-of-archive marker so the byte count is the blob's.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return cr.n, files, err
	}
	for _, d := range opaques {
		o.hideUnder(d, layer, false, true)
	}
	for _, d := range deletes {
		o.hide(d, layer, true)
		o.hideUnder(d, layer, true, false)
	}
	for _, a := range adds {
		if a.size < 0 {
			if prev, ok := o.live[a.name]; ok && prev.layer < layer && prev.size >= 0 {
				o.hide(a.name, layer, false)
			}
			o.live[a.name] = fileCopy{size: -1, layer: layer}
			continue
		}
		if prev, ok := o.live[a.name]; ok && prev.layer < layer {
			o.hide(a.name, layer, false)
			o.hideUnder(a.name, layer, false, false) // a file replacing a directory
		}
		o.live[a.name] = fileCopy{size: a.size, layer: layer}
	}
	return cr.n, files, nil
}

// hide removes a lower copy of p, counting its bytes as wasted.
func (o *overlay) hide(p string, layer int, deleted bool) {
	prev, ok := o.live[p]
	if !ok || prev.layer >= layer {
		return
	}
	delete(o.live, p)
	if prev.size > 0 {
		o.wasted += prev.size
		o.waste = append(o.waste, Waste{Path: "/" + p, Bytes: prev.size, AddedIn: prev.layer, RemovedIn: layer, Deleted: deleted})
		g := o.groups[[2]int{prev.layer, layer}]
		if g == nil {
			g = &WasteGroup{AddedIn: prev.layer, RemovedIn: layer, Deleted: deleted}
			o.groups[[2]int{prev.layer, layer}] = g
		}
		if prev.size > g.largestBytes {
			g.Largest, g.largestBytes = "/"+p, prev.size
		}
		g.Bytes += prev.size
		g.Files++
		g.Deleted = g.Deleted && deleted
	}
}

// hideUnder hides every lower copy below directory d.
func (o *overlay) hideUnder(d string, layer int, deleted, opaque bool) {
	prefix := d + "/"
	if d == "." || d == "" {
		prefix = ""
	}
	for p := range o.live {
		if strings.HasPrefix(p, prefix) && p != d {
			o.hide(p, layer, deleted || opaque)
		}
	}
}

func clean(name string) string {
	name = path.Clean("/" + name)
	return strings.TrimPrefix(name, "/")
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
