// Package peer lets the pvesnap daemons of one cluster call each other, each side proving
// which node it is with the certificate pvecm gave the node: nodes/<node>/pve-ssl.pem in the
// cluster filesystem (its key beside it). A call is from node N when the client certificate
// is N's file there, and goes to node N when the server's certificate is one of N's
// (pveproxy-ssl.pem or pve-ssl.pem, the ones pvesnap serves): identities come from the
// cluster filesystem, never from a header or a host name a client could choose.
//
// The node keys are root's and pveproxy's (www-data may read them, as pveproxy presents the
// node's certificate): whoever can read them can speak for that node, as with PVE's own
// trust between nodes. A move still needs the calling user's own credential on both nodes.
package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// Peers are the pvesnap daemons of this node's cluster.
type Peers struct {
	PVE  string // the cluster filesystem (/etc/pve)
	Node string // this node
	Port string // pvesnap's port, the same on every node
	// Now is the clock for certificate validity (tests); nil is time.Now.
	Now func() time.Time
}

// ErrNotPeer is a TLS client that did not present a cluster node's certificate.
var ErrNotPeer = errors.New("not a cluster node's pvesnap")

func (p *Peers) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Peers) nodeFile(node, name string) string { return filepath.Join(p.PVE, "nodes", node, name) }

// leaf reads the first certificate of a PEM file.
func leaf(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return nil, fmt.Errorf("%s: no certificate", path)
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

func (p *Peers) valid(c *x509.Certificate) error {
	if now := p.now(); now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return fmt.Errorf("certificate %q is outside its validity (%s to %s)", c.Subject.CommonName,
			c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// NodeOf names the node whose certificate a TLS client presented: the cluster member whose
// nodes/<node>/pve-ssl.pem is that certificate, byte for byte.
func (p *Peers) NodeOf(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", fmt.Errorf("%w: no client certificate", ErrNotPeer)
	}
	got := cs.PeerCertificates[0]
	m, err := pve.ReadMembers(p.PVE)
	if err != nil {
		return "", fmt.Errorf("reading the cluster's nodes: %w", err)
	}
	for _, n := range m.Nodes() {
		c, err := leaf(p.nodeFile(n, "pve-ssl.pem"))
		if err != nil || !bytes.Equal(c.Raw, got.Raw) {
			continue
		}
		if err := p.valid(got); err != nil {
			return "", fmt.Errorf("%w: %v", ErrNotPeer, err)
		}
		return n, nil
	}
	return "", fmt.Errorf("%w: the client certificate (%q) is no node's pve-ssl.pem", ErrNotPeer, got.Subject.CommonName)
}

// ClientTLS is the TLS configuration for calling node's pvesnap: it presents this node's
// certificate and accepts only node's own.
func (p *Peers) ClientTLS(node string) (*tls.Config, error) {
	own, err := tls.LoadX509KeyPair(p.nodeFile(p.Node, "pve-ssl.pem"), p.nodeFile(p.Node, "pve-ssl.key"))
	if err != nil {
		return nil, fmt.Errorf("this node's certificate: %w", err)
	}
	var pins [][]byte
	for _, f := range []string{"pveproxy-ssl.pem", "pve-ssl.pem"} {
		if c, err := leaf(p.nodeFile(node, f)); err == nil {
			pins = append(pins, c.Raw)
		}
	}
	if len(pins) == 0 {
		return nil, fmt.Errorf("node '%s' has no certificate in the cluster filesystem", node)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &own, nil
		},
		InsecureSkipVerify: true, // replaced by VerifyConnection, which always runs
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("node '%s' presented no certificate", node)
			}
			for _, pin := range pins {
				if bytes.Equal(pin, cs.PeerCertificates[0].Raw) {
					return p.valid(cs.PeerCertificates[0])
				}
			}
			return fmt.Errorf("the server is not node '%s': its certificate is none of the node's in the cluster filesystem", node)
		},
	}, nil
}

// Address is host:port of node's pvesnap, from the cluster's .members.
func (p *Peers) Address(node string) (string, error) {
	m, err := pve.ReadMembers(p.PVE)
	if err != nil {
		return "", fmt.Errorf("cannot resolve node '%s': %w", node, err)
	}
	ip, err := m.Address(node)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip, p.Port), nil
}

// Client is an HTTP client for node's pvesnap and its base URL ("https://ip:port"). Each
// call gets its own connection: moves are few and long, and nothing is shared between them.
// responseWait bounds the wait for an answer once the request (body included) is sent.
func (p *Peers) Client(node string, responseWait time.Duration) (*http.Client, string, error) {
	cfg, err := p.ClientTLS(node)
	if err != nil {
		return nil, "", err
	}
	addr, err := p.Address(node)
	if err != nil {
		return nil, "", err
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			raw, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return tc, nil
		},
		DisableKeepAlives:     true,
		DisableCompression:    true,
		ResponseHeaderTimeout: responseWait,
		ExpectContinueTimeout: 10 * time.Second,
		WriteBufferSize:       256 << 10,
		ReadBufferSize:        64 << 10,
	}
	return &http.Client{Transport: tr}, "https://" + addr, nil
}
