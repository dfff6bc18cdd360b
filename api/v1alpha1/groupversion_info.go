// Package v1alpha1 holds the kiln.dev/v1alpha1 API: the ImageBuild kind.
//
// +kubebuilder:object:generate=true
// +groupName=kiln.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of kiln's objects.
	GroupVersion = schema.GroupVersion{Group: "kiln.dev", Version: "v1alpha1"}

	// SchemeBuilder registers kiln's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds kiln's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers the ImageBuild kind and its list under GroupVersion.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ImageBuild{}, &ImageBuildList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
