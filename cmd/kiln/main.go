// Command kiln is kiln's one binary: `kiln manager` runs the operator, `kiln runner` runs inside
// each build pod.
package main

import (
	"fmt"
	"os"

	clog "github.com/containerd/log"

	"github.com/kiln-dev/kiln/internal/advice"
	"github.com/kiln-dev/kiln/internal/cli"
	"github.com/kiln-dev/kiln/internal/imagesize"
	"github.com/kiln-dev/kiln/internal/manager"
	"github.com/kiln-dev/kiln/internal/runner"
)

const usage = `kiln builds container images in Kubernetes with rootless BuildKit.

Usage:
  kiln manager [flags]   run the ImageBuild controller
  kiln runner  [flags]   run one build (inside a build pod)
  kiln advise  [flags]   find what makes an image big or a build slow, before you push
  kiln build [DIR] --image REPO [--follow]
                         upload DIR as the build context, build it in the cluster, follow it
  kiln get [NAME]        the namespace's ImageBuilds
  kiln logs NAME [-f]    the runner's log of an ImageBuild's last build
  kiln rebuild NAME      start one new build
  kiln wait NAME         wait for the current build; exit 0 pushed, 1 failed, 2 over budget

As the kubectl plugin kubectl-kiln (a symlink to kiln): kubectl kiln build ..., and so on.

Run "kiln <command> -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "build", "get", "logs", "rebuild", "wait":
		os.Exit(cli.Main(cmd, args, os.Stdout, os.Stderr))
	case "manager":
		os.Exit(manager.Main(args))
	case "runner":
		// BuildKit's client logs through logrus' standard logger (containerd/log). At the default
		// level its OCI export opens a containerd content store, which warns on every build that
		// the build pod's filesystem has no fsverity ("failed check for fsverity support"): noise
		// in the runner log the user reads. The runner reports its own failures; keep only errors.
		_ = clog.SetLevel("error")
		os.Exit(runner.Main(args))
	case "advise":
		if imagesize.Wants(args) {
			os.Exit(imagesize.Main(args, os.Stdout, os.Stderr))
		}
		os.Exit(advice.Main(args, os.Stdout, os.Stderr))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "kiln: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
}
