package httpd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startWith serves h with s's limits on a fresh listener.
func startWith(t *testing.T, s *Server, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Handler = h
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// dialer opens TCP connections to addr, closed at the test's end.
func dialer(t *testing.T, addr string) func() net.Conn {
	return func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
}

// statusOf sends raw and returns the status line, or "closed" when the server hung up.
func statusOf(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "closed"
	}
	resp.Body.Close()
	return resp.Status
}

// headers builds n header lines whose content (without CRLF) totals size bytes.
func headers(n, size int) string {
	var b strings.Builder
	per := size / n
	for i := 0; i < n; i++ {
		l := per
		if i == n-1 {
			l = size - per*(n-1)
		}
		name := fmt.Sprintf("X-%03d: ", i)
		b.WriteString(name + strings.Repeat("v", l-len(name)) + "\r\n")
	}
	return b.String()
}

// pveproxy counts header lines with the empty one and refuses at 64, and refuses at 8192
// bytes of line content (AnyEvent.pm's unshift_read_header).
func TestHeaderLimitsAsPveproxy(t *testing.T) {
	addr := startWith(t, &Server{ReadHeaderTimeout: 2 * time.Second}, okHandler())
	host := "Host: x\r\n" // 7 bytes of content, one line
	for _, c := range []struct {
		name string
		hdr  string
		want string
	}{
		{"62 lines", host + headers(61, 61*20), "200 OK"},
		{"63 lines", host + headers(62, 62*20), "431 Request Header Fields Too Large"},
		{"8191 bytes", host + headers(10, 8191-7), "200 OK"},
		{"8192 bytes", host + headers(10, 8192-7), "431 Request Header Fields Too Large"},
		{"one 30 KiB line", host + "X-Big: " + strings.Repeat("a", 30<<10) + "\r\n", "431 Request Header Fields Too Large"},
	} {
		if got := statusOf(t, addr, "GET / HTTP/1.1\r\n"+c.hdr+"\r\n"); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	if got := statusOf(t, addr, "GET /"+strings.Repeat("a", 17<<10)+" HTTP/1.1\r\nHost: x\r\n\r\n"); got != "414 URI Too Long" {
		t.Errorf("17 KiB request line: %s", got)
	}
}

func TestMalformedHeaderLines(t *testing.T) {
	addr := startWith(t, &Server{ReadHeaderTimeout: 2 * time.Second}, okHandler())
	for raw, want := range map[string]string{
		"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n":     "506 unable to parse request header",
		"GET / HTTP/1.1\r\nHost : x\r\n\r\n":                     "506 unable to parse request header",
		"GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n":           "506 unable to parse request header",
		"GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n":           "506 unable to parse request header",
		"GET / HTTP/1.1\r\n\r\n":                                 "400 Header field 'Host' not found in request",
		"GET / HTTP/1.0\r\n\r\n":                                 "200 OK",
		"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n":              "200 OK",
		"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n": "200 OK",
	} {
		if got := statusOf(t, addr, raw); got != want {
			t.Errorf("%q: %s, want %s", raw, got, want)
		}
	}
}

// A client that stops sending its body, or stops reading a response, is dropped after the
// inactivity timeout; waiting for a slow handler is not inactivity.
func TestInactivity(t *testing.T) {
	const idle = 300 * time.Millisecond
	handlerErr := make(chan error, 4)
	addr := startWith(t, &Server{ReadHeaderTimeout: 2 * time.Second, InactivityTimeout: idle}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/body":
			_, err := io.ReadAll(r.Body)
			handlerErr <- err
		case "/big":
			chunk := make([]byte, 1<<20)
			var err error
			for i := 0; i < 256 && err == nil; i++ {
				_, err = w.Write(chunk)
			}
			handlerErr <- err
		case "/slow":
			time.Sleep(3 * idle)
			io.WriteString(w, "late but fine")
		}
	}))
	dial := dialer(t, addr)
	c := dial()
	start := time.Now()
	io.WriteString(c, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
	select {
	case err := <-handlerErr:
		if err == nil || time.Since(start) > 5*idle {
			t.Errorf("stalled body: handler got %v after %s", err, time.Since(start))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled request body held the handler")
	}
	// The connection ends there: no second wait to drain the rest of the body.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(c)
	if d := time.Since(start); d >= 2*idle {
		t.Errorf("the stalled connection ended after %s: it waited again to drain the body (inactivity %s)", d, idle)
	}
	c = dial()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
	}
	start = time.Now()
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case err := <-handlerErr:
		if err == nil {
			t.Error("a client that never reads received 256 MiB")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client that never reads held the connection")
	}
	c = dial()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || body(resp) != "late but fine" {
		t.Errorf("a handler slower than the inactivity timeout: %v", err)
	}
}

