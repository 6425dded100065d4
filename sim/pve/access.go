package pve

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/auth"
)

// Privilege groups as PVE's AccessControl.pm defines them; the predefined roles are built
// from them the same way.
var privGroups = map[string]map[string][]string{
	"VM": {
		"admin": {"VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType",
			"VM.Config.Options", "VM.Allocate", "VM.Clone", "VM.Migrate", "VM.Monitor", "VM.Snapshot", "VM.Snapshot.Rollback"},
		"user":  {"VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.PowerMgmt"},
		"audit": {"VM.Audit"},
	},
	"Sys": {
		"root":  {"Sys.PowerMgmt", "Sys.Modify"},
		"admin": {"Permissions.Modify", "Sys.Console", "Sys.Syslog"},
		"audit": {"Sys.Audit"},
	},
	"Datastore": {
		"admin": {"Datastore.Allocate", "Datastore.AllocateTemplate"},
		"user":  {"Datastore.AllocateSpace"},
		"audit": {"Datastore.Audit"},
	},
	"SDN": {
		"admin": {"SDN.Allocate"},
		"user":  {"SDN.Use"},
		"audit": {"SDN.Audit"},
	},
	"User": {
		"root":  {"Realm.Allocate"},
		"admin": {"User.Modify", "Group.Allocate", "Realm.AllocateUser"},
	},
	"Pool": {
		"admin": {"Pool.Allocate"},
		"audit": {"Pool.Audit"},
	},
	"Mapping": {
		"admin": {"Mapping.Modify"},
		"user":  {"Mapping.Use"},
		"audit": {"Mapping.Audit"},
	},
}

// builtinRoles returns PVE's predefined roles.
func builtinRoles() map[string][]string {
	r := map[string][]string{"NoAccess": {}, "PVETemplateUser": {"VM.Clone", "VM.Audit"}}
	var all, admin, audit []string
	for g, parts := range privGroups {
		var a, u []string
		for _, lvl := range []string{"root", "admin", "user", "audit"} {
			all = append(all, parts[lvl]...)
		}
		a = append(append(append(a, parts["admin"]...), parts["user"]...), parts["audit"]...)
		u = append(append(u, parts["user"]...), parts["audit"]...)
		admin = append(admin, a...)
		audit = append(audit, parts["audit"]...)
		r["PVE"+g+"Admin"] = a
		if len(parts["user"]) > 0 {
			r["PVE"+g+"User"] = u
		}
	}
	r["PVEPoolUser"] = []string{"Pool.Audit"}
	r["Administrator"] = all
	r["PVEAdmin"] = admin
	r["PVEAuditor"] = audit
	return r
}

// AllPrivileges lists every privilege name.
func AllPrivileges() []string {
	p := builtinRoles()["Administrator"]
	sort.Strings(p)
	return p
}

type userEntry struct {
	enabled bool
	expire  int64
}

type tokenEntry struct {
	expire  int64
	privsep bool
}

type aclEntry struct {
	path      string
	propagate bool
	ugid      string // user@realm, @group or user@realm!token
	role      string
}

type accessConfig struct {
	users  map[string]userEntry
	tokens map[string]tokenEntry // full token id
	groups map[string]map[string]bool
	roles  map[string][]string
	acls   []aclEntry
	pools  map[string]poolEntry
	vmPool map[string]string // vmid -> pool
	stPool map[string]string // storage -> pool
}

type poolEntry struct {
	vms, storage []string
}

// accessStore reads user.cfg and priv/token.cfg (re-reading them when they change) and holds
// the ticket key.
type accessStore struct {
	dir   string
	delay time.Duration
	mu    sync.Mutex
	mod   time.Time
	cfg   *accessConfig
	key   *rsa.PrivateKey
}

func newAccessStore(dir string, delay time.Duration) *accessStore {
	return &accessStore{dir: dir, delay: delay}
}

func (a *accessStore) ensureRoot(password string) error {
	b, err := os.ReadFile(filepath.Join(a.dir, "user.cfg"))
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte("user:root@pam:")) {
		b = append([]byte("user:root@pam:1:0:::root@pam.invalid:::\n"), b...)
		if err := os.WriteFile(filepath.Join(a.dir, "user.cfg"), b, 0o640); err != nil {
			return err
		}
	}
	return a.SetPassword("root@pam", password)
}

