// Package gitremote lists a git repository's refs over the smart HTTP and git:// protocols, the
// way `git ls-remote` does, so that the manager can notice a moving branch without a clone and
// without credentials (the manager never reads Secrets).
package gitremote

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Refs maps ref names (HEAD, refs/heads/main, refs/tags/v1, refs/tags/v1^{}) to commit ids.
type Refs map[string]string

var commitID = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// IsCommit reports whether rev is a full commit id, which never moves.
func IsCommit(rev string) bool { return commitID.MatchString(rev) }

// Resolve returns the commit rev names among refs: a branch, a tag (peeled to its commit) or,
// when rev is empty, HEAD.
func (r Refs) Resolve(rev string) (string, error) {
	if rev == "" || rev == "HEAD" {
		if c, ok := r["HEAD"]; ok {
			return c, nil
		}
		return "", errors.New("the repository advertises no HEAD")
	}
	names := []string{rev}
	if !strings.HasPrefix(rev, "refs/") {
		names = []string{"refs/heads/" + rev, "refs/tags/" + rev}
	}
	for _, name := range names {
		if c, ok := r[name+"^{}"]; ok {
			return c, nil // an annotated tag, peeled to its commit
		}
		if c, ok := r[name]; ok {
			return c, nil
		}
	}
	return "", fmt.Errorf("no branch or tag named %q", rev)
}

// List asks the repository at rawURL for its refs. It supports https://, http:// and git://.
func List(ctx context.Context, rawURL string) (Refs, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "http", "https":
		return listHTTP(ctx, u)
	case "git":
		return listGit(ctx, u)
	}
	return nil, fmt.Errorf("cannot list refs of %q: only https://, http:// and git:// repositories can be polled", rawURL)
}

func listHTTP(ctx context.Context, u *url.URL) (Refs, error) {
	info := *u
	info.Path = strings.TrimSuffix(info.Path, "/") + "/info/refs"
	info.RawQuery = "service=git-upload-pack"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, info.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "git/2.0 (kiln)")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", info.Redacted(), resp.Status)
	}
	r := bufio.NewReader(resp.Body)
	// Smart HTTP starts with "# service=git-upload-pack" and a flush.
	first, err := readPkt(r)
	if err != nil {
		return nil, fmt.Errorf("%s is not a smart git server: %w", u.Redacted(), err)
	}
	if !strings.HasPrefix(first, "# service=") {
		return nil, fmt.Errorf("%s is not a smart git server (got %q)", u.Redacted(), first)
	}
	if _, err := readPkt(r); err != nil && !errors.Is(err, errFlush) {
		return nil, err
	}
	return readRefs(r)
}

func listGit(ctx context.Context, u *url.URL) (Refs, error) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "9418")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if _, err := io.WriteString(conn, pkt("git-upload-pack "+u.Path+"\x00host="+u.Host+"\x00")); err != nil {
		return nil, err
	}
	refs, err := readRefs(bufio.NewReader(conn))
	_, _ = io.WriteString(conn, "0000") // we want nothing: end the session
	return refs, err
}

// readRefs reads a ref advertisement up to its flush packet.
func readRefs(r *bufio.Reader) (Refs, error) {
	refs := Refs{}
	for {
		line, err := readPkt(r)
		if errors.Is(err, errFlush) {
			return refs, nil
		}
		if err != nil {
			return nil, err
		}
		line, _, _ = strings.Cut(line, "\x00") // capabilities follow the first ref
		id, name, ok := strings.Cut(strings.TrimSpace(line), " ")
		if strings.HasPrefix(line, "ERR ") {
			return nil, fmt.Errorf("git server: %s", strings.TrimSpace(line[4:]))
		}
		if ok && commitID.MatchString(id) {
			refs[name] = id
		}
	}
}

var errFlush = errors.New("flush packet")

func readPkt(r *bufio.Reader) (string, error) {
	head := make([]byte, 4)
	if _, err := io.ReadFull(r, head); err != nil {
		return "", err
	}
	n, err := strconv.ParseUint(string(head), 16, 16)
	if err != nil {
		return "", fmt.Errorf("bad pkt-line length %q", head)
	}
	if n == 0 {
		return "", errFlush
	}
	if n < 4 {
		return "", fmt.Errorf("bad pkt-line length %d", n)
	}
	buf := make([]byte, n-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }
