package advice

import (
	"fmt"
	"strings"
	"testing"
)

// imageWithLayers is a measured image of base base-image layers and own layers of the
// Dockerfile (lines 2, 3…).
func imageWithLayers(base, own int) *Image {
	img := &Image{}
	for i := 0; i < base+own; i++ {
		l := Layer{Index: i, CompressedBytes: 1000, UncompressedBytes: 2000, Base: i < base}
		if i >= base {
			l.Line = 2 + i - base
		}
		img.Layers = append(img.Layers, l)
		img.CompressedBytes += l.CompressedBytes
	}
	return img
}

// manyRuns is a Dockerfile of n RUN steps after a FROM (line 1).
func manyRuns(from string, n int) string {
	lines := []string{"FROM " + from}
	for i := 0; i < n; i++ {
		lines = append(lines, fmt.Sprintf("RUN echo %d >> /steps", i))
	}
	return L(lines...)
}

// TestLayerDepth is issue 10's item 7: a Dockerfile of about 500 RUN steps fails in BuildKit
// with an overlay mount error; advice warns before a build reaches the limit, and says the
// count, the limit and what to do.
func TestLayerDepth(t *testing.T) {
	for _, tc := range []struct {
		name    string
		df      string
		target  string
		img     *Image
		want    []string // substrings of the one finding; nil = no finding
		wantAt  int
		wantLen int // LayerDepth
	}{
		{name: "500 RUN steps", df: manyRuns("debian:bookworm-slim", 500), wantAt: 1, wantLen: 500,
			want: []string{"stacks 500 layers of its own", "on top of the base image's", "close to the 500", "merge consecutive RUN steps"}},
		{name: "520 RUN steps on scratch", df: manyRuns("scratch", 520), wantAt: 1, wantLen: 520,
			want: []string{"stacks 520 layers (its RUN", "more than the 500", "the build fails at line 502, layer 501", "merge consecutive RUN steps"}},
		{name: "measured base layers count", df: manyRuns("debian:bookworm-slim", 450), img: imageWithLayers(60, 450), wantAt: 1, wantLen: 510,
			want: []string{"stacks 510 layers (60 from the base image, 450 from its RUN", "the build fails at line 442, layer 501"}},
		{name: "399 RUN steps", df: manyRuns("debian:bookworm-slim", 399), wantLen: 399},
		{name: "the chain through a parent stage", wantAt: 302, wantLen: 601,
			df:   manyRuns("debian:bookworm-slim AS base", 300) + manyRuns("base AS app", 300) + "WORKDIR /srv\n",
			want: []string{"Stage app stacks 601 layers of its own", "the build fails at line 503"}},
		{name: "a builder stage fails the build too", wantAt: 1, wantLen: 450,
			df:   manyRuns("golang:1.22 AS build", 450) + "FROM scratch\nCOPY --from=build /steps /steps\n",
			want: []string{"Stage build stacks 450 layers"}},
		{name: "a stage the target does not build", target: "small", wantLen: 1,
			df: manyRuns("golang:1.22 AS big", 450) + "FROM scratch AS small\nCOPY app /app\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Dockerfile: []byte(tc.df), Target: tc.target, Image: tc.img}
			got := findings(Analyze(in), "layer-depth")
			if tc.want == nil {
				if len(got) != 0 {
					t.Errorf("unexpected finding: %s", dump(got))
				}
			} else if len(got) != 1 {
				t.Fatalf("%d layer-depth findings, want 1:\n%s", len(got), dump(got))
			} else {
				if got[0].Line != tc.wantAt || got[0].Kind != KindBuild {
					t.Errorf("line %d kind %s, want line %d kind %s", got[0].Line, got[0].Kind, tc.wantAt, KindBuild)
				}
				for _, w := range tc.want {
					if !strings.Contains(got[0].Message, w) {
						t.Errorf("the message lacks %q:\n%s", w, got[0].Message)
					}
				}
			}
			if n := LayerDepth(in); n != tc.wantLen {
				t.Errorf("LayerDepth = %d, want %d", n, tc.wantLen)
			}
		})
	}
}

func TestLayerDepthMessage(t *testing.T) {
	for _, tc := range []struct {
		layers int
		want   string
	}{
		{512, "The build stacks 512 layers, and an overlay mount holds at most 500"},
		{0, "The build stacks more layers than an overlay mount holds, and an overlay mount holds at most 500"},
	} {
		got := LayerDepthMessage(tc.layers)
		if !strings.HasPrefix(got, tc.want) || !strings.Contains(got, "merge consecutive RUN steps") {
			t.Errorf("LayerDepthMessage(%d) = %q", tc.layers, got)
		}
	}
	if LayerDepthLimit != 500 {
		t.Errorf("LayerDepthLimit = %d, the kernel's OVL_MAX_STACK is 500", LayerDepthLimit)
	}
}