func (a *accessStore) signingKey() (*rsa.PrivateKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.key != nil {
		return a.key, nil
	}
	b, err := os.ReadFile(filepath.Join(a.dir, "priv", "authkey.key"))
	if err != nil {
		return nil, err
	}
	p, _ := pem.Decode(b)
	if p == nil {
		return nil, errors.New("authkey.key: no PEM block")
	}
	k, err := x509.ParsePKCS1PrivateKey(p.Bytes)
	if err != nil {
		return nil, err
	}
	a.key = k
	return k, nil
}

func (a *accessStore) config() (*accessConfig, error) {
	fi, err := os.Stat(filepath.Join(a.dir, "user.cfg"))
	if err != nil {
		return nil, err
	}
	ft, _ := os.Stat(filepath.Join(a.dir, "priv", "token.cfg"))
	mod := fi.ModTime()
	if ft != nil && ft.ModTime().After(mod) {
		mod = ft.ModTime()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg != nil && mod.Equal(a.mod) {
		return a.cfg, nil
	}
	b, err := os.ReadFile(filepath.Join(a.dir, "user.cfg"))
	if err != nil {
		return nil, err
	}
	cfg, err := parseUserCfg(b)
	if err != nil {
		return nil, err
	}
	a.cfg, a.mod = cfg, mod
	return cfg, nil
}

// parseUserCfg parses PVE's user.cfg: colon-separated user, token, group, role, acl and pool
// lines.
func parseUserCfg(b []byte) (*accessConfig, error) {
	c := &accessConfig{users: map[string]userEntry{}, tokens: map[string]tokenEntry{}, groups: map[string]map[string]bool{},
		roles: builtinRoles(), pools: map[string]poolEntry{}, vmPool: map[string]string{}, stPool: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		get := func(i int) string {
			if i < len(f) {
				return f[i]
			}
			return ""
		}
		switch f[0] {
		case "user":
			exp, _ := strconv.ParseInt(get(3), 10, 64)
			c.users[get(1)] = userEntry{enabled: get(2) != "0", expire: exp}
		case "token":
			exp, _ := strconv.ParseInt(get(2), 10, 64)
			c.tokens[get(1)] = tokenEntry{expire: exp, privsep: get(3) != "0"}
		case "group":
			m := map[string]bool{}
			for _, u := range splitComma(get(2)) {
				m[u] = true
			}
			c.groups[get(1)] = m
		case "role":
			c.roles[get(1)] = splitComma(get(2))
		case "acl":
			for _, ug := range splitComma(get(3)) {
				for _, role := range splitComma(get(4)) {
					c.acls = append(c.acls, aclEntry{path: normPath(get(2)), propagate: get(1) == "1", ugid: ug, role: role})
				}
			}
		case "pool":
			p := poolEntry{vms: splitComma(get(3)), storage: splitComma(get(4))}
			c.pools[get(1)] = p
			for _, v := range p.vms {
				c.vmPool[v] = get(1)
			}
			for _, s := range p.storage {
				c.stPool[s] = get(1)
			}
		default:
			return nil, fmt.Errorf("user.cfg:%d: unknown entry type %q", n, f[0])
		}
	}
	return c, sc.Err()
}

func splitComma(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func normPath(p string) string {
	p = "/" + strings.Trim(p, "/")
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	return p
}

// roleSet maps role -> propagate flag.
type roleSet map[string]bool

// rolesOf is PVE's AccessControl::roles: walk the path from "/" down; at each level the user's
// own applicable ACL entries replace what was inherited, else the groups' ones do; an entry
// applies at its own level always and below it only with propagate.
func (c *accessConfig) rolesOf(ugid, path string) roleSet {
	var cur roleSet
	comps := []string{"/"}
	p := ""
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		if part == "" {
			continue
		}
		p += "/" + part
		comps = append(comps, p)
	}
	for i, level := range comps {
		final := i == len(comps)-1
		user := roleSet{}
		group := roleSet{}
		for _, e := range c.acls {
			if e.path != level || !(final || e.propagate) {
				continue
			}
			switch {
			case e.ugid == ugid:
				user[e.role] = user[e.role] || e.propagate
			case strings.HasPrefix(e.ugid, "@") && c.groups[e.ugid[1:]][ugid]:
				group[e.role] = group[e.role] || e.propagate
			}
		}
		if len(user) > 0 {
			cur = user
		} else if len(group) > 0 {
			cur = group
		}
	}
	return cur
}

// privs turns a role set into privilege -> propagate.
func (c *accessConfig) privs(rs roleSet) map[string]bool {
	out := map[string]bool{}
	if _, no := rs["NoAccess"]; no {
		return out
	}
	for role, prop := range rs {
		for _, p := range c.roles[role] {
			out[p] = out[p] || prop
		}
	}
	return out
}

// permissions is RPCEnvironment::permissions: root@pam has everything; others get their ACL
// privileges plus those inherited through the pool of the VM or storage (never propagating);
// a privilege-separated token gets the intersection of its own and its user's privileges.
func (c *accessConfig) permissions(ugid, path string) map[string]bool {
	if ugid == "root@pam" {
		out := map[string]bool{}
		for _, p := range c.roles["Administrator"] {
			out[p] = true
		}
		return out
	}
	compile := func(id string) map[string]bool {
		rs := c.rolesOf(id, path)
		out := c.privs(rs)
		if _, no := rs["NoAccess"]; no {
			return out
		}
		var pool string
		if strings.HasPrefix(path, "/vms/") {
			pool = c.vmPool[strings.TrimPrefix(path, "/vms/")]
		} else if strings.HasPrefix(path, "/storage/") {
			pool = c.stPool[strings.TrimPrefix(path, "/storage/")]
		}
		if pool != "" {
			prs := c.rolesOf(id, "/pool/"+pool)
			if _, no := prs["NoAccess"]; !no {
				for p := range c.privs(prs) {
					if _, ok := out[p]; !ok {
						out[p] = false
					}
				}
			}
		}
		return out
	}
	user, _, isToken := strings.Cut(ugid, "!")
	if !isToken {
		return compile(ugid)
	}
	t, ok := c.tokens[ugid]
	if !ok {
		return map[string]bool{}
	}
	up := c.permissions(user, path)
	if !t.privsep {
		return up
	}
	out := map[string]bool{}
	for p, prop := range compile(ugid) {
		if _, ok := up[p]; ok {
			out[p] = prop
		}
	}
	return out
}

// effectivePaths is what GET /access/permissions without path reports: PVE's default paths,
// every ACL path and the pools' members.
func (c *accessConfig) effectivePaths() []string {
	set := map[string]bool{"/": true, "/access": true, "/access/groups": true, "/nodes": true, "/pool": true,
		"/sdn": true, "/storage": true, "/vms": true, "/mapping": true}
	for _, e := range c.acls {
		set[e.path] = true
	}
	for name, p := range c.pools {
		set["/pool/"+name] = true
		for _, v := range p.vms {
			set["/vms/"+v] = true
		}
		for _, s := range p.storage {
			set["/storage/"+s] = true
		}
	}
	return sortedNames(set)
}

// Tickets: "PVE:<user>:<8 hex TS>::<base64 signature>", signed with priv/authkey.key.

const ticketLifetime = 2 * time.Hour

func (a *accessStore) makeTicket(user string, at time.Time) (string, error) {
	k, err := a.signingKey()
	if err != nil {
		return "", err
	}
	plain := fmt.Sprintf("PVE:%s:%08X", user, at.Unix())
	h := sha256.Sum256([]byte(plain))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
	if err != nil {
		return "", err
	}
	return plain + "::" + base64.StdEncoding.EncodeToString(sig), nil
}

// verifyTicket returns the user of a valid ticket.
func (a *accessStore) verifyTicket(t string, now time.Time) (string, bool) {
	plain, sig, ok := strings.Cut(t, "::")
	if !ok {
		return "", false
	}
	f := strings.Split(plain, ":")
	if len(f) != 3 || f[0] != "PVE" {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return "", false
	}
	k, err := a.signingKey()
	if err != nil {
		return "", false
	}
	h := sha256.Sum256([]byte(plain))
	if rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, h[:], raw) != nil {
		return "", false
	}
	ts, err := strconv.ParseInt(f[2], 16, 64)
	if err != nil {
		return "", false
	}
	age := now.Sub(time.Unix(ts, 0))
	if age < -5*time.Minute || age > ticketLifetime {
		return "", false
	}
	return f[1], true
}

