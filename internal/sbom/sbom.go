// Package sbom makes an SPDX SBOM of a built platform image with syft, as an in-toto statement
// that BuildKit's way of attaching attestations can carry (an attestation manifest of the image
// index, in-toto.io/predicate-type https://spdx.dev/Document).
package sbom

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/anchore/stereoscope/pkg/file"
	"github.com/anchore/stereoscope/pkg/image"
	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/format/spdxjson"
	"github.com/anchore/syft/syft/source/stereoscopesource"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/measure"
	_ "modernc.org/sqlite" // syft reads RPM databases with it
)

// PredicateType is the in-toto predicate type of an SPDX document.
const PredicateType = measure.PredicateSPDX

// Package is one package syft found, with the files it owns (paths in the image).
type Package struct {
	// Name, Version and Type as syft reports them (Type such as deb, apk, go-module, npm).
	Name, Version, Type string
	// Files are the paths of the image's files the package owns or was found in.
	Files []string
}

// Options say what the SBOM names as its creator. syft unpacks the layers it scans under
// os.TempDir (TMPDIR): the build pod points that at the runner's work directory.
type Options struct {
	// Tool and Version name the SBOM's creator.
	Tool, Version string
}

// Scanner is what every scan needs whatever the image: syft's license scanner, whose start
// (building its matcher) takes about 0.7 s of CPU, more than scanning a small image. Prepare
// starts it early, so that it overlaps the build.
type Scanner struct {
	done chan struct{}
	ctx  context.Context
	err  error
}

// Prepare starts syft's license scanner in the background, within ctx.
func Prepare(ctx context.Context) *Scanner {
	s := &Scanner{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.ctx, s.err = syft.SetContextLicenseScanner(ctx, syft.DefaultCreateSBOMConfig().Licenses)
	}()
	return s
}

// Generate scans the platform image img, named ref (repository and tag, for the document's
// name), and returns its SPDX JSON document and its packages. It reads every layer once.
func (s *Scanner) Generate(ctx context.Context, img v1.Image, ref string, o Options) ([]byte, []Package, error) {
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	if s.err != nil {
		return nil, nil, s.err
	}
	return generate(withValues{Context: ctx, values: s.ctx}, img, ref, o)
}

// withValues is ctx (its deadline and cancellation) with the values of another context (the
// license scanner Prepare put there) besides its own.
type withValues struct {
	context.Context
	values context.Context
}

func (w withValues) Value(key any) any {
	if v := w.values.Value(key); v != nil {
		return v
	}
	return w.Context.Value(key)
}

// generate is Generate once ctx holds the license scanner.
func generate(ctx context.Context, img v1.Image, ref string, o Options) ([]byte, []Package, error) {
	tmp := file.NewTempDirGenerator("kiln-sbom")
	defer func() { _ = tmp.Cleanup() }()
	content, err := tmp.NewDirectory("content")
	if err != nil {
		return nil, nil, err
	}
	simg := image.New(img, tmp, content)
	if err := simg.Read(ctx); err != nil {
		return nil, nil, fmt.Errorf("reading the image for its SBOM: %w", err)
	}
	defer func() { _ = simg.Cleanup() }()
	src := stereoscopesource.New(simg, stereoscopesource.ImageConfig{Reference: ref})
	s, err := syft.CreateSBOM(ctx, src, syft.DefaultCreateSBOMConfig().WithTool(o.Tool, o.Version))
	if err != nil {
		return nil, nil, fmt.Errorf("cataloging the image's packages: %w", err)
	}
	enc, err := spdxjson.NewFormatEncoderWithConfig(spdxjson.DefaultEncoderConfig())
	if err != nil {
		return nil, nil, err
	}
	var doc jsonBuffer
	if err := enc.Encode(&doc, *s); err != nil {
		return nil, nil, err
	}
	var pkgs []Package
	for p := range s.Artifacts.Packages.Enumerate() {
		pkg := Package{Name: p.Name, Version: p.Version, Type: string(p.Type)}
		for _, l := range p.Locations.ToSlice() {
			pkg.Files = append(pkg.Files, l.RealPath)
		}
		pkgs = append(pkgs, pkg)
	}
	return doc.b, pkgs, nil
}

// Statement wraps an SPDX document as an in-toto v1 statement about the image with digest d,
// named name (repository).
func Statement(doc []byte, name string, d v1.Hash) ([]byte, error) {
	return json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []map[string]any{{"name": name, "digest": map[string]string{d.Algorithm: d.Hex}}},
		"predicateType": PredicateType,
		"predicate":     json.RawMessage(doc),
	})
}

type jsonBuffer struct{ b []byte }

func (j *jsonBuffer) Write(p []byte) (int, error) { j.b = append(j.b, p...); return len(p), nil }
