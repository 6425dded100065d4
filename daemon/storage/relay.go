package storage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/ioctl/zfs"
	"github.com/pvesnap/pvesnap/lvm/stream"
)

// The target daemon passes a move's stream to its receiving task over a Unix socket the task
// listens on (only root can reach it):
//
//	daemon → task   "pvesnap-stream 1 <sending node> <estimated bytes>\n"
//	task → daemon   one byte, with the write end of a pipe (SCM_RIGHTS): the daemon writes
//	                the stream into it and the task (or, for ZFS, the kernel) reads the other end
//	daemon → task   "progress <bytes>\n" now and then, then "end <bytes>\n" or "abort <bytes> <why>\n"
//	task → daemon   "OK\n" once the volume is committed, or "ERROR <message>\n" (at any time)
//
// The daemon answers the sending node with the task's last word.

// Prefix makes the module a server.Static: the daemon hands it the streams between nodes.
func (m *Module) Prefix() string { return peerPrefix }

// ServeHTTP takes a move's stream from another node's pvesnap (POST /pvesnap/peer/stream).
func (m *Module) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != streamPath || r.Method != http.MethodPost || m.Peers == nil {
		api.WriteError(w, api.JSON, api.Errorf(http.StatusNotImplemented, "Method '%s %s' not implemented", r.Method, r.URL.Path))
		return
	}
	from, err := m.Peers.NodeOf(r.TLS)
	if err != nil {
		api.WriteError(w, api.JSON, api.Errorf(http.StatusForbidden, "%v: only another node's pvesnap may send a stream", err))
		return
	}
	ticket := r.Header.Get(ticketHeader)
	if !ticketRe.MatchString(ticket) {
		api.WriteError(w, api.JSON, api.Errorf(http.StatusForbidden, "a stream needs the ticket of a prepared move"))
		return
	}
	estimate, _ := strconv.ParseInt(r.Header.Get(sizeHeader), 10, 64)
	body := &patientBody{r: r.Body, rc: http.NewResponseController(w), quiet: streamQuiet}
	unread, err := m.relay(r.Context(), from, ticket, estimate, body)
	if err != nil {
		m.Logger.Warn("move stream failed", "from", from, "err", err)
		api.WriteError(w, api.JSON, err)
	} else {
		api.WriteData(w, api.JSON, "OK")
	}
	if unread {
		// The rest of the stream is of no use: answer, then end the connection rather than
		// read it (a reader may still wait in it).
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if h, ok := w.(http.Hijacker); ok {
			if c, _, err := h.Hijack(); err == nil {
				go lingerClose(c)
			}
		}
	}
}

// streamQuiet is how long a move's stream may bring nothing before the receiver gives up. The
// API's inactivity limit (pveproxy's 5 s) would end a move whenever zfs send pauses, and it
// pauses while its pool is busy (a transaction group sync, a scrub, slow disks); a sender
// that is gone is found by TCP keepalive well before this.
const streamQuiet = 5 * time.Minute

// patientBody gives each read of a stream the deadline quiet from now, in place of the
// server's inactivity timeout.
type patientBody struct {
	r     io.Reader
	rc    *http.ResponseController
	quiet time.Duration
}

func (b *patientBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.quiet)) // a server without it keeps its own limit
	return b.r.Read(p)
}

// lingerClose ends a connection whose request body is left unread. Closing a socket with
// unread data in it makes the kernel reset the connection, and a client still sending its
// body then sees "connection reset" instead of the answer it was sent. So the write side is
// shut first (the client reads the answer, then the end), and what the client still sends is
// read and dropped for a moment before the close.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(io.Discard, io.LimitReader(c, 64<<20))
	c.Close()
}

