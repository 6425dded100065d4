// Package certs makes the certificates the simulators serve: a CA and server certificates
// signed by it, so clients under test verify TLS exactly as in production.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// WritePEM writes one PEM block.
func WritePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

// NewCA writes a self-signed CA certificate and its key.
func NewCA(certPath, keyPath, cn, ou string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return err
	}
	kder, _ := x509.MarshalECPrivateKey(k)
	if err := WritePEM(keyPath, "EC PRIVATE KEY", kder, 0o600); err != nil {
		return err
	}
	return WritePEM(certPath, "CERTIFICATE", der, 0o644)
}

// LoadCA reads a CA written by NewCA.
func LoadCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	cp, _ := pem.Decode(cb)
	kp, _ := pem.Decode(kb)
	if cp == nil || kp == nil {
		return nil, nil, errors.New("unreadable CA files")
	}
	cert, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kp.Bytes)
	return cert, key, err
}

// NewLeaf writes a server certificate for the names signed by the CA.
func NewLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn, ou string, dns []string, ips []net.IP, certPath, keyPath string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(2, 0, 0), DNSNames: dns, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		return err
	}
	kder, _ := x509.MarshalECPrivateKey(k)
	if err := WritePEM(keyPath, "EC PRIVATE KEY", kder, 0o640); err != nil {
		return err
	}
	return WritePEM(certPath, "CERTIFICATE", der, 0o644)
}

// NodeCerts writes into a cluster filesystem at root what pvecm makes for nodes: the cluster
// CA (pve-root-ca.pem, priv/pve-root-ca.key) and each node's nodes/<node>/pve-ssl.pem and
// .key, for the node's name and ip. Tests of the node-to-node calls use it.
func NodeCerts(root string, ip net.IP, nodes ...string) error {
	if err := os.MkdirAll(filepath.Join(root, "priv"), 0o700); err != nil {
		return err
	}
	caFile, caKey := filepath.Join(root, "pve-root-ca.pem"), filepath.Join(root, "priv", "pve-root-ca.key")
	if err := NewCA(caFile, caKey, "test", "PVE Cluster Manager CA"); err != nil {
		return err
	}
	ca, key, err := LoadCA(caFile, caKey)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		d := filepath.Join(root, "nodes", n)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := NewLeaf(ca, key, n, "PVE Cluster Node", []string{n}, []net.IP{ip}, filepath.Join(d, "pve-ssl.pem"), filepath.Join(d, "pve-ssl.key")); err != nil {
			return err
		}
	}
	return nil
}
