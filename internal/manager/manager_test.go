package manager

import (
	"flag"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

func TestParseResources(t *testing.T) {
	r, err := ParseResources("requests.cpu=250m, requests.memory=512Mi,limits.memory=8Gi")
	if err != nil || r.Requests.Cpu().String() != "250m" || r.Requests.Memory().String() != "512Mi" || r.Limits.Memory().String() != "8Gi" {
		t.Errorf("parsed %+v, %v", r, err)
	}
	if r, err := ParseResources(""); err != nil || r.Requests != nil || r.Limits != nil {
		t.Errorf("empty: %+v, %v", r, err)
	}
	for _, bad := range []string{"cpu=1", "requests.cpu", "requests.=1", "limit.cpu=1", "requests.cpu=banana", "requests.memory=2Gi,limits.memory=1Gi"} {
		if _, err := ParseResources(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

// TestPolicyFlags: the clamp flags become the controller's Policy, and a value the manager could
// not apply refuses to start it, naming the flag.
func TestPolicyFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
		check   func(t *testing.T, o Options)
	}{
		{args: nil, check: func(t *testing.T, o Options) {
			p, _ := o.policy(resource.MustParse("10Gi"))
			if p.MaxCacheSize != nil || p.AllowedPriorityClasses != nil || p.BuildServiceAccount != "" || p.SecurityProfile != kilnv1.SecurityProfileRootless || p.AllowedSecurityProfiles != nil {
				t.Errorf("no flags, no clamps: %+v", p)
			}
		}},
		{args: []string{"--max-cache-size=100Gi", "--allowed-priority-classes=kiln-builds, low,", "--build-service-account=builder"}, check: func(t *testing.T, o Options) {
			p, err := o.policy(resource.MustParse("10Gi"))
			if err != nil {
				t.Fatal(err)
			}
			if p.MaxCacheSize.String() != "100Gi" || !reflect.DeepEqual(p.AllowedPriorityClasses, []string{"kiln-builds", "low"}) || p.BuildServiceAccount != "builder" {
				t.Errorf("policy %+v", p)
			}
		}},
		{args: []string{"--max-cache-size=lots"}, wantErr: "--max-cache-size"},
		{args: []string{"--max-cache-size=5Gi"}, wantErr: "--max-cache-size 5Gi is less than --default-cache-size 10Gi"},
		{args: []string{"--allowed-priority-classes=ok,Not_OK"}, wantErr: `--allowed-priority-classes: "Not_OK"`},
		{args: []string{"--build-service-account=system:admin"}, wantErr: `--build-service-account: "system:admin"`},
		{args: []string{"--build-pod-security-profile=userns", "--allowed-security-profiles=rootless"}, check: func(t *testing.T, o Options) {
			p, _ := o.policy(resource.MustParse("10Gi"))
			if p.SecurityProfile != kilnv1.SecurityProfileUserNS || !reflect.DeepEqual(p.AllowedSecurityProfiles, []kilnv1.SecurityProfile{kilnv1.SecurityProfileRootless}) {
				t.Errorf("policy %+v", p)
			}
		}},
		{args: []string{"--build-pod-security-profile=privileged"}, wantErr: `--build-pod-security-profile: "privileged" is not a security profile: use rootless or userns`},
		{args: []string{"--allowed-security-profiles=userns,root"}, wantErr: `--allowed-security-profiles: "root"`},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		var o Options
		o.BindFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := o.policy(resource.MustParse(o.DefaultCacheSize))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: error %v, want one saying %q", tc.args, err, tc.wantErr)
		case tc.check != nil:
			tc.check(t, o)
		}
	}
}

func TestCheckLocalhostProfile(t *testing.T) {
	for p, ok := range map[string]bool{"": true, "kiln/buildkitd-userns.json": true, "profile.json": true,
		"/var/lib/kubelet/seccomp/x.json": false, "../x.json": false, "kiln/../../x.json": false, "kiln//x.json": false, "..": false} {
		if err := checkLocalhostProfile(p); (err == nil) != ok {
			t.Errorf("%q: error %v, want ok=%v", p, err, ok)
		}
	}
}
