package runner

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/contract"
	"github.com/kiln-dev/kiln/internal/measure"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// newEnv starts a registry and a rootless buildkitd for one test, as TestRunnerWithRealBuildKit does.
func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.SkipUnlessBuildKitPossible(t)
	reg := testenv.StartRegistry(t)
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{StateDir: t.TempDir(), InsecureRegistries: []string{reg.Addr}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("buildkitd log:\n%s", bk.Log())
		}
	})
	return &env{t: t, reg: reg, bk: bk, busybox: testenv.BusyboxImage(t, reg)}
}

// runLogged is env.run that also returns the runner's log and the encoded result.
func (e *env) runLogged(t *testing.T, req contract.Request, p Paths, timeout time.Duration) (contract.Result, string, string) {
	t.Helper()
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res := Run(ctx, Config{Request: req, Addr: e.bk.Addr, Paths: p, ConnectTimeout: 30 * time.Second, PushAttempts: 3, PushBackoff: 200 * time.Millisecond, Out: &log})
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("KILN_TEST_SHOW_LOGS") != "" {
			t.Logf("runner log:\n%s", log.String())
		}
	})
	b, err := res.Encode()
	if err != nil || len(b) > contract.MaxResultBytes {
		t.Errorf("result does not fit the termination message: %d bytes, %v", len(b), err)
	}
	return res, log.String(), string(b)
}

// The sentinel build-arg value of issue 10 item 4; it must appear in no output of the runner.
const sentinelArg = "tok-kiln-sentinel-5e1f0c9a"

