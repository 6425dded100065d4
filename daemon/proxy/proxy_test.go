package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/httpd"
	"github.com/pvesnap/pvesnap/daemon/proxy"
)

// serve runs h on a plain-HTTP httpd server and returns its base URL.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httpd.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// seen records what the upstream received.
type seen struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, RequestURI, ContentType, XFF string
	Body                                 []byte
	Header                               http.Header
}

func (s *seen) last() recorded { s.mu.Lock(); defer s.mu.Unlock(); return s.reqs[len(s.reqs)-1] }

// upstream is a pveproxy stand-in with the behaviours the proxy must carry through.
func upstream(t testing.TB, s *seen) string {
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, recorded{Method: r.Method, RequestURI: r.RequestURI, ContentType: r.Header.Get("Content-Type"),
			XFF: r.Header.Get("X-Forwarded-For"), Body: body, Header: r.Header.Clone()})
		s.mu.Unlock()
		switch {
		case r.URL.Path == "/api2/json/storage/foo":
			w.Header().Set("Content-Type", "application/json;charset=UTF-8")
			httpd.WriteHeader(w, 500, "storage 'foo' does not exist")
			io.WriteString(w, `{"data":null}`)
		case r.URL.Path == "/headers":
			w.Header().Add("X-Multi", "one")
			w.Header().Add("X-Multi", "two")
			http.SetCookie(w, &http.Cookie{Name: "PVEAuthCookie", Value: "PVE%3Aroot%40pam", Path: "/"})
			http.SetCookie(w, &http.Cookie{Name: "other", Value: "2", Path: "/"})
			io.WriteString(w, "ok")
		case r.URL.Path == "/chunked":
			fl := w.(http.Flusher)
			for i := 0; i < 5; i++ {
				fmt.Fprintf(w, "part %d\n", i)
				fl.Flush()
			}
		case r.URL.Path == "/fixed":
			w.Header().Set("Content-Length", "11")
			io.WriteString(w, "hello world")
		case r.URL.Path == "/big":
			n := 5 << 20
			w.Header().Set("Content-Length", fmt.Sprint(n))
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
			for sent := 0; sent < n; sent += len(chunk) {
				w.Write(chunk)
			}
		case r.URL.Path == "/ws":
			wsEcho(w, r)
		default:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"uri": r.RequestURI})
		}
	}))
}

func newProxy(t testing.TB, up string) *proxy.Proxy {
	u, _ := url.Parse(up)
	return proxy.New(proxy.Options{Upstream: u, TLSConfig: func(string) *tls.Config { return &tls.Config{} }})
}

// front is pvesnap's listener: an api.Mux with one intercepting route that reads the
// parameters and then declines, so every other request and the declined ones pass through.
func front(t testing.TB, p *proxy.Proxy) string {
	decline := &api.Route{Method: "POST", Path: "/nodes/{node}/storage/{storage}/content/{volume}", Name: "copy",
		Description: "declines after reading the body", Intercept: true,
		Permission: api.Permission{User: "all", Description: "test"},
		Params: []api.Param{{Name: "node", Type: api.String}, {Name: "storage", Type: api.String}, {Name: "volume", Type: api.String},
			{Name: "target", Type: api.String}, {Name: "target_node", Type: api.String, Optional: true}},
		Handler: func(c *api.Call) (any, error) {
			if c.Params.Str("target") == "" {
				t.Errorf("handler did not see the target parameter")
			}
			return nil, api.ErrPassThrough
		}}
	m, err := api.NewMux([]*api.Route{decline}, api.Options{Authz: allowAll{}, PassThrough: p, LocalNode: "pve1"})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, m)
}

type allowAll struct{}

func (allowAll) Authenticate(r *http.Request) (*api.Identity, error) {
	return &api.Identity{UserID: "root@pam"}, nil
}
func (allowAll) Privileges(_ context.Context, _ *http.Request, _ *api.Identity, _ string) (map[string]bool, error) {
	return nil, nil
}

func setup(t *testing.T) (string, *seen) {
	s := &seen{}
	return front(t, newProxy(t, upstream(t, s))), s
}

