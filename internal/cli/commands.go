package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// command is one of kiln get, logs, rebuild and wait: its flags are kubectl's plus its own.
type command struct {
	name, usage string
	flags       func(fs *flag.FlagSet)
	run         func(ctx context.Context, k *kube, fs *flag.FlagSet, stdout, stderr io.Writer) int
}

func (c command) main(args []string, stdout, stderr io.Writer) int {
	var kf kubeFlags
	fs := flag.NewFlagSet("kiln "+c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	kf.register(fs)
	if c.flags != nil {
		c.flags(fs)
	}
	timeout := fs.Duration("timeout", time.Hour, "give up after this long")
	fs.Usage = func() { fmt.Fprint(stderr, c.usage); fs.PrintDefaults() }
	if err := parseInterspersed(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return ExitUsage
	}
	k, err := kf.connect()
	if err != nil {
		fmt.Fprintf(stderr, "kiln %s: %v\n", c.name, err)
		return ExitFailed
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	return c.run(ctx, k, fs, stdout, stderr)
}

// oneName is the single NAME argument of a command, or a usage error.
func oneName(cmd string, args []string, stderr io.Writer) (string, bool) {
	if len(args) != 1 {
		fmt.Fprintf(stderr, "kiln %s: give one ImageBuild NAME\n", cmd)
		return "", false
	}
	return args[0], true
}

var commands = map[string]command{
	"get": {name: "get", usage: "kiln get [NAME]: the ImageBuilds of the namespace (or one), as kubectl get ib -o wide shows them.\n\nFlags:\n", run: runGet},
	"logs": {name: "logs", usage: "kiln logs NAME [-f]: the runner's log of the ImageBuild's last build; with -f, of the build of its current spec and rebuild request (waiting for it to start), followed.\n\nFlags:\n",
		flags: func(fs *flag.FlagSet) { fs.Bool("f", false, "follow the log") }, run: runLogs},
	"rebuild": {name: "rebuild", usage: "kiln rebuild NAME: start one new build (the kiln.dev/rebuild-requested-at annotation).\n\nFlags:\n", run: runRebuild},
	"wait":    {name: "wait", usage: "kiln wait NAME: wait for the build of the ImageBuild's current spec and request, and exit with its verdict (0 pushed, 1 failed, 2 over budget).\n\nFlags:\n", run: runWait},
}

func runGet(ctx context.Context, k *kube, fs *flag.FlagSet, stdout, stderr io.Writer) int {
	args := fs.Args()
	if len(args) > 1 {
		fmt.Fprintf(stderr, "kiln get: one ImageBuild NAME at most, not %q\n", args)
		return ExitUsage
	}
	list := &kilnv1.ImageBuildList{}
	if err := k.c.List(ctx, list, client.InNamespace(k.namespace)); err != nil {
		fmt.Fprintf(stderr, "kiln get: %v\n", err)
		return ExitFailed
	}
	var items []kilnv1.ImageBuild
	for _, ib := range list.Items {
		if len(args) == 0 || ib.Name == args[0] {
			items = append(items, ib)
		}
	}
	if len(args) > 0 && len(items) == 0 {
		fmt.Fprintf(stderr, "kiln get: ImageBuild %q not found in namespace %q\n", args[0], k.namespace)
		return ExitFailed
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPHASE\tPUSHED IMAGE\tSIZE\tBUDGET\tCACHED\tMESSAGE")
	for _, ib := range items {
		image, size, budget, cached := "", "", "", ""
		if s := ib.Status.Size; s != nil {
			size = s.Compressed
		}
		if ib.Status.Image != "" {
			image = ib.Status.Image
		}
		if b := ib.Status.Budget; b != nil {
			budget = b.Summary
		}
		if c := ib.Status.Cache; c != nil && c.TotalSteps > 0 {
			cached = fmt.Sprintf("%d/%d", c.CachedSteps, c.TotalSteps)
		}
		msg := ""
		if c := meta.FindStatusCondition(ib.Status.Conditions, kilnv1.ConditionReady); c != nil {
			msg = c.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ib.Name, ib.Status.Phase, image, size, budget, cached, msg)
	}
	_ = tw.Flush()
	return 0
}

func runLogs(ctx context.Context, k *kube, fs *flag.FlagSet, stdout, stderr io.Writer) int {
	args := fs.Args()
	name, ok := oneName("logs", args, stderr)
	if !ok {
		return ExitUsage
	}
	ib := &kilnv1.ImageBuild{}
	if err := k.c.Get(ctx, types.NamespacedName{Namespace: k.namespace, Name: name}, ib); err != nil {
		fmt.Fprintf(stderr, "kiln logs: %v\n", err)
		return ExitFailed
	}
	follow := fs.Lookup("f").Value.String() == "true"
	if follow {
		// The build of the current spec and rebuild request, which may not have started yet
		// (just after kiln rebuild).
		key := kilnv1.BuildKey{Generation: ib.Generation, RebuildRequestedAt: ib.Annotations[kilnv1.AnnotationRebuildRequestedAt]}
		for lb := ib.Status.LastBuild; lb == nil || !answersKey(lb, key) || lb.PodName == ""; lb = ib.Status.LastBuild {
			if ib.Spec.Suspend {
				fmt.Fprintf(stderr, "kiln logs: ImageBuild %s is suspended (spec.suspend: true): nothing builds until it is resumed\n", name)
				return ExitFailed
			}
			select {
			case <-ctx.Done():
				fmt.Fprintf(stderr, "kiln logs: the build of ImageBuild %s's current spec did not start: %v\n", name, ctx.Err())
				return ExitFailed
			case <-time.After(followPoll):
			}
			if err := k.c.Get(ctx, client.ObjectKeyFromObject(ib), ib); err != nil {
				fmt.Fprintf(stderr, "kiln logs: %v\n", err)
				return ExitFailed
			}
		}
	}
	lb := ib.Status.LastBuild
	if lb == nil || lb.PodName == "" {
		fmt.Fprintf(stderr, "kiln logs: ImageBuild %s has no build yet\n", name)
		return ExitFailed
	}
	if follow {
		streamLog(ctx, k, k.namespace, lb.PodName, stdout)
		return 0
	}
	rc, err := k.cs.CoreV1().Pods(k.namespace).GetLogs(lb.PodName, &corev1.PodLogOptions{Container: "runner"}).Stream(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "kiln logs: build pod %s: %v (a pruned or deleted pod keeps no log; status.lastBuild.logTail has a failed build's end)\n", lb.PodName, err)
		return ExitFailed
	}
	defer func() { _ = rc.Close() }()
	_, _ = io.Copy(stdout, rc)
	return 0
}

func runRebuild(ctx context.Context, k *kube, fs *flag.FlagSet, stdout, stderr io.Writer) int {
	args := fs.Args()
	name, ok := oneName("rebuild", args, stderr)
	if !ok {
		return ExitUsage
	}
	at := time.Now().UTC().Format(time.RFC3339Nano)
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, kilnv1.AnnotationRebuildRequestedAt, at)
	ib := &kilnv1.ImageBuild{}
	ib.Namespace, ib.Name = k.namespace, name
	if err := k.c.Patch(ctx, ib, client.RawPatch(types.MergePatchType, patch)); err != nil {
		fmt.Fprintf(stderr, "kiln rebuild: %v\n", err)
		return ExitFailed
	}
	fmt.Fprintf(stdout, "Rebuild of %s/%s requested (%s=%s); follow it with: kiln wait %s\n", k.namespace, name, kilnv1.AnnotationRebuildRequestedAt, at, name)
	return 0
}

func runWait(ctx context.Context, k *kube, fs *flag.FlagSet, stdout, stderr io.Writer) int {
	args := fs.Args()
	name, ok := oneName("wait", args, stderr)
	if !ok {
		return ExitUsage
	}
	ib := &kilnv1.ImageBuild{}
	if err := k.c.Get(ctx, types.NamespacedName{Namespace: k.namespace, Name: name}, ib); err != nil {
		fmt.Fprintf(stderr, "kiln wait: %v\n", err)
		return ExitFailed
	}
	return follow(ctx, k, ib, stdout, stderr)
}
