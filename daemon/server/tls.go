package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
)

// certStore holds the listener's certificate and the trust for pveproxy and peer nodes; Reload
// (on SIGHUP) re-reads the files.
type certStore struct {
	certFile, keyFile, caFile string
	mu                        sync.RWMutex
	cert                      *tls.Certificate
	pinned                    [][]byte // DER of the certificates pveproxy serves (our own files)
	roots                     *x509.CertPool
}

func newCertStore(certFile, keyFile, caFile string) (*certStore, error) {
	s := &certStore{certFile: certFile, keyFile: keyFile, caFile: caFile}
	return s, s.Reload()
}

// Reload reads the files; on error the previous state stays in effect.
func (s *certStore) Reload() error {
	var cert *tls.Certificate
	var pinned [][]byte
	if s.certFile != "" {
		c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
		if err != nil {
			return fmt.Errorf("loading TLS certificate %s: %w", s.certFile, err)
		}
		cert = &c
		pinned = append(pinned, c.Certificate[0])
	}
	roots := x509.NewCertPool()
	b, err := os.ReadFile(s.caFile)
	switch {
	case err == nil:
		if !roots.AppendCertsFromPEM(b) {
			return fmt.Errorf("%s: no certificate found", s.caFile)
		}
	case errors.Is(err, os.ErrNotExist) && len(pinned) > 0:
		// No cluster CA: pveproxy can still be verified by pinning its exact certificate.
	default:
		return fmt.Errorf("reading cluster CA: %w", err)
	}
	s.mu.Lock()
	s.cert, s.pinned, s.roots = cert, pinned, roots
	s.mu.Unlock()
	return nil
}

func (s *certStore) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cert == nil {
		return nil, errors.New("no certificate")
	}
	return s.cert, nil
}

// serverConfig is the listener's TLS configuration (HTTP/1.1 only, like pveproxy). It asks
// for a client certificate without requiring or checking one: another node's pvesnap
// presents its node certificate, which daemon/peer checks against the cluster filesystem;
// other clients send none and are served as before. The cluster CA is named as the issuer
// wanted, so browsers offer no certificate of the user's own.
func (s *certStore) serverConfig() *tls.Config {
	s.mu.RLock()
	roots := s.roots
	s.mu.RUnlock()
	return &tls.Config{GetCertificate: s.getCertificate, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"},
		ClientAuth: tls.RequestClientCert, ClientCAs: roots}
}

// clientConfig verifies a peer: its leaf is one of our pinned certificates (pveproxy serves
// the same files as we do), or it chains to the cluster CA and names the host we dialled.
// Verification cannot be turned off: with neither a pin nor the CA, every connection fails.
func (s *certStore) clientConfig(host string) *tls.Config {
	s.mu.RLock()
	pinned, roots := s.pinned, s.roots
	s.mu.RUnlock()
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by VerifyConnection below, which always runs
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("peer presented no certificate")
			}
			leaf := cs.PeerCertificates[0]
			for _, p := range pinned {
				if bytes.Equal(p, leaf.Raw) {
					return nil
				}
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host}
			if ip := net.ParseIP(host); ip != nil {
				opts.DNSName = ""
				if err := leaf.VerifyHostname(ip.String()); err != nil {
					return err
				}
			}
			if _, err := leaf.Verify(opts); err != nil {
				return fmt.Errorf("certificate of %s not trusted (not pveproxy's own and not signed by the cluster CA): %w", host, err)
			}
			return nil
		},
	}
}

// pemCerts parses certificates from PEM (tests).
func pemCerts(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var p *pem.Block
		p, b = pem.Decode(b)
		if p == nil {
			return out
		}
		if c, err := x509.ParseCertificate(p.Bytes); err == nil {
			out = append(out, c)
		}
	}
}
