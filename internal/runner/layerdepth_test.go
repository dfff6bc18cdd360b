package runner

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// The two errors below are what a rootless buildkitd v0.33 returned in TestLayerDepthFailure,
// shortened to the parts that matter.
func TestClassifyLayerDepth(t *testing.T) {
	df := runSteps("busybox", 501)
	in := &inputs{dockerfile: []byte(df), dockerfileName: "Dockerfile"}
	if err := in.parseDockerfile(""); err != nil {
		t.Fatal(err)
	}
	// overlay is containerd's error for a RUN on n lower layers (snapshots n+3 down to 4) whose
	// options are padded to pad bytes (a longer work directory), 0 for none.
	overlay := func(step, n, pad int, errno string) string {
		var dirs []string
		for i := n + 3; i > 3; i-- {
			dirs = append(dirs, fmt.Sprintf("%d/fs", i))
		}
		root := "/home/user/.local/share/buildkit"
		d := fmt.Sprintf("workdir=%s/runc-overlayfs/snapshots/snapshots/%d/work,upperdir=%s/runc-overlayfs/snapshots/snapshots/%d/fs,userxattr,index=off,lowerdir=%s",
			root, n+4, root, n+4, strings.Join(dirs, ":"))
		if pad > 0 {
			d = strings.Replace(d, "/work,", strings.Repeat("x", pad-len(d))+"/work,", 1)
		}
		return fmt.Sprintf(`rpc error: code = Unknown desc = process "/bin/sh -c echo %d > /f%d" did not complete successfully: mount source: "overlay", `+
			`target: "%s/runc-overlayfs/cachemounts/buildkit3865691823", fstype: overlay, flags: 0, data: %q, err: %s`, step, step, root, d, errno)
	}
	for _, tc := range []struct {
		name  string
		err   string
		class kilnv1.FailureClass
		want  []string
	}{
		{"kernel limit", overlay(501, 501, 0, "invalid argument"), kilnv1.FailureBadInput,
			[]string{"Dockerfile:502: too many layers: this step runs on 501 stacked layers", "at most 500 layers", "Merge RUN steps", "COPY --from"}},
		// containerd passes 4096 bytes; the kernel keeps 4095 and a NUL, and a path is cut.
		{"options of exactly one page", overlay(385, 385, 4096, "no such file or directory"), kilnv1.FailureBadInput,
			[]string{"Dockerfile:386: too many layers: this step runs on 385 stacked layers"}},
		{"mount options too long", `rpc error: code = Unknown desc = process "/bin/sh -c echo 398 > /f398" did not complete successfully: mount options is too long`,
			kilnv1.FailureBadInput, []string{"Dockerfile:399: too many layers: this step runs on the base image's layers and 397 layers made by earlier steps"}},
		{"a step not in the Dockerfile", `process "/bin/sh -c make" did not complete successfully: mount options is too long`,
			kilnv1.FailureBadInput, []string{"Dockerfile: too many layers: this step runs on more stacked layers"}},
		// An overlay refused for another reason is not a layer-depth failure.
		{"few lower layers", overlay(3, 3, 0, "invalid argument"), kilnv1.FailureBuildFailed, []string{"err: invalid argument"}},
		{"few lower layers, not found", overlay(3, 3, 0, "no such file or directory"), kilnv1.FailureBuildFailed, []string{"err: no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := classifySolveError(errors.New(tc.err), in)
			if classOf(err) != tc.class {
				t.Errorf("class %s, want %s: %v", classOf(err), tc.class, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q: %v", w, err)
				}
			}
			if tc.class == kilnv1.FailureBadInput && strings.Contains(err.Error(), "lowerdir") {
				t.Errorf("message carries the raw mount error: %v", err)
			}
		})
	}
}
