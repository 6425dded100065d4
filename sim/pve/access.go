package pve

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/sim/pveschema"
)

// Access control as pve-access-control computes it (AccessControl.pm parse_user_config,
// roles; RPCEnvironment.pm permissions, compute_api_permission, get_effective_permissions)
// and as pveproxy authenticates (pve-manager HTTPServer.pm auth_handler).

var (
	userRe    = `[^\s:/]+`
	realmRe   = `[A-Za-z][A-Za-z0-9.\-_]+`
	userIDRe  = regexp.MustCompile(`^` + userRe + `@` + realmRe + `$`)
	tokenIDRe = regexp.MustCompile(`^((` + userRe + `)@(` + realmRe + `))!(` + realmRe + `)$`)
	groupRe   = regexp.MustCompile(`^[A-Za-z0-9.\-_]+$`)
	roleRe    = regexp.MustCompile(`^[A-Za-z0-9.\-_]+$`)
	storeIDRe = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)
)

// verifyUsername is Auth::Plugin::verify_username.
func verifyUsername(u string) error {
	if len(u) < 3 {
		return fmt.Errorf("user name '%s' is too short", u)
	}
	if len(u) > 64 {
		return fmt.Errorf("user name '%s' is too long (%d > 64)", u, len(u))
	}
	if !userIDRe.MatchString(u) {
		return fmt.Errorf("value '%s' does not look like a valid user name", u)
	}
	return nil
}

// splitTokenID is split_tokenid.
func splitTokenID(id string) (user, token string, ok bool) {
	m := tokenIDRe.FindStringSubmatch(id)
	if m == nil {
		return "", "", false
	}
	return m[1], m[4], true
}

// builtinRoles is create_roles: PVE<Cat>Admin, PVE<Cat>User, PVEAdmin, PVEAuditor,
// PVETemplateUser, NoAccess and Administrator.
func builtinRoles() map[string]map[string]bool {
	r := map[string]map[string]bool{"NoAccess": {}, "Administrator": {}, "PVEAdmin": {}, "PVEAuditor": {},
		"PVETemplateUser": {"VM.Clone": true, "VM.Audit": true}}
	add := func(role string, privs ...string) {
		if r[role] == nil {
			r[role] = map[string]bool{}
		}
		for _, p := range privs {
			r[role][p] = true
		}
	}
	for p := range pveschema.ValidPrivileges {
		r["Administrator"][p] = true
	}
	for cat, g := range pveschema.PrivGroups {
		for _, lvl := range []string{"admin", "user", "audit"} {
			add("PVE"+cat+"Admin", g[lvl]...)
			add("PVEAdmin", g[lvl]...)
		}
		if len(g["user"]) > 0 {
			add("PVE"+cat+"User", g["user"]...)
			add("PVE"+cat+"User", g["audit"]...)
		}
		add("PVEAuditor", g["audit"]...)
	}
	delete(r["PVEAdmin"], "Mapping.Modify")
	return r
}

