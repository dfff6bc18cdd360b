// Package v1alpha1 holds the kiln.dev/v1alpha1 API: the ImageBuild kind.
//
// +kubebuilder:object:generate=true
// +groupName=kiln.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of kiln's objects.
	GroupVersion = schema.GroupVersion{Group: "kiln.dev", Version: "v1alpha1"}

	// SchemeBuilder registers kiln's types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds kiln's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