// Passwords live in priv/shadow.cfg as "user:sha256hex:" (the simulator's own format).

func hashPassword(user, pw string) string {
	h := sha256.Sum256([]byte(user + "\x00" + pw))
	return hex.EncodeToString(h[:])
}

// SetPassword sets a user's password.
func (a *accessStore) SetPassword(user, pw string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := filepath.Join(a.dir, "priv", "shadow.cfg")
	b, _ := os.ReadFile(p)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, user+":") {
			out = append(out, l)
		}
	}
	out = append(out, user+":"+hashPassword(user, pw)+":")
	return os.WriteFile(p, []byte(strings.Join(out, "\n")+"\n"), 0o600)
}

func (a *accessStore) checkPassword(user, pw string) bool {
	b, err := os.ReadFile(filepath.Join(a.dir, "priv", "shadow.cfg"))
	if err != nil {
		return false
	}
	want := hashPassword(user, pw)
	for _, l := range strings.Split(string(b), "\n") {
		if u, rest, ok := strings.Cut(l, ":"); ok && u == user {
			return subtle.ConstantTimeCompare([]byte(strings.TrimSuffix(rest, ":")), []byte(want)) == 1
		}
	}
	return false
}

func (a *accessStore) tokenSecret(id string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(a.dir, "priv", "token.cfg"))
	if err != nil {
		return "", false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), " "); ok && k == id {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// simAuthz is pveproxy's authentication and RPCEnvironment's permission check, in process.
type simAuthz struct{ c *Cluster }

func (s *simAuthz) deny(reason string) error {
	if d := s.c.access.delay; d > 0 {
		time.Sleep(d)
	}
	return api.Unauthorized(reason)
}

// Authenticate follows HTTPServer.pm's auth_handler.
func (s *simAuthz) Authenticate(r *http.Request) (*api.Identity, error) {
	a := s.c.access
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	cred := auth.Extract(r)
	now := time.Now()
	switch cred.Kind {
	case auth.Token:
		if cred.Secret == "" && !strings.Contains(cred.TokenID, "=") {
			return nil, s.deny("no tokenid specified")
		}
		user, tok, ok := strings.Cut(cred.TokenID, "!")
		if !ok {
			return nil, s.deny(fmt.Sprintf("value '%s' does not look like a valid token ID", cred.TokenID))
		}
		u, ok := cfg.users[user]
		if !ok {
			return nil, s.deny(fmt.Sprintf("user '%s' does not exist", user))
		}
		if !u.enabled {
			return nil, s.deny(fmt.Sprintf("user '%s' is disabled", user))
		}
		t, ok := cfg.tokens[cred.TokenID]
		if !ok {
			return nil, s.deny(fmt.Sprintf("no such token '%s' for user '%s'", tok, user))
		}
		if u.expire != 0 && u.expire < now.Unix() {
			return nil, s.deny("account expired")
		}
		if t.expire != 0 && t.expire < now.Unix() {
			return nil, s.deny("token expired")
		}
		secret, ok := a.tokenSecret(cred.TokenID)
		if !ok || subtle.ConstantTimeCompare([]byte(secret), []byte(cred.Secret)) != 1 {
			return nil, s.deny("invalid token value!")
		}
		return &api.Identity{UserID: user, TokenID: cred.TokenID}, nil
	case auth.Ticket:
		user, ok := a.verifyTicket(cred.Ticket, now)
		if !ok {
			return nil, s.deny(auth.ReasonBadTicket)
		}
		if u, ok := cfg.users[user]; !ok || !u.enabled {
			return nil, s.deny(auth.ReasonBadTicket)
		}
		if r.Method != http.MethodGet && !strings.HasSuffix(r.URL.Path, "/upload") {
			key, err := os.ReadFile(filepath.Join(s.c.shared, "pve-www.key"))
			if err != nil {
				return nil, err
			}
			if !auth.VerifyCSRF(key, user, cred.CSRF, now) {
				return nil, s.deny(auth.ReasonBadCSRF)
			}
		}
		return &api.Identity{UserID: user, Ticket: true}, nil
	}
	return nil, s.deny(auth.ReasonNoTicket)
}

// Privileges computes the caller's privileges on path.
func (s *simAuthz) Privileges(ctx context.Context, r *http.Request, id *api.Identity, path string) (map[string]bool, error) {
	cfg, err := s.c.access.config()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for p := range cfg.permissions(id.Name(), normPath(path)) {
		out[p] = true
	}
	return out, nil
}