// AllPrivileges lists every privilege PVE knows.
func AllPrivileges() []string {
	var out []string
	for p := range pveschema.ValidPrivileges {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

type userEntry struct {
	enable bool
	expire int64
	tokens map[string]*tokenEntry
}

type tokenEntry struct {
	expire  int64
	privsep bool
}

// aclNode is one node of PVE's ACL tree: role -> propagate for users, groups and tokens.
type aclNode struct {
	children map[string]*aclNode
	users    map[string]map[string]bool
	groups   map[string]map[string]bool
	tokens   map[string]map[string]bool
}

func (n *aclNode) child(name string) *aclNode {
	if n.children == nil {
		n.children = map[string]*aclNode{}
	}
	c := n.children[name]
	if c == nil {
		c = &aclNode{}
		n.children[name] = c
	}
	return c
}

type poolEntry struct {
	vms, storage map[string]bool
}

type userConfig struct {
	users  map[string]*userEntry
	groups map[string]map[string]bool // group -> members
	roles  map[string]map[string]bool
	acl    *aclNode
	pools  map[string]*poolEntry
	vms    map[string]string // vmid -> pool
}

// splitPath is Perl's split("/", $path) as roles() uses it ("/" is one empty component).
func splitPath(p string) []string {
	if p == "/" {
		return []string{""}
	}
	parts := strings.Split(p, "/")
	for len(parts) > 0 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	return parts
}

// findNode is find_acl_tree_node (creating nodes).
func (c *userConfig) findNode(path string) *aclNode {
	n := c.acl
	for _, comp := range splitPath(path) {
		if comp != "" {
			n = n.child(comp)
		}
	}
	return n
}

// parseUserConfig is parse_user_config, with PVE's tolerance: invalid entries are skipped.
func parseUserConfig(raw []byte) *userConfig {
	c := &userConfig{users: map[string]*userEntry{}, groups: map[string]map[string]bool{}, roles: builtinRoles(),
		acl: &aclNode{}, pools: map[string]*poolEntry{}, vms: map[string]string{}}
	c.users["root@pam"] = &userEntry{enable: true}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var data []string
		for _, d := range strings.Split(line, ":") {
			data = append(data, strings.TrimSpace(d))
		}
		for len(data) > 1 && data[len(data)-1] == "" {
			data = data[:len(data)-1]
		}
		get := func(i int) string {
			if i < len(data) {
				return data[i]
			}
			return ""
		}
		switch data[0] {
		case "user":
			user := get(1)
			if verifyUsername(user) != nil {
				continue
			}
			expire := get(3)
			if expire == "" {
				expire = "0"
			}
			exp, err := strconv.ParseInt(expire, 10, 64)
			if err != nil || strings.TrimLeft(expire, "0123456789") != "" {
				continue
			}
			c.users[user] = &userEntry{enable: perlTrue(get(2)), expire: exp}
		case "group":
			g := get(1)
			if !groupRe.MatchString(g) {
				continue
			}
			if c.groups[g] == nil {
				c.groups[g] = map[string]bool{}
			}
			for _, u := range pveschema.SplitList(get(2)) {
				if verifyUsername(u) == nil {
					c.groups[g][u] = true
				}
			}
		case "role":
			r := get(1)
			if !roleRe.MatchString(r) {
				continue
			}
			if c.roles[r] == nil {
				c.roles[r] = map[string]bool{}
			}
			for _, p := range pveschema.SplitList(get(2)) {
				if pveschema.ValidPrivileges[p] {
					c.roles[r][p] = true
				}
			}
		case "acl":
			prop := perlTrue(get(1))
			path := normalizePath(get(2))
			if path == "" {
				continue
			}
			for _, role := range pveschema.SplitList(get(4)) {
				if !roleRe.MatchString(role) || c.roles[role] == nil {
					continue
				}
				for _, ug := range pveschema.SplitList(get(3)) {
					node := c.findNode(path)
					switch {
					case strings.HasPrefix(ug, "@") && groupRe.MatchString(ug[1:]):
						setRole(&node.groups, ug[1:], role, prop)
					case verifyUsername(ug) == nil:
						setRole(&node.users, ug, role, prop)
					default:
						if u, t, ok := splitTokenID(ug); ok && c.users[u] != nil && c.users[u].tokens[t] != nil {
							setRole(&node.tokens, ug, role, prop)
						}
					}
				}
			}
		case "pool":
			p := get(1)
			if pveschema.CheckFormat("pve-poolid", p, "") != nil {
				continue
			}
			if c.pools[p] == nil {
				c.pools[p] = &poolEntry{vms: map[string]bool{}, storage: map[string]bool{}}
			}
			for _, v := range pveschema.SplitList(get(3)) {
				n, err := strconv.Atoi(v)
				if err != nil || strings.TrimLeft(v, "0123456789") != "" {
					continue
				}
				id := strconv.Itoa(n)
				if _, dup := c.vms[id]; dup {
					continue
				}
				c.pools[p].vms[id] = true
				c.vms[id] = p
			}
			for _, s := range pveschema.SplitList(get(4)) {
				if storeIDRe.MatchString(s) {
					c.pools[p].storage[s] = true
				}
			}
		case "token":
			u, t, ok := splitTokenID(get(1))
			if !ok {
				continue
			}
			expire := get(2)
			if expire == "" {
				expire = "0"
			}
			exp, err := strconv.ParseInt(expire, 10, 64)
			if err != nil || c.users[u] == nil {
				continue
			}
			if c.users[u].tokens == nil {
				c.users[u].tokens = map[string]*tokenEntry{}
			}
			c.users[u].tokens[t] = &tokenEntry{expire: exp, privsep: perlTrue(get(3))}
		}
	}
	return c
}

func setRole(m *map[string]map[string]bool, who, role string, propagate bool) {
	if *m == nil {
		*m = map[string]map[string]bool{}
	}
	if (*m)[who] == nil {
		(*m)[who] = map[string]bool{}
	}
	(*m)[who][role] = propagate
}

func perlTrue(s string) bool { return s != "" && s != "0" }

// rolesOn is AccessControl::roles: walking the path from the root, the user's (or token's)
// applicable entries replace what was inherited, else the groups' do; an entry applies at
// its own level, and below only when it propagates; NoAccess wins at the end.
func (c *userConfig) rolesOn(user, path string) map[string]bool {
	if u, t, ok := splitTokenID(user); ok {
		ue := c.users[u]
		if ue == nil || ue.tokens[t] == nil {
			return map[string]bool{}
		}
		if !ue.tokens[t].privsep {
			return c.rolesOn(u, path)
		}
	}
	roles := map[string]bool{}
	comps := splitPath(path)
	node := c.acl
	for i, p := range comps {
		final := i == len(comps)-1
		if p != "" {
			if node != nil {
				node = node.children[p]
			}
		}
		if node == nil {
			continue
		}
		pick := func(ri map[string]bool) map[string]bool {
			var out map[string]bool
			for role, prop := range ri {
				if final || prop {
					if out == nil {
						out = map[string]bool{}
					}
					out[role] = prop
				}
			}
			return out
		}
		if n := pick(node.tokens[user]); n != nil {
			roles = n
			continue
		}
		if n := pick(node.users[user]); n != nil {
			roles = n
			continue
		}
		var n map[string]bool
		for g, ri := range node.groups {
			if !c.groups[g][user] {
				continue
			}
			for role, prop := range pick(ri) {
				if n == nil {
					n = map[string]bool{}
				}
				n[role] = prop
			}
		}
		if n != nil {
			roles = n
		}
	}
	if prop, ok := roles["NoAccess"]; ok {
		return map[string]bool{"NoAccess": prop}
	}
	return roles
}

// permissions is RPCEnvironment::permissions: privilege -> propagate (0/1), present when held.
func (c *userConfig) permissions(user, path string) map[string]int {
	if user == "root@pam" {
		out := map[string]int{}
		for p := range c.roles["Administrator"] {
			out[p] = 1
		}
		return out
	}
	owner := ""
	if u, t, ok := splitTokenID(user); ok {
		ue := c.users[u]
		if ue == nil || ue.tokens[t] == nil {
			return map[string]int{}
		}
		userPerms := c.permissions(u, path)
		if !ue.tokens[t].privsep {
			return userPerms
		}
		owner = u
	} else if verifyUsername(user) != nil {
		return map[string]int{}
	}
	roles := c.rolesOn(user, path)
	// Roles inherited through pools apply to the pool's VMs and storages themselves.
	poolRoles := map[string]bool{}
	for name, p := range c.pools {
		pr := c.rolesOn(user, "/pool/"+name)
		if len(pr) == 0 {
			continue
		}
		member := false
		if id, ok := strings.CutPrefix(path, "/vms/"); ok && p.vms[id] {
			member = true
		}
		if sid, ok := strings.CutPrefix(path, "/storage/"); ok && p.storage[sid] {
			member = true
		}
		if member {
			for r := range pr {
				poolRoles[r] = true
			}
		}
	}
	if len(poolRoles) > 0 {
		if _, no := roles["NoAccess"]; !no {
			if poolRoles["NoAccess"] {
				roles = map[string]bool{"NoAccess": false}
			} else {
				merged := map[string]bool{}
				for r, p := range roles {
					merged[r] = p
				}
				for r := range poolRoles {
					if _, set := merged[r]; !set {
						merged[r] = false
					}
				}
				roles = merged
			}
		}
	}
	privs := map[string]int{}
	for role, prop := range roles {
		for p := range c.roles[role] {
			if prop {
				privs[p] = 1
			} else if _, ok := privs[p]; !ok {
				privs[p] = 0
			}
		}
	}
	if owner != "" && owner != "root@pam" {
		up := c.permissions(owner, path)
		out := map[string]int{}
		for p, v := range privs {
			if uv, ok := up[p]; ok {
				out[p] = uv & v
			}
		}
		return out
	}
	return privs
}

// aclPaths lists every path of the ACL tree.
func (c *userConfig) aclPaths() []string {
	var out []string
	var walk func(n *aclNode, p string)
	walk = func(n *aclNode, p string) {
		if len(n.users)+len(n.groups)+len(n.tokens) > 0 {
			out = append(out, p)
		}
		for name, ch := range n.children {
			child := p + "/" + name
			if p == "/" {
				child = "/" + name
			}
			walk(ch, child)
		}
	}
	walk(c.acl, "/")
	return out
}

// effectivePermissions is get_effective_permissions: default paths, ACL paths and pool
// members, each with what the user holds there; paths without privileges left out.
func (c *userConfig) effectivePermissions(user string) map[string]map[string]int {
	paths := map[string]bool{"/": true, "/access": true, "/access/groups": true, "/nodes": true, "/pool": true,
		"/sdn": true, "/storage": true, "/vms": true}
	for _, p := range c.aclPaths() {
		paths[p] = true
	}
	for _, p := range c.pools {
		for v := range p.vms {
			paths["/vms/"+v] = true
		}
		for s := range p.storage {
			paths["/storage/"+s] = true
		}
	}
	out := map[string]map[string]int{}
	for p := range paths {
		if perms := c.permissions(user, p); len(perms) > 0 {
			out[p] = perms
		}
	}
	return out
}

// apiCapabilities is compute_api_permission: what the GUI may show, per area.
func (c *userConfig) apiCapabilities(user string) map[string]map[string]int {
	re := map[string]*regexp.Regexp{
		"vms":     regexp.MustCompile(`^(VM\.|Permissions\.Modify)`),
		"access":  regexp.MustCompile(`^((User|Group)\.|Permissions\.Modify)`),
		"storage": regexp.MustCompile(`^(Datastore\.|Permissions\.Modify)`),
		"nodes":   regexp.MustCompile(`^(Sys\.|Permissions\.Modify)`),
		"sdn":     regexp.MustCompile(`^(SDN\.|Permissions\.Modify)`),
		"dc":      regexp.MustCompile(`^(Sys\.Audit|Sys\.Modify|SDN\.)`),
		"mapping": regexp.MustCompile(`^(Mapping\.|Permissions.Modify)`),
	}
	res := map[string]map[string]int{}
	for k := range re {
		res[k] = map[string]int{}
	}
	seen := map[string]bool{}
	top := regexp.MustCompile(`^/(\w+)`)
	for _, p := range append([]string{"/", "/nodes", "/access/groups", "/vms", "/storage", "/sdn", "/mapping"}, c.aclPaths()...) {
		if seen[p] {
			continue
		}
		seen[p] = true
		perms := c.permissions(user, p)
		level := "dc"
		if m := top.FindStringSubmatch(p); m != nil {
			level = m[1]
		}
		for priv := range perms {
			if level == "pool" {
				switch {
				case strings.HasPrefix(priv, "VM."):
					res["vms"][priv] = 1
				case strings.HasPrefix(priv, "Datastore."):
					res["storage"][priv] = 1
				case priv == "Permissions.Modify":
					res["storage"][priv], res["vms"][priv] = 1, 1
				}
				continue
			}
			if r := re[level]; r != nil && r.MatchString(priv) {
				res[level][priv] = 1
			}
		}
	}
	return res
}

// accessStore reads user.cfg (re-reading it when it changes) and holds the keys.
type accessStore struct {
	dir  string
	mu   sync.Mutex
	mod  time.Time
	size int64
	cfg  *userConfig
	keys *ticketKeys
}

func (a *accessStore) config() (*userConfig, error) {
	p := filepath.Join(a.dir, "user.cfg")
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg != nil && fi.ModTime().Equal(a.mod) && fi.Size() == a.size {
		return a.cfg, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	a.cfg, a.mod, a.size = parseUserConfig(b), fi.ModTime(), fi.Size()
	return a.cfg, nil
}

// invalidate forces the next config() to read the file (mtimes are coarse on some file
// systems; the admin helpers call it after each write).
func (a *accessStore) invalidate() {
	a.mu.Lock()
	a.cfg = nil
	a.mu.Unlock()
}

// checkUserEnabled is check_user_enabled.
func (c *userConfig) checkUserEnabled(user string, now time.Time) error {
	if err := verifyUsername(user); err != nil {
		return err
	}
	u := c.users[user]
	if u == nil {
		return fmt.Errorf("no such user ('%s')", user)
	}
	if !u.enable {
		return fmt.Errorf("user '%s' is disabled", user)
	}
	if u.expire != 0 && u.expire < now.Unix() {
		return fmt.Errorf("user '%s' access expired", user)
	}
	return nil
}

// tokenSecret reads priv/token.cfg ("<tokenid> <secret>" lines, pmxcfs's format).
func (a *accessStore) tokenValid(id, secret string) bool {
	b, err := os.ReadFile(filepath.Join(a.dir, "priv", "token.cfg"))
	if err != nil {
		return false
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		k, v, ok := strings.Cut(strings.TrimSpace(string(l)), " ")
		if ok && k == id {
			return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(v)), []byte(secret)) == 1
		}
	}
	return false
}

