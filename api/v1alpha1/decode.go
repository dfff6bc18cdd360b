package v1alpha1

import (
	"fmt"

	sigsjson "sigs.k8s.io/json"
)

// UnmarshalJSON decodes a spec without ever failing. A spec the Go types cannot hold (a value
// stored before the CRD refused it, such as timeout "banana") decodes as an empty spec whose
// DecodeError says why, so that one bad object ends Stalled on its own instead of breaking the
// manager's list of every ImageBuild in the cluster.
func (s *ImageBuildSpec) UnmarshalJSON(data []byte) error {
	type plain ImageBuildSpec // the same fields, without this method
	var p plain
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(data, &p); err != nil {
		*s = ImageBuildSpec{DecodeError: fmt.Sprintf("spec cannot be decoded: %v", err)}
		return nil
	}
	*s = ImageBuildSpec(p)
	return nil
}

// UnmarshalJSON decodes a status without ever failing, for the same reason as the spec's: a
// status value the Go types cannot hold (written by anyone allowed to patch the status
// subresource, such as a time the schema's date-time format lets through but Go's parser does
// not) decodes as an empty status whose DecodeError says why. The manager then replaces the
// whole status, which removes the value.
func (s *ImageBuildStatus) UnmarshalJSON(data []byte) error {
	type plain ImageBuildStatus // the same fields, without this method
	var p plain
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(data, &p); err != nil {
		*s = ImageBuildStatus{ObservedGeneration: -1, DecodeError: fmt.Sprintf("status cannot be decoded: %v", err)}
		return nil
	}
	*s = ImageBuildStatus(p)
	return nil
}
