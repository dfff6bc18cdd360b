package manager

import "testing"

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
