// Package measure measures images exactly as kiln's design defines: compressed size (config plus
// layer blobs), uncompressed size (layer tarballs), layers, and wasted bytes (lower copies of files
// that upper layers overwrite or delete, once no remaining name, hard links included, reaches
// them).
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

// Waste is bytes hidden in a lower layer by an upper one: a file's data that no name of the
// final filesystem reaches any more. A file with hard links is wasted once, when its last name
// goes; Path is that name.
type Waste struct {
	Path      string
	Bytes     int64 // the file's size, as its tar entry in the adding layer gives it
	AddedIn   int   // layer index whose tarball holds the hidden bytes
	RemovedIn int   // layer index that deleted or overwrote the last name reaching them
	Deleted   bool  // the last name was deleted (a whiteout), not overwritten
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
	// Files are the regular files of the final filesystem, by path (without a leading slash).
	Files map[string]File
}

// File is a regular file of an image's final filesystem.
type File struct {
	// Size in bytes, as the tar entry that added it says.
	Size int64
	// Data identifies the file's content: names that are hard links to one file share it.
	Data int
	// Layer is the index of the layer that added the file's content.
	Layer int
	// Arch is the architecture of an executable ELF file, as GOARCH names it (amd64, arm64,
	// arm, 386, …); empty for anything else (ElfArch).
	Arch string
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
	// Attestations are the index's attestation manifests, in its order.
	Attestations []Attestation
}

// Attestation is one attestation manifest of an index, as BuildKit attaches them: an image
// manifest (platform unknown/unknown) whose layers are in-toto statements about one platform
// image, which the annotation vnd.docker.reference.digest names.
type Attestation struct {
	// Manifest is the attestation manifest's digest, and Subject the platform image's.
	Manifest, Subject string
	// Platform is the subject's platform (os/arch[/variant]), when the index says it.
	Platform string
	// Statements are its layers: each an in-toto statement of one predicate type.
	Statements []Statement
}

// Statement is one in-toto statement blob of an attestation manifest.
type Statement struct {
	// PredicateType is the layer's annotation in-toto.io/predicate-type, such as
	// https://slsa.dev/provenance/v1 or https://spdx.dev/Document.
	PredicateType string
	// Digest and Size of the statement blob.
	Digest string
	Size   int64
}

// BuildKit's annotations on an attestation manifest in an index, and on its statements.
const (
	AnnotationReferenceType   = "vnd.docker.reference.type"
	AnnotationReferenceDigest = "vnd.docker.reference.digest"
	ReferenceTypeAttestation  = "attestation-manifest"
	AnnotationPredicateType   = "in-toto.io/predicate-type"
)

// Predicate types of the statements BuildKit attaches.
const (
	PredicateSLSAProvenance02 = "https://slsa.dev/provenance/v0.2"
	PredicateSLSAProvenance1  = "https://slsa.dev/provenance/v1"
	PredicateSPDX             = "https://spdx.dev/Document"
)

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
	out.Files = fs.files()
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
	if out.Attestations, out.AttestationBytes, err = IndexAttestations(idx); err != nil {
		return out, err
	}
	for _, desc := range im.Manifests {
		if IsAttestation(desc) {
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

// IndexAttestations reads the attestation manifests of idx, not its images: what MeasureIndex
// reports of them, and their size in bytes (manifests, configs and statements).
func IndexAttestations(idx v1.ImageIndex) ([]Attestation, int64, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, 0, err
	}
	platforms := map[string]string{}
	for _, desc := range im.Manifests {
		if !IsAttestation(desc) && desc.Platform != nil {
			platforms[desc.Digest.String()] = PlatformString(*desc.Platform)
		}
	}
	var out []Attestation
	var bytes int64
	for _, desc := range im.Manifests {
		if !IsAttestation(desc) {
			continue
		}
		a, err := measureAttestation(idx, desc, platforms)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, a.Attestation)
		bytes += a.bytes
	}
	return out, bytes, nil
}

