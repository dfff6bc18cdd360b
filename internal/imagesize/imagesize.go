// Package imagesize is `kiln advise --image`: a built image sized by package. It is apart from
// package advice, whose rules need no SBOM scanner (and whose fuzzing would build one).
package imagesize

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/sbom"
	"github.com/kiln-dev/kiln/internal/units"
	"github.com/kiln-dev/kiln/internal/version"
)

// imagePackages is how many of an image's largest packages `kiln advise --image` lists.
const imagePackages = 20

// ImageReport is what `kiln advise --image` finds in a built image: its size and layers, and
// its size by package (from an SBOM that syft makes of it).
type ImageReport struct {
	Image             string                 `json:"image"`
	Platform          string                 `json:"platform"`
	CompressedBytes   int64                  `json:"compressedBytes"`
	UncompressedBytes int64                  `json:"uncompressedBytes"`
	Layers            []measure.Layer        `json:"layers"`
	Packages          []contract.PackageSize `json:"packages"`
	UnpackagedBytes   int64                  `json:"unpackagedBytes"`
}

// Main is `kiln advise --image REF [--platform os/arch] [--insecure] [-o text|json]`; it returns
// the exit code: 0, or 2 on bad usage or when the image cannot be read.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kiln advise --image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	image := fs.String("image", "", "the built image `REF` to size by package (pulled with your docker credentials)")
	platform := fs.String("platform", "linux/amd64", "the `platform` image of an index")
	insecure := fs.Bool("insecure", false, "allow a plain-HTTP registry")
	output := fs.String("o", "text", "output `format`: text or json")
	fs.StringVar(output, "output", "text", "same as -o")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *image == "" || fs.NArg() > 0 || (*output != "text" && *output != "json") {
		fmt.Fprintln(stderr, "kiln advise: usage: kiln advise --image REF [--platform os/arch] [--insecure] [-o text|json]")
		return 2
	}
	return adviseImage(*image, *platform, *insecure, *output, stdout, stderr)
}

// Wants reports whether `kiln advise` args ask for an image (--image), which Main handles.
func Wants(args []string) bool {
	for _, a := range args {
		if a == "--image" || a == "-image" || strings.HasPrefix(a, "--image=") || strings.HasPrefix(a, "-image=") {
			return true
		}
	}
	return false
}

// adviseImage pulls ref (for platform, such as linux/amd64) with the docker config's
// credentials, measures it, makes its SBOM and prints its size by package; it returns the exit
// code: 0, or 2 when the image cannot be read.
func adviseImage(ref, platform string, insecure bool, output string, stdout, stderr io.Writer) int {
	ctx := context.Background()
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "kiln advise: --image %q is not an image reference: %v\n", ref, err)
		return 2
	}
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		fmt.Fprintf(stderr, "kiln advise: --platform %q: %v\n", platform, err)
		return 2
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithPlatform(*p))
	if err != nil {
		fmt.Fprintf(stderr, "kiln advise: reading %s: %v\n", r, err)
		return 2
	}
	scanner := sbom.Prepare(ctx)
	m, err := measure.MeasureImage(img, p.String())
	if err != nil {
		fmt.Fprintf(stderr, "kiln advise: measuring %s: %v\n", r, err)
		return 2
	}
	pkgs := []sbom.Package(nil)
	if _, pkgs, err = scanner.Generate(ctx, img, r.String(), sbom.Options{Tool: "kiln", Version: version.Version}); err != nil {
		fmt.Fprintf(stderr, "kiln advise: the SBOM of %s: %v\n", r, err)
		return 2
	}
	sizes, unpackaged := sbom.Sizes(pkgs, m.Files)
	rep := ImageReport{Image: r.String(), Platform: p.String(), CompressedBytes: m.CompressedBytes, UncompressedBytes: m.UncompressedBytes,
		Layers: m.Layers, Packages: sizes, UnpackagedBytes: unpackaged}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "kiln advise: %v\n", err)
			return 2
		}
		return 0
	}
	fmt.Fprintf(stdout, "Image %s (%s): %s compressed, %s uncompressed, %d layers, %d packages\n",
		rep.Image, rep.Platform, units.Bytes(rep.CompressedBytes), units.Bytes(rep.UncompressedBytes), len(rep.Layers), len(pkgs))
	sbom.WriteSizes(stdout, sizes, unpackaged, imagePackages)
	return 0
}
