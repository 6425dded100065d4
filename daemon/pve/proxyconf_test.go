package pve

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeDefaults(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pveproxy")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// The examples of the pveproxy(8) manual page, and what check_host_access makes of them.
func TestProxyDefaultsAccess(t *testing.T) {
	p, err := ReadProxyDefaults(writeDefaults(t, `# /etc/default/pveproxy
ALLOW_FROM="10.0.0.1-10.0.0.5,192.168.0.0/22"
DENY_FROM="all"
POLICY="allow"
export LISTEN_IP='192.0.2.1'  # only there
DISABLE_TLS_1_2=1
CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
`))
	if err != nil {
		t.Fatal(err)
	}
	if p.ListenIP != "192.0.2.1" || !p.DisableTLS12 || p.DisableTLS13 || p.Ciphers != "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256" {
		t.Errorf("read %+v", p)
	}
	for ip, want := range map[string]bool{
		"10.0.0.1": true, "10.0.0.5": true, "10.0.0.6": false, "192.168.3.255": true, "192.168.4.0": false,
		"::ffff:10.0.0.3": true, "2001:db8::1": false, "127.0.0.1": false,
	} {
		if got := p.Allowed(netip.MustParseAddr(ip)); got != want {
			t.Errorf("%s: allowed %v, want %v", ip, got, want)
		}
	}
	// No file: everyone, as pveproxy.
	none, err := ReadProxyDefaults(filepath.Join(t.TempDir(), "absent"))
	if err != nil || !none.Allowed(netip.MustParseAddr("203.0.113.9")) || none.File != "" {
		t.Errorf("absent file: %+v %v", none, err)
	}
	// POLICY=deny refuses what matches neither list, and what matches both.
	deny, err := ReadProxyDefaults(writeDefaults(t, "ALLOW_FROM=10/8\nDENY_FROM=10.1.0.0/16\nPOLICY=deny\n"))
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"10.2.3.4": true, "10.1.2.3": false, "192.0.2.1": false} {
		if got := deny.Allowed(netip.MustParseAddr(ip)); got != want {
			t.Errorf("policy deny, %s: %v, want %v", ip, got, want)
		}
	}
}

func TestProxyDefaultsRefused(t *testing.T) {
	for text, want := range map[string]string{
		"ALLOW_FROM=\"10.0.0.1/8\"\n":          "host bits set",
		"POLICY=maybe\n":                       "unknown policy 'maybe'",
		"DISABLE_TLS_1_3=yes\n":                "use 0 or 1",
		"DISABLE_TLS_1_2=1\nDISABLE_TLS_1_3=1": "cannot disable all supported TLS versions",
		"ALLOW_FROM=\"$NETS\"\n":               "shell expansion",
		"ALLOW_FROM=`cat /etc/nets`\n":         "shell expansion",
		"DENY_FROM=10.0.0.1 10.0.0.2\n":        "more than one word",
		"LISTEN_IP=somewhere\n":                "not an IP address",
		"if true; then X=1; fi\n":              "not a plain NAME=value",
		"DENY_FROM=10.0.0.9-10.0.0.1\n":        "begin after end",
	} {
		_, err := ReadProxyDefaults(writeDefaults(t, text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", text, err, want)
		}
	}
	// Empty values are skipped, as read_proxy_config does; quotes as the shell reads them.
	p, err := ReadProxyDefaults(writeDefaults(t, "POLICY=\nDENY_FROM='10.9.9.9'\nCIPHERS=\"A:B\"'C'\\:D # trailing comment\n"))
	if err != nil || p.Policy != "allow" || len(p.DenyFrom) != 1 || p.Ciphers != "A:BC:D" {
		t.Errorf("%+v %v", p, err)
	}
}
