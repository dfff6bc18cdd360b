package controllers

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// Policy is what the manager's flags allow every ImageBuild to ask for. It is checked before kiln
// creates a cache claim or a build pod: the clamps for what admission cannot express, and for
// clusters without ValidatingAdmissionPolicy (the chart's policies.* values). The zero Policy
// allows everything but a security profile other than rootless.
type Policy struct {
	// MaxCacheSize is the largest cache claim kiln creates (--max-cache-size); nil means no
	// maximum. A shared claim (spec.cache.claimName, which cannot have a spec.cache.size) is the
	// tenant's own, made within its quota, and is not checked.
	MaxCacheSize *resource.Quantity
	// AllowedPriorityClasses are the priority classes build pods may use
	// (--allowed-priority-classes); empty means any.
	AllowedPriorityClasses []string
	// BuildServiceAccount is the only service account an ImageBuild may name in
	// spec.serviceAccountName (--build-service-account); empty means any.
	BuildServiceAccount string
	// SecurityProfile is the build pod shape of an ImageBuild that names none in
	// spec.securityProfile (--build-pod-security-profile); empty means rootless.
	SecurityProfile kilnv1.SecurityProfile
	// AllowedSecurityProfiles are the profiles an ImageBuild may name besides SecurityProfile
	// (--allowed-security-profiles); empty means only SecurityProfile.
	AllowedSecurityProfiles []kilnv1.SecurityProfile
}

// securityProfile is the profile ib's build pods use: its own, or the manager's default.
func (p Policy) securityProfile(ib *kilnv1.ImageBuild) kilnv1.SecurityProfile {
	switch {
	case ib.Spec.SecurityProfile != "":
		return ib.Spec.SecurityProfile
	case p.SecurityProfile != "":
		return p.SecurityProfile
	}
	return kilnv1.SecurityProfileRootless
}

// violations says what in ib's spec the policy forbids, each naming the field and the flag.
func (p Policy) violations(ib *kilnv1.ImageBuild) []string {
	var v []string
	if size := ib.Spec.Cache.Size; p.MaxCacheSize != nil && size != nil && size.Cmp(*p.MaxCacheSize) > 0 {
		v = append(v, fmt.Sprintf("spec.cache.size %s is larger than the manager allows for a cache claim (--max-cache-size=%s): lower spec.cache.size",
			size.String(), p.MaxCacheSize.String()))
	}
	if name := ib.Spec.PriorityClassName; name != "" && len(p.AllowedPriorityClasses) > 0 && !slices.Contains(p.AllowedPriorityClasses, name) {
		v = append(v, fmt.Sprintf("spec.priorityClassName %q is not one the manager allows (--allowed-priority-classes=%s): use one of those, or remove the field",
			name, strings.Join(p.AllowedPriorityClasses, ",")))
	}
	if name := ib.Spec.ServiceAccountName; name != "" && p.BuildServiceAccount != "" && name != p.BuildServiceAccount {
		v = append(v, fmt.Sprintf("spec.serviceAccountName %q is not the build service account the manager allows (--build-service-account=%s): set it to %s, or remove the field",
			name, p.BuildServiceAccount, p.BuildServiceAccount))
	}
	if prof := ib.Spec.SecurityProfile; prof != "" && prof != p.securityProfile(&kilnv1.ImageBuild{}) && !slices.Contains(p.AllowedSecurityProfiles, prof) {
		allowed := []string{string(p.securityProfile(&kilnv1.ImageBuild{}))}
		for _, a := range p.AllowedSecurityProfiles {
			allowed = append(allowed, string(a))
		}
		v = append(v, fmt.Sprintf("spec.securityProfile %q is not one the manager allows (--build-pod-security-profile and --allowed-security-profiles allow %s): use one of those, or remove the field",
			prof, strings.Join(allowed, ", ")))
	}
	return v
}

// checkPolicy stalls an ImageBuild whose spec breaks the manager's Policy, before a cache claim
// or build pod is made for it; it comes after reconcileSource, which may change the build key.
// A suspended ImageBuild starts nothing and is not checked. Neither is one whose build of the
// current key is under way (started before the flags changed): that build is followed to its
// end and recorded, and the reconcile after it stalls. An ImageBuild that was built before the
// flags changed is stalled too: it could not be built again as it is.
func (r *ImageBuildReconciler) checkPolicy(ib *kilnv1.ImageBuild, st *buildState) {
	if lb := ib.Status.LastBuild; ib.Spec.Suspend || (answers(lb, keyOf(ib)) && lb.CompletionTime == nil) {
		return
	}
	if v := r.Policy.violations(ib); len(v) > 0 {
		st.stall(kilnv1.ReasonPolicyViolation, "the manager's policy refuses this ImageBuild: "+strings.Join(v, "; "))
	}
}
