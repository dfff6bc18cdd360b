package bundle

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/tonistiigi/fsutil"
)

// dockerfile and dockerignore are the files Pack keeps even when .dockerignore excludes them,
// as `docker build` does (docker/cli's build.TrimBuildFilesFromExcludes).
const (
	dockerfile   = "Dockerfile"
	dockerignore = ".dockerignore"
)

// epoch is every entry's modification time in a packed tar.
var epoch = time.Unix(0, 0).UTC()

// Pack writes dir to w as a reproducible gzip tar: the same files give the same bytes, whatever
// their modification times, owners or the order they were made in. It returns the entries
// written and the files' uncompressed bytes.
//
// Entries are sorted by path (slash-separated, relative to dir, no "./"; directories end in
// "/"), with mtime the Unix epoch, uid and gid 0, no user or group names. A directory's mode is
// 0755; a file's is 0755 if any execute bit is set, else 0644. A symlink is kept as a symlink
// with its target unchanged, but a target that Unpack would refuse (absolute, or leaving dir)
// is an *EntryError. Hard links are stored as copies of the file. A device, FIFO or socket is an
// *EntryError naming it. The gzip header has no name and no mtime and the level is
// gzip.BestCompression; the bytes are stable for a given Go release's compress/flate.
//
// A .dockerignore in dir is honoured as BuildKit honours it: parsed with
// patternmatcher/ignorefile.ReadAll and applied by fsutil's walker (the one BuildKit uses to send
// a local context), so "!" exceptions and "**" behave the same, and an excluded directory is
// still entered when an exception may match inside it. Dockerfile and .dockerignore at dir's
// top are always kept, and so are the paths in keep (slash-separated, relative to dir: the
// Dockerfile a build names with -f), as BuildKit always reads the Dockerfile. Errors: dir
// unreadable, a bad pattern, a refused entry, a failed write.
func Pack(dir string, w io.Writer, keep ...string) (Stats, error) {
	paths, err := contextPaths(dir, keep)
	if err != nil {
		return Stats{}, err
	}
	gz, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return Stats{}, err
	}
	tw := tar.NewWriter(gz)
	var st Stats
	for _, p := range paths {
		n, err := packEntry(tw, dir, p)
		if err != nil {
			return st, err
		}
		st.Entries++
		st.Bytes += n
	}
	if err := tw.Close(); err != nil {
		return st, fmt.Errorf("writing the build context tar: %w", err)
	}
	if err := gz.Close(); err != nil {
		return st, fmt.Errorf("writing the build context tar: %w", err)
	}
	return st, nil
}

// contextPaths returns the slash-separated paths under dir that .dockerignore keeps, sorted, so
// that a directory comes before what it holds.
func contextPaths(dir string, keep []string) ([]string, error) {
	excludes, err := readDockerignore(dir, keep)
	if err != nil {
		return nil, err
	}
	var paths []string
	walk := func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, filepath.ToSlash(p))
		return nil
	}
	if err := fsutil.WalkDir(context.Background(), dir, &fsutil.FilterOpt{ExcludePatterns: excludes}, walk); err != nil {
		return nil, fmt.Errorf("walking the build context %s: %w", dir, err)
	}
	sort.Strings(paths)
	return paths, nil
}

// readDockerignore returns the patterns of dir/.dockerignore (none if it is absent), with
// exceptions added for Dockerfile, .dockerignore and the paths in keep when the patterns exclude
// them.
func readDockerignore(dir string, keep []string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, dockerignore))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	excludes, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	pm, err := patternmatcher.New(excludes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	for _, k := range append([]string{dockerignore, dockerfile}, keep...) {
		if m, err := pm.MatchesOrParentMatches(k); err == nil && m {
			excludes = append(excludes, "!"+k)
		}
	}
	return excludes, nil
}

// packEntry writes the tar entry of dir/p (p slash-separated) and returns its content bytes.
func packEntry(tw *tar.Writer, dir, p string) (int64, error) {
	full := filepath.Join(dir, filepath.FromSlash(p))
	fi, err := os.Lstat(full)
	if err != nil {
		return 0, err
	}
	hdr := &tar.Header{Name: p, ModTime: epoch}
	switch mode := fi.Mode(); {
	case mode.IsDir():
		hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, p+"/", 0o755
	case mode.IsRegular():
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, fileMode(int64(mode.Perm())), fi.Size()
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(full)
		if err != nil {
			return 0, err
		}
		if reason := linkTargetProblem(p, target); reason != "" {
			return 0, &EntryError{Entry: p, Reason: reason}
		}
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, target, 0o777
	default:
		return 0, &EntryError{Entry: p, Reason: fmt.Sprintf("%s: a build context holds only files, directories and symlinks", describeMode(mode))}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return 0, fmt.Errorf("writing %s: %w", p, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return 0, nil
	}
	return copyFile(tw, full, p, hdr.Size)
}

// copyFile copies exactly size bytes of the file full into tw; a file that changed size while
// packed is an error.
func copyFile(tw *tar.Writer, full, p string, size int64) (int64, error) {
	f, err := os.Open(full)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.CopyN(tw, f, size)
	if errors.Is(err, io.EOF) {
		return n, fmt.Errorf("packing %s: the file shrank from %d to %d bytes while being read", p, size, n)
	}
	if err != nil {
		return n, fmt.Errorf("packing %s: %w", p, err)
	}
	return n, nil
}

// fileMode is 0755 if perm has any execute bit, else 0644: the only file modes a context keeps.
func fileMode(perm int64) int64 {
	if perm&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// describeMode names a file type that is not a file, directory or symlink.
func describeMode(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeCharDevice != 0:
		return "a character device"
	case mode&fs.ModeDevice != 0:
		return "a block device"
	case mode&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	default:
		return fmt.Sprintf("a special file (mode %s)", mode)
	}
}

// linkTargetProblem says why a symlink at name (slash-separated, relative to the context's
// top) to target may not be in a context, or "" if it may. The target must be relative, its
// ".." components must all come first (so that it cannot climb back out through a symlink it
// descended into), and it must not climb above the context's top from the link's directory.
func linkTargetProblem(name, target string) string {
	switch {
	case target == "":
		return "a symlink with an empty target"
	case strings.ContainsRune(target, 0):
		return "a symlink whose target holds a NUL byte"
	case strings.HasPrefix(target, "/"):
		return fmt.Sprintf("a symlink to the absolute path %q", target)
	}
	up, descended := 0, false
	for _, c := range strings.Split(target, "/") {
		switch {
		case c == "" || c == ".":
		case c != "..":
			descended = true
		case descended:
			return fmt.Sprintf("a symlink to %q, whose \"..\" follows a name", target)
		default:
			up++
		}
	}
	depth := 0
	if d := path.Dir(name); d != "." {
		depth = strings.Count(d, "/") + 1
	}
	if up > depth {
		return fmt.Sprintf("a symlink to %q, outside the build context", target)
	}
	return ""
}
