package storage

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// When the cluster's datacenter.cfg sets "migration: type=insecure" — PVE's own switch for
// "the migration network is private: do not encrypt" — a move's stream goes over plain TCP
// straight between the two tasks instead of through TLS and the daemons. The move is
// prepared as always (node certificates, the caller's Datastore.Allocate on both nodes); the
// receiving task listens on a port of PVE's migration range on its address in the migration
// network, and takes the one connection that starts with the move's one-time ticket. ZFS
// then sends into and receives from the sockets themselves: no byte passes through user
// space, as with zfs send | zfs recv through a pipe. The data is not encrypted and, like
// PVE's insecure migration, not protected against whoever controls that network.

// Ports PVE uses for insecure migrations (PVE::Tools::next_migrate_port): firewalls between
// nodes already let them through.
const (
	tcpPortFirst = 60000
	tcpPortLast  = 60050
)

// ticketReaders bounds the connections whose ticket a receiving task reads at once (each for
// at most 10 s): one move has one sender, and a flood of connections that say nothing must
// not take the receiving task's descriptors.
const ticketReaders = 32

// waiting are the connections whose ticket is being read, oldest first.
type waiting struct {
	mu    sync.Mutex
	conns []*net.TCPConn
}

// add takes conn in. With ticketReaders waiting already, the oldest is turned away: a sender
// presents its ticket as soon as it connects, so the connection that waited longest is the
// least likely to be it, and a flood of silent connections cannot keep a sender out.
func (w *waiting) add(conn *net.TCPConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.conns) == ticketReaders {
		go turnAway(w.conns[0], "too many connections are waiting to present a ticket")
		w.conns = w.conns[1:]
	}
	w.conns = append(w.conns, conn)
}

// done ends conn's wait, and tells whether it was still waiting (not turned away meanwhile).
func (w *waiting) done(conn *net.TCPConn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(w.conns)
	w.conns = slices.DeleteFunc(w.conns, func(c *net.TCPConn) bool { return c == conn })
	return len(w.conns) < n
}

// turnAway tells a connection why it is closed (for a second at most), and closes it.
func turnAway(conn *net.TCPConn, why string) {
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	conn.Write([]byte("ERROR " + why + "\n"))
	conn.Close()
}

func ticketHash(ticket string) string {
	h := sha256.Sum256([]byte(ticket))
	return hex.EncodeToString(h[:])
}

// listenIP is where this node receives a plain stream: its address in the migration
// network, else its address in .members.
func (m *Module) listenIP(mig pve.Migration) (string, error) {
	if mig.Network != nil {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return "", err
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && mig.Network.Contains(ipn.IP) {
				return ipn.IP.String(), nil
			}
		}
		return "", fmt.Errorf("node '%s' has no address in the migration network %s", m.Node, mig.Network)
	}
	addr, err := m.Peers.Address(m.Node)
	if err != nil {
		return "", err
	}
	host, _, _ := net.SplitHostPort(addr)
	return host, nil
}

// waitAddress waits for the receiving task to write where it listens.
func waitAddress(ctx context.Context, file string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		if b, err := os.ReadFile(file); err == nil {
			return strings.TrimSpace(string(b)), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the receiving task did not listen within %s", wait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// acceptTCP listens on ip (a port of PVE's migration range), tells where in addrFile and
// takes, within wait, the first connection that presents the ticket whose hash is hash.
// Each connection's ticket is read on its own: one that connects and says nothing (a port
// scanner, a stray peer) must not keep the sender waiting behind it until wait runs out.
func acceptTCP(ctx context.Context, ip, hash, node, addrFile string, wait time.Duration) (*incoming, error) {
	var ln *net.TCPListener
	for port := tcpPortFirst; port <= tcpPortLast && ln == nil; port++ {
		ln, _ = net.ListenTCP("tcp", &net.TCPAddr{IP: net.ParseIP(ip), Port: port})
	}
	if ln == nil {
		return nil, fmt.Errorf("no free port in %d-%d on %s", tcpPortFirst, tcpPortLast, ip)
	}
	defer ln.Close()
	tmp := addrFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, addrFile); err != nil {
		return nil, err
	}
	defer os.Remove(addrFile)
	ln.SetDeadline(time.Now().Add(wait))
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Now()) })
	defer stop()
	var taken atomic.Bool // the first connection with the ticket is the stream; no other is
	var reading sync.WaitGroup
	var w waiting
	won := make(chan *net.TCPConn, 1)
	ended := make(chan error, 1)
	go func() {
		for {
			conn, err := ln.AcceptTCP()
			if err != nil {
				ended <- err
				return
			}
			w.add(conn)
			reading.Add(1)
			go func() {
				defer reading.Done()
				ok := presentsTicket(conn, hash)
				if !w.done(conn) {
					return // turned away meanwhile
				}
				if ok && taken.CompareAndSwap(false, true) {
					won <- conn
					return
				}
				turnAway(conn, "no move waits for this ticket")
			}()
		}
	}()
	select {
	case conn := <-won:
		return newTCPIncoming(ctx, conn, node)
	case <-ended:
		if ctx.Err() == nil {
			// A connection accepted in time still has its 10 s to present the ticket.
			reading.Wait()
		}
		if !taken.CompareAndSwap(false, true) {
			return newTCPIncoming(ctx, <-won, node) // the sender connected in time
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("no stream came from node '%s' within %s (its sending task did not start, or did not reach this port)", node, wait)
	}
}

