// Package arrays keeps the cluster's storage arrays: /etc/pve/pvesnap/arrays.cfg, a PVE
// section-config file every node sees, and one API token per array under
// /etc/pve/priv/pvesnap/, readable by root only (pmxcfs enforces that for priv/). Tokens are
// never returned by the API, printed or logged.
package arrays

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/pve"
)

// TypeFlashArray is the only array type so far.
const TypeFlashArray = "flasharray"

// Array is one configured array.
type Array struct {
	ID       string `json:"array"`
	Type     string `json:"type"`
	Endpoint string `json:"endpoint"`
	// CA is a PEM file with the CA (or self-signed certificate) the array's TLS certificate
	// must chain to; empty means the system roots.
	CA string `json:"ca,omitempty"`
	// HostGroup connects restored volumes to this host group; empty means the host that holds
	// the node's own initiators (found on the array by IQN, NQN or WWPN).
	HostGroup string `json:"hostgroup,omitempty"`
	Comment   string `json:"comment,omitempty"`
	Disable   bool   `json:"disable,omitempty"`
}

// Config reads and writes the arrays of a cluster filesystem root (/etc/pve).
type Config struct {
	PVE string
	// LockTimeout bounds the wait for the cluster-wide lock (10 s by default).
	LockTimeout time.Duration
}

// ErrNotFound: no such array.
var ErrNotFound = errors.New("no such array")

func (c *Config) file() string { return filepath.Join(c.PVE, "pvesnap", "arrays.cfg") }

// TokenFile is where an array's API token is kept.
func (c *Config) TokenFile(id string) string {
	return filepath.Join(c.PVE, "priv", "pvesnap", id+".token")
}

