package pve

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
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The HTTP/1.1 side of pveproxy, read from pve-http-server's PVE/APIServer/AnyEvent.pm:
// request line and header parsing with its limits, the checks made before a handler runs,
// responses whose reason phrase is the message, keep-alive and its end.

// pveproxy's limits ($limit_max_headers, $limit_max_header_size, $limit_max_post) and the
// number of requests one connection may carry (keep_alive => 100 in pveproxy).
const (
	maxHeaderLines  = 64
	maxHeaderSize   = 8 * 1024
	maxPostSize     = 512 * 1024
	maxConnRequests = 100
)

var knownMethods = map[string]bool{"GET": true, "POST": true, "PUT": true, "DELETE": true}

// request is one request as pveproxy has it once the header is read.
type request struct {
	Method   string
	Target   string // as sent
	URL      *url.URL
	Proto    string // HTTP/1.1
	Header   http.Header
	Remote   string
	bodyLen  int64
	body     io.Reader
	bodyRead bool
}

// readBody reads the Content-Length bytes of the body (pveproxy reads it whole).
func (r *request) readBody() ([]byte, error) {
	r.bodyRead = true
	if r.bodyLen <= 0 {
		return nil, nil
	}
	b := make([]byte, r.bodyLen)
	_, err := io.ReadFull(r.body, b)
	return b, err
}

// response is what pveproxy writes: status, message (its first line is the reason phrase),
// header, body, and the delay pveproxy holds 401s back by.
type response struct {
	Code    int
	Message string
	Header  http.Header
	Body    []byte
	Delay   time.Duration
	// noAnswer leaves the request unanswered: pveproxy stops reading and its handle timeout
	// closes the connection (header over the limits).
	noAnswer bool
}

// rawError is pveproxy's $self->error(): the message is also the body.
func rawError(code int, msg string) *response {
	return &response{Code: code, Message: msg, Body: []byte(msg)}
}

