package storage

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A connection that says nothing, and one with a wrong ticket, must not keep the sender
// waiting: each ticket is read on its own, and the sender behind them is taken at once.
func TestPlainStreamTakesTheSenderBehindASilentConnection(t *testing.T) {
	ctx := context.Background()
	ticket := strings.Repeat("5a", 32)
	addrFile := filepath.Join(t.TempDir(), "move.addr")
	type result struct {
		in  *incoming
		err error
	}
	done := make(chan result, 1)
	go func() {
		in, err := acceptTCP(ctx, "127.0.0.1", ticketHash(ticket), "pve2", addrFile, 4*time.Second)
		done <- result{in, err}
	}()
	addr, err := waitAddress(ctx, addrFile, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
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
