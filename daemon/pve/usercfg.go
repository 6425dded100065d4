package pve

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// accessFiles are the cluster files PVE's authentication and permissions come from: users,
// groups, roles, ACLs and pools (user.cfg), token secrets (priv/token.cfg) and realms.
var accessFiles = []string{"user.cfg", "priv/token.cfg", "domains.cfg"}

// AccessStamp names the current state of the access files: it changes whenever one of them
// does. On pmxcfs that is the versions it keeps in /etc/pve/.version (bumped by every write,
// and its start time); elsewhere (simulator, tests) a hash of the files' contents.
func AccessStamp(pveRoot string) (string, error) {
	if b, err := os.ReadFile(filepath.Join(pveRoot, ".version")); err == nil {
		var v map[string]json.RawMessage
		if err := json.Unmarshal(b, &v); err != nil {
			return "", fmt.Errorf(".version: %w", err)
		}
		stamp := "pmxcfs:" + string(v["starttime"])
		for _, f := range accessFiles {
			if _, ok := v[f]; !ok {
				return "", fmt.Errorf(".version has no entry for %s", f)
			}
			stamp += ":" + string(v[f])
		}
		return stamp, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	h := sha256.New()
	for _, f := range accessFiles {
		b, err := os.ReadFile(filepath.Join(pveRoot, f))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00%s\x00", f, len(b), b)
	}
	return "files:" + hex.EncodeToString(h.Sum(nil)), nil
}

// UserConfig is what pvesnap needs from user.cfg: which paths PVE's effective-permission
// listing covers, and when accounts expire. Privileges themselves are pveproxy's to compute.
type UserConfig struct {
	// ACLPaths are the normalised paths of every ACL entry.
	ACLPaths map[string]bool
	// PoolMembers are the /vms/<vmid> and /storage/<storage> paths of pool members.
	PoolMembers map[string]bool
	// Users and Tokens map ids to their expiry (epoch seconds, 0 = never); Disabled users.
	Users    map[string]int64
	Disabled map[string]bool
	Tokens   map[string]int64
}

// effectiveDefaults are the paths PVE's get_effective_permissions always lists
// (pve-access-control RPCEnvironment.pm).
var effectiveDefaults = []string{"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}

// Listed reports whether GET /access/permissions (without path) considers path: a default
// path, a pool member, or a path on the way to an ACL entry (the ACL tree's nodes). pveproxy
// leaves such a path out only when the caller has no privilege there at all.
func (u *UserConfig) Listed(path string) bool {
	for _, d := range effectiveDefaults {
		if path == d {
			return true
		}
	}
	if u.PoolMembers[path] {
		return true
	}
	for p := range u.ACLPaths {
		if p == path || strings.HasPrefix(p, path+"/") {
			return true
		}
	}
	return false
}

var aclPathRe = regexp.MustCompile(`^[[:alnum:]._/-]+$`)

// NormalizePath is PVE's normalize_path for ACL paths ("" when invalid).
func NormalizePath(p string) string {
	if p == "" {
		return ""
	}
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		p = "/"
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !aclPathRe.MatchString(p) {
		return ""
	}
	return p
}

// ParseUserConfig reads user.cfg as PVE's parse_user_config splits it: one entry per line,
// fields separated by ':' and trimmed. Every ACL line's path is kept, even one PVE would
// ignore for an unknown role: a path wrongly held listed only ever refuses (see Listed).
func ParseUserConfig(b []byte) *UserConfig {
	u := &UserConfig{ACLPaths: map[string]bool{}, PoolMembers: map[string]bool{}, Users: map[string]int64{},
		Disabled: map[string]bool{}, Tokens: map[string]int64{}}
	seenVM := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Split(line, ":")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		get := func(i int) string {
			if i < len(f) {
				return f[i]
			}
			return ""
		}
		expire := func(s string) (int64, bool) {
			if s == "" {
				return 0, true
			}
			n, err := strconv.ParseInt(s, 10, 64)
			return n, err == nil && n >= 0
		}
		switch f[0] {
		case "user":
			if e, ok := expire(get(3)); ok {
				u.Users[get(1)] = e
				if en := get(2); en == "" || en == "0" {
					u.Disabled[get(1)] = true
				}
			}
		case "token":
			if e, ok := expire(get(2)); ok {
				u.Tokens[get(1)] = e
			}
		case "acl":
			if p := NormalizePath(get(2)); p != "" {
				u.ACLPaths[p] = true
			}
		case "pool":
			for _, v := range splitList(get(3)) {
				n, err := strconv.ParseUint(v, 10, 63)
				id := strconv.FormatUint(n, 10)
				if err != nil || seenVM[id] { // the first pool listing a VM has it
					continue
				}
				seenVM[id] = true
				u.PoolMembers["/vms/"+id] = true
			}
			for _, s := range splitList(get(4)) {
				u.PoolMembers["/storage/"+s] = true
			}
		}
	}
	return u
}

// AccessConfig reads user.cfg when the access files change (see AccessStamp).
type AccessConfig struct {
	root  string
	mu    sync.Mutex
	stamp string
	cfg   *UserConfig
}

// NewAccessConfig reads <pveRoot>/user.cfg on demand.
func NewAccessConfig(pveRoot string) *AccessConfig { return &AccessConfig{root: pveRoot} }

// Current returns the access files' stamp and user.cfg as of that stamp.
func (a *AccessConfig) Current() (string, *UserConfig, error) {
	stamp, err := AccessStamp(a.root)
	if err != nil {
		return "", nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg != nil && stamp == a.stamp {
		return stamp, a.cfg, nil
	}
	b, err := os.ReadFile(filepath.Join(a.root, "user.cfg"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", nil, err
	}
	a.stamp, a.cfg = stamp, ParseUserConfig(b)
	return stamp, a.cfg, nil
}

// Stamp is Current without the parsed file.
func (a *AccessConfig) Stamp() (string, error) { return AccessStamp(a.root) }