// measureAttestation reads attestation manifest desc of idx; platforms maps the index's image
// digests to their platforms.
func measureAttestation(idx v1.ImageIndex, desc v1.Descriptor, platforms map[string]string) (attestation, error) {
	img, err := idx.Image(desc.Digest)
	if err != nil {
		return attestation{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return attestation{}, err
	}
	subject := desc.Annotations[AnnotationReferenceDigest]
	a := attestation{
		Attestation: Attestation{Manifest: desc.Digest.String(), Subject: subject, Platform: platforms[subject]},
		bytes:       desc.Size + m.Config.Size,
	}
	for _, l := range m.Layers {
		a.bytes += l.Size
		a.Statements = append(a.Statements, Statement{PredicateType: l.Annotations[AnnotationPredicateType], Digest: l.Digest.String(), Size: l.Size})
	}
	return a, nil
}

// attestation is an Attestation and the bytes of its manifest, config and statements.
type attestation struct {
	Attestation
	bytes int64
}

// IsAttestation reports whether d is an attestation manifest: BuildKit's annotation, or the
// platform unknown/unknown it gives them.
func IsAttestation(d v1.Descriptor) bool {
	if d.Annotations[AnnotationReferenceType] == ReferenceTypeAttestation {
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
//
// A regular file's bytes are a data object that one or more names reach: the file's own entry
// and the hard links (tar TypeLink entries) to it. A name an upper layer deletes or overwrites
// wastes nothing while another name still reaches the data; the data's bytes are wasted when
// its last name goes.
type overlay struct {
	live   map[string]fileCopy
	wasted int64
	waste  []Waste
	groups map[[2]int]*WasteGroup
}

// fileCopy is one name in the merged view.
type fileCopy struct {
	layer int   // layer that added the name
	dir   bool  // a directory
	data  *data // the bytes the name reaches; nil for directories and entries without data
}

// data is the content of a regular file, in the layer whose tarball holds it.
type data struct {
	size  int64
	layer int
	names int    // names in the merged view that reach it
	arch  string // ElfArch of an executable file
}

// files are the regular files of the merged view, by name.
func (o *overlay) files() map[string]File {
	ids := map[*data]int{}
	out := make(map[string]File, len(o.live))
	for name, c := range o.live {
		if c.dir || c.data == nil {
			continue
		}
		id, ok := ids[c.data]
		if !ok {
			id = len(ids) + 1
			ids[c.data] = id
		}
		out[name] = File{Size: c.data.size, Data: id, Layer: c.data.layer, Arch: c.data.arch}
	}
	return out
}

func newOverlay() *overlay {
	return &overlay{live: map[string]fileCopy{}, groups: map[[2]int]*WasteGroup{}}
}

const whiteoutPrefix = ".wh."
const opaqueWhiteout = ".wh..wh..opq"

// entry is an addition of one layer: a file, a directory, or a hard link to an earlier entry.
type entry struct {
	name string
	dir  bool
	size int64
	arch string // ElfArch of an executable regular file
	link string // hard link target, cleaned; "" when the entry is not a hard link
	// lower is the data a hard link to a lower layer's file reaches, resolved (and counted as
	// a name) before the layer's whiteouts apply.
	lower *data
}

// layerChanges is what one layer tarball does to the view below it. Within one layer,
// whiteouts apply to lower layers only: the layer's entries are collected first so that an
// opaque directory does not hide files the same layer adds.
type layerChanges struct {
	adds    []entry
	deletes []string // names a whiteout deletes
	opaques []string // directories an opaque whiteout empties
}

// apply reads one layer tarball; it returns the tarball's size and its entry count.
func (o *overlay) apply(layer int, r io.Reader) (int64, int, error) {
	ch, n, files, err := readLayer(r)
	if err != nil {
		return n, files, err
	}
	o.resolveLowerLinks(ch.adds)
	for _, d := range ch.opaques {
		o.hideUnder(d, layer, false, true)
	}
	for _, d := range ch.deletes {
		o.hide(d, layer, true)
		o.hideUnder(d, layer, true, false)
	}
	for _, a := range ch.adds {
		o.add(layer, a)
	}
	return n, files, nil
}

// readLayer reads a layer tarball to its end; it returns its changes, its size in bytes and its
// entry count.
func readLayer(r io.Reader) (layerChanges, int64, int, error) {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	files := 0
	var ch layerChanges
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return ch, cr.n, files, err
		}
		files++
		name := clean(h.Name)
		base := path.Base(name)
		dir := path.Dir(name)
		switch {
		case base == opaqueWhiteout:
			ch.opaques = append(ch.opaques, dir)
		case strings.HasPrefix(base, whiteoutPrefix):
			ch.deletes = append(ch.deletes, path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)))
		case h.Typeflag == tar.TypeDir:
			// A directory replacing a file hides the file.
			ch.adds = append(ch.adds, entry{name: name, dir: true})
		case h.Typeflag == tar.TypeLink:
			ch.adds = append(ch.adds, entry{name: name, link: clean(h.Linkname)})
		default:
			size, arch := int64(0), ""
			if h.Typeflag == tar.TypeReg {
				size = h.Size
				if h.Mode&0o111 != 0 {
					arch = readElfArch(tr)
				}
			}
			ch.adds = append(ch.adds, entry{name: name, size: size, arch: arch})
		}
	}
	// Drain anything after the end-of-archive marker so the byte count is the blob's.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return ch, cr.n, files, err
	}
	return ch, cr.n, files, nil
}

