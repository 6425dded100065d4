package storage

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// accepted is what acceptTCP returned.
type accepted struct {
	in  *incoming
	err error
}

// receiveTCP runs acceptTCP for ticket, waiting wait, and returns where it listens and where
// its result comes.
func receiveTCP(t *testing.T, ticket string, wait time.Duration) (string, <-chan accepted) {
	t.Helper()
	ctx := context.Background()
	addrFile := filepath.Join(t.TempDir(), "move.addr")
	done := make(chan accepted, 1)
	go func() {
		in, err := acceptTCP(ctx, "127.0.0.1", ticketHash(ticket), "pve2", addrFile, wait)
		done <- accepted{in, err}
	}()
	addr, err := waitAddress(ctx, addrFile, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return addr, done
}

// A connection that says nothing, and one with a wrong ticket, must not keep the sender
// waiting: each ticket is read on its own, and the sender behind them is taken at once.
func TestPlainStreamTakesTheSenderBehindASilentConnection(t *testing.T) {
	ticket := strings.Repeat("5a", 32)
	addr, done := receiveTCP(t, ticket, 4*time.Second)
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(100 * time.Millisecond) // accepted before the others
	wrong, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	wrong.Write([]byte(strings.Repeat("0", 64)))
	sender, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	start := time.Now()
	if _, err := sender.Write([]byte(ticket)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("the sender was not taken: %v", r.err)
		}
		defer r.in.Close()
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the sender was taken after %s: it waited behind the silent connection", d)
		}
		sender.Write([]byte("data"))
		sender.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(r.in.Data)
		if string(b) != "data" {
			t.Fatalf("the stream brought %q, want the sender's bytes", b)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("acceptTCP did not return")
	}
	wrong.SetReadDeadline(time.Now().Add(2 * time.Second))
	if l, _ := bufio.NewReader(wrong).ReadString('\n'); !strings.HasPrefix(l, "ERROR no move waits") {
		t.Fatalf("a wrong ticket was answered %q", l)
	}
}

// A sender accepted before the wait ran out keeps its 10 s to present the ticket.
func TestPlainStreamSenderAcceptedInTimeIsTaken(t *testing.T) {
	ticket := strings.Repeat("5a", 32)
	addr, done := receiveTCP(t, ticket, 500*time.Millisecond)
	sender, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	sender.Write([]byte(ticket[:10]))
	time.Sleep(time.Second) // the wait runs out meanwhile
	sender.Write([]byte(ticket[10:]))
	r := <-done
	if r.err != nil {
		t.Fatalf("a sender accepted in time was refused: %v", r.err)
	}
	r.in.Close()
}

// No sender within the wait: the receiving task says so, and nothing is left listening.
func TestPlainStreamWaitsNoLongerThanAsked(t *testing.T) {
	addrFile := filepath.Join(t.TempDir(), "move.addr")
	start := time.Now()
	_, err := acceptTCP(context.Background(), "127.0.0.1", ticketHash("x"), "pve2", addrFile, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no stream came from node 'pve2'") {
		t.Fatalf("err %v, want the sender named", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("returned after %s", d)
	}
}

// After the whole stream, a receiver that answers is heard; one whose answer is lost may have
// committed the volume, and the sender must be able to tell that from a refusal (it keeps
// what the next move needs).
func TestPlainStreamAnswerLostAfterTheWholeStream(t *testing.T) {
	for _, c := range []struct {
		name, answer string
		readAll      bool
		noAnswer     bool
		says         string
	}{
		{"committed", "OK\n", true, false, ""},
		{"refused", "ERROR flushing pve/vm-100-disk-0 failed\n", true, false, "node 'pve2': flushing pve/vm-100-disk-0 failed"},
		{"answer lost", "", true, true, "may be committed there"},
		{"broken off mid-stream", "", false, false, "write tcp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.AcceptTCP()
				if err != nil {
					return
				}
				defer conn.Close()
				if c.readAll {
					io.Copy(io.Discard, conn)
					conn.Write([]byte(c.answer))
					return
				}
				io.ReadFull(conn, make([]byte, 1<<16))
				conn.SetLinger(0) // a reset: the sender's writes fail
			}()
			s := MoveSpec{Address: ln.Addr().String(), Ticket: strings.Repeat("5a", 32), TargetNode: "pve2"}
			_, err = sendTCP(context.Background(), s, nil, func(conn *net.TCPConn) error {
				buf := make([]byte, 1<<20)
				n := 4
				if !c.readAll {
					n = 256
				}
				for i := 0; i < n; i++ {
					if _, err := conn.Write(buf); err != nil {
						return err
					}
				}
				return nil
			})
			if c.answer == "OK\n" {
				if err != nil {
					t.Fatalf("a committed move failed: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("the move succeeded without an OK")
			}
			if errors.Is(err, errNoAnswer) != c.noAnswer {
				t.Fatalf("%v: errNoAnswer is %v, want %v", err, errors.Is(err, errNoAnswer), c.noAnswer)
			}
			if !strings.Contains(err.Error(), c.says) {
				t.Fatalf("%v, want it to say %q", err, c.says)
			}
		})
	}
}

// Connections that say nothing are read at most ticketReaders at a time: each one more turns
// the oldest away, so a flood of them cannot keep the sender out, and the sender is taken at
// once, without waiting for a place.
func TestPlainStreamTurnsAwayTheOldestSilentConnections(t *testing.T) {
	ticket := strings.Repeat("5a", 32)
	addr, done := receiveTCP(t, ticket, 5*time.Second)
	const extra = 8
	var silent []net.Conn
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	for i := 0; i < ticketReaders+extra; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	for i, c := range silent[:extra] {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if l, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(l, "ERROR too many connections") {
			t.Fatalf("silent connection %d of %d was answered %q; the %d oldest should be turned away", i+1, ticketReaders+extra, l, extra)
		}
	}
	last := silent[len(silent)-1]
	last.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := last.Read(make([]byte, 1)); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the newest silent connection was not left waiting: %d bytes, %v", n, err)
	}
	sender, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	sender.Write([]byte(ticket))
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("the sender was not taken: %v", r.err)
		}
		r.in.Close()
	case <-time.After(3 * time.Second):
		t.Fatalf("the sender was not taken while %d silent connections waited", ticketReaders)
	}
}
