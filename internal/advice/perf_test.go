package advice

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLargeDockerfile guards against superlinear blow-ups on long Dockerfiles: a chain of 1000
// stages and 3000 steps that create and delete files (once 2 minutes, before chain() stopped
// copying on every stage).
func TestLargeDockerfile(t *testing.T) {
	var b strings.Builder
	b.WriteString("FROM node:20 AS s0\nCOPY . .\n")
	for i := 1; i < 1000; i++ {
		fmt.Fprintf(&b, "FROM s%d AS s%d\nRUN npm ci && rm -rf /x%d/* && curl -o /x%d/y https://e/x && apk add p%d\nCOPY --from=s%d /a /a%d\n", i-1, i, i-1, i, i, i-1, i)
	}
	start := time.Now()
	got := Analyze(Input{Dockerfile: []byte(b.String())})
	took := time.Since(start)
	t.Logf("%d bytes, %d findings in %v", b.Len(), len(got), took)
	if took > 15*time.Second {
		t.Errorf("Analyze took %v on a %d-byte Dockerfile", took, b.Len())
	}
	if len(findings(got, "files-deleted-later")) != 998 {
		t.Errorf("%d files-deleted-later findings", len(findings(got, "files-deleted-later")))
	}
}
