package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The bounds FromImage puts on an artifact's manifest and config.
const (
	// maxManifestBytes is the largest manifest FromImage reads.
	maxManifestBytes = 1 << 20
	// maxConfigBytes is the largest config blob an artifact may declare.
	maxConfigBytes = 1 << 20
)

// emptyConfig is the artifact's config blob.
var emptyConfig = []byte("{}")

// LayerMediaTypes are the layer media types FromImage accepts: Flux's content media type, and
// the plain OCI and Docker gzip layer types, for artifacts other tools made.
var LayerMediaTypes = []types.MediaType{ContentMediaType, types.OCILayer, types.DockerLayer}

// Image packs dir (see Pack) into a build context artifact: an OCI image manifest
// (application/vnd.oci.image.manifest.v1+json) whose config has media type ConfigMediaType and
// content `{}`, and whose one layer is the gzip tar, media type ContentMediaType. The manifest's
// annotations are annotations plus AnnotationCreated = Epoch unless annotations sets it, so the
// same files and annotations give the same digest. The tar is held in memory. Errors are
// Pack's.
func Image(dir string, annotations map[string]string, keep ...string) (v1.Image, Stats, error) {
	var buf bytes.Buffer
	st, err := Pack(dir, &buf, keep...)
	if err != nil {
		return nil, st, err
	}
	layer := static.NewLayer(buf.Bytes(), ContentMediaType)
	ann := map[string]string{AnnotationCreated: Epoch}
	for k, v := range annotations {
		ann[k] = v
	}
	a, err := newArtifact(layer, ann)
	if err != nil {
		return nil, st, err
	}
	img, err := partial.CompressedToImage(a)
	return img, st, err
}

// artifact is a build context artifact: a fixed manifest and config, and one layer.
type artifact struct {
	manifest []byte
	layer    v1.Layer
}

// newArtifact builds the manifest of the artifact whose one layer is layer.
func newArtifact(layer v1.Layer, annotations map[string]string) (*artifact, error) {
	size, err := layer.Size()
	if err != nil {
		return nil, err
	}
	digest, err := layer.Digest()
	if err != nil {
		return nil, err
	}
	cfgDigest, _, err := v1.SHA256(bytes.NewReader(emptyConfig))
	if err != nil {
		return nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: ConfigMediaType, Size: int64(len(emptyConfig)), Digest: cfgDigest},
		Layers:        []v1.Descriptor{{MediaType: ContentMediaType, Size: size, Digest: digest}},
		Annotations:   annotations,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &artifact{manifest: raw, layer: layer}, nil
}

func (a *artifact) RawConfigFile() ([]byte, error) { return emptyConfig, nil }

func (a *artifact) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

func (a *artifact) RawManifest() ([]byte, error) { return a.manifest, nil }

func (a *artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if d, err := a.layer.Digest(); err == nil && d == h {
		return a.layer, nil
	}
	return nil, fmt.Errorf("the build context artifact has no layer %s", h)
}

// FromImage checks that img is a build context artifact and returns its layer's compressed
// stream (a gzip tar, for Unpack); the caller closes it. A layer read from a registry by
// go-containerregistry's remote package is checked against its digest as it is read.
//
// The manifest must be at most 1 MiB, an OCI image manifest or a Docker schema 2 manifest,
// declare a config of at most 1 MiB (which is not read), and have exactly one layer whose media
// type is one of LayerMediaTypes. Errors say which rule failed and what was found.
func FromImage(img v1.Image) (io.ReadCloser, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the build context artifact's manifest: %w", err)
	}
	if len(raw) > maxManifestBytes {
		return nil, fmt.Errorf("the build context artifact's manifest is %d bytes, over the limit of %d", len(raw), maxManifestBytes)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parsing the build context artifact's manifest: %w", err)
	}
	if m.MediaType != "" && m.MediaType != types.OCIManifestSchema1 && m.MediaType != types.DockerManifestSchema2 {
		return nil, fmt.Errorf("the build context artifact's manifest has media type %q; want %q", m.MediaType, types.OCIManifestSchema1)
	}
	if m.Config.Size > maxConfigBytes {
		return nil, fmt.Errorf("the build context artifact's config is %d bytes, over the limit of %d", m.Config.Size, maxConfigBytes)
	}
	if len(m.Layers) != 1 {
		return nil, fmt.Errorf("the build context artifact has %d layers; want exactly one, media type %q", len(m.Layers), ContentMediaType)
	}
	l := m.Layers[0]
	if !acceptedLayer(l.MediaType) {
		return nil, fmt.Errorf("the build context artifact's layer has media type %q; want one of %q", l.MediaType, LayerMediaTypes)
	}
	layer, err := img.LayerByDigest(l.Digest)
	if err != nil {
		return nil, fmt.Errorf("reading the build context artifact's layer %s: %w", l.Digest, err)
	}
	return layer.Compressed()
}

// acceptedLayer reports whether mt is one of LayerMediaTypes.
func acceptedLayer(mt types.MediaType) bool {
	for _, ok := range LayerMediaTypes {
		if mt == ok {
			return true
		}
	}
	return false
}
