package contract

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// A runner one minor version older than the manager still reports its result. The 1.0 results in
// testdata are what kiln v0.1.0's runner wrote (its Result.Encode, pretty-printed): no "v", the
// budget's verdict, summary, headroom and messages as text, checks ordered by headroom. Decode
// takes them, ignoring what 1.1 no longer sends; controllers' TestOlderRunnerResultReachesStatus
// maps them into a status.
func TestDecodeOlderMinorResult(t *testing.T) {
	res := decodeFile(t, "result-1.0-pushed.json")
	if res.Version != "" || res.FailureClass != "" || !res.Pushed || res.Digest == "" || res.Image != "registry.example.com/team/app@"+res.Digest {
		t.Errorf("identity: %+v", res)
	}
	if len(res.Platforms) != 2 || res.Platforms[0].CompressedBytes != 64_172_851 || res.Platforms[0].LargestLayers[0] != (Layer{Index: 4, CompressedBytes: 39_845_888, CreatedBy: "RUN apt-get install -y build-essential", Line: 12}) {
		t.Errorf("platforms: %+v", res.Platforms)
	}
	if res.Budget == nil || res.Budget.Enforcement != kilnv1.EnforcementWarn || len(res.Budget.Checks) != 4 || !res.Budget.Over() ||
		res.Budget.Checks[1] != (Check{Limit: "maxLayers", Platform: "linux/amd64", LimitValue: 4, Actual: 6}) {
		t.Errorf("budget: %+v", res.Budget)
	}
	if res.CachedSteps != 5 || res.TotalSteps != 9 || len(res.Advice) != 1 || res.Advice[0].SavingBytes != 8<<20 || res.AttestationBytes != 12_345 {
		t.Errorf("steps, advice, attestations: %+v", res)
	}
	failed := decodeFile(t, "result-1.0-overbudget.json")
	if failed.FailureClass != kilnv1.FailureOverBudget || !failed.Budget.Over() || failed.Pushed {
		t.Errorf("over budget: %+v", failed)
	}
}

