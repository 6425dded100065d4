// Package httpd is a small HTTP/1.1 server for pvesnap's listener and for sim/pve.
//
// It exists because Proxmox puts error messages in the reason phrase of the status line
// ("HTTP/1.1 500 storage 'foo' does not exist") and Proxmox clients such as go-proxmox report
// nothing but that line, while net/http's server always writes the standard text. Handlers are
// ordinary http.Handlers; the ResponseWriter this server passes them also implements
// ReasonWriter, http.Flusher and http.Hijacker (for websocket, termproxy and VNC upgrades).
//
// It speaks HTTP/1.1 only, like pveproxy: keep-alive, pipelining, Expect: 100-continue, chunked
// responses when the length is unknown, and the timeouts a public listener needs.
package httpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ReasonWriter is implemented by this server's ResponseWriter: it writes the status line with
// the given reason phrase instead of the standard text for code.
type ReasonWriter interface {
	WriteHeaderReason(code int, reason string)
}

// WriteHeader writes code with reason when w supports it (this server), else the plain code
// (httptest recorders, net/http servers).
func WriteHeader(w http.ResponseWriter, code int, reason string) {
	if rw, ok := w.(ReasonWriter); ok && reason != "" {
		rw.WriteHeaderReason(code, reason)
		return
	}
	w.WriteHeader(code)
}

// Server serves HTTP/1.1 on listeners.
type Server struct {
	Handler http.Handler
	// TLSConfig, when set, makes Serve wrap each connection in TLS. Use GetCertificate to reload
	// certificates without a restart.
	TLSConfig *tls.Config
	// ReadHeaderTimeout bounds the TLS handshake and the reading of a request's line and header,
	// in total (slowloris); IdleTimeout the wait for the next request on a kept-alive connection.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// InactivityTimeout ends a connection on which reading the request body or writing the
	// response makes no progress for this long, as pveproxy's 5 s handle timeout does: a client
	// that stops reading a response holds nothing for longer (0 = no limit). Waiting for the
	// handler is not inactivity; upgraded (hijacked) connections are the handler's.
	InactivityTimeout time.Duration
	// MaxHeaderBytes and MaxHeaderLines bound the header as pveproxy does (default 8 KiB of
	// header lines in total and 64 lines, the empty one included); MaxRequestLine bounds the
	// request line (default 16 KiB).
	MaxHeaderBytes int
	MaxHeaderLines int
	MaxRequestLine int
	// MaxConns caps open connections (0 = no cap). At the cap a new connection takes the place
	// of the connection idle the longest, else of the one that has waited longest for its
	// request header to arrive; when every connection is busy with a request, accepting waits
	// for one to end, as pveproxy's max_conn does.
	MaxConns int
	// Allow, when set, decides from the peer's address whether a connection is served at all;
	// a refused one is closed at once, unanswered (pveproxy's ALLOW_FROM/DENY_FROM/POLICY).
	Allow  func(netip.Addr) bool
	Logger *slog.Logger
	// BaseContext is the parent of every request's context.
	BaseContext context.Context

	mu         sync.Mutex
	slotFree   *sync.Cond
	listeners  map[net.Listener]struct{}
	conns      map[*conn]struct{}
	open       int // connections counted against MaxConns
	inShutdown atomic.Bool
	connWG     sync.WaitGroup
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("httpd: server closed")

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func orDefault(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

// pveproxy's $limit_max_header_size and $limit_max_headers (pve-http-server AnyEvent.pm).
const (
	defaultMaxHeaderBytes = 8 << 10
	defaultMaxHeaderLines = 64
	defaultMaxRequestLine = 16 << 10
)

// Serve accepts connections on l until Shutdown or Close. It always returns a non-nil error
// and closes l, as net/http's does (a Shutdown that came first must not leave l bound).
func (s *Server) Serve(l net.Listener) error {
	defer l.Close()
	if s.inShutdown.Load() {
		return ErrServerClosed
	}
	s.mu.Lock()
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
		s.slotFree = sync.NewCond(&s.mu)
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		rw, err := l.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if s.Allow != nil && !s.Allow(peerAddr(rw)) {
			s.logger().Debug("connection refused by the access policy", "remote", rw.RemoteAddr().String())
			rw.Close()
			continue
		}
		c := &conn{srv: s, tc: &timedConn{Conn: rw, inactivity: s.InactivityTimeout}}
		c.setPhase(stateHeader)
		if !s.admit(c) {
			rw.Close()
			return ErrServerClosed
		}
		c.rwc = c.tc
		if s.TLSConfig != nil {
			c.rwc = tls.Server(c.tc, s.TLSConfig)
		}
		go c.serve()
	}
}

// peerAddr is the remote IP of a connection, IPv4-mapped IPv6 addresses unmapped (as
// pveproxy's normalize_v4_in_v6 does before checking them).
func peerAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// admit registers c, making room under MaxConns first: it closes the connection idle the
// longest, else the one that has waited longest for its request header, else waits for a
// connection to end. It reports false when the server shuts down meanwhile.
func (s *Server) admit(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.MaxConns > 0 && s.open >= s.MaxConns {
		if s.inShutdown.Load() {
			return false
		}
		if v := s.victimLocked(); v != nil {
			v.evicted = true
			s.open--
			v.tc.Conn.Close()
			s.logger().Debug("connection limit reached: closed a connection to admit a new one",
				"closed", v.tc.RemoteAddr().String(), "state", v.state.Load(), "max", s.MaxConns)
			break
		}
		s.slotFree.Wait()
	}
	s.open++
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	return true
}

// victimLocked picks the connection to close for a new one: idle longest first, then the one
// waiting longest for its request header. Connections serving a request are never picked.
func (s *Server) victimLocked() *conn {
	var best *conn
	for c := range s.conns {
		if c.evicted {
			continue
		}
		st := c.state.Load()
		if st == stateActive {
			continue
		}
		if best == nil {
			best = c
			continue
		}
		bst := best.state.Load()
		switch {
		case st == stateIdle && bst != stateIdle:
			best = c
		case st == bst && c.since.Load() < best.since.Load():
			best = c
		}
	}
	return best
}

// Shutdown stops accepting, lets in-flight requests finish and closes idle connections, until
// ctx ends; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	for l := range s.listeners {
		l.Close()
	}
	if s.slotFree != nil {
		s.slotFree.Broadcast()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.closeIdle()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close closes listeners and every connection at once.
func (s *Server) Close() error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.tc.Conn.Close()
	}
	if s.slotFree != nil {
		s.slotFree.Broadcast()
	}
	return nil
}