// authInfo is who auth_handler let in.
type authInfo struct {
	user  string // user or token id; "" for calls that need no authentication
	token bool   // an API token header was sent
}

var authValueRe = map[string]*regexp.Regexp{
	"PVEAuthCookie": regexp.MustCompile(`(?:^|\s)PVEAuthCookie(?:=| )([^;]*)`),
	"PVEAPIToken":   regexp.MustCompile(`(?:^|\s)PVEAPIToken(?:=| )([^;]*)`),
}

// extractAuthValue is Formatter.pm's extract_auth_value.
func extractAuthValue(header, key string) string {
	m := authValueRe[key].FindStringSubmatch(header)
	if m == nil || m[1] == "" {
		return ""
	}
	return pctRe.ReplaceAllStringFunc(m[1], func(s string) string {
		n, _ := strconv.ParseUint(s[1:], 16, 8)
		return string([]byte{byte(n)})
	})
}

// unifiedAuthFailure reports whether release answers every failed credential with
// "Authentication failed!" (pve-manager 9.1.5 and later).
func unifiedAuthFailure(release string) bool {
	var v [3]int
	for i, p := range strings.SplitN(release, ".", 3) {
		v[i], _ = strconv.Atoi(strings.TrimLeftFunc(p, func(r rune) bool { return r < '0' || r > '9' }))
	}
	return v[0] > 9 || (v[0] == 9 && (v[1] > 1 || (v[1] == 1 && v[2] >= 5)))
}

