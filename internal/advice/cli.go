package advice

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/kiln-dev/kiln/internal/dockerfile"
	"github.com/kiln-dev/kiln/internal/units"
)

const adviseUsage = `Usage: kiln advise [--context DIR] [-f Dockerfile] [--target T] [--build-arg NAME=VALUE]... [-o text|json] [--ignore id,id] [--rules]
       kiln advise --image REF [--platform os/arch] [--insecure] [-o text|json]

Checks a Dockerfile against kiln's advice rules before you push: what makes the image big or the
build slow, and what to change. With --image, sizes a built image by package instead: its files'
bytes by the packages of its SBOM (made with syft), largest first; its flags:
  --image REF          the built image, pulled with your docker credentials
  --platform os/arch   the platform image of an index (default linux/amd64)
  --insecure           allow a plain-HTTP registry Exit code 0 when it ran (findings or not), 1 when the Dockerfile
does not parse, 2 on bad usage or unreadable files.

Flags:
`

// Main is `kiln advise`: it reads the Dockerfile (default DIR/Dockerfile), the context's
// top-level entries and its .dockerignore, prints the findings (a text table, or JSON with -o
// json) and returns the exit code: 0 when it ran (even with findings), 1 when the Dockerfile
// does not parse, 2 on bad usage or unreadable files.
func Main(args []string, stdout, stderr io.Writer) int {
	fsys := flag.NewFlagSet("kiln advise", flag.ContinueOnError)
	fsys.SetOutput(stderr)
	contextDir := fsys.String("context", "", "the build context `DIR` (default \".\")")
	file := fsys.String("f", "", "the `Dockerfile` (default DIR/Dockerfile)")
	fsys.StringVar(file, "file", "", "same as -f")
	target := fsys.String("target", "", "the `stage` to build (default: the last one)")
	output := fsys.String("o", "text", "output `format`: text or json")
	fsys.StringVar(output, "output", "text", "same as -o")
	ignore := fsys.String("ignore", "", "comma-separated rule `ids` to silence")
	listRules := fsys.Bool("rules", false, "list the rules and exit")
	buildArgs := buildArgFlag{}
	fsys.Var(buildArgs, "build-arg", "a build arg `NAME=VALUE`, as docker build takes it (repeatable; NAME alone takes the value of the environment variable NAME)")
	fsys.Usage = func() {
		fmt.Fprint(stderr, adviseUsage)
		fsys.PrintDefaults()
	}
	if err := fsys.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch *output {
	case "text", "json":
	default:
		fmt.Fprintf(stderr, "kiln advise: -o must be text or json, not %q\n", *output)
		return 2
	}
	if *listRules {
		return printRules(stdout, *output)
	}

	switch rest := fsys.Args(); {
	case len(rest) == 1 && *contextDir == "":
		*contextDir = rest[0] // `kiln advise DIR`, as with docker build
	case len(rest) > 0:
		fmt.Fprintf(stderr, "kiln advise: unexpected argument %q (the context is --context DIR)\n", rest[0])
		return 2
	}
	if *contextDir == "" {
		*contextDir = "."
	}

	in := Input{Target: *target}
	if len(buildArgs) > 0 {
		in.BuildArgs = buildArgs
	}
	for _, id := range strings.Split(*ignore, ",") {
		if id = strings.TrimSpace(id); id == "" {
			continue
		}
		if !KnownRule(id) {
			fmt.Fprintf(stderr, "kiln advise: warning: --ignore %s: no such rule (kiln advise --rules lists them)\n", id)
		}
		in.Ignore = append(in.Ignore, id)
	}

	dfPath, code := readFiles(&in, *contextDir, *file, stderr)
	if code != 0 {
		return code
	}
	f, err := dockerfile.Parse(in.Dockerfile, "", in.BuildArgs)
	if err != nil {
		fmt.Fprintf(stderr, "kiln advise: %s\n", dockerfile.Describe(dfPath, err))
		return 1
	}
	if *target != "" && f.StageIndex(*target) < 0 {
		fmt.Fprintf(stderr, "kiln advise: --target %q is not a stage of %s (its named stages: %s)\n", *target, dfPath, strings.Join(f.Names(), ", "))
		return 2
	}

	return printFindings(stdout, stderr, *output, dfPath, Analyze(in))
}

