// Package version holds kiln's version and the images it runs by default. The BuildKit version
// is pinned once here, and equals the Go client's in go.mod and the test daemon's in the Makefile.
package version

// Version is kiln's version, set at build time with -ldflags "-X .../version.Version=v0.1.0".
var Version = "v0.1.0-dev"

// BuildKitVersion is the BuildKit release kiln's client, its tests and its default image share.
const BuildKitVersion = "v0.33.0"

// DefaultBuildKitImage is the rootless BuildKit image build pods run by default.
const DefaultBuildKitImage = "docker.io/moby/buildkit:" + BuildKitVersion + "-rootless"

// DefaultBuildKitRootfulImage is the rootful BuildKit image that build pods of the userns
// security profile run as root of the pod's own user namespace.
const DefaultBuildKitRootfulImage = "docker.io/moby/buildkit:" + BuildKitVersion

// DefaultRunnerImage is kiln's own image at this version.
func DefaultRunnerImage() string { return "ghcr.io/kiln-dev/kiln:" + Version }
