package bundle

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// maxTrailing is how many bytes may follow the tar's end in the gzip stream (tar pads to a
// 10 KiB record; some writers pad more).
const maxTrailing = 1 << 20

// kind is what Unpack made at a path.
type kind byte

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

// unpacker extracts one archive into root and remembers what it made, so that no entry is
// written through a symlink or over an earlier entry.
type unpacker struct {
	root  *os.Root
	lim   Limits
	made  map[string]kind
	stats Stats
}

// Unpack extracts the gzip tar r into dir, which must be an existing empty directory, and
// returns the entries read and the file bytes written. It never writes outside dir and never
// follows a symlink while writing (os.Root refuses escapes; every parent is checked against
// the symlinks extracted before).
//
// An entry is refused with an *EntryError naming it when: its path is empty, absolute or has a
// ".." component; it goes through a symlink or a file extracted earlier; it repeats a path
// (only a directory may repeat a directory); it is a symlink whose target is absolute, climbs
// out of dir (resolved lexically from the link's directory) or has ".." after a name; it is a
// hard link whose target is not a regular file extracted earlier; it is a device, FIFO or any
// type but file, directory, symlink and hard link (a pax global header is skipped); a
// directory, symlink or hard link carries data; the files' total bytes would pass
// lim.MaxBytes (checked against the header before writing and counted while writing); or it is
// entry number lim.MaxEntries+1. Modes are not refused but reduced: files 0755 when any execute
// bit is set, else 0644, directories 0755 (no setuid, setgid, sticky or world-writable bit).
// Owners and times are not restored. A stream that is not gzip, a corrupt tar, or more than
// 1 MiB after the tar's end is a plain error. On error, what was extracted so far stays in dir.
func Unpack(r io.Reader, dir string, lim Limits) (Stats, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Stats{}, err
	}
	defer root.Close()
	if err := checkEmpty(root); err != nil {
		return Stats{}, err
	}
	gz, err := gzip.NewReader(r)
	if err != nil {
		return Stats{}, fmt.Errorf("the build context is not a gzip stream: %w", err)
	}
	u := &unpacker{root: root, lim: lim.withDefaults(), made: map[string]kind{}}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return u.stats, fmt.Errorf("reading the build context tar after %d entries: %w", u.stats.Entries, err)
		}
		if err := u.entry(tr, hdr); err != nil {
			return u.stats, err
		}
	}
	n, err := io.Copy(io.Discard, io.LimitReader(gz, maxTrailing+1))
	if err != nil {
		return u.stats, fmt.Errorf("reading the build context's gzip stream: %w", err)
	}
	if n > maxTrailing {
		return u.stats, fmt.Errorf("the build context has more than %d bytes after the tar's end", maxTrailing)
	}
	return u.stats, nil
}

// checkEmpty returns an error unless root has no entries.
func checkEmpty(root *os.Root) error {
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("unpacking a build context into %s: the directory is not empty (it has %q)", root.Name(), names[0])
	}
	return nil
}

// entry checks and extracts one tar entry.
func (u *unpacker) entry(tr io.Reader, hdr *tar.Header) error {
	u.stats.Entries++
	if u.stats.Entries > u.lim.MaxEntries {
		return &EntryError{Entry: hdr.Name, Reason: fmt.Sprintf("more than the limit of %d entries", u.lim.MaxEntries)}
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, reason := cleanName(hdr.Name)
	if reason == "" {
		reason = u.placeProblem(name, hdr)
	}
	if reason != "" {
		return &EntryError{Entry: hdr.Name, Reason: reason}
	}
	if name == "." || (u.made[name] == kindDir && hdr.Typeflag == tar.TypeDir) {
		return nil
	}
	if err := u.mkParents(name); err != nil {
		return &EntryError{Entry: hdr.Name, Reason: err.Error()}
	}
	var err error
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // TypeRegA is what old writers write.
		err = u.file(tr, name, hdr)
	case tar.TypeDir:
		err = u.mkdir(name)
	case tar.TypeSymlink:
		err = u.root.Symlink(hdr.Linkname, name)
		u.made[name] = kindSymlink
	case tar.TypeLink:
		target, _ := cleanName(hdr.Linkname)
		err = u.root.Link(target, name)
		u.made[name] = kindFile
	}
	if err == nil {
		return nil
	}
	var ee *EntryError
	if errors.As(err, &ee) {
		return err
	}
	return &EntryError{Entry: hdr.Name, Reason: err.Error()}
}

