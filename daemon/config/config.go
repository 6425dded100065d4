// Package config reads pvesnap's node-local settings, /etc/pvesnap/pvesnap.yaml.
//
// Every filesystem root the daemon touches is a setting, so the same code runs on a node, in
// tests, in the simulator and in the lab. Unknown keys and bad values are errors that name the
// file, the line and the key: the daemon refuses to start on them.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// DefaultPath is where the package installs the config.
const DefaultPath = "/etc/pvesnap/pvesnap.yaml"

// Config is the whole file. Field comments are the documentation of each key.
type Config struct {
	// Listen is the address of the API listener.
	Listen string `yaml:"listen"`
	// Upstream is the node's pveproxy.
	Upstream string `yaml:"upstream"`
	// UpstreamCA verifies pveproxy's certificate when it is not the one pvesnap serves itself.
	UpstreamCA string `yaml:"upstream_ca"`
	// Node is this node's name (default: the host name up to the first dot, like PVE).
	Node     string   `yaml:"node"`
	TLS      TLS      `yaml:"tls"`
	Timeouts Timeouts `yaml:"timeouts"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	Paths    Paths  `yaml:"paths"`
	Auth     Auth   `yaml:"auth"`
	// RefreshInterval is the snapshot-inventory cadence; 0 disables periodic refresh.
	RefreshInterval Duration `yaml:"refresh_interval"`
	// CORSOrigins are extra origins allowed to call pvesnap from a browser, besides the
	// cluster's own nodes on :8006.
	CORSOrigins []string `yaml:"cors_origins"`
	// TaskRetention is how long finished pvesnap jobs stay in the SQLite index.
	TaskRetention Duration `yaml:"task_retention"`
	// InjectGUI adds the panel's script to the GUI page passed through on the listener.
	InjectGUI *bool `yaml:"inject_gui"`
	// MaxConnections caps the listener's open connections, like pveproxy's max_conn (500).
	MaxConnections int `yaml:"max_connections"`
	// PveproxyConfig is pveproxy's settings file: its client-address policy (ALLOW_FROM,
	// DENY_FROM, POLICY), LISTEN_IP, TLS settings and TLS_KEY_FILE apply to pvesnap's listener.
	PveproxyConfig string `yaml:"pveproxy_config"`
	// Pveproxy is what PveproxyConfig holds (read by Load).
	Pveproxy *pve.ProxyDefaults `yaml:"-"`

	file  string
	lines map[string]int
}

// TLS are the listener's certificate and key.
type TLS struct {
	// Cert and Key default to /etc/pve/local/pveproxy-ssl.{pem,key} if they exist, else
	// pve-ssl.{pem,key}: the files pveproxy serves.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Disable serves plain HTTP (tests only).
	Disable bool `yaml:"disable"`
}

// Timeouts bound waits.
type Timeouts struct {
	// ReadHeader bounds the TLS handshake and a request's header in total; Idle the wait for
	// the next request on a kept-alive connection; Inactivity a request body or a response
	// that makes no progress (pveproxy: 5 s).
	ReadHeader Duration `yaml:"read_header"`
	Idle       Duration `yaml:"idle"`
	Inactivity Duration `yaml:"inactivity"`
	Upstream   Duration `yaml:"upstream"`
	Shutdown   Duration `yaml:"shutdown"`
	Command    Duration `yaml:"command"`
	// AuthFailDelay holds back 401 answers like pveproxy (3 s).
	AuthFailDelay Duration `yaml:"auth_fail_delay"`
}

// Auth tunes the permission cache.
type Auth struct {
	CacheTTL  Duration `yaml:"cache_ttl"`
	CacheSize int      `yaml:"cache_size"`
}

// Paths are the filesystem roots.
type Paths struct {
	PVE   string `yaml:"pve"`   // cluster filesystem (/etc/pve)
	Tasks string `yaml:"tasks"` // PVE task logs (/var/log/pve/tasks)
	State string `yaml:"state"` // SQLite and job state (/var/lib/pvesnap)
	Run   string `yaml:"run"`   // locks and sockets (/run/pvesnap)
	Lock  string `yaml:"lock"`  // PVE's lock dir (/var/lock)
	Sys   string `yaml:"sys"`
	Dev   string `yaml:"dev"`
	Proc  string `yaml:"proc"`
	ISCSI string `yaml:"iscsi"` // /etc/iscsi
	NVMe  string `yaml:"nvme"`  // /etc/nvme
	// Bin is where external commands (zfs, lvm, qm…) are looked up; empty = /usr/sbin:/usr/bin:/sbin.
	Bin string `yaml:"bin"`
}

// Duration is a time.Duration written as "30s" or "5m" (or seconds as a number).
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses "30s", "1m30s" or a bare number of seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &valueError{line: n.Line, msg: "expected a duration such as 30s"}
	}
	if secs, err := strconv.ParseFloat(n.Value, 64); err == nil {
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &valueError{line: n.Line, msg: fmt.Sprintf("%q is not a duration (use e.g. 30s, 5m)", n.Value)}
	}
	*d = Duration(v)
	return nil
}

// valueError is a bad value found while decoding, with its line.
type valueError struct {
	line int
	msg  string
}

func (e *valueError) Error() string { return e.msg }

// MarshalYAML writes the duration in Go syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Default returns the settings used when the file is absent.
func Default() *Config {
	return &Config{
		Listen:     ":8009",
		Upstream:   "https://127.0.0.1:8006",
		UpstreamCA: "",
		LogLevel:   "info",
		Timeouts: Timeouts{
			ReadHeader:    Duration(10 * time.Second),
			Idle:          Duration(5 * time.Second),
			Inactivity:    Duration(5 * time.Second),
			Upstream:      Duration(10 * time.Minute),
			Shutdown:      Duration(30 * time.Second),
			Command:       Duration(2 * time.Minute),
			AuthFailDelay: Duration(3 * time.Second),
		},
		Auth:            Auth{CacheTTL: Duration(10 * time.Second), CacheSize: 4096},
		MaxConnections:  500,
		PveproxyConfig:  pve.ProxyDefaultsFile,
		RefreshInterval: Duration(10 * time.Minute),
		TaskRetention:   Duration(30 * 24 * time.Hour),
		Paths: Paths{PVE: "/etc/pve", Tasks: "/var/log/pve/tasks", State: "/var/lib/pvesnap",
			Run: "/run/pvesnap", Lock: "/var/lock", Sys: "/sys", Dev: "/dev", Proc: "/proc",
			ISCSI: "/etc/iscsi", NVMe: "/etc/nvme"},
	}
}

// Load reads path over the defaults. A missing file at the default path is not an error (the
// defaults apply); any other read or parse problem is.
func Load(path string) (*Config, error) {
	c := Default()
	c.file = path
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == DefaultPath {
		return c, c.finish()
	}
	if err != nil {
		return nil, err
	}
	if err := c.parse(b); err != nil {
		return nil, err
	}
	return c, c.finish()
}

// Parse reads a config from bytes (name is used in messages).
func Parse(name string, b []byte) (*Config, error) {
	c := Default()
	c.file = name
	if err := c.parse(b); err != nil {
		return nil, err
	}
	return c, c.finish()
}

// Error is a problem in the config file.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
}

func (c *Config) parse(b []byte) error {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return &Error{File: c.file, Line: yamlErrLine(err), Key: "(file)", Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(root.Content) == 0 {
		return nil // empty file: defaults
	}
	c.lines = map[string]int{}
	if err := c.checkKeys(root.Content[0], "", c.lines); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			return c.typeError(te.Errors[0])
		}
		var ve *valueError
		if errors.As(err, &ve) {
			return &Error{File: c.file, Line: ve.line, Key: c.keyAt(ve.line), Msg: ve.msg}
		}
		return &Error{File: c.file, Line: yamlErrLine(err), Key: "(file)", Msg: err.Error()}
	}
	return nil
}

// checkKeys walks the document against the struct's yaml tags, so an unknown key is reported
// with its line and dotted name before decoding.
func (c *Config) checkKeys(n *yaml.Node, prefix string, lines map[string]int) error {
	if n.Kind != yaml.MappingNode {
		return &Error{File: c.file, Line: n.Line, Key: strings.TrimSuffix(prefix, "."), Msg: "expected a mapping of keys to values"}
	}
	known := knownKeys()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := prefix + k.Value
		sub, ok := known[key]
		if !ok {
			return &Error{File: c.file, Line: k.Line, Key: key, Msg: "unknown key"}
		}
		if _, dup := lines[key]; dup {
			return &Error{File: c.file, Line: k.Line, Key: key, Msg: "given twice"}
		}
		lines[key] = k.Line
		if sub {
			if err := c.checkKeys(v, key+".", lines); err != nil {
				return err
			}
		}
	}
	return nil
}

// knownKeys lists every key; true marks a section with keys of its own.
func knownKeys() map[string]bool {
	return map[string]bool{
		"listen": false, "upstream": false, "upstream_ca": false, "node": false, "log_level": false,
		"refresh_interval": false, "cors_origins": false, "task_retention": false, "inject_gui": false,
		"max_connections": false, "pveproxy_config": false,
		"tls": true, "tls.cert": false, "tls.key": false, "tls.disable": false,
		"timeouts": true, "timeouts.read_header": false, "timeouts.idle": false, "timeouts.inactivity": false, "timeouts.upstream": false,
		"timeouts.shutdown": false, "timeouts.command": false, "timeouts.auth_fail_delay": false,
		"auth": true, "auth.cache_ttl": false, "auth.cache_size": false,
		"paths": true, "paths.pve": false, "paths.tasks": false, "paths.state": false, "paths.run": false,
		"paths.lock": false, "paths.sys": false, "paths.dev": false, "paths.proc": false,
		"paths.iscsi": false, "paths.nvme": false, "paths.bin": false,
	}
}

func (c *Config) typeError(msg string) error {
	// yaml.v3: "line 3: cannot unmarshal !!str `abc` into int" or "line 4: <our message>"
	line := 0
	if strings.HasPrefix(msg, "line ") {
		if i := strings.Index(msg, ":"); i > 0 {
			line, _ = strconv.Atoi(msg[5:i])
			msg = strings.TrimSpace(msg[i+1:])
		}
	}
	return &Error{File: c.file, Line: line, Key: c.keyAt(line), Msg: msg}
}

func (c *Config) keyAt(line int) string {
	best := ""
	for k, l := range c.lines {
		if l == line && len(k) > len(best) {
			best = k
		}
	}
	if best == "" {
		return "(value)"
	}
	return best
}

func yamlErrLine(err error) int {
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		rest := s[i+5:]
		j := strings.IndexAny(rest, ": ")
		if j > 0 {
			n, _ := strconv.Atoi(rest[:j])
			return n
		}
	}
	return 0
}

func (c *Config) bad(key, format string, args ...any) error {
	return &Error{File: c.file, Line: c.lines[key], Key: key, Msg: fmt.Sprintf(format, args...)}
}

// finish validates values and fills derived defaults.
func (c *Config) finish() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c.bad("listen", "%q is not host:port (%v)", c.Listen, err)
	}
	if _, port, _ := net.SplitHostPort(c.Listen); port != "" {
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return c.bad("listen", "port %q out of range", port)
		}
	}
	u, err := url.Parse(c.Upstream)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return c.bad("upstream", "%q is not an http(s)://host:port URL", c.Upstream)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return c.bad("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	for _, kv := range []struct {
		key string
		d   Duration
		min time.Duration
	}{
		{"timeouts.read_header", c.Timeouts.ReadHeader, time.Second},
		{"timeouts.idle", c.Timeouts.Idle, time.Second},
		{"timeouts.inactivity", c.Timeouts.Inactivity, 100 * time.Millisecond},
		{"timeouts.shutdown", c.Timeouts.Shutdown, 0},
		{"timeouts.command", c.Timeouts.Command, time.Second},
		{"timeouts.upstream", c.Timeouts.Upstream, 0},
		{"timeouts.auth_fail_delay", c.Timeouts.AuthFailDelay, 0},
		{"auth.cache_ttl", c.Auth.CacheTTL, 0},
		{"refresh_interval", c.RefreshInterval, 0},
		{"task_retention", c.TaskRetention, time.Hour},
	} {
		if kv.d.D() < kv.min {
			return c.bad(kv.key, "must be at least %s", kv.min)
		}
	}
	if c.Auth.CacheTTL.D() > 5*time.Minute {
		return c.bad("auth.cache_ttl", "at most 5m: a revoked privilege must not outlive it for long")
	}
	if c.Auth.CacheSize < 0 || c.Auth.CacheSize > 1<<20 {
		return c.bad("auth.cache_size", "must be between 0 and 1048576")
	}
	for key, p := range map[string]string{"paths.pve": c.Paths.PVE, "paths.tasks": c.Paths.Tasks,
		"paths.state": c.Paths.State, "paths.run": c.Paths.Run, "paths.lock": c.Paths.Lock,
		"paths.sys": c.Paths.Sys, "paths.dev": c.Paths.Dev, "paths.proc": c.Paths.Proc,
		"paths.iscsi": c.Paths.ISCSI, "paths.nvme": c.Paths.NVMe} {
		if !filepath.IsAbs(p) {
			return c.bad(key, "%q is not an absolute path", p)
		}
	}
	for i, o := range c.CORSOrigins {
		ou, err := url.Parse(o)
		if err != nil || ou.Scheme != "https" || ou.Host == "" || ou.Path != "" {
			return c.bad("cors_origins", "entry %d %q is not an https://host[:port] origin", i+1, o)
		}
	}
	if c.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return c.bad("node", "not set and the host name is unknown: %v", err)
		}
		c.Node = strings.SplitN(h, ".", 2)[0]
	}
	if !validNodeName(c.Node) {
		return c.bad("node", "%q is not a valid node name", c.Node)
	}
	if c.MaxConnections < 1 || c.MaxConnections > 1<<20 {
		return c.bad("max_connections", "must be between 1 and 1048576")
	}
	if !filepath.IsAbs(c.PveproxyConfig) {
		return c.bad("pveproxy_config", "%q is not an absolute path", c.PveproxyConfig)
	}
	pp, err := pve.ReadProxyDefaults(c.PveproxyConfig)
	if err != nil {
		return c.bad("pveproxy_config", "%v", err)
	}
	c.Pveproxy = pp
	if c.TLS.Cert == "" && !c.TLS.Disable {
		c.TLS.Cert, c.TLS.Key = DefaultCert(c.Paths.PVE, pp.TLSKeyFile)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") && !c.TLS.Disable {
		return c.bad("tls", "cert and key must be given together")
	}
	if c.UpstreamCA == "" {
		c.UpstreamCA = filepath.Join(c.Paths.PVE, "pve-root-ca.pem")
	}
	return nil
}

// DefaultCert returns the certificate pveproxy serves: pveproxy-ssl.pem with its key
// (pveproxy-ssl.key, or keyFile: TLS_KEY_FILE of /etc/default/pveproxy) if both exist, else
// pve-ssl.pem, under <pve>/local.
func DefaultCert(pve, keyFile string) (cert, key string) {
	local := filepath.Join(pve, "local")
	c, k := filepath.Join(local, "pveproxy-ssl.pem"), filepath.Join(local, "pveproxy-ssl.key")
	if keyFile != "" {
		k = keyFile
	}
	if fileExists(c) && fileExists(k) {
		return c, k
	}
	return filepath.Join(local, "pve-ssl.pem"), filepath.Join(local, "pve-ssl.key")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func validNodeName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (r == '-' && i > 0 && i < len(s)-1)
		if !ok {
			return false
		}
	}
	return true
}

// SlogLevel converts LogLevel.
func (c *Config) SlogLevel() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// GUIInjection reports whether the panel is injected into the GUI page on the listener.
func (c *Config) GUIInjection() bool { return c.InjectGUI == nil || *c.InjectGUI }

// File is the path the config was read from.
func (c *Config) File() string { return c.file }