func (s *Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.Load() == stateIdle {
			c.tc.Conn.Close()
		}
	}
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if !c.evicted {
		s.open--
	}
	if s.slotFree != nil {
		s.slotFree.Signal()
	}
	s.mu.Unlock()
	s.connWG.Done()
}

// Open is the number of connections counted against MaxConns (tests, status).
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Connection states, for MaxConns's choice of a connection to close.
const (
	stateHeader int32 = iota // TLS handshake, or a request's line and header arriving
	stateActive              // a handler runs
	stateIdle                // kept alive, waiting for the next request
)

// conn is one client connection.
type conn struct {
	srv      *Server
	tc       *timedConn // the TCP connection
	rwc      net.Conn   // tc, or TLS over it
	br       *bufio.Reader
	bw       *bufio.Writer
	state    atomic.Int32
	since    atomic.Int64 // when state was entered, unix ns
	evicted  bool         // closed by admit (under srv.mu)
	hijacked bool
}

func (c *conn) setPhase(st int32) {
	now := time.Now()
	c.since.Store(now.UnixNano())
	c.state.Store(st)
	var by time.Time
	switch st {
	case stateHeader:
		if d := c.srv.ReadHeaderTimeout; d > 0 {
			by = now.Add(d)
		}
	case stateIdle:
		if d := c.srv.IdleTimeout; d > 0 {
			by = now.Add(d)
		}
	}
	c.tc.readBy(by)
	if st == stateIdle && c.srv.MaxConns > 0 {
		// An idle connection can make room: wake an accept waiting at the cap.
		c.srv.mu.Lock()
		c.srv.slotFree.Signal()
		c.srv.mu.Unlock()
	}
}

// timedConn gives every read and write its deadline: reads a fixed one while a header is
// awaited or the connection idles, else (like every write) the inactivity timeout from now.
type timedConn struct {
	net.Conn
	inactivity time.Duration
	by         atomic.Int64 // fixed read deadline, unix ns; 0: inactivity
	off        atomic.Bool  // hijacked: deadlines are the new owner's
}

func (t *timedConn) readBy(d time.Time) {
	if d.IsZero() {
		t.by.Store(0)
	} else {
		t.by.Store(d.UnixNano())
	}
}

func (t *timedConn) Read(p []byte) (int, error) {
	if !t.off.Load() {
		var d time.Time
		if by := t.by.Load(); by != 0 {
			d = time.Unix(0, by)
		} else if t.inactivity > 0 {
			d = time.Now().Add(t.inactivity)
		}
		t.Conn.SetReadDeadline(d)
	}
	return t.Conn.Read(p)
}

