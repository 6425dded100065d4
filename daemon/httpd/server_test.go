package httpd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T, h http.Handler) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, ReadHeaderTimeout: 2 * time.Second, IdleTimeout: 5 * time.Second, MaxHeaderBytes: 4096}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return s, ln.Addr().String()
}

func rawRoundTrips(t *testing.T, addr, raw string, n int) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for i := 0; i < n; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
	}
	return out
}

func body(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

func TestReasonPhraseAndInjectionSafety(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteHeader(w, 500, "storage 'x' does not exist\r\nX-Injected: 1")
	}))
	resp := rawRoundTrips(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)[0]
	if resp.Status != "500 storage 'x' does not exist" {
		t.Fatalf("status %q", resp.Status)
	}
	if resp.Header.Get("X-Injected") != "" {
		t.Fatal("a reason phrase could inject a header")
	}
}

func TestKeepAliveAndPipelining(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	raw := "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /d HTTP/1.1\r\nHost: x\r\n\r\n"
	resps := rawRoundTrips(t, addr, raw, 4)
	for i, want := range []string{"/a", "/b", "/c", "/d"} {
		if got := body(resps[i]); got != want || resps[i].ContentLength != int64(len(want)) {
			t.Errorf("response %d: %q (len %d), want %q", i, got, resps[i].ContentLength, want)
		}
	}
}

func TestUnreadBodyDrainedForNextRequest(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok"+r.URL.Path) // never reads the body
	}))
	raw := "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
	resps := rawRoundTrips(t, addr, raw, 2)
	if body(resps[1]) != "ok/b" {
		t.Fatal("second request after an unread body was not served")
	}
}

func TestClosedBodyKeepsConnection(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		r.Body.Close() // what api.BufferBody does before replacing the body
		io.WriteString(w, "ok"+r.URL.Path)
	}))
	raw := "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
	resps := rawRoundTrips(t, addr, raw, 2)
	if resps[0].Close || body(resps[1]) != "ok/b" {
		t.Fatal("a handler closing the request body must not end the kept-alive connection")
	}
}

func TestExpectContinue(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 100 Continue") {
		t.Fatalf("got %q before sending the body", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "data")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || body(resp) != "data" {
		t.Fatalf("resp %v %v", resp, err)
	}
}

func TestChunkedWhenFlushed(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		io.WriteString(w, "second")
	}))
	resp := rawRoundTrips(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)[0]
	if len(resp.TransferEncoding) == 0 || body(resp) != "firstsecond" {
		t.Fatalf("TE %v body %q", resp.TransferEncoding, body(resp))
	}
}

func TestHeadHasNoBody(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "a body")
	}))
	resps := rawRoundTrips(t, addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)
	if resps[0].Header.Get("Content-Length") != "6" {
		t.Fatalf("HEAD Content-Length %q", resps[0].Header.Get("Content-Length"))
	}
}

func TestHeaderTooLarge(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	raw := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8000) + "\r\n\r\n"
	resp := rawRoundTrips(t, addr, raw, 1)[0]
	if resp.StatusCode != 431 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestPanicIs500(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") }))
	resp := rawRoundTrips(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)[0]
	if resp.StatusCode != 500 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	}))
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- body(resp)
	}()
	<-started
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		t.Error("listener still accepting during shutdown")
	}
	close(release)
	if b := <-got; b != "finished" {
		t.Fatalf("in-flight request got %q", b)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHTTP10CloseDelimited(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "old client")
	}))
	resp := rawRoundTrips(t, addr, "GET / HTTP/1.0\r\n\r\n", 1)[0]
	if body(resp) != "old client" || !resp.Close {
		t.Fatalf("body %q close %v", body(resp), resp.Close)
	}
}
