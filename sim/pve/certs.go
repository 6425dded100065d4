package pve

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ensureCerts creates what pvecm updatecerts creates, where missing: the cluster CA, a
// certificate per node signed by it (names: the node, localhost, 127.0.0.1, ::1, and the
// node's simulated address), the ticket signing key pair and pve-www.key.
func ensureCerts(shared string, nodes []string) error {
	caCert := filepath.Join(shared, "pve-root-ca.pem")
	caKey := filepath.Join(shared, "priv", "pve-root-ca.key")
	if !exists(caCert) || !exists(caKey) {
		if err := newCA(caCert, caKey); err != nil {
			return err
		}
	}
	ca, key, err := loadCA(caCert, caKey)
	if err != nil {
		return err
	}
	for i, n := range nodes {
		dir := filepath.Join(shared, "nodes", n)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if exists(filepath.Join(dir, "pve-ssl.pem")) {
			continue
		}
		ip := net.IPv4(127, 0, 0, byte(i+1))
		if err := newLeaf(ca, key, n, []string{n, "localhost"}, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), ip},
			filepath.Join(dir, "pve-ssl.pem"), filepath.Join(dir, "pve-ssl.key")); err != nil {
			return err
		}
	}
	if !exists(filepath.Join(shared, "priv", "authkey.key")) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(shared, "priv", "authkey.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k), 0o600); err != nil {
			return err
		}
		pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err := writePEM(filepath.Join(shared, "authkey.pub"), "PUBLIC KEY", pub, 0o644); err != nil {
			return err
		}
	}
	if !exists(filepath.Join(shared, "pve-www.key")) {
		b := make([]byte, 48)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(shared, "pve-www.key"), []byte(hex.EncodeToString(b)+"\n"), 0o640); err != nil {
			return err
		}
	}
	return nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func newCA(certPath, keyPath string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "Proxmox Virtual Environment (simulated)", OrganizationalUnit: []string{"PVE Cluster Manager CA"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return err
	}
	kder, _ := x509.MarshalECPrivateKey(k)
	if err := writePEM(keyPath, "EC PRIVATE KEY", kder, 0o600); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

func loadCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
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
		return nil, nil, errors.New("sim/pve: unreadable CA files")
	}
	cert, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kp.Bytes)
	return cert, key, err
}

// newLeaf writes a server certificate signed by the CA.
func newLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, dns []string, ips []net.IP, certPath, keyPath string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{"PVE Cluster Node"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(2, 0, 0), DNSNames: dns, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		return err
	}
	kder, _ := x509.MarshalECPrivateKey(k)
	if err := writePEM(keyPath, "EC PRIVATE KEY", kder, 0o640); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}
