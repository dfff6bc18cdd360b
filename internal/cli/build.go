package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/bundle"
	"github.com/kiln-dev/kiln/internal/units"
)

const buildUsage = `kiln build uploads a directory as the build context and builds it in the cluster.

Usage:
  kiln build [DIR] --image REPO [--name NAME] [-f Dockerfile] [--source-repo REPO] [--follow]
             [--insecure] [--timeout DURATION] [--kubeconfig FILE] [--context NAME] [-n NAMESPACE]

It packs DIR (default ".") as docker build would send it (.dockerignore honoured, the
Dockerfile always kept; symlinks that point out of DIR are refused; the same files always
make the same bundle), pushes the bundle to the source repository (default
REPO-src) with your registry credentials (docker's config and credential helpers), and creates
or updates the ImageBuild NAME (default: DIR's base name as a DNS name, My_App becomes my-app)
by server-side apply (field manager "kiln"): its source is the
bundle by digest, its output REPO. The rest of the ImageBuild (budget, tags, ...) is yours to
set with kubectl: kiln build changes only the fields it sets. With --follow it prints the
build's queue position, streams the runner's log, and ends with a summary.

Exit codes: 0 pushed, 1 failed, 2 over budget (nothing pushed), 3 refused by the API server,
4 bad arguments.

Flags:
`

// buildOptions are kiln build's flags.
type buildOptions struct {
	kube                         kubeFlags
	dir, image, name, dockerfile string
	sourceRepo                   string
	follow, insecure             bool
	timeout                      time.Duration
	keychain                     authn.Keychain
}

// Main runs `kiln build`, `kiln get`, `kiln logs`, `kiln rebuild` or `kiln wait` (cmd, with
// args), and returns the exit code.
func Main(cmd string, args []string, stdout, stderr io.Writer) int {
	if c, ok := commands[cmd]; ok {
		return c.main(args, stdout, stderr)
	}
	switch cmd {
	case "build":
		return mainBuild(args, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "kiln: unknown command %q\n", cmd)
		return ExitUsage
	}
}

func mainBuild(args []string, stdout, stderr io.Writer) int {
	o := buildOptions{keychain: authn.DefaultKeychain}
	fs := flag.NewFlagSet("kiln build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.kube.register(fs)
	fs.StringVar(&o.image, "image", "", "the `repository` to push the image to (spec.output.image), without tag")
	fs.StringVar(&o.name, "name", "", "the ImageBuild's `name` (default: DIR's base name)")
	fs.StringVar(&o.dockerfile, "f", "", "the `Dockerfile`, relative to DIR (default Dockerfile)")
	fs.StringVar(&o.sourceRepo, "source-repo", "", "the `repository` for the uploaded context (default: REPO-src)")
	fs.BoolVar(&o.follow, "follow", false, "follow the build: queue position, the runner's log, a summary; exit with its verdict")
	fs.BoolVar(&o.insecure, "insecure", false, "plain HTTP to the registry, for the upload and the push (spec.output.insecure)")
	fs.DurationVar(&o.timeout, "timeout", time.Hour, "give up following after this long")
	fs.Usage = func() { fmt.Fprint(stderr, buildUsage); fs.PrintDefaults() }
	if err := parseInterspersed(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return ExitUsage
	}
	switch fs.NArg() {
	case 0:
		o.dir = "."
	case 1:
		o.dir = fs.Arg(0)
	default:
		fmt.Fprintf(stderr, "kiln build: one directory at most, not %q\n", fs.Args())
		return ExitUsage
	}
	if o.image == "" {
		fmt.Fprintln(stderr, "kiln build: --image is required: the repository to push the image to, such as registry.example.com/team/app")
		return ExitUsage
	}
	k, err := o.kube.connect()
	if err != nil {
		fmt.Fprintf(stderr, "kiln build: %v\n", err)
		return ExitFailed
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	return build(ctx, k, o, stdout, stderr)
}

// parseInterspersed parses flags that may come before or after the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

// build is kiln build once the flags are read: check them, upload, apply, and follow when
// asked.
func build(ctx context.Context, k *kube, o buildOptions, stdout, stderr io.Writer) int {
	abs, err := o.check()
	if err != nil {
		fmt.Fprintf(stderr, "kiln build: %v\n", err)
		return ExitUsage
	}
	if o.name == "" {
		o.name = dnsName(filepath.Base(abs))
	}
	src, err := upload(ctx, o, abs, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "kiln build: %v\n", err)
		var ee *bundle.EntryError
		if errors.As(err, &ee) {
			return ExitUsage
		}
		return ExitFailed
	}
	ib, err := apply(ctx, k, o, src)
	if err != nil {
		fmt.Fprintf(stderr, "kiln build: %v\n", err)
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) {
			return ExitRefused
		}
		return ExitFailed
	}
	fmt.Fprintf(stdout, "ImageBuild %s/%s applied (generation %d): source %s\n", ib.Namespace, ib.Name, ib.Generation, src)
	if !o.follow {
		return ExitPushed
	}
	return follow(ctx, k, ib, stdout, stderr)
}

