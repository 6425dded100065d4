// Package proxy passes requests pvesnap does not answer itself to pveproxy, unchanged: method,
// path (no cleaning, no redirects), query, headers, body, status code and reason phrase,
// streamed responses and protocol upgrades (websocket, termproxy, VNC).
package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/httpd"
)

// Proxy forwards to one upstream (the node's pveproxy).
type Proxy struct {
	upstream  *url.URL
	tlsConfig func(host string) *tls.Config
	transport *http.Transport
	logger    *slog.Logger
	// InjectHTML, when set, rewrites the GUI page (GET /) before it reaches the browser.
	InjectHTML func(page []byte) []byte
	// AuthFailure, when set, hears of every authentication failure pveproxy answered: a 401,
	// or a login (POST …/access/ticket) refused inside an /api2/extjs answer of 200.
	AuthFailure func(r *http.Request, reason string)
	dialer      net.Dialer
}

// Options configure a Proxy.
type Options struct {
	// Upstream is where ServeHTTP sends requests (nil for a Proxy used only with Forward).
	Upstream *url.URL
	// TLSConfig returns the client TLS configuration for a host (it may change on reload).
	TLSConfig func(host string) *tls.Config
	// ResponseHeaderTimeout bounds the wait for pveproxy's answer (0 = none).
	ResponseHeaderTimeout time.Duration
	// MaxIdle is how many idle connections the pool for other targets (Forward to a peer)
	// keeps (default 256). Connections in use are not capped: a call to the upstream goes on
	// its client connection's own connection (see affine), so the listener's connection cap
	// bounds them, and a client that reads slowly holds nobody's connection but its own.
	MaxIdle int
	Logger  *slog.Logger
}

// idleTimeout is shorter than pveproxy's 5 s keep-alive timeout, so a request is never sent
// on a connection pveproxy is closing.
const idleTimeout = 4 * time.Second

// New makes a Proxy.
func New(o Options) *Proxy {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxIdle == 0 {
		o.MaxIdle = 256
	}
	p := &Proxy{upstream: o.Upstream, tlsConfig: o.TLSConfig, logger: o.Logger}
	p.dialer = net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	p.transport = &http.Transport{
		DialContext: p.dialer.DialContext,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return p.dialTLS(ctx, addr)
		},
		MaxIdleConns:          o.MaxIdle,
		MaxIdleConnsPerHost:   o.MaxIdle,
		IdleConnTimeout:       idleTimeout,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		DisableCompression:    true, // bytes pass as pveproxy sent them
		ForceAttemptHTTP2:     false,
	}
	return p
}

func (p *Proxy) dialTLS(ctx context.Context, addr string) (net.Conn, error) {
	raw, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	cfg := p.tlsConfig(host).Clone()
	if cfg.ServerName == "" && net.ParseIP(host) == nil {
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{"http/1.1"}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// affine is the transport of r's client connection: each client connection has its own
// connection to pveproxy, kept alive as long as the client keeps its own. pveproxy's workers
// each serve the connections they accepted, one call at a time; a pool shared by all clients
// would hand each call whichever connection came back last and pile calls on one worker
// while another waits idle. With one connection per client, pveproxy sees what it would see
// without pvesnap, and no client can hold another's.
func (p *Proxy) affine(r *http.Request) *http.Transport {
	return httpd.Local(r, affineKey{}, func() any {
		t := p.transport.Clone()
		t.MaxIdleConnsPerHost = 1
		return closingTransport{t}
	}).(closingTransport).Transport
}

type affineKey struct{}

// closingTransport drops its idle connection when the client connection ends.
type closingTransport struct{ *http.Transport }

func (t closingTransport) Close() error { t.CloseIdleConnections(); return nil }

// CloseIdle drops pooled upstream connections (after a TLS reload).
func (p *Proxy) CloseIdle() { p.transport.CloseIdleConnections() }

// hopHeaders are connection-specific and never forwarded (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && headerHasToken(r.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// outgoing builds the upstream request: same method, raw path and query, headers (hop-by-hop
// removed) and Host. X-Forwarded-For is the client's address alone: what a client sent there
// is never passed on, since pveproxy's PROXY_REAL_IP_HEADER takes the header as one address.
func (p *Proxy) outgoing(ctx context.Context, target *url.URL, r *http.Request, body io.Reader) *http.Request {
	u := &url.URL{Scheme: target.Scheme, Host: target.Host, Path: r.URL.Path,
		RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	out, _ := http.NewRequestWithContext(ctx, r.Method, u.String(), nil)
	out.URL = u // keep the path exactly as received ("//" included)
	out.Header = r.Header.Clone()
	removeHop(out.Header)
	out.Header.Del("X-Forwarded-For")
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		out.Header.Set("X-Forwarded-For", ip)
	}
	out.Host = r.Host
	if body != nil && r.ContentLength != 0 {
		out.Body = io.NopCloser(body)
		out.ContentLength = r.ContentLength
	}
	return out
}

// ServeHTTP forwards r to the upstream. Bodies are buffered (pveproxy accepts only
// Content-Length bodies of at most 512 KiB) except multipart uploads, which stream.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := p.Forward(w, r, p.upstream, nil); err != nil {
		p.upstreamError(w, r, err)
	}
}