func TestReasonPhraseCarriedThrough(t *testing.T) {
	base, _ := setup(t)
	resp, err := http.Get(base + "/api2/json/storage/foo")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Status != "500 storage 'foo' does not exist" {
		t.Fatalf("status line %q, want pveproxy's reason phrase", resp.Status)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != `{"data":null}` {
		t.Fatalf("body %q", b)
	}
}

func TestRepeatedHeadersAndCookies(t *testing.T) {
	base, _ := setup(t)
	resp, err := http.Get(base + "/headers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Values("X-Multi"); strings.Join(got, ",") != "one,two" {
		t.Errorf("X-Multi = %v, want both values in order", got)
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) != 2 || !strings.HasPrefix(got[0], "PVEAuthCookie=PVE%3Aroot%40pam") {
		t.Errorf("Set-Cookie = %v, want both cookies unchanged", got)
	}
}

func TestChunkedAndFixedBodies(t *testing.T) {
	base, _ := setup(t)
	resp, err := http.Get(base + "/chunked")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.ContentLength != -1 {
		t.Errorf("chunked upstream body arrived with TE %v length %d", resp.TransferEncoding, resp.ContentLength)
	}
	if string(b) != "part 0\npart 1\npart 2\npart 3\npart 4\n" {
		t.Errorf("chunked body %q", b)
	}
	resp, err = http.Get(base + "/fixed")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ContentLength != 11 || string(b) != "hello world" {
		t.Errorf("fixed body %q length %d", b, resp.ContentLength)
	}
}

func TestLargeDownloadStreams(t *testing.T) {
	base, _ := setup(t)
	resp, err := http.Get(base + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength != 5<<20 {
		t.Fatalf("Content-Length %d", resp.ContentLength)
	}
	// The first bytes must arrive before the whole body could have been buffered: read 64 KiB
	// and check the proxy does not hold the answer back.
	first := make([]byte, 64<<10)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write(first)
	h.Write(rest)
	want := sha256.New()
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	for i := 0; i < (5<<20)/len(chunk); i++ {
		want.Write(chunk)
	}
	if hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(want.Sum(nil)) || len(first)+len(rest) != 5<<20 {
		t.Fatalf("5 MiB download corrupted (%d bytes)", len(first)+len(rest))
	}
}

func TestDoubleSlashPathUntouched(t *testing.T) {
	base, s := setup(t)
	resp, err := http.Get(base + "/api2/json/nodes//storage/x?a=1&a=2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: a // path must not be redirected", resp.StatusCode)
	}
	if got := s.last().RequestURI; got != "/api2/json/nodes//storage/x?a=1&a=2" {
		t.Fatalf("upstream saw %q", got)
	}
}

func TestEncodedPathUntouched(t *testing.T) {
	base, s := setup(t)
	resp, err := http.Get(base + "/api2/json/nodes/pve1/storage/local/content/local%3A9999%2Fvm-9999-x.raw")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := s.last().RequestURI; got != "/api2/json/nodes/pve1/storage/local/content/local%3A9999%2Fvm-9999-x.raw" {
		t.Fatalf("upstream saw %q", got)
	}
}

func TestBodiesUnchangedAfterDecline(t *testing.T) {
	base, s := setup(t)
	cases := []struct{ ct, body string }{
		{"application/x-www-form-urlencoded", "target=vm-9999-snap&target_node=pve1"},
		{"application/json", `{"target":"vm-9999-snap", "target_node" : "pve1"}`},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("POST", base+"/api2/json/nodes/pve1/storage/local-lvm/content/vm-100-disk-0", strings.NewReader(c.body))
		req.Header.Set("Content-Type", c.ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := s.last()
		if string(got.Body) != c.body || got.ContentType != c.ct || got.Method != "POST" {
			t.Errorf("%s: upstream got %s %q (%s), want the original body byte for byte", c.ct, got.Method, got.Body, got.ContentType)
		}
		if got.Header.Get("Content-Length") != fmt.Sprint(len(c.body)) {
			t.Errorf("%s: upstream Content-Length %q (pveproxy refuses chunked bodies)", c.ct, got.Header.Get("Content-Length"))
		}
	}
}

func TestChunkedRequestBodyForwardedWithLength(t *testing.T) {
	base, s := setup(t)
	pr, pw := io.Pipe()
	go func() { io.WriteString(pw, "a=1&b=2"); pw.Close() }()
	req, _ := http.NewRequest("PUT", base+"/api2/json/nodes/pve1/config", pr)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := s.last()
	if string(got.Body) != "a=1&b=2" || got.Header.Get("Content-Length") != "7" {
		t.Fatalf("upstream got %q with length %q", got.Body, got.Header.Get("Content-Length"))
	}
}

func TestOversizedBodyRefusedLikePveproxy(t *testing.T) {
	base, _ := setup(t)
	body := strings.Repeat("x", api.MaxBody+1)
	resp, err := http.Post(base+"/api2/json/nodes/pve1/config", "application/x-www-form-urlencoded", strings.NewReader("a="+body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Status != "501 for data too large" {
		t.Fatalf("status %q, want pveproxy's refusal", resp.Status)
	}
}

// pveproxy's PROXY_REAL_IP_HEADER reads the header as one address: pveproxy must get the
// client's address alone, never one the client claims.
func TestForwardedFor(t *testing.T) {
	base, s := setup(t)
	req, _ := http.NewRequest("GET", base+"/x", nil)
	req.Header.Add("X-Forwarded-For", "10.1.2.3")
	req.Header.Add("X-Forwarded-For", "10.4.5.6")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := s.last().Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Fatalf("X-Forwarded-For %q, want the client's address alone", got)
	}
}

func TestUpstreamDownIs502(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	base := front(t, newProxy(t, "http://"+addr))
	resp, err := http.Get(base + "/api2/json/version")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 502 || !strings.Contains(resp.Status, "unreachable") {
		t.Fatalf("status %q", resp.Status)
	}
}

func TestWebsocketEcho(t *testing.T) {
	base, _ := setup(t)
	u, _ := url.Parse(base)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", u.Host, key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != wsAccept(key) {
		t.Fatalf("handshake %q accept %q", resp.Status, resp.Header.Get("Sec-Websocket-Accept"))
	}
	for _, msg := range []string{"hello", strings.Repeat("termproxy data ", 500)} {
		if err := wsWrite(c, []byte(msg), true); err != nil {
			t.Fatal(err)
		}
		got, err := wsRead(br)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "echo:"+msg {
			t.Fatalf("echo %q", got)
		}
	}
}

// --- a minimal RFC 6455 peer for the echo test -----------------------------------------------

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

func wsWrite(w io.Writer, payload []byte, mask bool) error {
	hdr := []byte{0x81}
	mbit := byte(0)
	if mask {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, mbit|byte(n))
	case n < 65536:
		hdr = append(hdr, mbit|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, mbit|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if mask {
		m := make([]byte, 4)
		rand.Read(m)
		hdr = append(hdr, m...)
		for i := range p {
			p[i] ^= m[i%4]
		}
	}
	_, err := w.Write(append(hdr, p...))
	return err
}

func wsRead(r *bufio.Reader) ([]byte, error) {
	h := make([]byte, 2)
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		b := make([]byte, 2)
		io.ReadFull(r, b)
		n = uint64(binary.BigEndian.Uint16(b))
	case 127:
		b := make([]byte, 8)
		io.ReadFull(r, b)
		n = binary.BigEndian.Uint64(b)
	}
	var m []byte
	if h[1]&0x80 != 0 {
		m = make([]byte, 4)
		io.ReadFull(r, m)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, err
	}
	for i := range p {
		if m != nil {
			p[i] ^= m[i%4]
		}
	}
	return p, nil
}

func wsEcho(w http.ResponseWriter, r *http.Request) {
	conn, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
	brw.Flush()
	for {
		msg, err := wsRead(brw.Reader)
		if err != nil {
			return
		}
		if wsWrite(conn, append([]byte("echo:"), msg...), false) != nil {
			return
		}
	}
}

// Each client connection has its own connection to pveproxy, as long as it lives: pveproxy's
// workers serve the connections they accepted, so calls are spread over them as the
// clients' own connections would be, and no client can hold another's.
func TestUpstreamConnectionPerClient(t *testing.T) {
	var mu sync.Mutex
	peers := map[string]int{} // upstream connection (pvesnap's side) -> calls
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		peers[r.RemoteAddr]++
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	base := front(t, newProxy(t, up))
	client := func() *http.Client { return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}} }
	a, b := client(), client()
	for i := 0; i < 5; i++ {
		for _, c := range []*http.Client{a, b} {
			resp, err := c.Get(base + "/x")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	mu.Lock()
	got := fmt.Sprint(len(peers))
	for _, n := range peers {
		got += fmt.Sprintf(" %d", n)
	}
	mu.Unlock()
	if got != "2 5 5" {
		t.Fatalf("two clients of 5 calls each reached pveproxy as (connections, calls each): %s, want 2 5 5", got)
	}
}
