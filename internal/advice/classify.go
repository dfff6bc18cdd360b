package advice

import (
	"path"
	"strings"
)

// goSub returns the go subcommand a command runs ("go build", or "orchestrion go build") and
// the arguments after it.
func goSub(c shCmd) (string, []string) {
	if c.name() == "echo" || c.name() == "printf" {
		return "", nil
	}
	for i := 0; i+1 < len(c.args); i++ {
		if path.Base(c.args[i]) == "go" {
			return c.args[i+1], c.args[i+2:]
		}
	}
	return "", nil
}

// noPackages reports whether args name no package (npm install with flags only installs the
// manifest's dependencies).
func noPackages(args []string) bool { return len(positional(args)) == 0 }

var (
	npmFlags = []string{"--prefix", "-C", "--workspace", "-w", "--cache", "--registry", "--loglevel"}
	mvnFlags = []string{"-f", "--file", "-s", "--settings", "-P", "-pl", "--projects", "-D", "-T", "-gs", "-t", "-b", "-l", "-rf"}
)

// simpleDeps are the tools whose dependency download is one subcommand: the tool's name, what the
// download is called, and the subcommands that run it.
var simpleDeps = map[string]struct {
	step string
	subs []string
}{
	"poetry":   {"poetry install", []string{"install"}},
	"pipenv":   {"pipenv install", []string{"install", "sync"}},
	"uv":       {"uv sync", []string{"sync"}},
	"bundle":   {"bundle install", []string{"install"}},
	"bundler":  {"bundle install", []string{"install"}},
	"cargo":    {"cargo fetch", []string{"fetch"}},
	"composer": {"composer install", []string{"install"}},
	"dotnet":   {"dotnet restore", []string{"restore"}},
	"mix":      {"mix deps.get", []string{"deps.get"}},
}

// depsStep returns the dependency download a command runs from a project's manifest ("go mod
// download", "npm ci", "pip install -r"…), "" when it runs none.
func depsStep(c shCmd) string {
	if sub, rest := goSub(c); sub == "mod" && len(rest) > 0 && rest[0] == "download" {
		return "go mod download"
	}
	switch n := c.name(); {
	case n == "npm":
		if _, ok := c.subIs(npmFlags, "ci", "clean-install"); ok {
			return "npm ci"
		}
		if rest, ok := c.subIs(npmFlags, "install", "i"); ok && noPackages(rest) {
			return "npm install"
		}
	case n == "yarn":
		if c.sub("--cwd") < 0 {
			return "yarn install"
		}
		if rest, ok := c.subIs([]string{"--cwd"}, "install"); ok && noPackages(rest) {
			return "yarn install"
		}
	case n == "pnpm":
		if rest, ok := c.subIs(npmFlags, "install", "i"); ok && noPackages(rest) {
			return "pnpm install"
		}
	case isPip(c):
		if _, ok := c.subIs(nil, "install"); ok && (c.has("-r", "--requirement") || c.hasPrefix("--requirement=") || c.hasPrefix("-r")) {
			return "pip install -r"
		}
	case n == "mvn" || n == "mvnw":
		for _, a := range c.args[1:] {
			if strings.HasPrefix(a, "dependency:") {
				return "mvn dependency"
			}
		}
	case n == "gradle" || n == "gradlew":
		if c.has("dependencies") {
			return "gradle dependencies"
		}
	default:
		if d, ok := simpleDeps[n]; ok {
			if _, ok := c.subIs(nil, d.subs...); ok {
				return d.step
			}
		}
	}
	return ""
}

// sysInstall returns the system package install a command runs, "" when none.
func sysInstall(c shCmd) string {
	switch n := c.name(); {
	case isApt(c):
		if _, ok := c.subIs(aptFlags, "install"); ok {
			return n + " install"
		}
	case n == "apk":
		if _, ok := c.subIs(apkFlags, "add"); ok {
			return "apk add"
		}
	case n == "yum" || n == "dnf" || n == "microdnf" || n == "tdnf":
		if _, ok := c.subIs([]string{"--setopt", "--enablerepo", "--disablerepo"}, "install"); ok {
			return n + " install"
		}
	case n == "zypper":
		if _, ok := c.subIs(nil, "install", "in"); ok {
			return "zypper install"
		}
	}
	return ""
}