// resolveLowerLinks resolves the hard links of a layer's adds that reach a lower layer's file.
// A hard link names an earlier entry of the same layer (the OCI image spec keeps hard links
// within a layer); one to a lower layer's file is resolved against the view below this layer,
// before its whiteouts apply, so deleting the old name keeps the data reachable.
func (o *overlay) resolveLowerLinks(adds []entry) {
	seen := make(map[string]bool, len(adds))
	for i := range adds {
		a := &adds[i]
		if a.link != "" && !seen[a.link] {
			if prev, ok := o.live[a.link]; ok && prev.data != nil {
				a.lower = prev.data
				a.lower.names++
			}
		}
		seen[a.name] = true
	}
}

// add puts one entry of layer into the merged view, hiding what it replaces.
func (o *overlay) add(layer int, a entry) {
	if prev, ok := o.live[a.name]; ok {
		switch {
		case prev.layer < layer:
			o.hide(a.name, layer, false)
			if !a.dir {
				o.hideUnder(a.name, layer, false, false) // a file replacing a directory
			}
		case prev.data != nil:
			prev.data.names-- // the same layer names the path twice: the later entry wins
		}
	}
	c := fileCopy{layer: layer, dir: a.dir}
	switch {
	case a.dir:
	case a.lower != nil:
		c.data = a.lower // counted when resolved
	case a.link != "":
		if t, ok := o.live[a.link]; ok && t.layer == layer && t.data != nil {
			c.data = t.data
			c.data.names++
		}
	default:
		c.data = &data{size: a.size, layer: layer, names: 1, arch: a.arch}
	}
	o.live[a.name] = c
}

// hide removes a lower name p; when no other name reaches its data, the data's bytes are
// wasted.
func (o *overlay) hide(p string, layer int, deleted bool) {
	prev, ok := o.live[p]
	if !ok || prev.layer >= layer {
		return
	}
	delete(o.live, p)
	d := prev.data
	if d == nil {
		return
	}
	d.names--
	if d.names > 0 || d.size <= 0 || d.layer >= layer {
		return
	}
	o.wasted += d.size
	o.waste = append(o.waste, Waste{Path: "/" + p, Bytes: d.size, AddedIn: d.layer, RemovedIn: layer, Deleted: deleted})
	g := o.groups[[2]int{d.layer, layer}]
	if g == nil {
		g = &WasteGroup{AddedIn: d.layer, RemovedIn: layer, Deleted: deleted}
		o.groups[[2]int{d.layer, layer}] = g
	}
	if d.size > g.largestBytes {
		g.Largest, g.largestBytes = "/"+p, d.size
	}
	g.Bytes += d.size
	g.Files++
	g.Deleted = g.Deleted && deleted
}

// hideUnder hides every lower copy below directory d, in path order (so that which name of a
// hard-linked file is reported as its last one does not depend on map order).
func (o *overlay) hideUnder(d string, layer int, deleted, opaque bool) {
	prefix := d + "/"
	if d == "." || d == "" {
		prefix = ""
	}
	var under []string
	for p, c := range o.live {
		if strings.HasPrefix(p, prefix) && p != d && c.layer < layer {
			under = append(under, p)
		}
	}
	sort.Strings(under)
	for _, p := range under {
		o.hide(p, layer, deleted || opaque)
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
