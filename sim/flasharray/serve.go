package flasharray

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/sim/certs"
)

// Server is a simulated array listening on HTTPS.
type Server struct {
	Array *Array
	URL   string
	// CAFile is the PEM clients must trust; TokenFile holds an API token of user pureuser.
	CAFile    string
	TokenFile string
	srv       *http.Server
	ln        net.Listener
}

// Listen serves a over HTTPS on addr. dir keeps the certificates and the API token (both
// made on first use), so a restarted simulator is trusted by the same clients.
func Listen(a *Array, addr, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	cert, key := filepath.Join(dir, "array.pem"), filepath.Join(dir, "array.key")
	if _, err := os.Stat(cert); errors.Is(err, os.ErrNotExist) {
		if err := certs.NewCA(ca, caKey, "FlashArray simulator CA", "pvesnap"); err != nil {
			return nil, err
		}
		c, k, err := certs.LoadCA(ca, caKey)
		if err != nil {
			return nil, err
		}
		if err := certs.NewLeaf(c, k, a.Name, "pvesnap", []string{a.Name, "localhost"},
			[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, cert, key); err != nil {
			return nil, err
		}
	}
	tokFile := filepath.Join(dir, "api-token")
	tok, err := os.ReadFile(tokFile)
	if errors.Is(err, os.ErrNotExist) {
		b := make([]byte, 16)
		rand.Read(b)
		tok = []byte(hex.EncodeToString(b))
		err = os.WriteFile(tokFile, append(tok, '\n'), 0o600)
	}
	if err != nil {
		return nil, err
	}
	a.AddToken(strings.TrimSpace(string(tok)), "pureuser")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	s := &Server{Array: a, URL: "https://" + ln.Addr().String(), CAFile: ca, TokenFile: tokFile, ln: ln,
		srv: &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops serving.
func (s *Server) Close() error { return s.srv.Close() }
