package sbom

import (
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/units"
)

// Sizes attributes the bytes of files (an image's final filesystem) to the packages
// that own them: a file several packages own (every Go module of one binary) goes to them
// together, once, and the content of hard links once, to its first name; the sizes and the
// unpackaged rest add up to the files' bytes. Largest first.
func Sizes(pkgs []Package, files map[string]measure.File) ([]contract.PackageSize, int64) {
	owners := map[string][]int{}
	for i, p := range pkgs {
		for _, f := range p.Files {
			name := strings.TrimPrefix(path.Clean("/"+f), "/")
			if !slices.Contains(owners[name], i) {
				owners[name] = append(owners[name], i)
			}
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	groups := map[string]*contract.PackageSize{}
	seen := map[int]bool{}
	var unpackaged int64
	for _, n := range names {
		f := files[n]
		if seen[f.Data] {
			continue
		}
		seen[f.Data] = true
		own := owners[n]
		if len(own) == 0 {
			unpackaged += f.Size
			continue
		}
		key := fmt.Sprint(own)
		g := groups[key]
		if g == nil {
			g = &contract.PackageSize{Name: groupName(pkgs, own), Type: groupType(pkgs, own)}
			groups[key] = g
		}
		g.Bytes += f.Size
		g.Files++
	}
	out := make([]contract.PackageSize, 0, len(groups))
	for _, g := range groups {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Bytes != out[j].Bytes {
			return out[i].Bytes > out[j].Bytes
		}
		return out[i].Name < out[j].Name
	})
	return out, unpackaged
}

// groupName names the packages own: "name version", or the first two and how many more.
func groupName(pkgs []Package, own []int) string {
	label := func(i int) string {
		v := pkgs[i].Version
		if v == "UNKNOWN" { // syft's version of a Go main module built from a checkout
			v = ""
		}
		return strings.TrimSpace(pkgs[i].Name + " " + v)
	}
	switch len(own) {
	case 1:
		return label(own[0])
	case 2:
		return label(own[0]) + ", " + label(own[1])
	}
	return fmt.Sprintf("%s, %s (+%d more)", label(own[0]), label(own[1]), len(own)-2)
}

// groupType is the packages' type, or "mixed".
func groupType(pkgs []Package, own []int) string {
	t := pkgs[own[0]].Type
	for _, i := range own[1:] {
		if pkgs[i].Type != t {
			return "mixed"
		}
	}
	return t
}

// WriteSizes prints the n largest of sizes and the unpackaged rest as an indented table: the
// table a build's log and `kiln advise --image` show.
func WriteSizes(w io.Writer, sizes []contract.PackageSize, unpackaged int64, n int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  PACKAGE\tTYPE\tSIZE\tFILES")
	for _, k := range sizes[:min(len(sizes), n)] {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\n", k.Name, k.Type, units.Bytes(k.Bytes), k.Files)
	}
	fmt.Fprintf(tw, "  (in no package)\t\t%s\t\n", units.Bytes(unpackaged))
	_ = tw.Flush()
}