// Forward sends r to target with extra headers and copies the answer back. An error means
// nothing was written: the target could not be reached or did not answer.
func (p *Proxy) Forward(w http.ResponseWriter, r *http.Request, target *url.URL, extra http.Header) error {
	if isUpgrade(r) {
		return p.serveUpgrade(w, r, target, extra)
	}
	var body io.Reader = r.Body
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "multipart/form-data" && r.Body != nil && r.Body != http.NoBody {
		b, err := api.BufferBody(r)
		if err != nil {
			if api.IsTooLarge(err) {
				p.fail(w, r, http.StatusNotImplemented, "for data too large")
			} else {
				p.fail(w, r, http.StatusBadRequest, "reading request body: "+err.Error())
			}
			return nil
		}
		body = bytes.NewReader(b)
	}
	inject := p.InjectHTML != nil && r.Method == http.MethodGet && (r.URL.Path == "/" || r.URL.Path == "/index.html")
	out := p.outgoing(r.Context(), target, r, body)
	for k, vs := range extra {
		out.Header[k] = vs
	}
	if inject {
		out.Header.Del("Accept-Encoding") // the page must arrive as plain HTML to be edited
	}
	tr := p.transport
	if target == p.upstream {
		tr = p.affine(r)
	}
	resp, err := tr.RoundTrip(out)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if p.AuthFailure != nil {
		if err := p.noteAuthFailure(r, resp); err != nil {
			return err
		}
	}
	if inject && resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		page, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if err != nil {
			return err
		}
		page = p.InjectHTML(page)
		resp.Header.Set("Content-Length", strconv.Itoa(len(page)))
		resp.ContentLength = int64(len(page))
		resp.Body = io.NopCloser(bytes.NewReader(page))
	}
	writeResponse(w, resp)
	return nil
}

// noteAuthFailure reports a refused credential or login. A login's answer is small: it is
// read whole to see inside the extjs envelope, which carries the 401 in its body.
func (p *Proxy) noteAuthFailure(r *http.Request, resp *http.Response) error {
	if resp.StatusCode == http.StatusUnauthorized {
		p.AuthFailure(r, ReasonOf(resp))
		return nil
	}
	if r.Method != http.MethodPost || api.PathOf(r.URL.Path) != "/access/ticket" || api.FormatOf(r.URL.Path) != api.ExtJS {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), resp.Body))
	var env struct {
		Success json.Number `json:"success"`
		Status  int         `json:"status"`
		Message string      `json:"message"`
	}
	if json.Unmarshal(b, &env) == nil && env.Success.String() == "0" && env.Status == http.StatusUnauthorized {
		p.AuthFailure(r, strings.TrimSpace(env.Message))
	}
	return nil
}

