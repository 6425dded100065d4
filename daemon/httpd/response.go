package httpd

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// bufferLimit is how much of a body is held back to compute Content-Length before the writer
// switches to chunked encoding.
const bufferLimit = 64 << 10

// response is the http.ResponseWriter of this server.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	wroteHeader bool
	status      int
	reason      string
	sent        http.Header // header as it was when WriteHeader ran

	committed     bool
	chunked       bool
	contentLength int64 // -1 when not declared
	written       int64
	buf           []byte
	closeAfter    bool
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
	_ http.Hijacker       = (*response)(nil)
	_ ReasonWriter        = (*response)(nil)
)

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) { w.WriteHeaderReason(code, "") }

// WriteHeaderReason writes the status line with reason ("" = the standard text).
func (w *response) WriteHeaderReason(code int, reason string) {
	if w.wroteHeader || w.c.hijacked {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("httpd: invalid status code %d", code))
	}
	reason = sanitizeReason(reason)
	if reason == "" {
		reason = http.StatusText(code)
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Interim responses go out at once and do not end the response.
		fmt.Fprintf(w.c.bw, "HTTP/1.1 %d %s\r\n", code, reason)
		w.header.Write(w.c.bw)
		w.c.bw.WriteString("\r\n")
		w.c.bw.Flush()
		return
	}
	w.wroteHeader = true
	w.status = code
	w.reason = reason
	w.sent = w.header.Clone()
	w.contentLength = -1
	if cl := w.sent.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
		if err != nil || n < 0 {
			w.sent.Del("Content-Length")
		} else {
			w.contentLength = n
		}
	}
	if code == http.StatusSwitchingProtocols {
		w.commit(false)
		w.c.bw.Flush()
	}
}

// sanitizeReason keeps a reason phrase to one line of printable characters: a message that
// came from a user or an array must never be able to inject headers.
func sanitizeReason(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
}

func (w *response) bodyAllowed() bool {
	return !(w.status == http.StatusNoContent || w.status == http.StatusNotModified ||
		(w.status >= 100 && w.status < 200)) && w.req.Method != http.MethodHead
}

func (w *response) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		if w.req.Method == http.MethodHead {
			w.written += int64(len(p))
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed {
		if w.contentLength < 0 && len(w.buf)+len(p) <= bufferLimit {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		w.commit(false)
	}
	return w.writeBody(p)
}

func (w *response) writeBody(p []byte) (int, error) {
	if w.chunked {
		if len(p) == 0 {
			return 0, nil
		}
		fmt.Fprintf(w.c.bw, "%x\r\n", len(p))
		n, err := w.c.bw.Write(p)
		if err == nil {
			_, err = w.c.bw.WriteString("\r\n")
		}
		return n, err
	}
	return w.c.bw.Write(p)
}

// commit writes the status line and header, choosing the body framing. final means the
// handler has returned, so a buffered body's length is known.
func (w *response) commit(final bool) {
	if w.committed {
		return
	}
	w.committed = true
	h := w.sent
	h.Del("Transfer-Encoding")
	switch {
	case !w.bodyAllowed():
		if w.req.Method == http.MethodHead && w.contentLength < 0 && final && w.written > 0 {
			h.Set("Content-Length", strconv.FormatInt(w.written, 10))
		}
		if w.status == http.StatusNoContent || (w.status >= 100 && w.status < 200) {
			h.Del("Content-Length")
		}
	case w.contentLength >= 0:
	case final:
		w.contentLength = int64(len(w.buf))
		h.Set("Content-Length", strconv.Itoa(len(w.buf)))
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		h.Set("Transfer-Encoding", "chunked")
	default:
		w.closeAfter = true // HTTP/1.0: the end of the body is the end of the connection
	}
	if hasToken(h.Get("Connection"), "close") {
		w.closeAfter = true
	}
	if w.status != http.StatusSwitchingProtocols {
		if !w.req.ProtoAtLeast(1, 1) && !hasToken(w.req.Header.Get("Connection"), "keep-alive") {
			w.closeAfter = true
		}
		if hasToken(w.req.Header.Get("Connection"), "close") || w.c.srv.inShutdown.Load() {
			w.closeAfter = true
		}
		if w.closeAfter {
			h.Set("Connection", "close")
		} else if !w.req.ProtoAtLeast(1, 1) {
			h.Set("Connection", "keep-alive")
		}
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	fmt.Fprintf(w.c.bw, "HTTP/1.1 %d %s\r\n", w.status, w.reason)
	h.Write(w.c.bw)
	w.c.bw.WriteString("\r\n")
	if len(w.buf) > 0 {
		buf := w.buf
		w.buf = nil
		if w.bodyAllowed() {
			w.writeBody(buf)
		}
	}
}

// Flush sends what is buffered; before the handler returns this commits to chunked encoding
// unless a Content-Length was declared.
func (w *response) Flush() {
	if w.c.hijacked {
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.commit(false)
	w.c.bw.Flush()
}

// FlushError is Flush with the write error, for http.ResponseController.
func (w *response) FlushError() error {
	w.Flush()
	return w.c.bw.Flush()
}

// SetReadDeadline, for http.ResponseController, sets a fixed deadline for the reads of the
// request's body in place of the inactivity timeout (the zero time: the inactivity timeout
// again), until the handler returns. A handler whose client may pause for longer on purpose
// (a move's stream while zfs send waits on its pool) takes its own limit this way.
func (w *response) SetReadDeadline(d time.Time) error {
	if w.c.tc.off.Load() { // atomic: a body reader may call this while the handler hijacks
		return http.ErrHijacked
	}
	w.c.tc.readBy(d)
	return nil
}

func (w *response) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.commit(true)
	if w.chunked {
		w.c.bw.WriteString("0\r\n\r\n")
	}
	if w.bodyAllowed() && w.contentLength >= 0 && w.written != w.contentLength {
		// The client would wait for bytes that never come: end the connection instead.
		w.closeAfter = true
	}
	return w.c.bw.Flush()
}

// Hijack hands the connection to the handler (websocket and other upgrades).
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.committed {
		w.c.bw.Flush()
	}
	w.c.hijacked = true
	w.c.tc.release()
	return w.c.rwc, bufio.NewReadWriter(w.c.br, w.c.bw), nil
}

// hasToken reports whether a comma-separated header value contains token (case-insensitive).
func hasToken(v, token string) bool {
	for _, f := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(f), token) {
			return true
		}
	}
	return false
}
