package storage

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/peer"
	"github.com/pvesnap/pvesnap/sim/certs"
)

// peerCluster writes a cluster filesystem whose nodes pve1 and pve2 are both at 127.0.0.1,
// and returns it with pve2's certificate (what its pvesnap presents).
func peerCluster(t *testing.T) (string, tls.Certificate) {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(certs.NodeCerts(root, net.IPv4(127, 0, 0, 1), "pve1", "pve2"))
	must(os.WriteFile(filepath.Join(root, ".members"), []byte(`{"nodename": "pve1", "version": 2, "nodelist": {
		"pve1": {"id": 1, "online": 1, "ip": "127.0.0.1"}, "pve2": {"id": 2, "online": 1, "ip": "127.0.0.1"}}}`), 0o644))
	cert, err := tls.LoadX509KeyPair(filepath.Join(root, "nodes", "pve2", "pve-ssl.pem"), filepath.Join(root, "nodes", "pve2", "pve-ssl.key"))
	must(err)
	return root, cert
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// The TLS stream's counterpart of TestPlainStreamAnswerLostAfterTheWholeStream: after the
// whole body, a receiver that answers is heard; one whose answer is lost may have committed
// the volume (errNoAnswer: a ZFS move keeps its new snapshot, the next move's base); one that
// breaks the stream off mid-way has not committed it, and the error names the node.
func TestStreamAnswerLostAfterTheWholeStream(t *testing.T) {
	root, cert := peerCluster(t)
	const size = 32 << 20
	for _, c := range []struct {
		name     string
		serve    func(w http.ResponseWriter, r *http.Request)
		noAnswer bool
		says     string
	}{
		{"committed", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Write([]byte(`{"data": null}`))
		}, false, ""},
		{"refused", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"message": "flushing pve/vm-100-disk-0 failed\n"}`))
		}, false, "flushing pve/vm-100-disk-0 failed"},
		{"answer lost", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			hangUp(t, w)
		}, true, "may be committed there"},
		{"broken off mid-stream", func(w http.ResponseWriter, r *http.Request) {
			io.CopyN(io.Discard, r.Body, 1<<20)
			hangUp(t, w)
		}, false, "stream to node 'pve2'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != streamPath || r.Header.Get(ticketHeader) != "t1" {
					http.Error(w, "not the stream", http.StatusBadRequest)
					return
				}
				c.serve(w, r)
			})}
			go srv.Serve(ln)
			defer srv.Close()
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			m := &Module{Peers: &peer.Peers{PVE: root, Node: "pve1", Port: port}}
			body := &counter{r: io.LimitReader(zeros{}, size)}
			err = m.postStream(context.Background(), MoveSpec{TargetNode: "pve2", Ticket: "t1"}, size, body)
			if c.says == "" {
				if err != nil || body.n.Load() != size {
					t.Fatalf("a committed move: %v, %d of %d bytes sent", err, body.n.Load(), size)
				}
				return
			}
			if err == nil {
				t.Fatal("the move succeeded without an answer of 200")
			}
			if errors.Is(err, errNoAnswer) != c.noAnswer {
				t.Fatalf("%v: errNoAnswer is %v, want %v (%d of %d bytes read)", err, errors.Is(err, errNoAnswer), c.noAnswer, body.n.Load(), size)
			}
			if !strings.Contains(err.Error(), c.says) {
				t.Fatalf("%v, want it to say %q", err, c.says)
			}
		})
	}
}

// hangUp closes the connection of a request without an answer.
func hangUp(t *testing.T, w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Error(fmt.Errorf("hijack: %w", err))
		return
	}
	conn.Close()
}