func TestAttributionWithBuildArgs(t *testing.T) {
	e := newEnv(t)
	args := []contract.BuildArg{{Name: "NPM_TOKEN", Value: sentinelArg}}

	t.Run("the RUN layer of issue 10 is line 3 and the value is nowhere", func(t *testing.T) {
		req := e.request("buildargs", func(s *contract.BuildSpec) { s.Dockerfile.BuildArgs = args })
		df := "FROM " + e.busybox + "\n" +
			"ARG NPM_TOKEN\n" +
			"RUN echo building > /built.txt && head -c 300000 /dev/urandom > /blob\n"
		res, log, encoded := e.runLogged(t, req, e.paths(t, map[string]string{"Dockerfile": df}), 5*time.Minute)
		if res.FailureClass != "" {
			t.Fatalf("build failed: %s: %s", res.FailureClass, res.Message)
		}
		var run *contract.Layer
		for i, l := range res.Platforms[0].LargestLayers {
			if l.CompressedBytes > 290_000 && l.CompressedBytes < 320_000 {
				run = &res.Platforms[0].LargestLayers[i]
			}
		}
		if run == nil {
			t.Fatalf("no layer of ~293KiB among %+v", res.Platforms[0].LargestLayers)
		}
		if run.Line != 3 || run.CreatedBy != "RUN echo building > /built.txt && head -c 300000 /dev/urandom > /blob" {
			t.Errorf("the RUN layer is attributed to line %d %q, want line 3 and its RUN", run.Line, run.CreatedBy)
		}
		if !strings.Contains(log, "(Dockerfile:3)") {
			t.Error("the log's layer table does not name Dockerfile:3")
		}
		assertNoSentinel(t, encoded, log)
	})

	t.Run("every RUN form BuildKit writes is attributed", func(t *testing.T) {
		req := e.request("runforms", func(s *contract.BuildSpec) {
			s.Dockerfile.BuildArgs = append(args, contract.BuildArg{Name: "VERSION", Value: "v-" + sentinelArg})
		})
		df := "FROM " + e.busybox + " AS base\n" +
			"ARG NPM_TOKEN\n" +
			"ARG FLAGS=\"-s -w\"\n" +
			"ENV HOME=/root\n" +
			"RUN echo \"the token is $NPM_TOKEN\" > /shell\n" + // 5
			"RUN [\"/bin/touch\", \"/exec\"]\n" + // 6
			"RUN --mount=type=cache,target=/cache echo cached > /cached\n" + // 7
			"RUN <<EOF\n#!/bin/sh\necho script > /script\nEOF\n" + // 8
			"RUN <<EOF\necho one > /one\necho two >> /one\nEOF\n" + // 12
			"RUN <<EOF sh\necho three > /three\nEOF\n" + // 16
			"SHELL [\"/bin/sh\", \"-e\", \"-c\"]\n" + // 19
			"RUN echo shell > /other-shell\n" + // 20
			"FROM base\n" + // 21
			"ARG VERSION\n" +
			"WORKDIR app\n" + // 23
			"COPY app-${VERSION}.txt ./\n" + // 24
			"RUN --mount=type=cache,target=/cache cp app-$VERSION.txt /cache/ && echo \"version $VERSION\"\n" // 25
		p := e.paths(t, map[string]string{"Dockerfile": df, "app-v-" + sentinelArg + ".txt": "app\n"})
		res, log, encoded := e.runLogged(t, req, p, 5*time.Minute)
		if res.FailureClass != "" {
			t.Fatalf("build failed: %s: %s", res.FailureClass, res.Message)
		}
		assertNoSentinel(t, encoded, log)

		// The result keeps the largest five layers only: attribute every layer of the pushed
		// image, from its real history, as platformSizes does.
		img, err := e.get(t, req.Spec.Output.Image+":v1").Image()
		if err != nil {
			t.Fatal(err)
		}
		m, err := measure.MeasureImage(img, "linux/amd64")
		if err != nil {
			t.Fatal(err)
		}
		in, err := prepare(req, p)
		if err != nil {
			t.Fatal(err)
		}
		got := attributeWith(in, "", map[string]string{"NPM_TOKEN": sentinelArg, "VERSION": "v-" + sentinelArg}, m.Layers)
		var lines []int
		for _, l := range m.Layers {
			o := got[l.Index]
			lines = append(lines, o.line)
			if strings.Contains(o.createdBy, sentinelArg) {
				t.Errorf("layer %d: origin %q holds the value (history %q)", l.Index, o.createdBy, l.CreatedBy)
			}
			if o.line == 0 && l.Index > 0 {
				t.Errorf("layer %d not attributed: history %q, origin %q", l.Index, l.CreatedBy, o.createdBy)
			}
		}
		want := []int{0, 5, 6, 7, 8, 12, 16, 20, 23, 24, 25}
		if fmt.Sprint(lines) != fmt.Sprint(want) {
			t.Errorf("layers attributed to lines %v, want %v", lines, want)
		}
	})

	t.Run("a failing step's message and log tail hold no value", func(t *testing.T) {
		req := e.request("buildargs-fail", func(s *contract.BuildSpec) { s.Dockerfile.BuildArgs = args })
		df := "FROM " + e.busybox + "\n" +
			"ARG NPM_TOKEN\n" +
			"RUN echo \"logging in with $NPM_TOKEN\" && exit 7\n"
		res, log, encoded := e.runLogged(t, req, e.paths(t, map[string]string{"Dockerfile": df}), 5*time.Minute)
		if res.FailureClass != kilnv1.FailureBuildFailed {
			t.Fatalf("class %q: %s", res.FailureClass, res.Message)
		}
		if !strings.Contains(res.LogTail, "logging in with ${NPM_TOKEN}") {
			t.Errorf("the log tail lacks the step's output, redacted:\n%s", res.LogTail)
		}
		assertNoSentinel(t, encoded, log)
	})
}

func assertNoSentinel(t *testing.T, encoded, log string) {
	t.Helper()
	if strings.Contains(encoded, sentinelArg) {
		t.Errorf("the encoded result holds the build-arg value:\n%s", encoded)
	}
	if strings.Contains(log, sentinelArg) {
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, sentinelArg) {
				t.Errorf("the runner log holds the build-arg value: %s", l)
			}
		}
	}
}