// authenticate is auth_handler: the ticket cookie, then a ticket in the Authorization
// header, then an API token; CSRF for ticket writes.
func (a *accessStore) authenticate(req *request, rel, release string) (authInfo, *apiError) {
	cookie := extractAuthValue(strings.Join(req.Header.Values("Cookie"), "; "), "PVEAuthCookie")
	authz := req.Header.Get("Authorization")
	ticket := cookie
	if ticket == "" {
		ticket = extractAuthValue(authz, "PVEAuthCookie")
	}
	apiToken := ""
	if ticket == "" {
		apiToken = extractAuthValue(authz, "PVEAPIToken")
	}
	open := (rel == "/access/domains" && req.Method == "GET") ||
		(rel == "/access/ticket" && (req.Method == "GET" || req.Method == "POST")) ||
		(rel == "/access/vncticket" && req.Method == "POST") ||
		(rel == "/access/openid/login" && req.Method == "POST") ||
		(rel == "/access/openid/auth-url" && req.Method == "POST")
	if open {
		return authInfo{token: apiToken != ""}, nil
	}
	unified := unifiedAuthFailure(release)
	fail := func(err error) *apiError {
		if unified {
			return &apiError{Code: http.StatusUnauthorized, Message: "Authentication failed!\n"}
		}
		return asAPIError(err)
	}
	cfg, err := a.config()
	if err != nil {
		return authInfo{}, asAPIError(err)
	}
	now := time.Now()
	if apiToken != "" {
		id, err := cfg.verifyToken(a, apiToken, now)
		if err != nil {
			return authInfo{}, fail(err)
		}
		return authInfo{user: id, token: true}, nil
	}
	if ticket == "" {
		return authInfo{}, &apiError{Code: http.StatusUnauthorized, Message: "No ticket\n"}
	}
	user, err := a.keys.verifyTicket(ticket, now)
	if err == nil {
		if e := cfg.checkUserEnabled(user, now); e != nil {
			err = &apiError{Code: http.StatusUnauthorized, Message: e.Error() + "\n"}
		}
	}
	if err != nil {
		return authInfo{}, fail(err)
	}
	if req.Method != "GET" {
		if err := a.keys.verifyCSRF(user, req.Header.Get("CSRFPreventionToken"), now); err != nil {
			return authInfo{}, err
		}
	}
	return authInfo{user: user}, nil
}

// verifyToken is AccessControl::verify_token.
func (c *userConfig) verifyToken(a *accessStore, apiToken string, now time.Time) (string, error) {
	i := strings.LastIndexByte(apiToken, '=')
	if i < 0 {
		return "", unauthorized("no tokenid specified")
	}
	id, value := apiToken[:i], apiToken[i+1:]
	user, token, ok := splitTokenID(id)
	if !ok {
		return "", unauthorized("'%s' is not a valid token ID - not able to split into user and token parts", id)
	}
	if err := c.checkUserEnabled(user, now); err != nil {
		return "", unauthorized("%s", err.Error())
	}
	t := c.users[user].tokens[token]
	if t == nil {
		return "", unauthorized("no such token '%s' for user '%s'", token, user)
	}
	if t.expire != 0 && t.expire < now.Unix() {
		return "", unauthorized("token '%s' access expired", token)
	}
	if !a.tokenValid(id, value) {
		return "", unauthorized("invalid token value!")
	}
	return id, nil
}

func unauthorized(format string, args ...any) *apiError {
	return httpErr(http.StatusUnauthorized, format, args...)
}
