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
	"strings"
	"sync"

	"github.com/pvesnap/pvesnap/daemon/pve"
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

// serverConfig is the listener's TLS configuration (HTTP/1.1 only, like pveproxy) with the
// protocol versions and ciphers of pveproxy's settings. It asks for a client certificate
// without requiring or checking one: another node's pvesnap presents its node certificate,
// which daemon/peer checks against the cluster filesystem; other clients send none and are
// served as before. The cluster CA is named as the issuer wanted, so browsers offer no
// certificate of the user's own.
func (s *certStore) serverConfig(p listenerTLS) *tls.Config {
	s.mu.RLock()
	roots := s.roots
	s.mu.RUnlock()
	c := &tls.Config{GetCertificate: s.getCertificate, MinVersion: p.min, MaxVersion: p.max, CipherSuites: p.suites,
		NextProtos: []string{"http/1.1"}, ClientAuth: tls.RequestClientCert, ClientCAs: roots}
	if p.suites13 != nil {
		allowed := p.suites13
		// Go chooses among its TLS 1.3 suites itself; a handshake that ended on one that
		// CIPHERSUITES leaves out is refused.
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.Version == tls.VersionTLS13 && !allowed[cs.CipherSuite] {
				return fmt.Errorf("TLS 1.3 cipher suite %s is not in CIPHERSUITES", tls.CipherSuiteName(cs.CipherSuite))
			}
			return nil
		}
	}
	return c
}

// listenerTLS are the TLS settings of the listener, from /etc/default/pveproxy.
type listenerTLS struct {
	min, max uint16
	suites   []uint16        // TLS 1.2
	suites13 map[uint16]bool // TLS 1.3; nil: all of Go's
	warnings []string        // settings Go cannot follow, for the log
}

// pveproxyCiphers is pveproxy's default CIPHERS (pve-http-server AnyEvent.pm).
const pveproxyCiphers = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:" +
	"ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-SHA384:" +
	"ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256"

// opensslSuites maps OpenSSL's cipher names to the TLS 1.2 suites Go implements safely.
var opensslSuites = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
}

var tls13Suites = map[string]uint16{
	"TLS_AES_128_GCM_SHA256":       tls.TLS_AES_128_GCM_SHA256,
	"TLS_AES_256_GCM_SHA384":       tls.TLS_AES_256_GCM_SHA384,
	"TLS_CHACHA20_POLY1305_SHA256": tls.TLS_CHACHA20_POLY1305_SHA256,
}

// tlsFromPveproxy applies DISABLE_TLS_1_2/1_3, CIPHERS and CIPHERSUITES. Ciphers Go does
// not implement, or implements only unsafely (CBC-SHA256, RSA key exchange, 3DES, RC4), and
// OpenSSL cipher-string keywords are left out with a warning: only ciphers named and usable
// are enabled, never more. A setting that leaves no usable cipher is an error.
func tlsFromPveproxy(p *pve.ProxyDefaults) (listenerTLS, error) {
	t := listenerTLS{min: tls.VersionTLS12, max: tls.VersionTLS13}
	if p == nil {
		p = &pve.ProxyDefaults{}
	}
	if p.DisableTLS12 {
		t.min = tls.VersionTLS13
	}
	if p.DisableTLS13 {
		t.max = tls.VersionTLS12
	}
	ciphers := p.Ciphers
	if ciphers == "" {
		ciphers = pveproxyCiphers
	}
	var skipped []string
	for _, name := range strings.FieldsFunc(ciphers, func(r rune) bool { return r == ':' || r == ',' || r == ' ' }) {
		if id, ok := opensslSuites[name]; ok {
			t.suites = append(t.suites, id)
		} else {
			skipped = append(skipped, name)
		}
	}
	if p.Ciphers != "" && len(skipped) > 0 {
		t.warnings = append(t.warnings, fmt.Sprintf("CIPHERS: not used (not an OpenSSL cipher name Go implements safely): %s", strings.Join(skipped, ":")))
	}
	if len(t.suites) == 0 && t.min <= tls.VersionTLS12 {
		return t, fmt.Errorf("CIPHERS %q names no TLS 1.2 cipher pvesnap can use (OpenSSL cipher names such as ECDHE-RSA-AES128-GCM-SHA256; keywords are not evaluated)", p.Ciphers)
	}
	if p.CipherSuites != "" {
		t.suites13 = map[uint16]bool{}
		skipped = nil
		for _, name := range strings.Split(p.CipherSuites, ":") {
			if id, ok := tls13Suites[strings.TrimSpace(name)]; ok {
				t.suites13[id] = true
			} else {
				skipped = append(skipped, name)
			}
		}
		if len(skipped) > 0 {
			t.warnings = append(t.warnings, fmt.Sprintf("CIPHERSUITES: not used (Go does not implement them): %s", strings.Join(skipped, ":")))
		}
		if len(t.suites13) == 0 && t.max == tls.VersionTLS13 {
			if t.min == tls.VersionTLS13 {
				return t, fmt.Errorf("CIPHERSUITES %q names no TLS 1.3 suite pvesnap can use, and TLS 1.2 is disabled", p.CipherSuites)
			}
			t.max = tls.VersionTLS12
			t.warnings = append(t.warnings, "TLS 1.3 not offered: CIPHERSUITES names none of its suites Go implements")
		}
	}
	if p.HonorCipherOrder != nil && !*p.HonorCipherOrder {
		t.warnings = append(t.warnings, "HONOR_CIPHER_ORDER=0: Go's server always chooses the cipher itself among those enabled")
	}
	return t, nil
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
