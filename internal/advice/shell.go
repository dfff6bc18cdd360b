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
	// stdin is what a heredoc (<<EOF) or here-string (<<<) gives the command on standard
	// input; hasStdin tells an empty document from none.
	stdin    string
	hasStdin bool
	piped    bool // the command reads the previous command's output (cmd | this)
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

// maxShellDepth bounds how deep scripts run by shells inside scripts are read.
const maxShellDepth = 4

// splitShell splits a POSIX shell script into simple commands. It is a heuristic reader, not a
// shell: it knows quotes, escapes, comments, command separators, $(…), redirections and here
// documents, which is what the rules need to see which programs a RUN step calls with which
// arguments. The script a shell in it runs (sh -c "…", bash <<EOF, bash <<< "…", cat <<EOF |
// sh) is read too, its commands following the shell's.
func splitShell(s string) []shCmd { return splitShellDocs(s, nil, 0) }

// hereDoc is a here-document redirection waiting for its body at the end of its line.
type hereDoc struct {
	cmd   int // serial number of the command it feeds
	delim string
	chomp bool // <<-: leading tabs are dropped
	stdin bool // it feeds standard input (no file descriptor, or 0)
}

// splitShellDocs is splitShell where the here-documents of the script's first line have the
// bodies docs, in order (BuildKit's parser has read them), instead of the lines that follow.
// depth counts the shells around the script.
func splitShellDocs(s string, docs []string, depth int) []shCmd {
	l := &shLexer{rs: []rune(s), docs: docs, index: map[int]int{}, stdin: map[int]string{}}
	for i := 0; i < len(l.rs); i++ {
		i = l.next(i)
	}
	l.end(false)
	if len(l.waiting) > 0 {
		l.bodies(len(l.rs))
	}
	for serial, body := range l.stdin {
		if i, ok := l.index[serial]; ok {
			l.cmds[i].stdin, l.cmds[i].hasStdin = body, true
		}
	}
	return expandShells(l.cmds, depth)
}

// redirection is what the next word is for after a redirection operator.
type redirection int

const (
	redirNone       redirection = iota // no redirection: the word is an argument
	redirOut                           // > file: a file the command writes
	redirIn                            // < file
	redirHereString                    // <<< word
	redirHereDoc                       // << delimiter
)

// shLexer reads a shell script into simple commands (splitShellDocs).
type shLexer struct {
	rs   []rune
	docs []string // here-document bodies BuildKit has read, for the first line's here-documents

	cmds    []shCmd
	words   []string // the command being read
	outs    []string // its output files
	cur     strings.Builder
	inWord  bool
	pending redirection // what the word being read is for
	fd0     bool        // the pending input redirection is standard input's
	chomp   bool        // the pending here-document is <<-
	serial  int         // the command being read
	index   map[int]int // serial → index in cmds
	stdin   map[int]string
	waiting []hereDoc
	piped   bool // the command being read follows a |
}

// next reads the script from rs[i], one character or one quoted or nested run; it returns the
// index of the last character it read.
func (l *shLexer) next(i int) int {
	rs := l.rs
	switch c := rs[i]; {
	case c == '\\':
		return l.escaped(i)
	case c == '\'':
		return l.quoted(i, '\'')
	case c == '"':
		return l.quoted(i, '"')
	case c == '$' && i+1 < len(rs) && (rs[i+1] == '(' || rs[i+1] == '{'):
		return l.substitution(i)
	case c == '`':
		return l.backquoted(i)
	case c == '#' && !l.inWord:
		for i+1 < len(rs) && rs[i+1] != '\n' {
			i++
		}
	case c == ' ' || c == '\t' || c == '\r':
		l.flush()
	case c == '\n':
		l.end(false)
		if len(l.waiting) > 0 {
			i = l.bodies(i)
		}
	case c == '|':
		pipe := i+1 >= len(rs) || rs[i+1] != '|'
		if !pipe {
			i++
		}
		l.end(pipe)
	case c == ';' || c == '&' || c == '(' || c == ')':
		l.end(false)
	case c == '>' || c == '<':
		return l.redirect(i)
	default:
		l.cur.WriteRune(c)
		l.inWord = true
	}
	return i
}