// printFindings prints the findings as JSON or a text table; it returns the exit code.
func printFindings(stdout, stderr io.Writer, output, dfPath string, findings []Finding) int {
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(findings); err != nil {
			fmt.Fprintf(stderr, "kiln advise: %v\n", err)
			return 2
		}
		return 0
	}
	printText(stdout, dfPath, findings)
	return 0
}

// readFiles reads into in what `kiln advise` looks at: the Dockerfile (file, default
// contextDir/Dockerfile), the context's top-level entries and its .dockerignore. It returns the
// Dockerfile's path and 0, or 2 when a file cannot be read (it says which on stderr).
func readFiles(in *Input, contextDir, file string, stderr io.Writer) (string, int) {
	info, err := os.Stat(contextDir)
	if err != nil || !info.IsDir() {
		fmt.Fprintf(stderr, "kiln advise: the context %s is not a readable directory\n", contextDir)
		return "", 2
	}
	dfPath := file
	if dfPath == "" {
		dfPath = filepath.Join(contextDir, "Dockerfile")
	}
	in.DockerfileName = filepath.Base(dfPath)
	in.Dockerfile, err = os.ReadFile(dfPath)
	if err != nil {
		hint := ""
		if file == "" {
			hint = " (name it with -f)"
		}
		fmt.Fprintf(stderr, "kiln advise: cannot read the Dockerfile %s: %s%s\n", dfPath, describeErr(err), hint)
		return "", 2
	}
	entries, err := os.ReadDir(contextDir)
	if err != nil {
		fmt.Fprintf(stderr, "kiln advise: cannot list the context %s: %s\n", contextDir, describeErr(err))
		return "", 2
	}
	in.ContextFiles = []string{}
	for _, e := range entries {
		in.ContextFiles = append(in.ContextFiles, e.Name())
	}
	// BuildKit prefers <Dockerfile>.dockerignore next to the Dockerfile to the context's.
	for _, p := range []string{dfPath + ".dockerignore", filepath.Join(contextDir, ".dockerignore")} {
		dt, err := os.ReadFile(p)
		if err == nil {
			in.Dockerignore = dt
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "kiln advise: cannot read %s: %s\n", p, describeErr(err))
			return "", 2
		}
	}
	return dfPath, 0
}

// buildArgFlag collects --build-arg NAME=VALUE flags.
type buildArgFlag map[string]string

func (f buildArgFlag) String() string { return "" }

func (f buildArgFlag) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if name == "" || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("want NAME=VALUE, not %q", s)
	}
	if !ok {
		v, set := os.LookupEnv(name)
		if !set {
			return nil // docker build drops a NAME that the environment does not set
		}
		value = v
	}
	f[name] = value
	return nil
}

func describeErr(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func printText(w io.Writer, name string, findings []Finding) {
	if len(findings) == 0 {
		fmt.Fprintf(w, "%s: no findings.\n", name)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LINE\tRULE\tKIND\tSAVING\tADVICE")
	for _, f := range findings {
		line, saving := "-", "-"
		if f.Line > 0 {
			line = fmt.Sprint(f.Line)
		}
		if f.SavingBytes > 0 {
			saving = "~" + units.Bytes(f.SavingBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", line, f.Rule, f.Kind, saving, f.Message)
	}
	tw.Flush()
	noun := "findings"
	if len(findings) == 1 {
		noun = "finding"
	}
	fmt.Fprintf(w, "\n%d %s in %s. Each rule is explained at %s#<rule>; silence one with a \"# kiln:ignore=<rule>\" comment or --ignore.\n",
		len(findings), noun, name, DocBase)
}

func printRules(w io.Writer, format string) int {
	if format == "json" {
		type ruleJSON struct {
			ID      string `json:"id"`
			Kind    string `json:"kind"`
			Summary string `json:"summary"`
			Doc     string `json:"doc"`
		}
		var out []ruleJSON
		for _, r := range Rules() {
			out = append(out, ruleJSON{r.ID, r.Kind, r.Summary, DocBase + "#" + r.ID})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if enc.Encode(out) != nil {
			return 2
		}
		return 0
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tKIND\tSUMMARY")
	for _, r := range Rules() {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.ID, r.Kind, r.Summary)
	}
	tw.Flush()
	return 0
}
