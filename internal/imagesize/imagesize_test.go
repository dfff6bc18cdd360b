package imagesize

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestAdviseImage (issue 15): `kiln advise --image` sizes a built image in a registry by
// package: the busybox test image is the busybox package, which the table and the JSON name,
// with what no package owns. A reference that cannot be read is exit code 2.
func TestAdviseImage(t *testing.T) {
	reg := testenv.StartRegistry(t)
	ref := testenv.BusyboxImage(t, reg)
	var out, errOut bytes.Buffer
	if code := Main([]string{"--image", ref, "--insecure"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	text := out.String()
	if !strings.Contains(text, "linux/amd64") || !strings.Contains(text, "busybox 1.35.0") || !strings.Contains(text, "(in no package)") {
		t.Errorf("the report does not size the image by package:\n%s", text)
	}
	out.Reset()
	if code := Main([]string{"--image", ref, "--insecure", "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep ImageReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Packages) != 1 || !strings.HasPrefix(rep.Packages[0].Name, "busybox") || rep.Packages[0].Bytes == 0 || rep.Packages[0].Bytes+rep.UnpackagedBytes > rep.UncompressedBytes {
		t.Errorf("report %+v", rep)
	}
	errOut.Reset()
	if code := Main([]string{"--image", reg.Addr + "/no/such:image", "--insecure"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "reading") {
		t.Errorf("a missing image: exit %d, %s", code, errOut.String())
	}
}