// writeResponse copies an upstream response: status line with its reason phrase, headers
// (repeated ones and Set-Cookie included), and the body streamed as it arrives.
func writeResponse(w http.ResponseWriter, resp *http.Response) {
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = append([]string(nil), vs...)
	}
	removeHop(h)
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	} else {
		h.Del("Content-Length")
	}
	httpd.WriteHeader(w, resp.StatusCode, ReasonOf(resp))
	streaming := resp.ContentLength < 0
	fl, _ := w.(http.Flusher)
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for {
		n, err := resp.Body.Read(*buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				panic(http.ErrAbortHandler) // client gone: drop the connection
			}
			if streaming && fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				panic(http.ErrAbortHandler) // upstream broke mid-body: the client must not see a clean end
			}
			return
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ReasonOf returns the reason phrase pveproxy sent ("storage 'x' does not exist").
func ReasonOf(resp *http.Response) string {
	prefix := strconv.Itoa(resp.StatusCode)
	return strings.TrimSpace(strings.TrimPrefix(resp.Status, prefix))
}

func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusBadGateway
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		code = http.StatusGatewayTimeout
	}
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	p.logger.Warn("upstream request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	p.fail(w, r, code, fmt.Sprintf("pveproxy at %s unreachable: %v", p.upstream.Host, cleanErr(err)))
}

func cleanErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "dial tcp") {
		return s[i+2:]
	}
	return s
}

func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	f := api.FormatOf(r.URL.Path)
	if f == "" {
		f = api.JSON
	}
	api.WriteError(w, f, &api.Error{Code: code, Message: msg})
}

// serveUpgrade relays a protocol upgrade: the handshake goes through as a normal request and,
// on 101, both directions are copied byte for byte until either side closes.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, r *http.Request, target *url.URL, extra http.Header) error {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	var up net.Conn
	var err error
	if target.Scheme == "https" {
		up, err = p.dialTLS(ctx, target.Host)
	} else {
		up, err = p.dialer.DialContext(ctx, "tcp", target.Host)
	}
	if err != nil {
		return err
	}
	out := p.outgoing(context.Background(), target, r, r.Body)
	for k, vs := range extra {
		out.Header[k] = vs
	}
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", r.Header.Get("Upgrade"))
	if err := out.Write(up); err != nil {
		up.Close()
		return err
	}
	ubr := bufio.NewReader(up)
	resp, err := http.ReadResponse(ubr, out)
	if err != nil {
		up.Close()
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer up.Close()
		defer resp.Body.Close()
		writeResponse(w, resp)
		return nil
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		p.fail(w, r, http.StatusInternalServerError, "connection cannot be upgraded")
		return nil
	}
	client, cbrw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return nil
	}
	fmt.Fprintf(cbrw, "HTTP/1.1 101 %s\r\n", ReasonOf(resp))
	resp.Header.Write(cbrw)
	cbrw.WriteString("\r\n")
	if err := cbrw.Flush(); err != nil {
		client.Close()
		up.Close()
		return nil
	}
	done := make(chan struct{}, 2)
	go func() { // upstream -> client, including bytes already read past the 101
		io.Copy(client, ubr)
		closeWrite(client)
		done <- struct{}{}
	}()
	go func() { // client -> upstream, including bytes the server had buffered
		io.Copy(up, cbrw.Reader)
		closeWrite(up)
		done <- struct{}{}
	}()
	<-done
	select { // one side finished: give the other a moment to drain, then end both
	case <-done:
	case <-time.After(30 * time.Second):
	}
	client.Close()
	up.Close()
	return nil
}

func closeWrite(c net.Conn) {
	switch x := c.(type) {
	case *tls.Conn:
		x.CloseWrite()
	case *net.TCPConn:
		x.CloseWrite()
	default:
		c.Close()
	}
}
