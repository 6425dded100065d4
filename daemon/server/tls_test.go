package server

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// pveproxy's settings become the listener's TLS versions and ciphers; what Go cannot do as
// written is left out (never replaced by something else) and said.
func TestTLSFromPveproxy(t *testing.T) {
	def, err := tlsFromPveproxy(nil)
	if err != nil {
		t.Fatal(err)
	}
	// pveproxy's default list: only its AEAD suites exist (safely) in Go.
	if len(def.suites) != 6 || slices.Contains(def.suites, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA) || def.min != tls.VersionTLS12 || def.max != tls.VersionTLS13 {
		t.Errorf("defaults: %+v", def)
	}
	on := true
	got, err := tlsFromPveproxy(&pve.ProxyDefaults{DisableTLS13: true, Ciphers: "ECDHE-RSA-AES256-GCM-SHA384:HIGH:!aNULL:AES128-SHA256",
		CipherSuites: "TLS_AES_256_GCM_SHA384:TLS_AES_128_CCM_SHA256", HonorCipherOrder: &on})
	if err != nil {
		t.Fatal(err)
	}
	if got.max != tls.VersionTLS12 || !slices.Equal(got.suites, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}) ||
		len(got.suites13) != 1 || !got.suites13[tls.TLS_AES_256_GCM_SHA384] {
		t.Errorf("got %+v", got)
	}
	if w := strings.Join(got.warnings, "\n"); !strings.Contains(w, "HIGH:!aNULL:AES128-SHA256") || !strings.Contains(w, "TLS_AES_128_CCM_SHA256") {
		t.Errorf("warnings %q", w)
	}
	if _, err := tlsFromPveproxy(&pve.ProxyDefaults{Ciphers: "HIGH:!aNULL:!MD5"}); err == nil {
		t.Error("CIPHERS of keywords only: accepted with no usable cipher")
	}
	only, err := tlsFromPveproxy(&pve.ProxyDefaults{CipherSuites: "TLS_AES_128_CCM_8_SHA256"})
	if err != nil || only.max != tls.VersionTLS12 {
		t.Errorf("CIPHERSUITES with nothing Go has: TLS 1.3 must not be offered: %+v %v", only, err)
	}
	if _, err := tlsFromPveproxy(&pve.ProxyDefaults{CipherSuites: "TLS_AES_128_CCM_8_SHA256", DisableTLS12: true}); err == nil {
		t.Error("no usable version left: accepted")
	}
}