func (t *timedConn) Write(p []byte) (int, error) {
	if !t.off.Load() && t.inactivity > 0 {
		t.Conn.SetWriteDeadline(time.Now().Add(t.inactivity))
	}
	return t.Conn.Write(p)
}

// release hands the connection to a hijacker without deadlines.
func (t *timedConn) release() {
	t.off.Store(true)
	t.Conn.SetDeadline(time.Time{})
}

func (c *conn) serve() {
	defer c.srv.forget(c)
	defer func() {
		if r := recover(); r != nil {
			c.srv.logger().Error("panic serving connection", "remote", c.tc.RemoteAddr().String(), "panic", fmt.Sprint(r))
		}
		if !c.hijacked {
			c.rwc.Close()
		}
	}()
	var tlsState *tls.ConnectionState
	if tc, ok := c.rwc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			c.srv.logger().Debug("TLS handshake failed", "remote", c.tc.RemoteAddr().String(), "err", err)
			return
		}
		st := tc.ConnectionState()
		tlsState = &st
	}
	maxLine := orDefault(c.srv.MaxRequestLine, defaultMaxRequestLine)
	maxHdr := orDefault(c.srv.MaxHeaderBytes, defaultMaxHeaderBytes)
	// The whole header must fit the buffer: it is checked before it is parsed.
	c.br = bufio.NewReaderSize(c.rwc, maxLine+maxHdr+2*orDefault(c.srv.MaxHeaderLines, defaultMaxHeaderLines)+64)
	c.bw = bufio.NewWriterSize(c.rwc, 32<<10)
	base := c.srv.BaseContext
	if base == nil {
		base = context.Background()
	}
	locals := &connLocals{}
	defer locals.close()
	base = context.WithValue(base, connLocalsKey{}, locals)
	first := true
	for {
		if !first {
			c.setPhase(stateIdle)
			if c.srv.inShutdown.Load() {
				return
			}
			if _, err := c.br.Peek(1); err != nil {
				return
			}
			c.setPhase(stateHeader)
		}
		first = false
		if code, reason := c.checkHeader(); code != 0 {
			if code > 0 {
				c.writeRaw(code, reason)
			}
			return
		}
		req, err := http.ReadRequest(c.br)
		if err != nil {
			if !errors.Is(err, io.EOF) && !isNetClosing(err) {
				c.writeRaw(400, "Bad Request")
			}
			return
		}
		if req.ProtoMajor != 1 {
			c.writeRaw(505, "HTTP Version Not Supported")
			return
		}
		if req.ProtoAtLeast(1, 1) && req.Host == "" {
			// RFC 9112 3.2: a request without Host is refused (pveproxy's text for it).
			c.writeRaw(400, "Header field 'Host' not found in request")
			return
		}
		c.setPhase(stateActive)
		req.RemoteAddr = c.tc.RemoteAddr().String()
		req.TLS = tlsState
		ctx, cancel := context.WithCancel(base)
		ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.tc.LocalAddr())
		req = req.WithContext(ctx)
		keep := c.serveOne(req)
		cancel()
		if c.hijacked || !keep {
			return
		}
	}
}

// connLocals are values that live as long as a connection (see Local).
type connLocals struct {
	mu sync.Mutex
	m  map[any]any
}

type connLocalsKey struct{}

// Local returns the value kept under key for the connection r arrived on, made by mk the
// first time; a value that is an io.Closer is closed when the connection ends. Outside this
// server (tests with httptest) every call makes a new value.
func Local(r *http.Request, key any, mk func() any) any {
	l, ok := r.Context().Value(connLocalsKey{}).(*connLocals)
	if !ok {
		return mk()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.m[key]; ok {
		return v
	}
	if l.m == nil {
		l.m = map[any]any{}
	}
	v := mk()
	l.m[key] = v
	return v
}

func (l *connLocals) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.m {
		if c, ok := v.(io.Closer); ok {
			c.Close()
		}
	}
	l.m = nil
}