// presentsTicket reads the 64 bytes a sender starts with, for at most 10 s, and tells whether
// they are the ticket whose hash is hash.
func presentsTicket(conn *net.TCPConn, hash string) bool {
	ticket := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadFull(conn, ticket)
	conn.SetReadDeadline(time.Time{})
	return err == nil && subtle.ConstantTimeCompare([]byte(ticketHash(string(ticket))), []byte(hash)) == 1
}

func newTCPIncoming(ctx context.Context, conn *net.TCPConn, node string) (*incoming, error) {
	f, err := conn.File() // a descriptor of the socket in blocking mode: the kernel reads it
	if err != nil {
		conn.Close()
		return nil, err
	}
	in := &incoming{conn: conn, Data: f, Node: node, ctlDone: make(chan struct{})}
	in.total.Store(-1)
	close(in.ctlDone) // no relay: no word of one to wait for
	// What the connection has brought so far, the ticket aside.
	in.recount = func() {
		if n := tcpCount(conn, false); n > 64 {
			in.relayed.Store(n - 64)
		}
	}
	done := make(chan struct{})
	go every(2*time.Second, done, in.recount)
	in.closing = func() { close(done) }
	context.AfterFunc(ctx, func() {
		in.Finish(errors.New("interrupted by stop request"))
		conn.CloseRead() // the kernel's read sees the end: the receive fails and cleans up
	})
	return in, nil
}

// tcpCount is what a connection has received, or (sent) what the other side has
// acknowledged, from the kernel's TCP_INFO: 0 when unknown.
func tcpCount(conn *net.TCPConn, sent bool) int64 {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0
	}
	var n uint64
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = info.Bytes_received
			if sent {
				n = info.Bytes_acked
			}
		}
	})
	return int64(n)
}

// dialTCP connects to a receiving task and presents the move's ticket.
func dialTCP(ctx context.Context, s MoveSpec) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", s.Address)
	if err != nil {
		return nil, fmt.Errorf("connecting to node '%s' at %s: %w", s.TargetNode, s.Address, err)
	}
	conn := c.(*net.TCPConn)
	// Nagle's algorithm on: ZFS writes each record's 312-byte header apart from its data, and
	// would otherwise send it as a segment of its own.
	conn.SetNoDelay(false)
	if _, err := conn.Write([]byte(s.Ticket)); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// errNoAnswer: the whole stream went out but the receiving node's answer did not come back,
// so the volume may be committed there. What the next move needs stays: a ZFS volume's new
// snapshot is then the newest both nodes hold, the next stream's base.
var errNoAnswer = errors.New("the whole stream went out but no answer came back: the volume may be committed there")

// refusal is the receiving task's own word against the move, sent after the stream.
type refusal struct{ node, msg string }

func (r *refusal) Error() string { return fmt.Sprintf("node '%s': %s", r.node, r.msg) }

func refused(err error) bool {
	var rf *refusal
	return errors.As(err, &rf)
}

// verdict reads the receiving task's last word on a plain stream, after the stream.
func verdict(ctx context.Context, conn *net.TCPConn, node string) error {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("node '%s' gave no answer after the stream (its receiving task's log says why): %v", node, err)
	}
	if line = strings.TrimSpace(line); line != "OK" {
		return &refusal{node, strings.TrimPrefix(line, "ERROR ")}
	}
	return nil
}

// sendTCP connects to the receiving task, has write put the stream into the connection and
// returns the task's verdict, with the bytes of the stream the other side acknowledged;
// progress, when set, is told those every few seconds. A failed write still reads the
// task's word, which says more.
func sendTCP(ctx context.Context, s MoveSpec, progress func(acked int64), write func(*net.TCPConn) error) (int64, error) {
	conn, err := dialTCP(ctx, s)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	acked := func() int64 { return max(tcpCount(conn, true)-int64(len(s.Ticket)), 0) }
	done := make(chan struct{})
	if progress != nil {
		go every(progressEvery, done, func() { progress(acked()) })
	}
	stop := context.AfterFunc(ctx, func() { conn.CloseWrite() }) // a write in the kernel fails
	werr := write(conn)
	stop()
	nonblocking(conn) // the kernel's send made it blocking: deadlines work again for the verdict
	close(done)
	conn.CloseWrite()
	if werr != nil {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if verr := verdict(wctx, conn, s.TargetNode); refused(verr) && ctx.Err() == nil {
			return acked(), verr // the task's reason says more than the broken write
		}
		return acked(), werr
	}
	err = verdict(ctx, conn, s.TargetNode)
	if err != nil && !refused(err) {
		err = fmt.Errorf("%w (%v)", errNoAnswer, err)
	}
	return acked(), err // after the verdict the other side has it all
}

// nonblocking puts a connection's socket back in non-blocking mode after a descriptor of it
// (conn.File, made blocking for the kernel) was used: Go's deadlines need it.
func nonblocking(conn *net.TCPConn) {
	if rc, err := conn.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetNonblock(int(fd), true) })
	}
}