// check refuses, before anything is pushed, what the API server or the build would refuse: it
// returns DIR's absolute path.
func (o *buildOptions) check() (string, error) {
	abs, err := filepath.Abs(o.dir)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory: give the build context's directory", o.dir)
	}
	if o.name != "" {
		if errs := validation.IsDNS1123Subdomain(o.name); len(errs) > 0 {
			return "", fmt.Errorf("--name %q is not a Kubernetes name: %s", o.name, strings.Join(errs, "; "))
		}
	}
	df := "Dockerfile"
	if o.dockerfile != "" {
		df = filepath.ToSlash(filepath.Clean(o.dockerfile))
		if filepath.IsAbs(o.dockerfile) || df == ".." || strings.HasPrefix(df, "../") {
			return "", fmt.Errorf("-f %s is not inside %s: the Dockerfile travels in the build context, give its path relative to the directory", o.dockerfile, o.dir)
		}
		o.dockerfile = df
	}
	if fi, err := os.Stat(filepath.Join(abs, filepath.FromSlash(df))); err != nil || fi.IsDir() {
		return "", fmt.Errorf("%s has no %s: give the Dockerfile with -f, relative to the directory", o.dir, df)
	}
	repo, err := name.NewRepository(o.image)
	if err != nil || strings.ContainsAny(strings.TrimPrefix(o.image, repo.RegistryStr()), ":@") {
		return "", fmt.Errorf("--image %q must be a repository without tag or digest, such as registry.example.com/team/app (the tags are spec.output.tags)", o.image)
	}
	if o.sourceRepo != "" {
		if _, err := name.NewRepository(o.sourceRepo); err != nil || strings.Contains(o.sourceRepo, "@") {
			return "", fmt.Errorf("--source-repo %q must be a repository without tag or digest", o.sourceRepo)
		}
	}
	return abs, nil
}

// upload packs dir and pushes it to the source repository by digest; it returns repo@digest.
func upload(ctx context.Context, o buildOptions, dir string, stdout io.Writer) (string, error) {
	var keep []string
	if o.dockerfile != "" {
		keep = append(keep, o.dockerfile) // BuildKit always reads the Dockerfile
	}
	img, stats, err := bundle.Image(dir, nil, keep...)
	if err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	repo := o.sourceRepo
	if repo == "" {
		repo = o.image + "-src"
	}
	var opts []name.Option
	if o.insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewDigest(repo+"@"+digest.String(), opts...)
	if err != nil {
		return "", fmt.Errorf("--source-repo %q: %w", repo, err)
	}
	start := time.Now()
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(o.keychain), remote.WithUserAgent("kiln")); err != nil {
		return "", fmt.Errorf("pushing the build context to %s: %w", repo, err)
	}
	fmt.Fprintf(stdout, "Uploaded %s (%d entries, %s) to %s in %s\n", o.dir, stats.Entries, units.Bytes(stats.Bytes), ref, time.Since(start).Round(time.Millisecond))
	return ref.String(), nil
}

// apply creates or updates the ImageBuild by server-side apply, owning only the fields kiln
// build sets.
func apply(ctx context.Context, k *kube, o buildOptions, src string) (*kilnv1.ImageBuild, error) {
	oci := map[string]any{"image": src}
	output := map[string]any{"image": o.image}
	if o.insecure {
		oci["insecure"], output["insecure"] = true, true
	}
	spec := map[string]any{"source": map[string]any{"oci": oci}, "output": output}
	if o.dockerfile != "" {
		spec["dockerfile"] = map[string]any{"path": o.dockerfile}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": kilnv1.GroupVersion.String(), "kind": "ImageBuild",
		"metadata": map[string]any{"name": o.name, "namespace": k.namespace},
		"spec":     spec,
	}}
	if err := k.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kiln"), client.ForceOwnership); err != nil {
		return nil, fmt.Errorf("applying ImageBuild %s/%s: %w", k.namespace, o.name, err)
	}
	ib := &kilnv1.ImageBuild{}
	if err := k.c.Get(ctx, client.ObjectKeyFromObject(u), ib); err != nil {
		return nil, err
	}
	return ib, nil
}

// dnsName turns a directory's name into an ImageBuild name: lower case, [a-z0-9-], at most 63.
func dnsName(s string) string {
	s = regexp.MustCompile(`[^a-z0-9-]+`).ReplaceAllString(strings.ToLower(s), "-")
	s = strings.Trim(s, "-")
	if len(s) > 63 {
		s = strings.Trim(s[:63], "-")
	}
	if s == "" {
		return "build"
	}
	return s
}