// checkHeader looks at the request line and header before they are parsed, as pveproxy reads
// them: empty lines before a request are skipped; at most MaxHeaderLines lines (the final
// empty one included) of at most MaxHeaderBytes in total; each line "name: value" with a
// token for a name, or a continuation. It returns 0 when the header may be parsed, an HTTP
// status to answer with before closing, or -1 when the connection just ended.
func (c *conn) checkHeader() (int, string) {
	maxLine := orDefault(c.srv.MaxRequestLine, defaultMaxRequestLine)
	maxHdr := orDefault(c.srv.MaxHeaderBytes, defaultMaxHeaderBytes)
	maxLines := orDefault(c.srv.MaxHeaderLines, defaultMaxHeaderLines)
	pos, lineStart := 0, 0
	inHeader := false // past the request line
	lines, size := 0, 0
	for {
		buf, err := c.br.Peek(pos + 1)
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return 431, "Request Header Fields Too Large"
			}
			return -1, ""
		}
		buf, _ = c.br.Peek(c.br.Buffered())
	scan:
		for ; pos < len(buf); pos++ {
			if buf[pos] != '\n' {
				if !inHeader && pos-lineStart >= maxLine {
					return 414, "URI Too Long"
				}
				continue
			}
			line := bytes.TrimSuffix(buf[lineStart:pos], []byte("\r"))
			next := pos + 1
			switch {
			case !inHeader && len(line) == 0:
				// An empty line before a request is skipped, as pveproxy does.
				c.br.Discard(next)
				pos, lineStart = 0, 0
				break scan
			case !inHeader:
				inHeader = true
			default:
				lines++
				size += len(line)
				if lines >= maxLines || size >= maxHdr {
					return 431, "Request Header Fields Too Large"
				}
				if len(line) == 0 {
					return 0, ""
				}
				if !headerLineOK(line) {
					return 506, "unable to parse request header"
				}
			}
			lineStart = next
		}
		if inHeader && size+(pos-lineStart) >= maxHdr {
			return 431, "Request Header Fields Too Large"
		}
	}
}

// headerLineOK accepts "token: value" (no space before the colon, RFC 9112 5.1) and
// continuation lines; pveproxy refuses lines without a colon and names with spaces alike.
func headerLineOK(line []byte) bool {
	if line[0] == ' ' || line[0] == '\t' {
		return true
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, b := range line[:i] {
		if !isTokenByte(b) {
			return false
		}
	}
	return true
}

// isTokenByte is RFC 9110's tchar.
func isTokenByte(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

// serveOne runs the handler for req and reports whether the connection may be reused.
func (c *conn) serveOne(req *http.Request) bool {
	body := &requestBody{rc: req.Body, c: c}
	if req.ProtoAtLeast(1, 1) && hasToken(req.Header.Get("Expect"), "100-continue") && req.ContentLength != 0 {
		body.wantContinue = true
	}
	req.Body = body
	w := &response{c: c, req: req, header: http.Header{}}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					w.closeAfter = true
					return
				}
				c.srv.logger().Error("handler panic", "method", req.Method, "path", req.URL.Path, "panic", fmt.Sprint(r))
				if !w.wroteHeader {
					w.header = http.Header{}
					w.WriteHeaderReason(500, "Internal Server Error")
				}
				w.closeAfter = true
			}
		}()
		c.srv.Handler.ServeHTTP(w, req)
	}()
	if c.hijacked {
		return false
	}
	c.tc.readBy(time.Time{}) // a deadline the handler set ends with it: draining has the inactivity timeout
	if err := w.finish(); err != nil {
		return false
	}
	if w.closeAfter || req.Close {
		return false
	}
	// Leave the connection usable for the next request: consume what the handler left of the
	// body, unless that is large, we never sent 100-continue for it, or it already stalled.
	if (body.wantContinue && !body.sentContinue) || body.failed {
		return false
	}
	n, err := io.CopyN(io.Discard, body.rc, 256<<10)
	if err == nil || n == 256<<10 {
		return false
	}
	// A body the handler closed was consumed by its Close (net/http bodies drain on Close).
	return errors.Is(err, io.EOF) || errors.Is(err, http.ErrBodyReadAfterClose)
}

func (c *conn) writeRaw(code int, reason string) {
	fmt.Fprintf(c.bw, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", code, reason)
	c.bw.Flush()
}

func isNetClosing(err error) bool {
	var ne net.Error
	return errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout())
}

// requestBody sends "100 Continue" before the first read when the client asked for it.
type requestBody struct {
	rc           io.ReadCloser
	c            *conn
	wantContinue bool
	sentContinue bool
	failed       bool // reading broke off (a stalled client): the connection is done
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.wantContinue && !b.sentContinue {
		b.sentContinue = true
		b.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := b.c.bw.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.rc.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, http.ErrBodyReadAfterClose) {
		b.failed = true
	}
	return n, err
}

func (b *requestBody) Close() error { return b.rc.Close() }
