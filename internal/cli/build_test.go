package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
	"github.com/kiln-dev/kiln/internal/bundle"
	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestBuildUploadsAndApplies (issue 17): kiln build against a real API server (envtest) and a
// real registry: the context is uploaded without what .dockerignore excludes, the ImageBuild is
// applied with the bundle by digest; running it again with the same files uploads the same
// bundle and starts no build (same generation), fields set by others stay, a changed file makes
// a new generation, and an ImageBuild the API server refuses exits 3.
func TestBuildUploadsAndApplies(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run with `make test`, which builds kube-apiserver and etcd into bin/")
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	reg := testenv.StartRegistry(t)
	ctx := context.Background()
	k, err := newKube(cfg, "team")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "Hello_App")
	write := func(name, content string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Dockerfile", "FROM busybox\nCOPY hello.txt /\n")
	write("hello.txt", "hello\n")
	write("secret.key", "do not upload\n")
	write(".dockerignore", "*.key\n")
	o := buildOptions{dir: dir, image: reg.Addr + "/team/app", insecure: true, keychain: authn.DefaultKeychain}
	run := func(o buildOptions) (int, string) {
		var out, errb bytes.Buffer
		code := build(ctx, k, o, &out, &errb)
		return code, out.String() + errb.String()
	}

	code, out := run(o)
	if code != ExitPushed {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	ib := &kilnv1.ImageBuild{}
	if err := k.c.Get(ctx, types.NamespacedName{Namespace: "team", Name: "hello-app"}, ib); err != nil {
		t.Fatalf("the ImageBuild named after the directory: %v\n%s", err, out)
	}
	src := ib.Spec.Source.OCI
	if src == nil || !strings.HasPrefix(src.Image, reg.Addr+"/team/app-src@sha256:") || ib.Spec.Output.Image != reg.Addr+"/team/app" || !ib.Spec.Output.Insecure {
		t.Fatalf("spec %+v", ib.Spec)
	}
	if !strings.Contains(out, src.Image) {
		t.Errorf("the output does not name the source %s:\n%s", src.Image, out)
	}
	// The registry has the bundle, without secret.key.
	if bundleHas(t, reg, src.Image, "secret.key") {
		t.Errorf("secret.key was uploaded although .dockerignore excludes it")
	}
	if !bundleHas(t, reg, src.Image, "hello.txt") {
		t.Errorf("hello.txt is missing from the bundle")
	}

	// Someone sets a budget with kubectl; the same files again: the same bundle, no new build.
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"budget":{"maxImageSize":"5Mi"}}}`))
	if err := k.c.Patch(ctx, ib, patch, client.FieldOwner("kubectl")); err != nil {
		t.Fatal(err)
	}
	gen := ib.Generation
	if code, out := run(o); code != ExitPushed {
		t.Fatalf("second run: exit %d:\n%s", code, out)
	}
	again := &kilnv1.ImageBuild{}
	if err := k.c.Get(ctx, client.ObjectKeyFromObject(ib), again); err != nil {
		t.Fatal(err)
	}
	if again.Spec.Source.OCI.Image != src.Image || again.Generation != gen {
		t.Errorf("the same files gave source %s (generation %d), want %s (generation %d)", again.Spec.Source.OCI.Image, again.Generation, src.Image, gen)
	}
	if again.Spec.Budget == nil || again.Spec.Budget.MaxImageSize == nil {
		t.Errorf("kiln build dropped the budget someone else set: %+v", again.Spec.Budget)
	}

	// A changed file: a new bundle, a new generation.
	write("hello.txt", "hello again\n")
	if code, out := run(o); code != ExitPushed {
		t.Fatalf("third run: exit %d:\n%s", code, out)
	}
	if err := k.c.Get(ctx, client.ObjectKeyFromObject(ib), again); err != nil {
		t.Fatal(err)
	}
	if again.Spec.Source.OCI.Image == src.Image || again.Generation != gen+1 {
		t.Errorf("a changed file gave source %s, generation %d", again.Spec.Source.OCI.Image, again.Generation)
	}

	// -f names a Dockerfile that .dockerignore excludes: it travels all the same.
	write("build/Dockerfile.prod", "FROM busybox\n")
	write(".dockerignore", "*.key\nbuild\n")
	prod := o
	prod.dockerfile = "build/Dockerfile.prod"
	if code, out := run(prod); code != ExitPushed {
		t.Fatalf("-f build/Dockerfile.prod: exit %d:\n%s", code, out)
	}
	if err := k.c.Get(ctx, client.ObjectKeyFromObject(ib), again); err != nil {
		t.Fatal(err)
	}
	if !bundleHas(t, reg, again.Spec.Source.OCI.Image, "build/Dockerfile.prod") || again.Spec.Dockerfile.Path != "build/Dockerfile.prod" {
		t.Errorf("the -f Dockerfile is not in the bundle, or not in the spec (%q)", again.Spec.Dockerfile.Path)
	}

	// Arguments that cannot build are refused before anything is pushed: exit 4.
	tags := reg.Tags(t, "team/app-src")
	for _, tc := range []struct {
		what   string
		mutate func(*buildOptions)
		want   string
	}{
		{"a name in upper case", func(o *buildOptions) { o.name = "MyApp" }, "--name"},
		{"-f outside the directory", func(o *buildOptions) { o.dockerfile = "../Dockerfile" }, "is not inside"},
		{"-f that does not exist", func(o *buildOptions) { o.dockerfile = "nope/Dockerfile" }, "has no nope/Dockerfile"},
		{"an image with a tag", func(o *buildOptions) { o.image = reg.Addr + "/team/app:v1" }, "without tag or digest"},
		{"no such directory", func(o *buildOptions) { o.dir = filepath.Join(dir, "missing") }, "is not a directory"},
	} {
		bad := o
		tc.mutate(&bad)
		if code, out := run(bad); code != ExitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d (want %d), output lacks %q:\n%s", tc.what, code, ExitUsage, tc.want, out)
		}
	}
	if after := reg.Tags(t, "team/app-src"); len(after) != len(tags) {
		t.Errorf("refused arguments pushed something: tags %v, then %v", tags, after)
	}

	// The API server refuses the ImageBuild: exit 3, with its reason (someone set an inline
	// Dockerfile, and -f sets a path too).
	inline := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"dockerfile":{"path":null,"inline":"FROM busybox\n"}}}`))
	if err := k.c.Patch(ctx, again, inline, client.FieldOwner("kubectl")); err != nil {
		t.Fatal(err)
	}
	if code, out := run(prod); code != ExitRefused || !strings.Contains(out, "not both") {
		t.Errorf("refused by the API server: exit %d (want %d):\n%s", code, ExitRefused, out)
	}
}

// bundleHas reports whether the bundle at ref holds path.
func bundleHas(t *testing.T, reg *testenv.Registry, ref, path string) bool {
	t.Helper()
	desc, err := remote.Get(reg.ParseRef(t, ref), reg.RemoteOptions(context.Background())...)
	if err != nil {
		t.Fatal(err)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := bundle.FromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = layer.Close() }()
	dir := t.TempDir()
	if _, err := bundle.Unpack(layer, dir, bundle.Limits{}); err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(filepath.Join(dir, filepath.FromSlash(path)))
	return err == nil
}