var (
	idRe        = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,38}[a-z0-9]$`)
	hostGroupRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	tokenRe     = regexp.MustCompile(`^[\x21-\x7e]{8,256}$`)
	caRe        = regexp.MustCompile(`^/[A-Za-z0-9._/-]{1,250}\.(pem|crt)$`)
)

// CheckID validates an array id (it names a file, so the rules are strict).
func CheckID(id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("array ID '%s' is invalid: 2-40 characters, lower-case letters, digits, '-', '_' and '.', starting with a letter", id)
	}
	return nil
}

// CheckToken validates an API token without echoing it.
func CheckToken(tok string) error {
	if !tokenRe.MatchString(tok) {
		return errors.New("API token must be 8-256 printable characters without spaces")
	}
	return nil
}

// Validate checks an array's settings.
func (a *Array) Validate() error {
	if err := CheckID(a.ID); err != nil {
		return err
	}
	if a.Type != TypeFlashArray {
		return fmt.Errorf("array %s: type '%s' is not supported (only %s)", a.ID, a.Type, TypeFlashArray)
	}
	u, err := url.Parse(a.Endpoint)
	if err != nil || u.Scheme != "https" || !pve.ValidAddress(u.Hostname()) || !validPort(u.Port()) || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return fmt.Errorf("array %s: endpoint '%s' must be https://<host>[:port] (the management address)", a.ID, a.Endpoint)
	}
	if a.CA != "" && (!filepath.IsAbs(a.CA) || !caRe.MatchString(a.CA) || strings.Contains(a.CA, "/../") ||
		strings.HasPrefix(a.CA, "/proc/") || strings.HasPrefix(a.CA, "/sys/") || strings.HasPrefix(a.CA, "/dev/")) {
		return fmt.Errorf("array %s: ca '%s' must be the absolute path of a .pem or .crt file", a.ID, a.CA)
	}
	if a.HostGroup != "" && !hostGroupRe.MatchString(a.HostGroup) {
		return fmt.Errorf("array %s: host group '%s' is not a valid FlashArray name", a.ID, a.HostGroup)
	}
	if strings.ContainsAny(a.Comment, "\n\r") {
		return fmt.Errorf("array %s: comment must be one line", a.ID)
	}
	return nil
}

// validPort: none (the default), or 1-65535.
func validPort(p string) bool {
	if p == "" {
		return true
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

func fromSection(s *pve.Section) Array {
	return Array{ID: s.ID, Type: s.Type, Endpoint: s.Get("endpoint"), CA: s.Get("ca"), HostGroup: s.Get("hostgroup"),
		Comment: unescapeComment(s.Get("comment")), Disable: s.Bool("disable")}
}

func toSection(a Array) *pve.Section {
	s := &pve.Section{Type: a.Type, ID: a.ID}
	s.Set("endpoint", a.Endpoint)
	for _, kv := range [][2]string{{"ca", a.CA}, {"hostgroup", a.HostGroup}, {"comment", escapeComment(a.Comment)}} {
		if kv[1] != "" {
			s.Set(kv[0], kv[1])
		}
	}
	if a.Disable {
		s.Set("disable", "1")
	}
	return s
}

// escapeComment encodes a comment as PVE's encode_text does for section configs: control
// characters, bytes >= 0x7f and ':' become %XX; everything else stays readable.
func escapeComment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == ':' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func unescapeComment(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// List returns the arrays, sorted by id ("" file: none).
func (c *Config) List() ([]Array, error) {
	b, err := os.ReadFile(c.file())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	secs, err := pve.ParseSectionConfig(c.file(), b)
	if err != nil {
		return nil, err
	}
	var out []Array
	for _, s := range secs {
		a := fromSection(s)
		if err := a.Validate(); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", c.file(), s.Line, err)
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Get returns one array.
func (c *Config) Get(id string) (Array, error) {
	all, err := c.List()
	if err != nil {
		return Array{}, err
	}
	for _, a := range all {
		if a.ID == id {
			return a, nil
		}
	}
	return Array{}, fmt.Errorf("array '%s': %w", id, ErrNotFound)
}

// Digest is the SHA-1 of the file, for PVE-style optimistic concurrency ("" when absent).
func (c *Config) Digest() string {
	b, err := os.ReadFile(c.file())
	if err != nil {
		return ""
	}
	return pve.Digest(b)
}

// Add adds an array with its token; an existing id is refused.
func (c *Config) Add(a Array, token string) error {
	if err := a.Validate(); err != nil {
		return err
	}
	if err := CheckToken(token); err != nil {
		return err
	}
	return c.locked(func(all []Array) ([]Array, error) {
		for _, x := range all {
			if x.ID == a.ID {
				return nil, fmt.Errorf("array ID '%s' already defined", a.ID)
			}
		}
		if err := c.writeToken(a.ID, token); err != nil {
			return nil, err
		}
		return append(all, a), nil
	})
}

// Update changes an array's settings (and its token when token is not ""); digest, when
// given, must match the file's current digest.
func (c *Config) Update(id, digest string, change func(*Array), token string) error {
	if token != "" {
		if err := CheckToken(token); err != nil {
			return err
		}
	}
	return c.locked(func(all []Array) ([]Array, error) {
		if digest != "" && digest != c.Digest() {
			return nil, errors.New("detected modified configuration - file changed by other user? Try again.")
		}
		for i := range all {
			if all[i].ID != id {
				continue
			}
			change(&all[i])
			all[i].ID, all[i].Type = id, TypeFlashArray
			if err := all[i].Validate(); err != nil {
				return nil, err
			}
			if token != "" {
				if err := c.writeToken(id, token); err != nil {
					return nil, err
				}
			}
			return all, nil
		}
		return nil, fmt.Errorf("array '%s': %w", id, ErrNotFound)
	})
}

// Remove deletes an array and its token.
func (c *Config) Remove(id string) error {
	return c.locked(func(all []Array) ([]Array, error) {
		for i := range all {
			if all[i].ID == id {
				if err := os.Remove(c.TokenFile(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return nil, err
				}
				return append(all[:i], all[i+1:]...), nil
			}
		}
		return nil, fmt.Errorf("array '%s': %w", id, ErrNotFound)
	})
}

// Token reads an array's API token.
func (c *Config) Token(id string) (string, error) {
	if err := CheckID(id); err != nil {
		return "", err
	}
	b, err := os.ReadFile(c.TokenFile(id))
	if err != nil {
		return "", fmt.Errorf("array %s: API token: %w", id, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (c *Config) writeToken(id, token string) error {
	return writeAtomic(c.TokenFile(id), []byte(token+"\n"), 0o600)
}

// writeAtomic writes a file the way PVE's file_set_contents does: a temporary file in the same
// directory, renamed over the target, so readers see the old or the new file, never half.
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp." + strconv.Itoa(os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// locked runs change on the current arrays under the cluster-wide lock and writes the result.
// The lock is a directory in /etc/pve/priv/lock, as PVE's cfs_lock_file takes it: pmxcfs
// makes mkdir there atomic across the cluster.
func (c *Config) locked(change func([]Array) ([]Array, error)) error {
	lock := filepath.Join(c.PVE, "priv", "lock", "file-pvesnap_arrays_cfg")
	timeout := c.LockTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if err := os.MkdirAll(filepath.Dir(lock), 0o700); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := os.Mkdir(lock, 0o700)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cluster lock %s: %w", lock, err)
		}
		// pmxcfs expires cluster locks after 120 s; a holder that died leaves one behind.
		if st, serr := os.Stat(lock); serr == nil && time.Since(st.ModTime()) > 120*time.Second {
			os.Remove(lock)
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cannot lock %s: got timeout after %s (another update in progress?)", c.file(), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer os.Remove(lock)
	all, err := c.List()
	if err != nil {
		return err
	}
	all, err = change(all)
	if err != nil {
		return err
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	var secs []*pve.Section
	for _, a := range all {
		secs = append(secs, toSection(a))
	}
	return writeAtomic(c.file(), pve.FormatSectionConfig(secs), 0o640)
}

// Client makes a REST client for an array.
func (c *Config) Client(a Array, o pure.Options) (*pure.Client, error) {
	if a.Disable {
		return nil, fmt.Errorf("array %s is disabled", a.ID)
	}
	tok, err := c.Token(a.ID)
	if err != nil {
		return nil, err
	}
	o.CAFile = a.CA
	return pure.New(a.Endpoint, tok, o)
}
