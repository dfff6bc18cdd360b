package advice

import (
	"strings"
	"testing"
)

const mib = 1 << 20

// downloadThenDelete is the apt-style "download then delete" Dockerfile of issue 7's end-to-end
// test, and the image the runner would measure for it.
var downloadThenDelete = L(
	"FROM debian:bookworm-slim", // 1
	"RUN apt-get update",        // 2
	"RUN curl -fsSL -o /tmp/tool.tgz https://example.com/tool.tgz", // 3
	"RUN tar -xzf /tmp/tool.tgz -C /opt",                           // 4
	"RUN rm -rf /tmp/tool.tgz /var/lib/apt/lists/*",                // 5
	"USER 1000", // 6
)

func downloadThenDeleteImage() *Image {
	return &Image{
		CompressedBytes: 100 * mib,
		Layers: []Layer{
			{Index: 0, CompressedBytes: 28 * mib, UncompressedBytes: 75 * mib, CreatedBy: "# debian.sh --arch 'amd64' out/ 'bookworm'", Base: true},
			{Index: 1, CompressedBytes: 20 * mib, UncompressedBytes: 45 * mib, CreatedBy: "RUN /bin/sh -c apt-get update # buildkit", Line: 2},
			{Index: 2, CompressedBytes: 40 * mib, UncompressedBytes: 40 * mib, CreatedBy: "RUN /bin/sh -c curl -fsSL -o /tmp/tool.tgz https://example.com/tool.tgz # buildkit", Line: 3},
			{Index: 3, CompressedBytes: 12 * mib, UncompressedBytes: 30 * mib, CreatedBy: "RUN /bin/sh -c tar -xzf /tmp/tool.tgz -C /opt # buildkit", Line: 4},
			{Index: 4, CompressedBytes: 1024, UncompressedBytes: 4096, CreatedBy: "RUN /bin/sh -c rm -rf /tmp/tool.tgz /var/lib/apt/lists/* # buildkit", Line: 5},
		},
		// largest first, as measure.MeasureImage orders them
		Waste: []Waste{
			{Path: "/tmp/tool.tgz", Bytes: 40*mib - 512, AddedIn: 2, RemovedIn: 4, Deleted: true},
			{Path: "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4", Bytes: 30 * mib, AddedIn: 1, RemovedIn: 4, Deleted: true},
			{Path: "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm-updates_InRelease", Bytes: 5 * mib, AddedIn: 1, RemovedIn: 4, Deleted: true},
			{Path: "/usr/share/doc/base/copyright", Bytes: 1000, AddedIn: 0, RemovedIn: 3},
			{Path: "/var/lib/apt/lists/lock", Bytes: 0, AddedIn: 1, RemovedIn: 4, Deleted: true},
		},
	}
}

func findings(fs []Finding, rule string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Rule == rule {
			out = append(out, f)
		}
	}
	return out
}

func TestWastedBytes(t *testing.T) {
	img := downloadThenDeleteImage()
	got := Analyze(Input{Dockerfile: []byte(downloadThenDelete), Image: img})
	waste := findings(got, "wasted-bytes")
	if len(waste) != 3 {
		t.Fatalf("%d wasted-bytes findings, want 3 groups:\n%s", len(waste), dump(got))
	}
	var measured, reported int64
	for _, w := range img.Waste {
		measured += w.Bytes
	}
	for _, f := range waste {
		reported += f.SavingBytes
	}
	if reported != measured {
		t.Errorf("the findings save %d bytes, the measured waste is %d", reported, measured)
	}

	// group (2 added, 4 removed): the download
	dl := waste[0]
	if dl.SavingBytes != 40*mib-512 || dl.Line != 3 {
		t.Errorf("download group: %+v", dl)
	}
	for _, want := range []string{"/tmp/tool.tgz", "line 3 (RUN curl", "deleted by line 5 (RUN rm -rf /tmp/tool.tgz", "in one RUN"} {
		if !strings.Contains(dl.Message, want) {
			t.Errorf("download group message lacks %q: %s", want, dl.Message)
		}
	}
	// group (1, 4): two apt lists files (the empty lock file weighs nothing)
	lists := waste[1]
	if lists.SavingBytes != 35*mib || lists.Line != 2 || !strings.Contains(lists.Message, "2 files, e.g. /var/lib/apt/lists/") ||
		!strings.Contains(lists.Message, "line 2 (RUN apt-get update)") || !strings.Contains(lists.Message, "line 5") {
		t.Errorf("apt lists group: %+v", lists)
	}
	// group (0, 3): a base-image file overwritten by a user layer; the line is the overwriting one
	base := waste[2]
	if base.SavingBytes != 1000 || base.Line != 4 || !strings.Contains(base.Message, "the base image (debian:bookworm-slim)") ||
		!strings.Contains(base.Message, "overwritten by line 4") {
		t.Errorf("base group: %+v", base)
	}

	// ordered by saving: the download group first
	if got[0].Rule != "wasted-bytes" || got[0].SavingBytes != 40*mib-512 {
		t.Errorf("first finding %+v", got[0])
	}
	for i := 1; i < len(got); i++ {
		if got[i].SavingBytes > got[i-1].SavingBytes {
			t.Errorf("findings not ordered by saving at %d: %d after %d", i, got[i].SavingBytes, got[i-1].SavingBytes)
		}
	}
	// the static rule sees the same pattern before any build
	static := findings(Analyze(Input{Dockerfile: []byte(downloadThenDelete)}), "files-deleted-later")
	if len(static) != 1 || static[0].Line != 3 || !strings.Contains(static[0].Message, "line 5") {
		t.Errorf("files-deleted-later: %+v", static)
	}
}

