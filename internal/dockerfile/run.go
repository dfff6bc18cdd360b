package dockerfile

import (
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Run is what a RUN runs, as dockerfile2llb's dispatchRun builds it. Its documents come from
// BuildKit's parser (RunCommand.Files), its command line is ShellDependantCmdLine.CmdLine.
type Run struct {
	Args  []string // the command line as BuildKit parsed it
	Shell bool     // shell form: the SHELL in effect runs Script; exec form: Args run as they are
	// Script is what runs, heredocs included: the document of a RUN that is only a heredoc;
	// for another shell-form RUN with heredocs (RUN <<EOF bash, RUN bash <<EOF, RUN cat <<EOF
	// > f), the command line followed by each document and its terminator; else the arguments
	// joined by spaces.
	Script string
	// Document is a RUN that is only a heredoc (RUN <<EOF): Script is the document (<<- drops
	// its leading tabs), run by the SHELL, or as a file when it starts with #!.
	Document bool
	// Docs are the documents a command line with heredocs reads, in order, leading tabs
	// dropped for <<-: the SHELL runs the line and gives it the documents.
	Docs []string
	// Opaque is a command line with heredocs that holds bytes BuildKit's heredoc lexer cannot
	// read (NUL, invalid UTF-8): Script is the line as written.
	Opaque bool
	// History is the command as BuildKit writes it into the image history and its errors,
	// after the shell: Script, except that a document starting with #! runs as the file
	// BuildKit mounts at /dev/pipes/<name>.
	History string
}

func newRun(c *instructions.RunCommand) *Run {
	r := &Run{Args: c.CmdLine, Shell: c.PrependShell}
	r.Script = strings.Join(r.Args, " ")
	r.History = r.Script
	if len(c.Files) == 0 || len(r.Args) != 1 || !c.PrependShell {
		return r
	}
	if CleanText(r.Args[0]) && parser.MustParseHeredoc(r.Args[0]) != nil {
		r.Document = true
		r.Script = docData(c.Files[0])
		r.History = r.Script
		if strings.HasPrefix(r.Script, "#!") {
			r.History = "/dev/pipes/" + c.Files[0].Name
		}
		return r
	}
	var b strings.Builder
	b.WriteString(r.Args[0])
	for _, f := range c.Files {
		b.WriteString("\n" + f.Data + f.Name)
		r.Docs = append(r.Docs, docData(f))
	}
	r.Script, r.History = b.String(), b.String()
	if !CleanText(r.Args[0]) { // the lexer under MustParseHeredoc prints NUL to stderr
		r.Opaque, r.Script, r.Docs = true, r.Args[0], nil
	}
	return r
}

// docData is a heredoc's content as the command receives it (<<- drops leading tabs).
func docData(f instructions.ShellInlineFile) string {
	if f.Chomp {
		return parser.ChompHeredocContent(f.Data)
	}
	return f.Data
}

// defaultShell is the shell BuildKit runs a shell-form RUN with when no SHELL is set (Linux).
var defaultShell = []string{"/bin/sh", "-c"}

// Process is a RUN's command line as BuildKit runs it and writes it into the history and its
// errors ("process \"/bin/sh -c make\" did not complete"): the SHELL in effect and History for
// the shell form, History alone for the exec form; "" for other instructions.
func (s *Step) Process() string {
	if s.Run == nil {
		return ""
	}
	if !s.Run.Shell {
		return s.Run.History
	}
	sh := s.Shell
	if len(sh) == 0 {
		sh = defaultShell
	}
	return strings.Join(sh, " ") + " " + s.Run.History
}