// A runner of a newer minor version sends fields this manager does not know; they are ignored.
func TestDecodeNewerMinorResult(t *testing.T) {
	res, err := Decode(`{"v":"1.9","failure":"BuildFailed","message":"RUN make: exit code 2","sbom":{"packages":12},"budget":{"enforcement":"Enforce","checks":[{"limit":"maxImageSize","limitValue":1,"actual":0,"unit":"bytes"}]}}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != "1.9" || res.FailureClass != kilnv1.FailureBuildFailed || res.Message != "RUN make: exit code 2" || len(res.Budget.Checks) != 1 || res.Budget.Over() {
		t.Errorf("%+v", res)
	}
}

// A result or request of another major version is refused with an error that names both versions.
func TestOtherMajorVersionIsRefused(t *testing.T) {
	for _, tc := range []struct{ doc, got string }{
		{`{"v":"2.0","failure":{"class":"BuildFailed"}}`, "2.0"},
		{`{"v":"0.3"}`, "0.3"},
		{`{"v":"one"}`, `"one"`},
		{`{"v":""}`, `""`},
	} {
		_, err := Decode(tc.doc)
		var verr *VersionError
		if !errors.As(err, &verr) || !strings.Contains(err.Error(), "runner's result is in contract version "+tc.got+", which this manager (contract "+Version+") cannot read") {
			t.Errorf("Decode(%s): %v", tc.doc, err)
		}
		_, err = DecodeRequest([]byte(tc.doc))
		if !errors.As(err, &verr) || !strings.Contains(err.Error(), "build request is in contract version "+tc.got+", which this runner (contract "+Version+") cannot read") {
			t.Errorf("DecodeRequest(%s): %v", tc.doc, err)
		}
	}
	if _, err := Decode("Error: runner panicked\ngoroutine 1"); err == nil || errors.As(err, new(*VersionError)) {
		t.Errorf("a log tail is not JSON, not a version: %v", err)
	}
}

// The runner takes a request of its major version whatever fields it carries that it does not
// know, at the top and inside the spec, and one without a version (a 1.0 manager's).
func TestDecodeRequestToleratesUnknownFields(t *testing.T) {
	req, err := DecodeRequest([]byte(`{"v":"1.4","namespace":"team","name":"app","build":3,"priority":"high",` +
		`"spec":{"source":{"git":{"url":"https://example.com/app.git","depth":1}},"output":{"image":"registry.example.com/app","sign":{"key":"cosign"}},` +
		`"timeout":"banana","budget":{"maxImageSize":1048576,"maxSBOMSize":12}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.Name != "app" || req.Build != 3 || req.Spec.Source.Git.URL != "https://example.com/app.git" || req.Spec.Output.Image != "registry.example.com/app" ||
		*req.Spec.Budget.MaxImageSize != 1<<20 || req.Spec.Budget.MaxLayerSize != nil {
		t.Errorf("%+v", req)
	}
	old, err := DecodeRequest([]byte(`{"namespace":"team","name":"app","build":1,"spec":{"output":{"image":"r/app"},"budget":{"maxImageSize":"50Mi","maxGrowth":"0"}}}`))
	if err != nil || *old.Spec.Budget.MaxImageSize != 50<<20 || *old.Spec.Budget.MaxGrowth != 0 {
		t.Errorf("a 1.0 request: %+v, %v", old.Spec.Budget, err)
	}
	for doc, want := range map[string]string{
		`{"v":"1.2","name":"app","spec":{"budget":{"maxLayers":"many"}}}`:      "does not fit this runner's types",
		`{"v":"1.2","name":"app","spec":{"budget":{"maxImageSize":"banana"}}}`: `spec.budget.maxImageSize: "banana" is neither a number of bytes nor a quantity`,
		`{"v":"1.2","name":"app","spec":{"budget":{"maxGrowth":1.5}}}`:         "spec.budget.maxGrowth: not a number of bytes: 1.5",
		`{"v":"1.2","name":"app","spec":{"output":{"tags":"v1"}}}`:             "does not fit this runner's types",
		`{"v":"1.2","name":"app","spec":`:                                      "not valid JSON",
	} {
		if _, err := DecodeRequest([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeRequest(%s): %v, want %q", doc, err, want)
		}
	}
}

func TestWrittenDocumentsCarryTheVersion(t *testing.T) {
	b, err := Result{Digest: "sha256:00"}.Encode()
	if err != nil || !strings.HasPrefix(string(b), `{"v":"`+Version+`",`) {
		t.Errorf("result %s: %v", b, err)
	}
	files, err := RequestFiles(Request{Namespace: "team", Name: "app", Spec: BuildSpec{Dockerfile: Dockerfile{Inline: "FROM scratch"}}})
	if err != nil || !strings.HasPrefix(files[RequestFile], `{"v":"`+Version+`",`) {
		t.Errorf("request %q: %v", files[RequestFile], err)
	}
	if major, ok := majorOf(Version); !ok || major != Major {
		t.Errorf("Version %s is not of major version %d", Version, Major)
	}
}

// The CRD's enum of status.lastBuild.failureReason and kilnv1.FailureClasses list the same classes:
// the manager refuses a class it does not know before the API server would.
func TestFailureClassEnum(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "kiln.dev_imagebuilds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties map[string]struct {
							Properties map[string]struct {
								Properties map[string]struct {
									Enum []kilnv1.FailureClass `json:"enum"`
								} `json:"properties"`
							} `json:"properties"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	enum := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["status"].Properties["lastBuild"].Properties["failureReason"].Enum
	if !reflect.DeepEqual(enum, kilnv1.FailureClasses) {
		t.Errorf("CRD enum %v\nFailureClasses %v", enum, kilnv1.FailureClasses)
	}
}

func decodeFile(t *testing.T, name string) Result {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Decode(string(data))
	if err != nil {
		t.Fatal(err)
	}
	return res
}