// A handler may give its body a limit of its own through http.ResponseController (a move's
// stream pauses while zfs send waits on its pool); the next request has the inactivity
// timeout again.
func TestHandlerSetsItsBodysReadDeadline(t *testing.T) {
	const idle = 200 * time.Millisecond
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 2)
	addr := startWith(t, &Server{ReadHeaderTimeout: 2 * time.Second, InactivityTimeout: idle}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/patient" {
			if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(20 * idle)); err != nil {
				got <- result{err: err}
				return
			}
		}
		b, err := io.ReadAll(r.Body)
		got <- result{string(b), err}
	}))
	c := dialer(t, addr)()
	io.WriteString(c, "POST /patient HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfirst")
	time.Sleep(5 * idle)
	io.WriteString(c, " half")
	if r := <-got; r.err != nil || r.body != "first half" {
		t.Fatalf("a body paused under the handler's own deadline: %q, %v", r.body, r.err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("answer: %v", err)
	}
	io.WriteString(c, "POST /hasty HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfirst")
	time.Sleep(5 * idle)
	io.WriteString(c, " half")
	if r := <-got; r.err == nil {
		t.Fatalf("the next request kept the handler's deadline: its paused body was read (%q)", r.body)
	}
}

// At MaxConns, a new connection takes the place of an idle one first, then of the one that
// has waited longest for its header; connections serving a request are never closed, and
// accepting waits for one of them to end.
func TestMaxConns(t *testing.T) {
	release := make(chan struct{})
	var inHandler atomic.Int32
	s := &Server{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second, MaxConns: 4}
	addr := startWith(t, s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			inHandler.Add(1)
			<-release
		}
		io.WriteString(w, "ok")
	}))
	dial := dialer(t, addr)
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	// An idle kept-alive connection, then three parked ones (no header yet).
	idle := dial()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(idle)
	if r, err := http.ReadResponse(br, nil); err != nil || body(r) != "ok" {
		t.Fatal(err)
	}
	var parked []net.Conn
	for i := 0; i < 3; i++ {
		parked = append(parked, dial())
		time.Sleep(20 * time.Millisecond)
	}
	waitOpen(t, s, 4)
	// A fifth: the idle connection makes room.
	if got := statusOf(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "200 OK" {
		t.Fatalf("at the cap: %s", got)
	}
	if !closed(idle) {
		t.Error("the idle connection was not the one closed")
	}
	// Next (the cap full again): the connection parked the longest.
	waitOpen(t, s, 3)
	parked = append(parked, dial())
	waitOpen(t, s, 4)
	if got := statusOf(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "200 OK" {
		t.Fatalf("at the cap: %s", got)
	}
	if !closed(parked[0]) {
		t.Error("the longest-parked connection was not the one closed")
	}
	// Fill the cap with requests in progress: the next connection waits for one to end.
	waitOpen(t, s, 3)
	for _, c := range append(parked[1:], dial()) {
		io.WriteString(c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	deadline := time.Now().Add(3 * time.Second)
	for inHandler.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if inHandler.Load() != 4 {
		t.Fatalf("%d requests in progress, want 4", inHandler.Load())
	}
	got := make(chan string, 1)
	go func() { got <- statusOf(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") }()
	select {
	case s := <-got:
		t.Fatalf("a connection was admitted while every slot served a request: %s", s)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case s := <-got:
		if s != "200 OK" {
			t.Fatalf("after a slot freed: %s", s)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("not admitted after a slot freed")
	}
}

func waitOpen(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for s.Open() != n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.Open() != n {
		t.Fatalf("%d connections open, want %d", s.Open(), n)
	}
}

func TestAllowRefusesUnanswered(t *testing.T) {
	var seen atomic.Value
	addr := startWith(t, &Server{ReadHeaderTimeout: time.Second, Allow: func(a netip.Addr) bool {
		seen.Store(a)
		return false
	}}, okHandler())
	if got := statusOf(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "closed" {
		t.Fatalf("refused peer got %s", got)
	}
	if a, _ := seen.Load().(netip.Addr); a != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("policy saw %v", a)
	}
}

type closeSignal chan struct{}

func (c closeSignal) Close() error { close(c); return nil }

// A value kept with a connection lives as long as it: the same for every request on it,
// closed when it ends.
func TestLocalPerConnection(t *testing.T) {
	made := make(chan closeSignal, 4)
	addr := startWith(t, &Server{ReadHeaderTimeout: 2 * time.Second}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := Local(r, "k", func() any { c := make(closeSignal); made <- c; return c })
		fmt.Fprintf(w, "%p", v)
	}))
	resps := rawRoundTrips(t, addr, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 2)
	if a, b := body(resps[0]), body(resps[1]); a != b || len(made) != 1 {
		t.Fatalf("two requests on one connection got %s and %s (%d made)", a, b, len(made))
	}
	select {
	case <-<-made:
	case <-time.After(2 * time.Second):
		t.Fatal("the value was not closed with its connection")
	}
}