// proxyServer serves connections for one node.
type proxyServer struct {
	handle  func(*request) *response
	tls     *tls.Config
	timeout time.Duration // pveproxy's handle timeout (5 s)
	logger  *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

func (s *proxyServer) serve(ln net.Listener) {
	s.mu.Lock()
	s.ln, s.conns = ln, map[net.Conn]bool{}
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		if s.tls != nil {
			c = tls.Server(c, s.tls)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *proxyServer) shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.Close() // requests in flight end with their connection, as when pveproxy restarts
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

var (
	requestLineRe = regexp.MustCompile(`(\S+) (\S+) HTTP/(\d+)\.(\d+)`)
	headerLineRe  = regexp.MustCompile(`^([^:\s]+)\s*:\s*(.*)`)
	continuedRe   = regexp.MustCompile(`^\s+(.*)`)
)

func (s *proxyServer) serveConn(c net.Conn) {
	br := bufio.NewReaderSize(c, 16<<10)
	bw := bufio.NewWriter(c)
	for n := 0; n < maxConnRequests; n++ {
		c.SetReadDeadline(time.Now().Add(s.timeout))
		line, err := readLine(br)
		for err == nil && line == "" { // empty lines before a request are ignored
			line, err = readLine(br)
		}
		if err != nil {
			return
		}
		proto := "HTTP/1.0"
		m := requestLineRe.FindStringSubmatch(line)
		if m == nil {
			s.write(bw, proto, rawError(400, "bad request"), false)
			return
		}
		proto = "HTTP/" + m[3] + "." + m[4]
		if m[3] != "1" {
			s.write(bw, proto, rawError(506, fmt.Sprintf("http protocol version %s.%s not supported", m[3], m[4])), false)
			return
		}
		if i := strings.IndexByte(m[2], '/'); strings.Contains(m[2], "@") && (i < 0 || strings.IndexByte(m[2], '@') < i) {
			s.write(bw, proto, rawError(400, "invalid url"), false)
			return
		}
		req := &request{Method: m[1], Target: m[2], Proto: proto, Header: http.Header{}, Remote: c.RemoteAddr().String()}
		if !s.readHeader(br, req) {
			// Over the limits pveproxy dies in its read callback: no answer, and the handle's
			// timeout closes the connection.
			c.SetReadDeadline(time.Now().Add(s.timeout))
			io.Copy(io.Discard, br)
			return
		}
		if req.Header == nil {
			s.write(bw, proto, rawError(506, "unable to parse request header"), false)
			return
		}
		keep := proto == "HTTP/1.1"
		if conn := req.Header.Get("Connection"); conn != "" {
			keep = !strings.Contains(strings.ToLower(conn), "close")
		}
		u, err := url.ParseRequestURI(req.Target)
		if err != nil {
			s.write(bw, proto, rawError(400, "bad request"), false)
			return
		}
		req.URL = u
		if !knownMethods[req.Method] {
			s.write(bw, proto, &response{Code: 501, Message: fmt.Sprintf("method '%s' not available", req.Method)}, false)
			return
		}
		if te := req.Header.Get("Transfer-Encoding"); te != "" {
			msg := fmt.Sprintf("Unknown transfer encoding '%s'", te)
			if strings.EqualFold(te, "chunked") {
				msg = "chunked transfer encoding not supported"
			}
			s.write(bw, proto, rawError(501, msg), false)
			return
		}
		if cl := req.Header.Get("Content-Length"); cl != "" {
			n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
			if err != nil || n < 0 {
				s.write(bw, proto, rawError(400, "bad request"), false)
				return
			}
			req.bodyLen = n
		}
		req.body = io.LimitReader(br, req.bodyLen)
		c.SetReadDeadline(time.Time{})
		resp := s.handle(req)
		if resp.noAnswer {
			return
		}
		if resp.Code >= 400 {
			keep = false // pveproxy ends the connection after an error
		}
		if !req.bodyRead && req.bodyLen > 0 {
			keep = false // the body was never read: the stream is out of step
		}
		if n == maxConnRequests-1 {
			keep = false
		}
		if resp.Delay > 0 {
			time.Sleep(resp.Delay)
		}
		if !s.write(bw, proto, resp, keep) || !keep {
			return
		}
	}
}

func readLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// readHeader reads header lines as unshift_read_header does: each line counts, the lines'
// length adds up, and the 64th line or 8 KiB in total ends the request without an answer.
// A line it cannot parse leaves req.Header nil (506).
func (s *proxyServer) readHeader(br *bufio.Reader, req *request) bool {
	count, size := 0, 0
	var key, val string
	for {
		line, err := readLine(br)
		if err != nil {
			return false
		}
		count++
		if count >= maxHeaderLines {
			s.logger.Debug("too many http header lines (> 64)")
			return false
		}
		size += len(line)
		if size >= maxHeaderSize {
			s.logger.Debug("http header too large")
			return false
		}
		switch {
		case line == "":
			if key != "" {
				req.Header.Add(key, val)
			}
			return true
		case headerLineRe.MatchString(line):
			if key != "" {
				req.Header.Add(key, val)
			}
			m := headerLineRe.FindStringSubmatch(line)
			key, val = m[1], m[2]
		case continuedRe.MatchString(line):
			val += " " + continuedRe.FindStringSubmatch(line)[1]
		default:
			req.Header = nil
			return true
		}
	}
}

// write sends a response as response() in AnyEvent.pm: the reason phrase is the first line
// of the message, the date and no-cache headers, the server name, Content-Length, and
// Connection: Keep-Alive or close.
func (s *proxyServer) write(bw *bufio.Writer, proto string, r *response, keep bool) bool {
	msg := r.Message
	if msg == "" {
		msg = http.StatusText(r.Code)
	}
	if i := strings.IndexAny(msg, "\r\n"); i >= 0 {
		msg = msg[:i]
	}
	body := r.Body
	if r.Code < 200 || r.Code == 204 || r.Code == 304 {
		body = nil
	}
	h := r.Header
	if h == nil {
		h = http.Header{}
	}
	date := time.Now().UTC().Format(http.TimeFormat)
	h.Set("Date", date)
	if h.Get("Last-Modified") == "" {
		h.Set("Expires", date)
		h.Set("Cache-Control", "max-age=0")
		h.Set("Pragma", "no-cache")
	}
	h.Set("Server", "pve-api-daemon/3.0")
	if len(body) > 0 {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	} else {
		h.Del("Content-Length")
	}
	if keep {
		h.Set("Connection", "Keep-Alive")
	} else {
		h.Set("Connection", "close")
	}
	fmt.Fprintf(bw, "%s %d %s\r\n", proto, r.Code, msg)
	h.Write(bw)
	bw.WriteString("\r\n")
	bw.Write(body)
	return bw.Flush() == nil
}
