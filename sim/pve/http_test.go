package pve_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// rawConn opens a TLS connection to a node's pveproxy for requests written by hand.
func rawConn(t *testing.T, c *simpve.Cluster) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	pool := x509.NewCertPool()
	b, err := os.ReadFile(c.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(b)
	conn, err := tls.Dial("tcp", c.Addr("pve1"), &tls.Config{RootCAs: pool, ServerName: "pve1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReader(conn)
}

// TestHTTPLimits: pveproxy's limits and refusals before any handler runs (pve-http-server's
// AnyEvent.pm): 64 header lines or 8 KiB of header get no answer at all and the connection
// ends; unknown methods, chunked bodies, bodies on GET, unknown content types and bodies over
// 512 KiB get their own 5xx texts, the last ones only after authentication.
func TestHTTPLimits(t *testing.T) {
	c, root := startClusterWith(t, simpve.Options{Timeout: 300 * time.Millisecond}, "pve1")
	cookie := "PVEAuthCookie=" + url.QueryEscape(root.Ticket)
	send := func(t *testing.T, req string) (*http.Response, string, error) {
		t.Helper()
		conn, br := rawConn(t, c)
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, "", err
		}
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body), nil
	}
	headers := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "X-Filler-%d: %d\r\n", i, i)
		}
		return b.String()
	}
	get := "GET /api2/json/version HTTP/1.1\r\nHost: pve1\r\nCookie: " + cookie + "\r\n"
	// 2 header lines of our own, plus filler: 62 fields and the blank line are 63 lines.
	if resp, _, err := send(t, get+headers(60)+"\r\n"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("62 header fields: %v %v", resp, err)
	}
	start := time.Now()
	if resp, _, err := send(t, get+headers(61)+"\r\n"); err == nil {
		t.Errorf("63 header fields (64 lines): answered %s, pveproxy does not answer", resp.Status)
	} else if time.Since(start) > 3*time.Second {
		t.Errorf("63 header fields: the connection stayed open %s", time.Since(start))
	}
	long := func(total int) string {
		return "X-Long: " + strings.Repeat("a", total-len("X-Long: ")-len("Host: pve1")-len("Cookie: "+cookie)) + "\r\n"
	}
	if resp, _, err := send(t, get+long(8191)+"\r\n"); err != nil || resp.StatusCode != 200 {
		t.Errorf("8191 bytes of header: %v %v", resp, err)
	}
	if resp, _, err := send(t, get+long(8192)+"\r\n"); err == nil {
		t.Errorf("8 KiB of header: answered %s", resp.Status)
	}
	for _, tc := range []struct {
		name, req string
		code      int
		reason    string
	}{
		{"unknown method", "PATCH /api2/json/version HTTP/1.1\r\nHost: pve1\r\n\r\n", 501, "method 'PATCH' not available"},
		{"HTTP/2", "GET /api2/json/version HTTP/2.0\r\nHost: pve1\r\n\r\n", 506, "http protocol version 2.0 not supported"},
		{"chunked body", "POST /api2/json/access/ticket HTTP/1.1\r\nHost: pve1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, "chunked transfer encoding not supported"},
		{"a body on GET", get + "Content-Length: 3\r\n\r\na=1", 501, "Unexpected content for method 'GET'"},
		{"unknown content type", "POST /api2/json/access/ticket HTTP/1.1\r\nHost: pve1\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\na=1", 506, "upload 'Content-Type 'text/plain' not implemented"},
		{"body over 512 KiB, not logged in", "POST /api2/json/nodes/pve1/qemu HTTP/1.1\r\nHost: pve1\r\nContent-Length: 524289\r\n\r\n", 401, "No ticket"},
		{"body over 512 KiB", "POST /api2/json/nodes/pve1/qemu HTTP/1.1\r\nHost: pve1\r\nCookie: " + cookie + "\r\nCSRFPreventionToken: " + root.CSRF + "\r\nContent-Length: 524289\r\n\r\n", 501, "for data too large"},
		{"no such uri", "GET /api2 HTTP/1.1\r\nHost: pve1\r\n\r\n", 501, "no such uri"},
		{"a path no handler has", "GET /api2/json/nodes/pve1/lxc HTTP/1.1\r\nHost: pve1\r\nCookie: " + cookie + "\r\n\r\n", 501, "Method 'GET /nodes/pve1/lxc' not implemented"},
	} {
		resp, _, err := send(t, tc.req)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if resp.StatusCode != tc.code || strings.TrimPrefix(resp.Status, fmt.Sprint(tc.code)+" ") != tc.reason {
			t.Errorf("%s: %q, want %d %s", tc.name, resp.Status, tc.code, tc.reason)
		}
		if tc.code >= 400 && !resp.Close {
			t.Errorf("%s: the connection stays open after an error; pveproxy closes it", tc.name)
		}
	}
}

// TestKeepAlive: pveproxy serves at most 100 requests on one connection and says so on the
// last answer.
func TestKeepAlive(t *testing.T) {
	c, root := startCluster(t, "pve1")
	conn, br := rawConn(t, c)
	req := "GET /api2/json/version HTTP/1.1\r\nHost: pve1\r\nCookie: PVEAuthCookie=" + url.QueryEscape(root.Ticket) + "\r\n\r\n"
	for i := 1; i <= 100; i++ {
		io.WriteString(conn, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		if want := i == 100; resp.Close != want {
			t.Fatalf("request %d: Connection %q", i, resp.Header.Get("Connection"))
		}
	}
}
