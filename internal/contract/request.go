package contract

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// The request travels as files: the manager writes them into a ConfigMap that the build pod
// mounts at RequestDir, never into the runner's arguments (the kernel refuses one argument of
// more than 128 KiB, and JSON can make a 64 KiB Dockerfile six times longer). Large free-form
// values go in files of their own, unescaped, so that the largest spec the API server accepts
// (a 64 Ki-character inline Dockerfile, 32 build args of 4 Ki characters) stays far below a
// ConfigMap's 1 MiB.
const (
	// RequestDir is where the request ConfigMap is mounted in the runner container.
	RequestDir = "/var/kiln/request"
	// RequestFile holds the Request as JSON, without the inline Dockerfile and build-arg values.
	RequestFile = "request.json"
	// InlineDockerfileFile holds spec.dockerfile.inline, when it is set.
	InlineDockerfileFile = "Dockerfile"
	// BuildArgFilePrefix + NAME holds the value of build arg NAME.
	BuildArgFilePrefix = "buildarg."
)

// Request is what the manager asks the runner to do. It travels as files (RequestFiles,
// ReadRequestDir): it holds references to Secrets, never their values.
type Request struct {
	// Version is the contract version the manager wrote; RequestFiles sets it. Absent in 1.0.
	Version string `json:"v,omitempty"`
	// Namespace and Name of the ImageBuild.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Build is the build number (the pod is <name>-build-<n>).
	Build int64 `json:"build"`
	// Spec is the ImageBuild's spec at the generation being built.
	Spec kilnv1.ImageBuildSpec `json:"spec"`
	// ResetCache empties BuildKit's cache before this build (kiln.dev/reset-cache-requested-at).
	ResetCache bool `json:"resetCache,omitempty"`
	// InlineDockerfile says that spec.dockerfile.inline is in InlineDockerfileFile, beside the
	// request; only RequestFiles and ReadRequestDir use it.
	InlineDockerfile bool `json:"inlineDockerfile,omitempty"`
}

// RequestFiles splits req into the files of its request ConfigMap (file name to content), at
// this contract Version. The inline Dockerfile and every build-arg value go in files of their
// own; ReadRequestDir joins them again.
func RequestFiles(req Request) (map[string]string, error) {
	req.Version = Version
	files := map[string]string{}
	spec := req.Spec.DeepCopy()
	if spec.Dockerfile.Inline != "" {
		files[InlineDockerfileFile] = spec.Dockerfile.Inline
		spec.Dockerfile.Inline = ""
		req.InlineDockerfile = true
	}
	for i, a := range spec.Dockerfile.BuildArgs {
		files[BuildArgFilePrefix+a.Name] = a.Value
		spec.Dockerfile.BuildArgs[i].Value = ""
	}
	req.Spec = *spec
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return nil, fmt.Errorf("encoding the runner's request: %w", err)
	}
	files[RequestFile] = b.String()
	return files, nil
}

// ReadRequestDir reads a request written by RequestFiles from the directory it is mounted at,
// as DecodeRequest does.
func ReadRequestDir(dir string) (Request, error) {
	var req Request
	data, err := os.ReadFile(filepath.Join(dir, RequestFile))
	if err != nil {
		return req, fmt.Errorf("reading the build request: %w", err)
	}
	if req, err = DecodeRequest(data); err != nil {
		return req, err
	}
	if req.InlineDockerfile {
		dt, err := os.ReadFile(filepath.Join(dir, InlineDockerfileFile))
		if err != nil {
			return req, fmt.Errorf("reading the build request's inline Dockerfile: %w", err)
		}
		req.Spec.Dockerfile.Inline, req.InlineDockerfile = string(dt), false
	}
	for i, a := range req.Spec.Dockerfile.BuildArgs {
		v, err := os.ReadFile(filepath.Join(dir, BuildArgFilePrefix+a.Name))
		if err != nil {
			return req, fmt.Errorf("reading the value of build arg %s: %w", a.Name, err)
		}
		req.Spec.Dockerfile.BuildArgs[i].Value = string(v)
	}
	return req, nil
}

// DecodeRequest parses a Request from JSON of any minor version of this major version: fields it
// does not know are ignored (see version.go). A request of another major version is a
// *VersionError.
func DecodeRequest(data []byte) (Request, error) {
	if err := checkVersion(documentRequest, data); err != nil {
		return Request{}, err
	}
	var req Request
	if err := json.Unmarshal(data, &req); err != nil {
		return req, fmt.Errorf("the build request is not valid JSON: %w", err)
	}
	if req.Spec.DecodeError != "" {
		return req, fmt.Errorf("the build request's spec does not fit this runner's types (%s)", req.Spec.DecodeError)
	}
	return req, nil
}

// ConfigMapDigest is the content digest of a ConfigMap used as a build context,
// "sha256:<64 hex digits>": SHA-256 over the files in name order, each as its name, a NUL byte,
// its length in decimal, a NUL byte and its bytes. The manager computes it from the ConfigMap's
// data and binaryData, the runner from the files the kubelet mounted, so the two agree exactly
// when they saw the same content.
func ConfigMapDigest(files map[string][]byte) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(files[n]))
		h.Write(files[n])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
