package testenv

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// MetadataServer starts a 127.0.0.1 HTTP listener that stands for an instance metadata service:
// it answers like one (a body holding "SECRET-METADATA") and counts the connections it gets,
// which tests of kiln's outbound rules expect to stay zero. It stops when the test ends.
func MetadataServer(t testing.TB) (url string, conns *atomic.Int32) {
	t.Helper()
	conns = &atomic.Int32{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "SECRET-METADATA: {\"AccessKeyId\": \"AKIA\"}")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, conns
}