// relay feeds a stream to the receiving task waiting for ticket and returns whether the
// stream was left unread (the task ended first, or stopped reading) and the task's last word.
func (m *Module) relay(ctx context.Context, from, ticket string, estimate int64, body io.Reader) (unread bool, err error) {
	conn, err := dialStream(ctx, m.socketPath(ticket), m.streamWait())
	if err != nil {
		return true, api.Errorf(http.StatusForbidden, "no move on node '%s' waits for this stream (unknown or expired ticket): %v", m.Node, err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "pvesnap-stream 1 %s %d\n", from, estimate)
	pipe, err := receiveFile(conn, 30*time.Second)
	if err != nil {
		return true, api.Errorf(http.StatusInternalServerError, "node '%s': the receiving task did not take the stream: %v", m.Node, err)
	}
	answer := make(chan string, 1)
	go func() {
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			line = "ERROR the receiving task ended without a word (its log says why)"
		}
		answer <- strings.TrimSpace(line)
	}()
	verdict := func(line string) error {
		if line == "OK" {
			return nil
		}
		return api.Errorf(http.StatusInternalServerError, "node '%s': %s", m.Node, strings.TrimPrefix(line, "ERROR "))
	}
	// The stream is read in a goroutine of its own, two buffers in turn: the task's answer
	// (a stop, a failure) is seen at once, even while the sender is silent. Each buffer is
	// filled before it goes on (TLS gives at most a record, 16 KiB, per read): a MiB per write
	// into the pipe.
	type piece struct {
		b   []byte
		err error
	}
	pieces, quit := make(chan piece), make(chan struct{})
	defer close(quit)
	go func() {
		bufs := [2][]byte{make([]byte, 1<<20), make([]byte, 1<<20)}
		for i := 0; ; i++ {
			n, err := fill(body, bufs[i%2])
			select {
			case pieces <- piece{bufs[i%2][:n], err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var total int64
	last := time.Now()
	var failed error
	said := "" // the task's OK when it came before the stream's end (ZFS has read the end record)
copying:
	for {
		select {
		case line := <-answer:
			if line != "OK" { // the task gave up (or was stopped) before the end
				pipe.Close()
				return true, verdict(line)
			}
			said = line // committed: what is left of the stream is read, not passed on
		case p := <-pieces:
			if len(p.b) > 0 && said == "" {
				if _, err := pipe.Write(p.b); err != nil {
					failed, unread = fmt.Errorf("the receiving task stopped reading: %w", err), true
					break copying
				}
				total += int64(len(p.b))
				if time.Since(last) >= 2*time.Second {
					last = time.Now()
					fmt.Fprintf(conn, "progress %d\n", total)
				}
			}
			if errors.Is(p.err, io.EOF) {
				break copying
			}
			if p.err != nil {
				failed, unread = p.err, true
				fmt.Fprintf(conn, "abort %d %s\n", total, oneLine(p.err.Error()))
				break copying
			}
		}
	}
	if said == "OK" {
		pipe.Close()
		return unread, nil
	}
	if failed == nil {
		fmt.Fprintf(conn, "end %d\n", total)
	}
	pipe.Close() // the end of the data for the task (or the kernel)
	select {
	case line := <-answer: // OK even after a broken tail: the task had the whole volume
		return unread, verdict(line)
	case <-ctx.Done():
		return unread, ctx.Err()
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// dialStream connects to a receiving task's socket, waiting for it to listen.
func dialStream(ctx context.Context, path string, wait time.Duration) (*net.UnixConn, error) {
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || !(errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED)) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// receiveFile reads one byte with a file descriptor attached (SCM_RIGHTS), or the task's
// refusal ("ERROR …\n") instead.
func receiveFile(c *net.UnixConn, wait time.Duration) (*os.File, error) {
	c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	b, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(b, oob)
	if err != nil {
		return nil, err
	}
	if oobn == 0 {
		line := string(b[:n])
		for !strings.Contains(line, "\n") && len(line) < 4096 {
			if n, err = c.Read(b); n == 0 || err != nil {
				break
			}
			line += string(b[:n])
		}
		return nil, errors.New(strings.TrimPrefix(strings.TrimSpace(line), "ERROR "))
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("no file descriptor came (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("expected one file descriptor (%v)", err)
	}
	return os.NewFile(uintptr(fds[0]), "stream"), nil
}

// incoming is a stream as the receiving task sees it.
type incoming struct {
	conn     net.Conn // the daemon's Unix socket, or the sender's TCP connection
	ctl      *bufio.Reader
	Data     *os.File // the pipe's read end, or the TCP connection's (blocking) descriptor
	Node     string
	Estimate int64
	relayed  atomic.Int64 // bytes the daemon has written into the pipe, by its last word
	total    atomic.Int64 // the stream's length, once it ended (-1 before)
	abort    atomic.Pointer[string]
	ctlDone  chan struct{}
	once     sync.Once
	closing  func() // stops what watches the stream (nil: nothing)
	recount  func() // brings relayed up to date where the kernel counts (nil: the relay does)
}

// acceptStream waits (up to wait) for the daemon to bring the stream from node.
func acceptStream(ctx context.Context, path, node string, wait time.Duration) (*incoming, error) {
	os.Remove(path) // left by a task that died: nothing listens on it
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	defer ln.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, err
	}
	ln.SetDeadline(time.Now().Add(wait))
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Now()) })
	conn, err := ln.AcceptUnix()
	stop()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("no stream came from node '%s' within %s (its sending task did not start)", node, wait)
	}
	in := &incoming{conn: conn, ctl: bufio.NewReader(conn), ctlDone: make(chan struct{})}
	in.total.Store(-1)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hello, err := in.ctl.ReadString('\n')
	conn.SetReadDeadline(time.Time{})
	f := strings.Fields(hello)
	refuse := func(err error) (*incoming, error) {
		fmt.Fprintf(conn, "ERROR %s\n", oneLine(err.Error()))
		conn.Close()
		return nil, err
	}
	if err != nil || len(f) != 4 || f[0] != "pvesnap-stream" || f[1] != "1" {
		return refuse(fmt.Errorf("the stream's relay spoke an unknown protocol (%q)", strings.TrimSpace(hello)))
	}
	if f[2] != node {
		return refuse(fmt.Errorf("a stream came from node '%s'; this move is from node '%s'", f[2], node))
	}
	in.Node = f[2]
	in.Estimate, _ = strconv.ParseInt(f[3], 10, 64)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		conn.Close()
		return nil, err
	}
	// The read end blocks (the kernel reads a ZFS stream from it); the write end stays
	// non-blocking for the daemon's poller.
	unix.SetNonblock(p[0], false)
	in.Data = os.NewFile(uintptr(p[0]), "stream")
	_, _, err = conn.WriteMsgUnix([]byte{'p'}, unix.UnixRights(p[1]), nil)
	unix.Close(p[1])
	if err != nil {
		in.Data.Close()
		conn.Close()
		return nil, err
	}
	go in.control()
	context.AfterFunc(ctx, func() { in.Finish(errors.New("interrupted by stop request")) })
	return in, nil
}

// control reads the daemon's lines until the stream's end.
func (in *incoming) control() {
	defer close(in.ctlDone)
	for {
		line, err := in.ctl.ReadString('\n')
		if err != nil {
			if in.total.Load() < 0 && in.abort.Load() == nil {
				why := "the relay on this node went away"
				in.abort.Store(&why)
			}
			return
		}
		word, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch word {
		case "progress":
			n, _ := strconv.ParseInt(rest, 10, 64)
			in.relayed.Store(n)
		case "end":
			n, _ := strconv.ParseInt(rest, 10, 64)
			in.relayed.Store(n)
			in.total.Store(n)
		case "abort":
			n, why, _ := strings.Cut(rest, " ")
			if b, err := strconv.ParseInt(n, 10, 64); err == nil {
				in.relayed.Store(b)
			}
			in.abort.Store(&why)
		}
	}
}

// brokeOff says why the stream ended early, once the daemon has said so (or "" if it ended
// whole). A receive that failed on a short stream waits briefly for that word.
func (in *incoming) brokeOff(wait time.Duration) string {
	select {
	case <-in.ctlDone:
	case <-time.After(wait):
	}
	if p := in.abort.Load(); p != nil {
		return fmt.Sprintf("the stream from node '%s' broke off after %s: %s", in.Node, tasks.HumanBytes(in.relayed.Load()), *p)
	}
	return ""
}

// failure words a receive's error: why the stream broke off when the relay said so, or a
// connection that ended early (a plain stream has no relay to say why).
func (in *incoming) failure(err error) error {
	if why := in.brokeOff(2 * time.Second); why != "" {
		return fmt.Errorf("%s (%v)", why, err)
	}
	var ze *zfs.Error
	if errors.Is(err, stream.ErrTruncated) || (errors.As(err, &ze) && ze.Truncated()) {
		return fmt.Errorf("the stream from node '%s' broke off after %s: the connection ended early (%v)", in.Node, tasks.HumanBytes(in.relayed.Load()), err)
	}
	return err
}

// Finish gives the daemon the task's last word (once): OK, or the error.
func (in *incoming) Finish(err error) {
	in.once.Do(func() {
		if err != nil {
			fmt.Fprintf(in.conn, "ERROR %s\n", oneLine(err.Error()))
		} else {
			fmt.Fprintf(in.conn, "OK\n")
		}
	})
}

// Close releases the stream (after Finish).
func (in *incoming) Close() {
	if in.closing != nil {
		in.closing()
	}
	in.Data.Close()
	in.conn.Close()
}