// downloadStep returns a package or module download a command runs, and the tool, for the
// cache-mount rule; apk is left out (apk add --no-cache is the usual answer).
func downloadStep(c shCmd) (string, string) {
	if d := depsStep(c); d != "" {
		tool := strings.Fields(d)[0]
		return d, tool
	}
	switch n := c.name(); {
	case isApt(c):
		if sub, ok := c.subIs(aptFlags, "install", "update", "upgrade", "dist-upgrade"); ok {
			_ = sub
			return n + " " + c.args[c.sub(aptFlags...)], n
		}
	case n == "yum" || n == "dnf" || n == "microdnf":
		if _, ok := c.subIs([]string{"--setopt", "--enablerepo", "--disablerepo"}, "install"); ok {
			return n + " install", n
		}
	case n == "npm":
		if _, ok := c.subIs(npmFlags, "install", "i", "add"); ok {
			return "npm install", "npm"
		}
	case n == "yarn":
		if _, ok := c.subIs([]string{"--cwd"}, "add"); ok {
			return "yarn add", "yarn"
		}
	case n == "pnpm":
		if _, ok := c.subIs(npmFlags, "add", "install", "i"); ok {
			return "pnpm install", "pnpm"
		}
	case isPip(c):
		if _, ok := c.subIs([]string{"--cache-dir", "--log", "--proxy"}, "install"); ok {
			return "pip install", "pip"
		}
	case n == "cargo":
		if _, ok := c.subIs(nil, "build", "install"); ok {
			return "cargo " + c.args[c.sub()], "cargo"
		}
	case n == "mvn" || n == "mvnw":
		if c.sub(mvnFlags...) > 0 {
			return "mvn", "mvn"
		}
	case n == "gradle" || n == "gradlew":
		if c.sub() > 0 {
			return "gradle", "gradle"
		}
	case n == "gem":
		if _, ok := c.subIs(nil, "install"); ok {
			return "gem install", "gem"
		}
	}
	return "", ""
}

// compileStep returns the compilation a command runs ("go build", "npm run build", "mvn
// package"…), "" when none.
func compileStep(c shCmd) string {
	if sub, rest := goSub(c); sub == "build" {
		return "go build"
	} else if sub == "install" {
		for _, p := range positional(rest) {
			if strings.Contains(p, "@") {
				return ""
			}
		}
		return "go install"
	}
	switch n := c.name(); n {
	case "npm", "pnpm":
		if rest, ok := c.subIs(npmFlags, "run", "run-script"); ok && len(rest) > 0 && strings.Contains(rest[0], "build") {
			return n + " run " + rest[0]
		}
		if _, ok := c.subIs(npmFlags, "build"); ok && n == "pnpm" {
			return "pnpm build"
		}
	case "yarn":
		if rest, ok := c.subIs([]string{"--cwd"}, "run"); ok && len(rest) > 0 && strings.Contains(rest[0], "build") {
			return "yarn run " + rest[0]
		}
		if _, ok := c.subIs([]string{"--cwd"}, "build"); ok {
			return "yarn build"
		}
	case "mvn", "mvnw":
		if c.has("package", "install", "verify", "compile") {
			return "mvn " + firstOf(c, "package", "install", "verify", "compile")
		}
	case "gradle", "gradlew":
		if c.has("build", "assemble", "jar", "bootJar", "shadowJar", "installDist") {
			return "gradle " + firstOf(c, "build", "assemble", "jar", "bootJar", "shadowJar", "installDist")
		}
	case "cargo":
		if _, ok := c.subIs(nil, "build"); ok {
			return "cargo build"
		}
	case "gcc", "g++", "cc", "c++", "clang", "clang++", "make", "cmake", "ninja", "javac", "rustc", "tsc":
		return n
	case "dotnet":
		if _, ok := c.subIs(nil, "publish", "build"); ok {
			return "dotnet " + c.args[c.sub()]
		}
	case "swift", "stack", "cabal":
		if _, ok := c.subIs(nil, "build"); ok {
			return n + " build"
		}
	case "mix":
		if _, ok := c.subIs(nil, "compile", "release"); ok {
			return "mix " + c.args[c.sub()]
		}
	}
	return ""
}

func firstOf(c shCmd, words ...string) string {
	for _, a := range c.args[1:] {
		for _, w := range words {
			if a == w {
				return w
			}
		}
	}
	return ""
}
