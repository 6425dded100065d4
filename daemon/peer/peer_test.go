package peer

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/sim/certs"
)

// cluster writes a cluster filesystem with a CA, nodes pve1 and pve2 (pve-ssl.pem/key each)
// and .members, and returns its root.
func cluster(t *testing.T, addr string) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	host, _, _ := net.SplitHostPort(addr)
	must(certs.NodeCerts(root, net.ParseIP(host), "pve1", "pve2", "other"))
	must(os.WriteFile(filepath.Join(root, ".members"), []byte(fmt.Sprintf(`{"nodename": "pve1", "version": 3, "nodelist": {
		"pve1": {"id": 1, "online": 1, "ip": "%s"}, "pve2": {"id": 2, "online": 1, "ip": "%s"}}}`, host, host)), 0o644))
	return root
}

// serve runs an HTTPS server presenting node's certificate (of the cluster in root), which
// asks for client certificates and answers with the node that presented one.
func serve(t *testing.T, root, certNode string, p *Peers) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := p.NodeOf(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		fmt.Fprint(w, n)
	}))
	d := filepath.Join(root, "nodes", certNode)
	cert, err := tls.LoadX509KeyPair(filepath.Join(d, "pve-ssl.pem"), filepath.Join(d, "pve-ssl.key"))
	if err != nil {
		t.Fatal(err)
	}
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func TestBothSidesAreTheirNodes(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	root := cluster(t, addr)
	target := &Peers{PVE: root, Node: "pve2"}
	s := serve(t, root, "pve2", target)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.URL, "https://"))
	source := &Peers{PVE: root, Node: "pve1", Port: port}
	c, base, err := source.Client("pve2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 100)
	n, _ := resp.Body.Read(b)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b[:n]) != "pve1" {
		t.Fatalf("%s %q: the server should see node pve1", resp.Status, b[:n])
	}
	// A server that is not pve2 (here: pve2's address serving another node's certificate,
	// signed by the same CA) is refused by the client.
	fake := serve(t, root, "other", target)
	_, port, _ = net.SplitHostPort(strings.TrimPrefix(fake.URL, "https://"))
	source.Port = port
	c, base, _ = source.Client("pve2", time.Minute)
	if _, err := c.Get(base); err == nil || !strings.Contains(err.Error(), "the server is not node 'pve2'") {
		t.Fatalf("a server with another node's certificate: %v", err)
	}
	// A client presenting a certificate that is no member's pve-ssl.pem is not a peer.
	other := &Peers{PVE: root, Node: "other", Port: port}
	fakeAsPVE2 := serve(t, root, "pve2", target)
	_, port, _ = net.SplitHostPort(strings.TrimPrefix(fakeAsPVE2.URL, "https://"))
	other.Port = port
	c, base, _ = other.Client("pve2", time.Minute)
	resp, err = c.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	n, _ = resp.Body.Read(b)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b[:n]), "is no node's pve-ssl.pem") {
		t.Fatalf("a non-member's certificate: %s %q", resp.Status, b[:n])
	}
	// Expired: the server's own certificate, outside its validity, is refused.
	source.Now = func() time.Time { return time.Now().Add(100 * 365 * 24 * time.Hour) }
	source.Port = port
	c, base, _ = source.Client("pve2", time.Minute)
	if _, err := c.Get(base); err == nil || !strings.Contains(err.Error(), "outside its validity") {
		t.Fatalf("an expired certificate: %v", err)
	}
}