// cleanName returns the tar name raw as a clean slash-separated path relative to the
// directory ("." for the directory itself), or why it is refused.
func cleanName(raw string) (string, string) {
	switch {
	case raw == "":
		return "", "an empty path"
	case strings.ContainsRune(raw, 0):
		return "", "a path holding a NUL byte"
	case strings.HasPrefix(raw, "/"):
		return "", "an absolute path"
	}
	for _, c := range strings.Split(raw, "/") {
		if c == ".." {
			return "", "a path with a \"..\" component"
		}
	}
	return path.Clean(raw), ""
}

// placeProblem says why the entry hdr may not be made at name, or "" if it may.
func (u *unpacker) placeProblem(name string, hdr *tar.Header) string {
	if reason := typeProblem(hdr); reason != "" {
		return reason
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return "the top directory itself, as something other than a directory"
		}
		return ""
	}
	for p := path.Dir(name); p != "."; p = path.Dir(p) {
		switch u.made[p] {
		case kindSymlink:
			return fmt.Sprintf("a path through the symlink %q", p)
		case kindFile:
			return fmt.Sprintf("a path through the file %q", p)
		}
	}
	if k := u.made[name]; k != 0 && (k != kindDir || hdr.Typeflag != tar.TypeDir) {
		return "a second entry for a path already extracted"
	}
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		return linkTargetProblem(name, hdr.Linkname)
	case tar.TypeLink:
		target, reason := cleanName(hdr.Linkname)
		if reason != "" {
			return fmt.Sprintf("a hard link to %q: %s", hdr.Linkname, reason)
		}
		if u.made[target] != kindFile {
			return fmt.Sprintf("a hard link to %q, which is not a regular file extracted before it", hdr.Linkname)
		}
	}
	return ""
}

// typeProblem says why an entry of hdr's type (and size) may not be extracted, or "".
func typeProblem(hdr *tar.Header) string {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // TypeRegA is what old writers write.
		return ""
	case tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
		if hdr.Size != 0 {
			return fmt.Sprintf("a %s carrying %d bytes of data", typeName(hdr.Typeflag), hdr.Size)
		}
		return ""
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return typeName(hdr.Typeflag) + ": a build context holds only files, directories and symlinks"
	default:
		return fmt.Sprintf("an entry of type %q: a build context holds only files, directories, symlinks and hard links", hdr.Typeflag)
	}
}

// typeName names a tar entry type.
func typeName(t byte) string {
	switch t {
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "a character device"
	case tar.TypeBlock:
		return "a block device"
	case tar.TypeFifo:
		return "a FIFO"
	}
	return fmt.Sprintf("type %q", t)
}

// mkParents makes name's missing parent directories, mode 0755.
func (u *unpacker) mkParents(name string) error {
	var missing []string
	for p := path.Dir(name); p != "." && u.made[p] == 0; p = path.Dir(p) {
		missing = append(missing, p)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := u.mkdir(missing[i]); err != nil {
			return err
		}
	}
	return nil
}

// mkdir makes the directory name, mode 0755 whatever the umask.
func (u *unpacker) mkdir(name string) error {
	if err := u.root.Mkdir(name, 0o755); err != nil {
		return err
	}
	u.made[name] = kindDir
	return u.root.Chmod(name, 0o755)
}

// file writes the regular file name from tr, counting its bytes against the limit.
func (u *unpacker) file(tr io.Reader, name string, hdr *tar.Header) error {
	left := u.lim.MaxBytes - u.stats.Bytes
	if hdr.Size > left {
		return &EntryError{Entry: hdr.Name, Reason: fmt.Sprintf("%d bytes, over the limit of %d bytes of files in all", hdr.Size, u.lim.MaxBytes)}
	}
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	u.made[name] = kindFile
	n, err := io.Copy(f, io.LimitReader(tr, left+1))
	u.stats.Bytes += n
	if err == nil && n > left {
		err = &EntryError{Entry: hdr.Name, Reason: fmt.Sprintf("over the limit of %d bytes of files in all", u.lim.MaxBytes)}
	}
	if err == nil {
		err = f.Chmod(os.FileMode(fileMode(hdr.Mode)))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
