package bundle

import (
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestImage: the artifact has Flux's shape (OCI manifest, config media type and `{}`, one
// content layer, created at the epoch unless told, the given annotations), is a valid image
// for go-containerregistry, and FromImage gives back a layer that unpacks to the files.
func TestImage(t *testing.T) {
	d := t.TempDir()
	writeTree(t, d, "Dockerfile", "src/a.go")
	img, st, err := Image(d, map[string]string{AnnotationSource: "https://example.com/app.git", AnnotationRevision: "main@sha1:abc"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 3 {
		t.Errorf("stats %+v", st)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate: %v", err)
	}
	raw, _ := img.RawManifest()
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.RawConfigFile()
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != ConfigMediaType || string(cfg) != "{}" ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != ContentMediaType {
		t.Errorf("manifest %s, config %s", raw, cfg)
	}
	wantAnn := map[string]string{AnnotationCreated: Epoch, AnnotationSource: "https://example.com/app.git", AnnotationRevision: "main@sha1:abc"}
	if len(m.Annotations) != len(wantAnn) {
		t.Errorf("annotations %v; want %v", m.Annotations, wantAnn)
	}
	for k, v := range wantAnn {
		if m.Annotations[k] != v {
			t.Errorf("annotation %s = %q; want %q", k, m.Annotations[k], v)
		}
	}
	rc, err := FromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := t.TempDir()
	if _, err := Unpack(rc, out, Limits{}); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, out); got["src/a.go"].data != "content of src/a.go" || len(got) != 3 {
		t.Errorf("unpacked %v", got)
	}
	other, _, err := Image(d, map[string]string{AnnotationCreated: "2026-01-02T03:04:05Z"})
	if err != nil {
		t.Fatal(err)
	}
	if om, _ := other.Manifest(); om.Annotations[AnnotationCreated] != "2026-01-02T03:04:05Z" {
		t.Errorf("created %q", om.Annotations[AnnotationCreated])
	}
}

// TestFromImageShape: FromImage accepts a plain OCI gzip layer and refuses images of another
// shape, saying what it found.
func TestFromImageShape(t *testing.T) {
	gz := archive(t, file("Dockerfile", "FROM scratch\n"))
	layer := func(mt types.MediaType) v1.Layer { return static.NewLayer(gz, mt) }
	img := func(t *testing.T, ls ...v1.Layer) v1.Image {
		i, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), ls...)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	rc, err := FromImage(img(t, layer(types.OCILayer)))
	if err != nil {
		t.Fatalf("a plain OCI gzip layer: %v", err)
	}
	if _, err := Unpack(rc, t.TempDir(), Limits{}); err != nil {
		t.Error(err)
	}
	rc.Close()
	tests := []struct {
		name string
		img  v1.Image
		want string
	}{
		{"no layers", img(t), "has 0 layers"},
		{"two layers", img(t, layer(ContentMediaType), layer(types.OCILayer)), "has 2 layers"},
		{"uncompressed layer", img(t, layer(types.OCIUncompressedLayer)), `"application/vnd.oci.image.layer.v1.tar"`},
		{"zstd layer", img(t, layer(types.OCILayerZStd)), `"application/vnd.oci.image.layer.v1.tar+zstd"`},
		{"an index", mutate.MediaType(img(t, layer(ContentMediaType)), types.OCIImageIndex), `"application/vnd.oci.image.index.v1+json"`},
		{"big config", bigConfig(t, img(t, layer(ContentMediaType))), "config is"},
		{"big manifest", mutate.Annotations(img(t, layer(ContentMediaType)), map[string]string{"x": strings.Repeat("x", 2<<20)}).(v1.Image), "over the limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromImage(tc.img)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v; want one saying %s", err, tc.want)
			}
		})
	}
}

// bigConfig returns img with a config of over 2 MiB.
func bigConfig(t *testing.T, img v1.Image) v1.Image {
	i, err := mutate.Config(img, v1.Config{Env: []string{"X=" + strings.Repeat("x", 2<<20)}})
	if err != nil {
		t.Fatal(err)
	}
	return i
}
