package advice

import (
	"path"
	"regexp"
	"strings"
)

// shCmd is one simple command of a RUN script: "CGO_ENABLED=0 go build -o app . > log" has
// env {CGO_ENABLED: 0}, args [go build -o app .] and out [log].
type shCmd struct {
	env  map[string]string // assignments written before the command
	args []string          // the command and its arguments, quotes removed, wrappers (sudo, env…) dropped
	out  []string          // files written by output redirections
}

// name is the command's base name: "/usr/bin/apt-get" → "apt-get".
func (c shCmd) name() string {
	if len(c.args) == 0 {
		return ""
	}
	return path.Base(c.args[0])
}

// has reports whether any argument after the command name equals one of words.
func (c shCmd) has(words ...string) bool {
	for _, a := range c.args[min(1, len(c.args)):] {
		for _, w := range words {
			if a == w {
				return true
			}
		}
	}
	return false
}

// hasPrefix reports whether any argument after the command name starts with prefix.
func (c shCmd) hasPrefix(prefix string) bool {
	for _, a := range c.args[min(1, len(c.args)):] {
		if strings.HasPrefix(a, prefix) {
			return true
		}
	}
	return false
}

// sub returns the index of the subcommand (the first argument that is not a flag), skipping
// the values of the flags listed in valueFlags; -1 when there is none.
func (c shCmd) sub(valueFlags ...string) int {
	for i := 1; i < len(c.args); i++ {
		a := c.args[i]
		if strings.HasPrefix(a, "-") {
			for _, f := range valueFlags {
				if a == f {
					i++
					break
				}
			}
			continue
		}
		return i
	}
	return -1
}

// subIs reports whether the subcommand is one of subs, and returns the arguments after it.
func (c shCmd) subIs(valueFlags []string, subs ...string) ([]string, bool) {
	i := c.sub(valueFlags...)
	if i < 0 {
		return nil, false
	}
	for _, s := range subs {
		if c.args[i] == s {
			return c.args[i+1:], true
		}
	}
	return nil, false
}

// positional returns the arguments that are not flags.
func positional(args []string) []string {
	var out []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			out = append(out, a)
		}
	}
	return out
}

var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// wrappers run the command that follows them.
var wrappers = map[string]bool{
	"sudo": true, "env": true, "exec": true, "nice": true, "nohup": true, "time": true,
	"command": true, "xargs": true, "then": true, "do": true, "else": true, "elif": true,
	"if": true, "while": true, "until": true, "!": true, "{": true, "}": true, "eatmydata": true,
}

// makeCmd splits leading assignments and wrappers off a word list.
func makeCmd(words, out []string) shCmd {
	c := shCmd{env: map[string]string{}, out: out}
	i := 0
	for i < len(words) {
		w := words[i]
		switch {
		case assignment.MatchString(w):
			k, v, _ := strings.Cut(w, "=")
			c.env[k] = v
			i++
		case wrappers[w]:
			i++
			// a wrapper's own flags: sudo -E -u user, env -i, xargs -r
			for i < len(words) && strings.HasPrefix(words[i], "-") && words[i] != "-" {
				if (w == "sudo" && (words[i] == "-u" || words[i] == "-g")) || (w == "xargs" && (words[i] == "-n" || words[i] == "-I" || words[i] == "-P")) {
					i++
				}
				i++
			}
		default:
			c.args = words[i:]
			i = len(words)
		}
	}
	// python -m pip install … is pip install …
	if len(c.args) >= 3 && strings.HasPrefix(path.Base(c.args[0]), "python") && c.args[1] == "-m" &&
		(c.args[2] == "pip" || c.args[2] == "pip3") {
		c.args = append([]string{"pip"}, c.args[3:]...)
	}
	return c
}

// splitShell splits a POSIX shell script into simple commands. It is a heuristic reader, not a
// shell: it knows quotes, escapes, comments, command separators, $(…) and redirections, which
// is what the rules need to see which programs a RUN step calls with which arguments.
func splitShell(s string) []shCmd {
	var (
		cmds    []shCmd
		words   []string
		outs    []string
		cur     strings.Builder
		inWord  bool
		pending int // 0: none, 1: next word is an output file, 2: next word is an input file
	)
	flush := func() {
		if !inWord {
			return
		}
		w := cur.String()
		cur.Reset()
		inWord = false
		switch pending {
		case 1:
			outs = append(outs, w)
		case 2:
		default:
			words = append(words, w)
		}
		pending = 0
	}
	end := func() {
		flush()
		pending = 0
		if len(words) > 0 || len(outs) > 0 {
			cmds = append(cmds, makeCmd(words, outs))
		}
		words, outs = nil, nil
	}
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case c == '\\':
			if i+1 < len(rs) {
				i++
				if rs[i] == '\n' {
					continue
				}
				cur.WriteRune(rs[i])
				inWord = true
			}
		case c == '\'':
			inWord = true
			j := i + 1
			for j < len(rs) && rs[j] != '\'' {
				cur.WriteRune(rs[j])
				j++
			}
			i = j
		case c == '"':
			inWord = true
			j := i + 1
			for j < len(rs) && rs[j] != '"' {
				if rs[j] == '\\' && j+1 < len(rs) && strings.ContainsRune("\"\\$`\n", rs[j+1]) {
					if rs[j+1] != '\n' {
						cur.WriteRune(rs[j+1])
					}
					j += 2
					continue
				}
				cur.WriteRune(rs[j])
				j++
			}
			i = j
		case c == '$' && i+1 < len(rs) && (rs[i+1] == '(' || rs[i+1] == '{'):
			open, closing := rs[i+1], ')'
			if open == '{' {
				closing = '}'
			}
			cur.WriteRune('$')
			depth := 0
			j := i + 1
			for ; j < len(rs); j++ {
				cur.WriteRune(rs[j])
				if rs[j] == open {
					depth++
				} else if rs[j] == closing {
					depth--
					if depth == 0 {
						break
					}
				}
			}
			inWord = true
			i = j
		case c == '`':
			j := i + 1
			cur.WriteRune('`')
			for j < len(rs) && rs[j] != '`' {
				cur.WriteRune(rs[j])
				j++
			}
			cur.WriteRune('`')
			inWord = true
			i = j
		case c == '#' && !inWord:
			for i < len(rs) && rs[i] != '\n' {
				i++
			}
			end()
		case c == ' ' || c == '\t' || c == '\r':
			flush()
		case c == '\n' || c == ';' || c == '&' || c == '|' || c == '(' || c == ')':
			end()
		case c == '>' || c == '<':
			if inWord && isDigits(cur.String()) {
				cur.Reset() // "2>" redirects a file descriptor
				inWord = false
			} else {
				flush()
			}
			kind := 1
			if c == '<' {
				kind = 2
			}
			for i+1 < len(rs) && (rs[i+1] == c || rs[i+1] == '|' || rs[i+1] == '-') {
				i++
			}
			if i+1 < len(rs) && rs[i+1] == '&' { // >&2, 2>&1
				i++
				for i+1 < len(rs) && (isDigits(string(rs[i+1])) || rs[i+1] == '-') {
					i++
				}
				kind = 0
			}
			pending = kind
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	end()
	return cmds
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