// flush ends the word being read, which is an argument or the target of a redirection.
func (l *shLexer) flush() {
	if !l.inWord {
		return
	}
	w := l.cur.String()
	l.cur.Reset()
	l.inWord = false
	switch l.pending {
	case redirOut:
		l.outs = append(l.outs, w)
	case redirIn:
	case redirHereString:
		if l.fd0 {
			l.stdin[l.serial] = w
		}
	case redirHereDoc:
		l.waiting = append(l.waiting, hereDoc{cmd: l.serial, delim: w, chomp: l.chomp, stdin: l.fd0})
	default:
		l.words = append(l.words, w)
	}
	l.pending = redirNone
}

// end ends the command being read; pipe says the next one reads its output.
func (l *shLexer) end(pipe bool) {
	l.flush()
	l.pending = redirNone
	if len(l.words) > 0 || len(l.outs) > 0 {
		c := makeCmd(l.words, l.outs)
		c.piped = l.piped
		l.index[l.serial] = len(l.cmds)
		l.cmds = append(l.cmds, c)
	}
	l.words, l.outs = nil, nil
	l.serial++
	l.piped = pipe
}

// bodies reads the here-documents waiting at the end of a line, the line break at i; it returns
// the index of the last character read.
func (l *shLexer) bodies(i int) int {
	for _, d := range l.waiting {
		body := ""
		if len(l.docs) > 0 {
			body, l.docs = l.docs[0], l.docs[1:]
		} else {
			body, i = l.body(i, d)
		}
		if d.stdin {
			l.stdin[d.cmd] = body
		}
	}
	l.waiting = nil
	return i
}

// body reads the lines after the line break at i up to d's delimiter line.
func (l *shLexer) body(i int, d hereDoc) (string, int) {
	rs := l.rs
	var b strings.Builder
	for i+1 < len(rs) {
		j := i + 1
		for j < len(rs) && rs[j] != '\n' {
			j++
		}
		line := string(rs[i+1 : j])
		i = j
		check := line
		if d.chomp {
			check = strings.TrimLeft(line, "\t")
		}
		if check == d.delim {
			break
		}
		if d.chomp {
			line = check
		}
		b.WriteString(line + "\n")
	}
	return b.String(), i
}

// escaped reads a backslash at i and the character it escapes; an escaped line break joins
// the lines.
func (l *shLexer) escaped(i int) int {
	if i+1 >= len(l.rs) {
		return i
	}
	i++
	if l.rs[i] == '\n' {
		return i
	}
	l.cur.WriteRune(l.rs[i])
	l.inWord = true
	return i
}

// quoted reads a single- or double-quoted run that starts at i, without its quotes; in double
// quotes a backslash escapes ", \\, $, ` and the line break.
func (l *shLexer) quoted(i int, quote rune) int {
	rs := l.rs
	l.inWord = true
	j := i + 1
	for j < len(rs) && rs[j] != quote {
		if quote == '"' && rs[j] == '\\' && j+1 < len(rs) && strings.ContainsRune("\"\\$`\n", rs[j+1]) {
			if rs[j+1] != '\n' {
				l.cur.WriteRune(rs[j+1])
			}
			j += 2
			continue
		}
		l.cur.WriteRune(rs[j])
		j++
	}
	return j
}

// substitution reads $(…) or ${…} at i, nested ones included, into the word as written.
func (l *shLexer) substitution(i int) int {
	rs := l.rs
	open, closing := rs[i+1], ')'
	if open == '{' {
		closing = '}'
	}
	l.cur.WriteRune('$')
	depth := 0
	j := i + 1
	for ; j < len(rs); j++ {
		l.cur.WriteRune(rs[j])
		if rs[j] == open {
			depth++
		} else if rs[j] == closing {
			depth--
			if depth == 0 {
				break
			}
		}
	}
	l.inWord = true
	return j
}

// backquoted reads `…` at i into the word as written.
func (l *shLexer) backquoted(i int) int {
	rs := l.rs
	j := i + 1
	l.cur.WriteRune('`')
	for j < len(rs) && rs[j] != '`' {
		l.cur.WriteRune(rs[j])
		j++
	}
	l.cur.WriteRune('`')
	l.inWord = true
	return j
}

