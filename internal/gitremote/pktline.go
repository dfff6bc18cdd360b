package gitremote

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
)

// Error is a failed listing. Its message is kiln's own sentence: no byte the server sent (an
// HTTP reason phrase, an ERR packet, a certificate name) reaches it, because it ends up in an
// Event in the tenant's namespace. The cause, for logs and errors.Is, is in Unwrap.
type Error struct {
	msg string
	err error
}

func (e *Error) Error() string { return e.msg }

func (e *Error) Unwrap() error { return e.err }

// describe turns whatever a listing failed with into a sentence of kiln's own.
func describe(err error) string {
	var own *Error
	var refused *RefusedError
	var dns *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &refused):
		return refused.Error()
	case errors.As(err, &own):
		return own.msg
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "the server did not answer in time"
	case errors.Is(err, context.Canceled):
		return "the listing was cancelled"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "the host name does not resolve"
	case errors.As(err, &dns):
		return "the host name could not be resolved"
	case tlsFailure(err):
		return "the TLS handshake failed (the server's certificate is not valid for the host, or it does not speak TLS)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "the connection was refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the server closed the connection before the end of the ref list"
	}
	return "the connection failed"
}

func tlsFailure(err error) bool {
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	var host x509.HostnameError
	var authority x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	return errors.As(err, &verify) || errors.As(err, &header) || errors.As(err, &host) ||
		errors.As(err, &authority) || errors.As(err, &invalid) || errors.As(err, &alert)
}

// maxPkt is the longest pkt-line git sends (LARGE_PACKET_MAX).
const maxPkt = 65520

var errFlush = errors.New("flush packet")

// pktReader reads pkt-lines, at most max bytes and maxRefs refs in all, into one buffer.
type pktReader struct {
	r       *bufio.Reader
	left    int64
	max     int64
	maxRefs int
	buf     [maxPkt]byte
}

func (c *Client) reader(r io.Reader) *pktReader {
	return &pktReader{r: bufio.NewReader(r), left: c.opts.MaxBytes, max: c.opts.MaxBytes, maxRefs: c.opts.MaxRefs}
}

// read fills p, counting it against the byte limit.
func (p *pktReader) read(b []byte) error {
	if int64(len(b)) > p.left {
		return &Error{msg: fmt.Sprintf("the ref list is longer than %d bytes", p.max)}
	}
	p.left -= int64(len(b))
	_, err := io.ReadFull(p.r, b)
	return err
}

// next returns the next pkt-line's payload (valid until the next call), or errFlush.
func (p *pktReader) next() ([]byte, error) {
	head := p.buf[:4]
	if err := p.read(head); err != nil {
		return nil, err
	}
	n, err := strconv.ParseUint(string(head), 16, 16)
	switch {
	case err != nil || n > maxPkt || (n > 0 && n < 4):
		return nil, &Error{msg: "the server sent a malformed pkt-line"}
	case n == 0:
		return nil, errFlush
	}
	line := p.buf[:n-4]
	if err := p.read(line); err != nil {
		return nil, err
	}
	return line, nil
}

// refs reads a ref advertisement and keeps the refs named in want (best first) and their peeled
// values. It stops at the flush that ends the list, or as soon as the best name is settled: it
// was seen, and so was the line after it (which would be its peeled value).
func (p *pktReader) refs(want []string) (Refs, error) {
	refs := Refs{}
	best := want[0]
	keep := map[string]bool{}
	for _, name := range want {
		keep[name], keep[name+"^{}"] = true, true
	}
	for count := 0; ; count++ {
		line, err := p.next()
		if errors.Is(err, errFlush) {
			return refs, nil
		}
		if err != nil {
			return nil, err
		}
		if count >= p.maxRefs {
			return nil, &Error{msg: fmt.Sprintf("the repository advertises more than %d refs", p.maxRefs)}
		}
		if strings.HasPrefix(string(line), "ERR ") {
			return nil, &Error{msg: "the git server refused the request (an ERR packet)"}
		}
		_, sawBest := refs[best]
		text, _, _ := strings.Cut(string(line), "\x00") // capabilities follow the first ref
		id, name, ok := strings.Cut(strings.TrimSuffix(text, "\n"), " ")
		if ok && keep[name] && commitID.MatchString(id) {
			refs[name] = id
		}
		if sawBest {
			return refs, nil
		}
	}
}

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }
