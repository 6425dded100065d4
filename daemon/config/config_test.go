package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c, err := Parse("pvesnap.yaml", []byte("node: pve1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8009" || c.Upstream != "https://127.0.0.1:8006" || c.Timeouts.AuthFailDelay.D() != 3*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	if c.TLS.Cert != "/etc/pve/local/pve-ssl.pem" || c.UpstreamCA != "/etc/pve/pve-root-ca.pem" {
		t.Fatalf("cert defaults %q %q", c.TLS.Cert, c.UpstreamCA)
	}
}

func TestPveproxySSLPreferred(t *testing.T) {
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "local"), 0o755)
	for _, f := range []string{"pveproxy-ssl.pem", "pveproxy-ssl.key"} {
		os.WriteFile(filepath.Join(d, "local", f), []byte("x"), 0o600)
	}
	c, err := Parse("x", []byte("node: pve1\npaths:\n  pve: "+d+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.Cert != filepath.Join(d, "local", "pveproxy-ssl.pem") {
		t.Fatalf("cert %q: a custom pveproxy certificate must win", c.TLS.Cert)
	}
}

func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, yaml string
		line       int
		key, msg   string
	}{
		{"unknown top-level key", "node: pve1\nlisten: ':8009'\nlisen: x\n", 3, "lisen", "unknown key"},
		{"unknown nested key", "node: pve1\ntimeouts:\n  idle: 30s\n  idel: 30s\n", 4, "timeouts.idel", "unknown key"},
		{"bad duration", "node: pve1\ntimeouts:\n  idle: soon\n", 3, "timeouts.idle", "not a duration"},
		{"bad listen", "node: pve1\nlisten: 8009\n", 2, "listen", "not host:port"},
		{"bad upstream", "node: pve1\nupstream: ftp://x\n", 2, "upstream", "http(s)"},
		{"bad log level", "node: pve1\nlog_level: loud\n", 2, "log_level", "not one of"},
		{"relative path", "node: pve1\npaths:\n  tasks: var/log\n", 3, "paths.tasks", "absolute"},
		{"bad node", "node: -bad-\n", 1, "node", "valid node name"},
		{"type mismatch", "node: pve1\nauth:\n  cache_size: many\n", 3, "auth.cache_size", "cannot unmarshal"},
		{"duplicate key", "node: pve1\nnode: pve2\n", 2, "node", "twice"},
		{"cache ttl too long", "node: pve1\nauth:\n  cache_ttl: 1h\n", 3, "auth.cache_ttl", "at most"},
		{"bad cors origin", "node: pve1\ncors_origins: [\"http://x:8006\"]\n", 2, "cors_origins", "https"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("/etc/pvesnap/pvesnap.yaml", []byte(c.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a config.Error", err)
			}
			if ce.Line != c.line || ce.Key != c.key || !strings.Contains(ce.Msg, c.msg) || ce.File != "/etc/pvesnap/pvesnap.yaml" {
				t.Fatalf("got %q (line %d key %q), want line %d key %q containing %q", ce, ce.Line, ce.Key, c.line, c.key, c.msg)
			}
			if !strings.HasPrefix(ce.Error(), "/etc/pvesnap/pvesnap.yaml:") {
				t.Fatalf("message %q does not start with file:line", ce.Error())
			}
		})
	}
}

func TestMissingDefaultFileIsDefaults(t *testing.T) {
	// Only the packaged path may be absent; any other path must exist.
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); err == nil {
		t.Fatal("a missing non-default config file must be an error")
	}
}

// pveproxy's settings file is read with the config: TLS_KEY_FILE picks the key of
// pveproxy-ssl.pem as pveproxy does, and a file pvesnap cannot apply stops the start.
func TestPveproxyDefaults(t *testing.T) {
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "local"), 0o755)
	key := filepath.Join(d, "custom.key")
	for _, f := range []string{filepath.Join(d, "local", "pveproxy-ssl.pem"), key} {
		os.WriteFile(f, []byte("x"), 0o600)
	}
	defaults := filepath.Join(d, "pveproxy")
	os.WriteFile(defaults, []byte("TLS_KEY_FILE="+key+"\nDENY_FROM=all\nALLOW_FROM=10.0.0.0/8\n"), 0o644)
	c, err := Parse("x", []byte("node: pve1\npveproxy_config: "+defaults+"\npaths:\n  pve: "+d+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.Cert != filepath.Join(d, "local", "pveproxy-ssl.pem") || c.TLS.Key != key {
		t.Errorf("cert %q key %q: TLS_KEY_FILE not honoured", c.TLS.Cert, c.TLS.Key)
	}
	if c.Pveproxy == nil || len(c.Pveproxy.AllowFrom) != 1 || len(c.Pveproxy.DenyFrom) != 2 {
		t.Errorf("pveproxy settings not read: %+v", c.Pveproxy)
	}
	if c.MaxConnections != 500 || c.Timeouts.Inactivity.D() != 5*time.Second || c.Timeouts.Idle.D() != 5*time.Second {
		t.Errorf("pveproxy's max_conn and timeouts are the defaults: %d %s %s", c.MaxConnections, c.Timeouts.Inactivity.D(), c.Timeouts.Idle.D())
	}
	os.WriteFile(defaults, []byte("POLICY=open\n"), 0o644)
	_, err = Parse("x", []byte("node: pve1\npveproxy_config: "+defaults+"\n"))
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "pveproxy_config" || !strings.Contains(err.Error(), "unknown policy 'open'") {
		t.Errorf("bad pveproxy settings: %v", err)
	}
}