// redirect reads a redirection operator at i (>, >>, 2>, >&2, 2>&1, <, <<, <<-, <<<); the word
// after it is its target, read as pending says.
func (l *shLexer) redirect(i int) int {
	rs := l.rs
	c := rs[i]
	fd := ""
	if l.inWord && isDigits(l.cur.String()) {
		fd = l.cur.String()
		l.cur.Reset() // "2>" redirects a file descriptor
		l.inWord = false
	} else {
		l.flush()
	}
	kind := redirOut
	if c == '<' {
		kind, i = l.inputKind(i)
		l.fd0 = fd == "" || fd == "0"
	}
	for kind <= redirIn && i+1 < len(rs) && (rs[i+1] == c || rs[i+1] == '|' || rs[i+1] == '-') {
		i++
	}
	if kind <= redirIn && i+1 < len(rs) && rs[i+1] == '&' { // >&2, 2>&1
		i++
		for i+1 < len(rs) && (isDigits(string(rs[i+1])) || rs[i+1] == '-') {
			i++
		}
		kind = redirNone
	}
	l.pending = kind
	return i
}

// inputKind reads the <, << or <<< (or <<-) that starts at i; it returns which it is and the
// index of its last character.
func (l *shLexer) inputKind(i int) (redirection, int) {
	rs := l.rs
	n := 1
	for i+1 < len(rs) && rs[i+1] == '<' {
		i++
		n++
	}
	switch {
	case n == 2:
		l.chomp = i+1 < len(rs) && rs[i+1] == '-'
		if l.chomp {
			i++
		}
		return redirHereDoc, i
	case n > 2:
		return redirHereString, i
	}
	return redirIn, i
}

// expandShells adds, after each command that is a shell running a script (sh -c "…", bash
// <<EOF, bash <<< "…", cat <<EOF | sh, echo "…" | sh), the commands of that script.
func expandShells(cmds []shCmd, depth int) []shCmd {
	if depth >= maxShellDepth {
		return cmds
	}
	var out []shCmd
	for i, c := range cmds {
		out = append(out, c)
		script, fromStdin, ok := shellInvocation(c.args)
		if !ok {
			continue
		}
		switch {
		case script != "":
		case fromStdin && c.hasStdin:
			script = c.stdin
		case fromStdin && c.piped && i > 0:
			script = pipedText(cmds[i-1])
		}
		if script != "" {
			out = append(out, splitShellDocs(script, nil, depth+1)...)
		}
	}
	return out
}

// pipedText is what a command writes to a pipe when kiln can tell: cat of its standard input,
// echo or printf of their arguments.
func pipedText(c shCmd) string {
	switch c.name() {
	case "cat":
		if len(positional(c.args[1:])) == 0 && len(c.out) == 0 {
			return c.stdin
		}
	case "echo", "printf":
		if len(c.out) == 0 {
			return strings.Join(positional(c.args[1:]), " ")
		}
	}
	return ""
}

// posixShells are the interpreters whose scripts the rules read as POSIX shell.
var posixShells = map[string]bool{"sh": true, "bash": true, "dash": true, "ash": true, "ksh": true, "mksh": true, "zsh": true, "posh": true, "yash": true}

// isShell reports whether a program (a path or a name) is a POSIX shell.
func isShell(program string) bool { return posixShells[path.Base(program)] }

// shellInvocation reads a shell's command line ("bash -euo pipefail -c script", "sh -s",
// "busybox sh"): ok when args run a shell, with the script it runs from -c, or fromStdin when
// it reads its script from standard input (no -c and no script file, or -s).
func shellInvocation(args []string) (script string, fromStdin, ok bool) {
	if len(args) > 1 && path.Base(args[0]) == "busybox" {
		args = args[1:]
	}
	if len(args) == 0 || !isShell(args[0]) {
		return "", false, false
	}
	cFlag, sFlag := false, false
	i := 1
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || a == "-" {
			i++
			break
		}
		if a == "-o" || a == "+o" || a == "-O" || a == "+O" || a == "--rcfile" || a == "--init-file" {
			i++
			continue
		}
		if strings.HasPrefix(a, "--") {
			continue // --login, --norc, --posix…
		}
		if len(a) > 1 && (a[0] == '-' || a[0] == '+') {
			if a[0] == '-' {
				cFlag = cFlag || strings.ContainsRune(a[1:], 'c')
				sFlag = sFlag || strings.ContainsRune(a[1:], 's')
			}
			if last := a[len(a)-1]; last == 'o' || last == 'O' {
				i++ // -euo pipefail: the option's name follows
			}
			continue
		}
		break
	}
	rest := args[min(i, len(args)):]
	switch {
	case cFlag && len(rest) > 0:
		return rest[0], false, true
	case cFlag:
		return "", false, true
	case sFlag || len(rest) == 0:
		return "", true, true
	}
	return "", false, true // a script file
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
