package dockerfile

import (
	"strings"
	"testing"
)

// The history entries below are the forms BuildKit v0.33's dockerfile2llb writes (see History);
// internal/runner's integration test TestAttributionWithBuildArgs checks the same forms against a real buildkitd.
func TestParseHistory(t *testing.T) {
	known := map[string]string{"NPM_TOKEN": "tok-123", "FLAGS": "-s -w"}
	for _, tc := range []struct {
		entry string
		op    string
		args  []string
		body  string
		human string
	}{
		{"RUN /bin/sh -c make all # buildkit", "RUN", nil, "/bin/sh -c make all", "RUN make all"},
		{"RUN make all # buildkit", "RUN", nil, "make all", "RUN make all"},
		{"RUN |1 NPM_TOKEN=tok-123 /bin/sh -c echo building > /built.txt # buildkit", "RUN", []string{"NPM_TOKEN"},
			"/bin/sh -c echo building > /built.txt", "RUN echo building > /built.txt"},
		// A value the build gave, spaces and all.
		{"RUN |2 FLAGS=-s -w NPM_TOKEN=tok-123 /bin/sh -c go build # buildkit", "RUN", []string{"FLAGS", "NPM_TOKEN"},
			"/bin/sh -c go build", "RUN go build"},
		// Values nobody told us: up to the next pair, and the last one up to the shell.
		{"RUN |3 A=one two B= C=x y z /bin/sh -c ls # buildkit", "RUN", []string{"A", "B", "C"}, "/bin/sh -c ls", "RUN ls"},
		// Exec form with an unknown value: the value ends at its first space.
		{"RUN |1 GOOS=linux go build . # buildkit", "RUN", []string{"GOOS"}, "go build .", "RUN go build ."},
		// An empty value (ARG without default nor build arg).
		{"RUN |1 NPM_TOKEN= /bin/sh -c npm ci # buildkit", "RUN", []string{"NPM_TOKEN"}, "/bin/sh -c npm ci", "RUN npm ci"},
		// The value the build gave was overridden by an ENV of the same name: cut by shape.
		{"RUN |1 NPM_TOKEN=from-env /bin/sh -c npm ci # buildkit", "RUN", []string{"NPM_TOKEN"}, "/bin/sh -c npm ci", "RUN npm ci"},
		// A value holding " NAME=": the prefix is cut up to the shell all the same.
		{"RUN |1 A=x B=y /bin/sh -c ls # buildkit", "RUN", []string{"A"}, "/bin/sh -c ls", "RUN ls"},
		{"RUN |1 A=x B=y ls # buildkit", "RUN", []string{"A", "B"}, "ls", "RUN ls"},
		// Heredocs: a #! script runs from /dev/pipes, other texts run as they are.
		{"RUN |1 NPM_TOKEN=tok-123 /bin/sh -c /dev/pipes/EOF # buildkit", "RUN", []string{"NPM_TOKEN"}, "/bin/sh -c /dev/pipes/EOF", "RUN /dev/pipes/EOF"},
		{"RUN /bin/sh -c echo one\necho two\n # buildkit", "RUN", nil, "/bin/sh -c echo one\necho two\n", "RUN echo one echo two"},
		{"RUN |1 NPM_TOKEN=tok-123 /bin/sh -c <<EOF bash\nset -e\necho hi\nEOF # buildkit", "RUN", []string{"NPM_TOKEN"},
			"/bin/sh -c <<EOF bash\nset -e\necho hi\nEOF", "RUN <<EOF bash set -e echo hi EOF"},
		// Another SHELL.
		{"RUN |1 NPM_TOKEN=tok-123 /bin/bash -o pipefail -c curl x | sh # buildkit", "RUN", []string{"NPM_TOKEN"},
			"/bin/bash -o pipefail -c curl x | sh", "RUN /bin/bash -o pipefail -c curl x | sh"},
		// Malformed prefixes lose their whole body rather than show a value.
		{"RUN |x A=b /bin/sh -c ls # buildkit", "RUN", nil, "", "RUN"},
		{"RUN |2 A=b /bin/sh -c ls # buildkit", "RUN", []string{"A"}, "", "RUN"},
		{"COPY --chown=1000 /out/app /app # buildkit", "COPY", nil, "--chown=1000 /out/app /app", "COPY --chown=1000 /out/app /app"},
		{"COPY <<EOF /etc/motd # buildkit", "COPY", nil, "<<EOF /etc/motd", "COPY <<EOF /etc/motd"},
		{"WORKDIR /src", "WORKDIR", nil, "/src", "WORKDIR /src"},
		// Docker's classic builder.
		{"/bin/sh -c #(nop) ADD file:abc in / ", "/bin/sh", nil, "-c #(nop) ADD file:abc in / ", "#(nop) ADD file:abc in /"},
		{"|1 VERSION=1.2.3 /bin/sh -c apk add curl", "RUN", []string{"VERSION"}, "/bin/sh -c apk add curl", "RUN apk add curl"},
		{"", "", nil, "", ""},
	} {
		h := ParseHistory(tc.entry, known)
		if h.Op != tc.op || h.Body != tc.body || strings.Join(h.Args, ",") != strings.Join(tc.args, ",") || h.String() != tc.human {
			t.Errorf("ParseHistory(%q)\n got op %q args %q body %q human %q\nwant op %q args %q body %q human %q",
				tc.entry, h.Op, h.Args, h.Body, h.String(), tc.op, tc.args, tc.body, tc.human)
		}
	}
}
