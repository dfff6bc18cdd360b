package dockerfile

import (
	"bytes"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// platformArgs are the build args BuildKit defines in the global scope (dockerfile2llb's
// defaultArgs); their values depend on the platforms of the build.
var platformArgs = []string{"BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
	"TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT"}

// globalArgs is the global scope FROM lines are expanded in, as dockerfile2llb builds it
// (defaultArgs, then buildMetaArgs): the platform args, TARGETSTAGE, then each ARG before the
// first FROM — its --build-arg value, else its default expanded in the scope so far; an ARG
// with neither is unset. The platform args are unknown here: each stands for itself
// ("${TARGETARCH}"), so a FROM that uses one stays unexpanded.
func globalArgs(lex *shell.Lex, metaArgs []instructions.ArgCommand, buildArgs map[string]string, target string) map[string]string {
	g := map[string]string{}
	for _, k := range platformArgs {
		g[k] = "${" + k + "}"
		if v, ok := buildArgs[k]; ok {
			g[k] = v
		}
	}
	if target == "" {
		target = "default"
	}
	g["TARGETSTAGE"] = target
	if v, ok := buildArgs["TARGETSTAGE"]; ok {
		g["TARGETSTAGE"] = v
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if v, ok := buildArgs[kv.Key]; ok {
				g[kv.Key] = v
			} else if kv.Value != nil {
				g[kv.Key] = expandWord(lex, *kv.Value, g, false)
			}
		}
	}
	return g
}

// setArgs gives each ARG of a stage its value as dispatchArg does — the --build-arg value,
// else its default expanded in the stage's environment, else the global ARG of the same name —
// writes it into the ArgCommand and into env.
func setArgs(a *instructions.ArgCommand, lex *shell.Lex, env, global, buildArgs map[string]string) {
	for i, kv := range a.Args {
		switch v, given := buildArgs[kv.Key]; {
		case given:
			kv.Value = &v
		case kv.Value != nil:
			x := expandWord(lex, *kv.Value, env, true)
			kv.Value = &x
		default:
			if g, ok := global[kv.Key]; ok {
				kv.Value = &g
			}
		}
		a.Args[i] = kv
		if kv.Value != nil {
			env[kv.Key] = *kv.Value
		}
	}
}

// expandWord runs BuildKit's shell lexer on one word, exactly as BuildKit expands it: quotes
// removed, $X and ${X} replaced, ${X:-default} and the other forms of its lexer applied. An
// unset variable is empty, or, with keepUnset, stays as written ($X): inside a stage, the base
// image's ENV, which kiln does not know, may hold it. A word the lexer rejects is returned as
// written.
func expandWord(lex *shell.Lex, word string, env map[string]string, keepUnset bool) string {
	// text/scanner, under the lexer, prints NUL and invalid UTF-8 to stderr: leave such words
	if !CleanText(word) {
		return word
	}
	lex.SkipUnsetEnv = keepUnset
	defer func() { lex.SkipUnsetEnv = false }()
	out, _, err := lex.ProcessWord(word, mapEnv(env))
	if err != nil {
		return word
	}
	return out
}

// mapEnv adapts a map to the shell lexer.
type mapEnv map[string]string

func (e mapEnv) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e mapEnv) Keys() []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// heredocSafe replaces NUL bytes and invalid UTF-8 in the lines that may start a heredoc (they
// hold "<<"): BuildKit's parser runs its shell lexer on them, and text/scanner, under it, prints
// such bytes to stderr. Line numbers stay.
func heredocSafe(dt []byte) []byte {
	if !bytes.Contains(dt, []byte("<<")) || CleanText(string(dt)) {
		return dt
	}
	lines := bytes.SplitAfter(dt, []byte("\n"))
	for i, l := range lines {
		if bytes.Contains(l, []byte("<<")) && !CleanText(string(l)) {
			lines[i] = bytes.ReplaceAll(bytes.ToValidUTF8(l, []byte("\uFFFD")), []byte{0}, []byte("\uFFFD"))
		}
	}
	return bytes.Join(lines, nil)
}

// CleanText reports valid UTF-8 without NUL bytes: text that BuildKit's shell lexer and
// pattern matcher (text/scanner, under them, prints anything else to stderr) may be given.
func CleanText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
