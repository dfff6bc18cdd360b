package testenv_test

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// The program variants (used by hack/local-cluster) make exactly the images the tests use.
func TestMakeImagesEqualTestImages(t *testing.T) {
	for _, c := range []struct {
		name    string
		program func() (v1.Image, error)
		test    func(testing.TB) v1.Image
	}{
		{"busybox", testenv.MakeBusyboxImage, testenv.NewBusyboxImage},
		{"golang", func() (v1.Image, error) { return testenv.MakeGoImage(t.Logf) }, testenv.NewGoImage},
	} {
		t.Run(c.name, func(t *testing.T) {
			img, err := c.program()
			if err != nil {
				t.Fatalf("program variant: %v", err)
			}
			got, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			want, err := c.test(t).Digest()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("digest %s, the test variant's is %s", got, want)
			}
		})
	}
}
