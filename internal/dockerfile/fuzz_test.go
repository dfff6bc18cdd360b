package dockerfile

import (
	"errors"
	"testing"
)

// FuzzParse feeds Parse odd Dockerfiles and Attribute odd history entries: Parse recovers from
// the parser's panics, so a recovered one fails here, and every entry gets one origin.
func FuzzParse(f *testing.F) {
	for _, df := range []string{
		"FROM alpine\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\n",
		"ARG X=${Y:-z}\nFROM $X AS a\nFROM a\nWORKDIR $HOME/app\nCOPY --from=0 <<EOF /etc/x\nhi\nEOF\n",
		"FROM scratch\nSHELL [\"pwsh\", \"-c\"]\nRUN --mount=type=secret,id=$ID --mount=type=cache,target=/c make\n",
		"FROM a AS b\nFROM b AS a\nFROM a\n",
	} {
		f.Add(df, "RUN |2 A=b c B= /bin/sh -c make # buildkit")
	}
	f.Fuzz(func(t *testing.T, df, entry string) {
		file, err := Parse([]byte(df), "a", map[string]string{"A": "b c"})
		var pe *ParseError
		if errors.As(err, &pe) && pe.Panic != nil {
			t.Fatalf("the parser panicked: %v", pe.Panic)
		}
		if err != nil {
			return
		}
		_, _, _ = file.Secrets(), file.Built(), file.LayerSteps(file.Target)
		if got := Attribute(file, file.Target, nil, []Layer{{CreatedBy: entry}, {}}); len(got) != 2 {
			t.Fatalf("%d origins for 2 layers", len(got))
		}
	})
}
