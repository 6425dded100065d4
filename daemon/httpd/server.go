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
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	// ReadHeaderTimeout bounds the time to read a request's header (slowloris); IdleTimeout
	// the wait for the next request on a kept-alive connection; WriteTimeout a whole response
	// (0 = none, needed for long downloads and upgrades).
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	WriteTimeout      time.Duration
	// MaxHeaderBytes bounds the request line and header (default 64 KiB; pveproxy allows 64
	// lines of 8 KiB).
	MaxHeaderBytes int
	Logger         *slog.Logger
	// BaseContext is the parent of every request's context.
	BaseContext context.Context

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	conns      map[*conn]struct{}
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

func (s *Server) maxHeaderBytes() int64 {
	if s.MaxHeaderBytes > 0 {
		return int64(s.MaxHeaderBytes)
	}
	return 64 << 10
}

// Serve accepts connections on l until Shutdown or Close. It always returns a non-nil error.
func (s *Server) Serve(l net.Listener) error {
	if s.inShutdown.Load() {
		return ErrServerClosed
	}
	s.mu.Lock()
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
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
		if s.TLSConfig != nil {
			rw = tls.Server(rw, s.TLSConfig)
		}
		c := &conn{srv: s, rwc: rw}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.connWG.Add(1)
		go c.serve()
	}
}

// Shutdown stops accepting, lets in-flight requests finish and closes idle connections, until
// ctx ends; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	for l := range s.listeners {
		l.Close()
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
		c.rwc.Close()
	}
	return nil
}

func (s *Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idle.Load() {
			c.rwc.Close()
		}
	}
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.connWG.Done()
}

// conn is one client connection.
type conn struct {
	srv      *Server
	rwc      net.Conn
	lr       limitedReader
	br       *bufio.Reader
	bw       *bufio.Writer
	idle     atomic.Bool
	hijacked bool
}

// limitedReader caps how much the header parser may read; body reads lift the cap.
type limitedReader struct {
	r         io.Reader
	remaining int64 // < 0: unlimited
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.remaining == 0 {
		return 0, errHeaderTooLarge
	}
	if l.remaining > 0 && int64(len(p)) > l.remaining {
		p = p[:l.remaining]
	}
	n, err := l.r.Read(p)
	if l.remaining > 0 {
		l.remaining -= int64(n)
	}
	return n, err
}

var errHeaderTooLarge = errors.New("request header too large")

func (c *conn) serve() {
	defer c.srv.forget(c)
	defer func() {
		if r := recover(); r != nil {
			c.srv.logger().Error("panic serving connection", "remote", c.rwc.RemoteAddr().String(), "panic", fmt.Sprint(r))
		}
		if !c.hijacked {
			c.rwc.Close()
		}
	}()
	var tlsState *tls.ConnectionState
	if tc, ok := c.rwc.(*tls.Conn); ok {
		if d := c.srv.ReadHeaderTimeout; d > 0 {
			tc.SetDeadline(time.Now().Add(d))
		}
		if err := tc.Handshake(); err != nil {
			c.srv.logger().Debug("TLS handshake failed", "remote", c.rwc.RemoteAddr().String(), "err", err)
			return
		}
		tc.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		tlsState = &st
	}
	c.lr.r = c.rwc
	c.br = bufio.NewReaderSize(&c.lr, 8<<10)
	c.bw = bufio.NewWriterSize(c.rwc, 32<<10)
	base := c.srv.BaseContext
	if base == nil {
		base = context.Background()
	}
	first := true
	for {
		if !first {
			c.idle.Store(true)
			if c.srv.inShutdown.Load() {
				return
			}
			if d := c.srv.IdleTimeout; d > 0 {
				c.rwc.SetReadDeadline(time.Now().Add(d))
			}
			if _, err := c.br.Peek(1); err != nil {
				return
			}
			c.idle.Store(false)
		}
		first = false
		if d := c.srv.ReadHeaderTimeout; d > 0 {
			c.rwc.SetReadDeadline(time.Now().Add(d))
		}
		c.lr.remaining = c.srv.maxHeaderBytes()
		req, err := http.ReadRequest(c.br)
		if err != nil {
			if errors.Is(err, errHeaderTooLarge) {
				c.writeRaw(431, "Request Header Fields Too Large")
			} else if !errors.Is(err, io.EOF) && !isNetClosing(err) {
				c.writeRaw(400, "Bad Request")
			}
			return
		}
		c.lr.remaining = -1
		c.rwc.SetReadDeadline(time.Time{})
		if req.ProtoMajor != 1 {
			c.writeRaw(505, "HTTP Version Not Supported")
			return
		}
		if d := c.srv.WriteTimeout; d > 0 {
			c.rwc.SetWriteDeadline(time.Now().Add(d))
		}
		req.RemoteAddr = c.rwc.RemoteAddr().String()
		req.TLS = tlsState
		ctx, cancel := context.WithCancel(base)
		ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.rwc.LocalAddr())
		req = req.WithContext(ctx)
		keep := c.serveOne(req)
		cancel()
		if c.hijacked || !keep {
			return
		}
		c.rwc.SetWriteDeadline(time.Time{})
	}
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
	if err := w.finish(); err != nil {
		return false
	}
	if w.closeAfter || req.Close {
		return false
	}
	// Leave the connection usable for the next request: consume what the handler left of the
	// body, unless that is large or we never sent 100-continue for it.
	if body.wantContinue && !body.sentContinue {
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
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.wantContinue && !b.sentContinue {
		b.sentContinue = true
		b.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := b.c.bw.Flush(); err != nil {
			return 0, err
		}
	}
	return b.rc.Read(p)
}

func (b *requestBody) Close() error { return b.rc.Close() }
