package dockerfile

import (
	"regexp"
	"strconv"
	"strings"
)

// History is a layer's history entry ("created by"), as BuildKit's Dockerfile frontend writes it
// (dockerfile2llb: commitToHistory, runCommandString, dispatchCopy):
//
//	RUN /bin/sh -c make all # buildkit                           shell form, and RUN --mount=…: flags are not written
//	RUN make all # buildkit                                      exec form, RUN ["make", "all"]
//	RUN |2 GOOS=linux TOKEN=abc /bin/sh -c make # buildkit       ARGs in scope: how many, then NAME=value each
//	RUN /bin/sh -c /dev/pipes/EOF # buildkit                     RUN <<EOF whose text starts with #!
//	RUN /bin/sh -c echo one\necho two\n # buildkit                RUN <<EOF otherwise: the text itself
//	RUN /bin/sh -c <<EOF bash\necho one\nEOF # buildkit           RUN <<EOF bash (RUN bash <<EOF: "bash <<EOF\n…")
//	COPY --chown=1000 /out/app /app # buildkit                   COPY and ADD, sources expanded
//	COPY <<EOF /etc/motd # buildkit                              COPY of a heredoc
//	WORKDIR /src                                                 the absolute directory, expanded
//
// The ARG prefix lists every ARG declared in the stage (and the stages it starts FROM), with the
// value the build gave, its default, or "" when it has neither; an ENV of the same name replaces
// the value. ENV alone is never listed. Values are written raw, spaces included, so the prefix is
// cut with the values the build knows, then by shape (see stripArgs).
type History struct {
	Op   string   // first word: RUN, COPY, ADD, WORKDIR… ("" for an empty entry)
	Args []string // a RUN's ARGs in scope, by name: their values are dropped
	Body string   // after Op and ARGs, without the " # buildkit" marker
	raw  string   // after Op, ARGs included: for matching only, never shown
}

const buildkitMarker = " # buildkit"

// ParseHistory splits a history entry; known maps ARG names to the values the build may have
// used. Entries of images made by Docker's classic builder ("/bin/sh -c #(nop) ADD …", and
// "|1 A=b /bin/sh -c make" for a RUN with ARGs) are split too, the latter as a RUN.
func ParseHistory(s string, known map[string]string) History {
	s = strings.TrimLeft(strings.TrimSuffix(s, buildkitMarker), " ")
	if strings.HasPrefix(s, "|") {
		s = "RUN " + s
	}
	op, body, _ := strings.Cut(s, " ")
	h := History{Op: op, Body: body, raw: body}
	if h.Op == "RUN" && strings.HasPrefix(body, "|") {
		h.Args, h.Body = stripArgs(body, known)
	}
	return h
}

var argName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// stripArgs cuts BuildKit's "|N NAME=value …" prefix from a RUN's history entry. A value the build
// knows is cut exactly. Another value ends at the first space, except that a value followed by
// more pairs extends to the next " NAME=", and the last one, when the shell follows, to the first
// " /bin/sh -c ". When in doubt it cuts too much rather than too little: a command shown short is
// better than a value shown at all. An entry that does not have the prefix's shape loses its whole
// body.
func stripArgs(s string, known map[string]string) ([]string, string) {
	countStr, rest, ok := strings.Cut(s[1:], " ")
	n, err := strconv.Atoi(countStr)
	if !ok || err != nil || n < 1 {
		return nil, ""
	}
	var names []string
	for i := 0; i < n || argName.MatchString(rest); i++ {
		m := argName.FindString(rest)
		if m == "" {
			return names, ""
		}
		name := m[:len(m)-1]
		names = append(names, name)
		rest = rest[len(m):]
		if v, ok := known[name]; ok && strings.HasPrefix(rest, v) && (len(rest) == len(v) || rest[len(v)] == ' ') {
			rest = strings.TrimPrefix(rest[len(v):], " ")
			continue
		}
		end, ok := valueEnd(rest, i < n-1)
		if !ok {
			return names, ""
		}
		if end < 0 {
			rest = ""
			continue
		}
		rest = rest[end+1:]
	}
	return names, rest
}

// valueEnd finds the space that ends an unknown value at the start of rest: the first one; for
// a value followed by more pairs (more), the first one before a "NAME=" (not ok when there is
// none); for the last value, the one before " /bin/sh -c " when the shell follows. -1 when the
// value runs to the end.
func valueEnd(rest string, more bool) (int, bool) {
	end := strings.IndexByte(rest, ' ')
	switch {
	case end < 0:
		return -1, true
	case more:
		for !argName.MatchString(rest[end+1:]) {
			next := strings.IndexByte(rest[end+1:], ' ')
			if next < 0 {
				return -1, false
			}
			end += 1 + next
		}
	default:
		if sh := strings.Index(rest, " /bin/sh -c "); sh >= 0 {
			end = sh
		}
	}
	return end, true
}

// String shortens the entry for humans: its instruction and command, without the shell, the
// ARG prefix or BuildKit's marker.
func (h History) String() string {
	if h.Op == "" {
		return ""
	}
	return strings.Join(strings.Fields(strings.Replace(h.Op+" "+h.Body, "/bin/sh -c ", "", 1)), " ")
}

// normalize makes a history entry and a parsed instruction comparable: no flags, no shell
// prefix, no BuildKit marker, single spaces, no quotes.
func normalize(s string) string {
	s = ParseHistory(s, nil).String()
	var words []string
	for _, w := range strings.Fields(s) {
		if strings.HasPrefix(w, "--") {
			continue
		}
		words = append(words, strings.Trim(w, `"'[],`))
	}
	return strings.Join(words, " ")
}