func TestWastedBytesWithoutDockerfile(t *testing.T) {
	img := &Image{CompressedBytes: 10, Layers: []Layer{{Index: 0}, {Index: 1}}, Waste: []Waste{
		{Path: "/a", Bytes: 7, AddedIn: 0, RemovedIn: 1, Deleted: true},
		{Path: "/b", Bytes: 3, AddedIn: 0, RemovedIn: 1},
		{Path: "/c", Bytes: 2, AddedIn: 5, RemovedIn: 9}, // layers the image does not list
	}}
	got := findings(Analyze(Input{Dockerfile: []byte("not a dockerfile"), Image: img}), "wasted-bytes")
	if len(got) != 2 || got[0].SavingBytes != 10 || got[1].SavingBytes != 2 {
		t.Fatalf("%+v", got)
	}
	if !strings.Contains(got[0].Message, "deleted or overwritten by layer 1") || got[0].Line != 0 {
		t.Errorf("%+v", got[0])
	}
}

func TestLargeLayer(t *testing.T) {
	img := downloadThenDeleteImage()
	got := findings(Analyze(Input{Dockerfile: []byte(downloadThenDelete), Image: img}), "large-layer")
	if len(got) != 1 || got[0].Line != 3 || !strings.Contains(got[0].Message, "Layer 2, from line 3 (RUN curl") || !strings.Contains(got[0].Message, "40%") {
		t.Fatalf("%+v", got)
	}
	// a base layer over 30%: attributed to the final FROM line, named as the base image
	img = &Image{CompressedBytes: 100, Layers: []Layer{{Index: 0, CompressedBytes: 80, Base: true}, {Index: 1, CompressedBytes: 20, Line: 2}}}
	got = findings(Analyze(Input{Dockerfile: []byte(L("FROM alpine:3.19", "COPY app /app")), Image: img}), "large-layer")
	if len(got) != 1 || got[0].Line != 1 || !strings.Contains(got[0].Message, "the base image (alpine:3.19)") || !strings.Contains(got[0].Message, "80%") {
		t.Fatalf("%+v", got)
	}
	// negative: no layer over 30%, and a one-layer image
	img = &Image{CompressedBytes: 100, Layers: []Layer{{Index: 0, CompressedBytes: 30, Base: true}, {Index: 1, CompressedBytes: 30}, {Index: 2, CompressedBytes: 29}}}
	if got := findings(Analyze(Input{Image: img}), "large-layer"); len(got) != 0 {
		t.Errorf("%+v", got)
	}
	if got := findings(Analyze(Input{Image: &Image{CompressedBytes: 100, Layers: []Layer{{Index: 0, CompressedBytes: 100}}}}), "large-layer"); len(got) != 0 {
		t.Errorf("one layer: %+v", got)
	}
}

func TestBaseImageShare(t *testing.T) {
	img := &Image{CompressedBytes: 50 * mib, Layers: []Layer{
		{Index: 0, CompressedBytes: 40 * mib, Base: true},
		{Index: 1, CompressedBytes: 10 * mib, Line: 2},
	}}
	df := L("FROM debian:bookworm-slim", "COPY app /app", "USER 1000")
	got := findings(Analyze(Input{Dockerfile: []byte(df), Image: img}), "base-image-share")
	if len(got) != 1 || got[0].Line != 1 || got[0].SavingBytes != 38*mib || !strings.Contains(got[0].Message, "80%") {
		t.Fatalf("%+v", got)
	}
	// negatives: distroless final, a base under 60%, a toolchain base (final-stage-toolchain
	// says it, with the saving)
	if got := findings(Analyze(Input{Dockerfile: []byte(L("FROM gcr.io/distroless/base-debian12", "COPY app /app")), Image: img}), "base-image-share"); len(got) != 0 {
		t.Errorf("distroless: %+v", got)
	}
	small := &Image{CompressedBytes: 50 * mib, Layers: []Layer{{Index: 0, CompressedBytes: 20 * mib, Base: true}, {Index: 1, CompressedBytes: 30 * mib}}}
	if got := findings(Analyze(Input{Dockerfile: []byte(df), Image: small}), "base-image-share"); len(got) != 0 {
		t.Errorf("40%%: %+v", got)
	}
	all := Analyze(Input{Dockerfile: []byte(L("FROM golang:1.22", "COPY app /app", "USER 1000")), Image: img})
	if len(findings(all, "base-image-share")) != 0 {
		t.Errorf("toolchain: %s", dump(all))
	}
	tc := findings(all, "final-stage-toolchain")
	if len(tc) != 1 || tc[0].SavingBytes != 38*mib || all[0].Rule != "final-stage-toolchain" {
		t.Errorf("final-stage-toolchain saving: %s", dump(all))
	}
	// the toolchain rule without measurements has no saving
	if f := findings(Analyze(Input{Dockerfile: []byte(L("FROM golang:1.22", "COPY app /app"))}), "final-stage-toolchain"); len(f) != 1 || f[0].SavingBytes != 0 {
		t.Errorf("%+v", f)
	}
}

func TestOrder(t *testing.T) {
	// savings first, then lines, findings without a line last
	img := downloadThenDeleteImage()
	got := Analyze(Input{Dockerfile: []byte(downloadThenDelete), Image: img, ContextFiles: []string{"Dockerfile", ".git"}})
	last := got[len(got)-1]
	if last.Rule != "no-dockerignore" || last.Line != 0 {
		t.Errorf("line-0 finding not last: %s", dump(got))
	}
	for i := 1; i < len(got); i++ {
		p, c := got[i-1], got[i]
		if c.SavingBytes > p.SavingBytes || c.SavingBytes == p.SavingBytes && c.Line != 0 && (p.Line == 0 || c.Line < p.Line) {
			t.Errorf("out of order at %d:\n%s", i, dump(got))
			break
		}
	}
}
