package pve

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"

	"github.com/pvesnap/pvesnap/sim/certs"
)

// ensureCerts creates what pvecm updatecerts creates, where missing: the cluster CA, a
// certificate per node signed by it (names: the node, localhost, 127.0.0.1, ::1, and the
// node's simulated address), the ticket signing key pair and pve-www.key.
func ensureCerts(shared string, nodes []string) error {
	caCert := filepath.Join(shared, "pve-root-ca.pem")
	caKey := filepath.Join(shared, "priv", "pve-root-ca.key")
	if !exists(caCert) || !exists(caKey) {
		if err := certs.NewCA(caCert, caKey, "Proxmox Virtual Environment (simulated)", "PVE Cluster Manager CA"); err != nil {
			return err
		}
	}
	ca, key, err := certs.LoadCA(caCert, caKey)
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
		if err := certs.NewLeaf(ca, key, n, "PVE Cluster Node", []string{n, "localhost"}, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), ip},
			filepath.Join(dir, "pve-ssl.pem"), filepath.Join(dir, "pve-ssl.key")); err != nil {
			return err
		}
	}
	if !exists(filepath.Join(shared, "priv", "authkey.key")) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		if err := certs.WritePEM(filepath.Join(shared, "priv", "authkey.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k), 0o600); err != nil {
			return err
		}
		pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err := certs.WritePEM(filepath.Join(shared, "authkey.pub"), "PUBLIC KEY", pub, 0o644); err != nil {
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
