package runner

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/measure"
)

func TestAttributeRunWithArgs(t *testing.T) {
	df := "FROM busybox AS base\nARG NPM_TOKEN\nARG FLAGS=\"-s -w\"\nSHELL [\"/bin/sh\", \"-e\", \"-c\"]\n" +
		"RUN echo building > /built.txt && head -c 300000 /dev/urandom > /blob\n" + // 5
		"RUN [\"/bin/touch\", \"/exec\"]\n" + // 6
		"RUN --mount=type=cache,target=/cache echo cached > /cached\n" + // 7
		"RUN <<EOF\n#!/bin/sh\necho script > /script\nEOF\n" + // 8
		"RUN <<EOF\necho one > /one\nEOF\n" + // 12
		"RUN <<EOF sh\necho two > /two\nEOF\n" + // 15
		"FROM base\nWORKDIR app\nCOPY app-${VERSION}.tar ./\n" // 18-20
	in := &inputs{dockerfile: []byte(df), dockerfileName: "Dockerfile"}
	if err := in.parseDockerfile(""); err != nil {
		t.Fatal(err)
	}
	const tok = "tok-sentinel-4242"
	prefix := "RUN |2 NPM_TOKEN=" + tok + " FLAGS=-s -w "
	entries := []string{
		"ADD busybox.tar / # buildkit",
		prefix + "/bin/sh -e -c echo building > /built.txt && head -c 300000 /dev/urandom > /blob # buildkit",
		prefix + "/bin/touch /exec # buildkit",
		prefix + "/bin/sh -e -c echo cached > /cached # buildkit",
		prefix + "/bin/sh -e -c /dev/pipes/EOF # buildkit",
		prefix + "/bin/sh -e -c echo one > /one\n # buildkit",
		prefix + "/bin/sh -e -c <<EOF sh\necho two > /two\nEOF # buildkit",
		"WORKDIR /app",
		"COPY app-" + tok + ".tar ./ # buildkit",
	}
	var layers []measure.Layer
	for i, e := range entries {
		layers = append(layers, measure.Layer{Index: i, CreatedBy: e})
	}
	got := attributeWith(in, "", map[string]string{"NPM_TOKEN": tok}, layers)
	want := []struct {
		line int
		text string
	}{
		{0, "base image busybox: ADD busybox.tar /"},
		{5, "RUN echo building > /built.txt && head -c 300000 /dev/urandom > /blob"},
		{6, `RUN ["/bin/touch", "/exec"]`},
		{7, "RUN --mount=type=cache,target=/cache echo cached > /cached"},
		{8, "RUN <<EOF"},
		{12, "RUN <<EOF"},
		{15, "RUN <<EOF sh"},
		{19, "WORKDIR app"},
		{20, "COPY app-${VERSION}.tar ./"},
	}
	for i, w := range want {
		if got[i].line != w.line || got[i].createdBy != w.text {
			t.Errorf("layer %d (%q): got line %d %q, want line %d %q", i, entries[i], got[i].line, got[i].createdBy, w.line, w.text)
		}
		if strings.Contains(got[i].createdBy, tok) {
			t.Errorf("layer %d: the build-arg value reached the origin %q", i, got[i].createdBy)
		}
	}

	// Without the Dockerfile (BuildKit read it from git) nothing matches: the RUN prefixes are
	// still cut. (The value BuildKit expanded into the COPY is the redactor's: platformSizes.)
	for i, o := range attributeWith(nil, "", map[string]string{"NPM_TOKEN": tok}, layers[:len(layers)-1]) {
		if strings.Contains(o.createdBy, tok) || strings.Contains(o.createdBy, "-s -w") {
			t.Errorf("layer %d without a Dockerfile: a build-arg value reached the origin %q", i, o.createdBy)
		}
	}
}

func TestRedactor(t *testing.T) {
	red := &redactor{}
	red.addBuildArg("NPM_TOKEN", "tok-sentinel-4242")
	red.addBuildArg("DEBUG", "true")  // too short to replace as text
	red.addBuildArg("BASE", "alpine") // just long enough
	red.addSecrets([]string{"tok-sentinel-4242-and-more\n", "abc", "line-one\nline-two\n"})
	in := "npm token tok-sentinel-4242, secret tok-sentinel-4242-and-more, debug true, base alpine:3.20, abc, line-two"
	want := "npm token ${NPM_TOKEN}, secret ***, debug true, base ${BASE}:3.20, abc, ***"
	if got := red.String(in); got != want {
		t.Errorf("String\n got %q\nwant %q", got, want)
	}

	// The writer finds a value split across writes, and passes whole lines on.
	var out bytes.Buffer
	w := &redactWriter{w: &out, red: red}
	for _, p := range []string{"#5 0.1 tok-sen", "tinel-4242 done\n#6 ", "line-one\n", "unfinished tok-sentinel-4242"} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if got := out.String(); got != "#5 0.1 ${NPM_TOKEN} done\n#6 ***\n" {
		t.Errorf("before Flush: %q", got)
	}
	w.Flush()
	if got := out.String(); !strings.HasSuffix(got, "unfinished ${NPM_TOKEN}") {
		t.Errorf("after Flush: %q", got)
	}
}
