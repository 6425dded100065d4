package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/proxy"
	"github.com/pvesnap/pvesnap/daemon/pve"
)

// Authenticator validates credentials and reads privileges by asking the local pveproxy
// (GET /access/permissions?path=…) with the caller's own credential, so pvesnap applies the
// exact privilege model of the cluster: ACL propagation, groups, pools, NoAccess, token
// privilege separation. It never decides on its own that a credential is valid.
type Authenticator struct {
	Upstream *url.URL
	Client   *http.Client
	// WWWKey is /etc/pve/pve-www.key, the CSRF secret's source.
	WWWKey string
	// FailDelay holds back 401s decided here, as pveproxy does (3 s). 401s relayed from
	// pveproxy were already delayed there.
	FailDelay time.Duration
	Cache     *Cache
	// Access tells when the cluster's access files change (every cached answer is dropped
	// then: a removed ACL, a deleted token or a disabled user is refused at once, as by
	// pveproxy) and when accounts expire. Nil: answers live for the cache's TTL.
	Access *pve.AccessConfig
	// Logger receives authentication failures in the form fail2ban reads (see LogFailure).
	Logger *slog.Logger
	Now    func() time.Time
}

var _ api.Authorizer = (*Authenticator)(nil)

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Authenticator) deny(reason string) error {
	if a.FailDelay > 0 {
		time.Sleep(a.FailDelay)
	}
	return api.Unauthorized(reason)
}

// fail refuses a credential that was presented: logged for fail2ban, then pveproxy's answer.
func (a *Authenticator) fail(r *http.Request, c Credential, why string) error {
	a.LogFailure(r, c.User(), why)
	return a.deny(ReasonAuthFailed)
}

// LogFailure logs an authentication failure as PVE's login does, with the caller's real
// address: "authentication failure; rhost=<ip> user=<user> msg=<why>" (the fail2ban filter
// shipped in debian/ matches it). Values are kept to one line.
func (a *Authenticator) LogFailure(r *http.Request, user, why string) {
	if a.Logger == nil {
		return
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	a.Logger.Warn(fmt.Sprintf("authentication failure; rhost=%s user=%s msg=%s", oneLine(host), oneLine(user), oneLine(why)))
}

// oneLine replaces control characters, so a value cannot start a log line of its own.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// Authenticate identifies the caller and, for ticket-authenticated writes, checks the CSRF
// token. The credential is validated by pveproxy.
func (a *Authenticator) Authenticate(r *http.Request) (*api.Identity, error) {
	c := Extract(r)
	var id *api.Identity
	switch c.Kind {
	case None:
		return nil, a.deny(ReasonNoTicket)
	case Ticket:
		user := TicketUser(c.Ticket)
		if user == "" {
			return nil, a.fail(r, c, "not a PVE ticket")
		}
		id = &api.Identity{UserID: user, Ticket: true}
	case Token:
		user, _, ok := strings.Cut(c.TokenID, "!")
		if !ok {
			return nil, a.fail(r, c, "no tokenid specified")
		}
		id = &api.Identity{UserID: user, TokenID: c.TokenID}
	}
	// Validation: the caller's permissions on "/" (cached on success).
	if _, err := a.privileges(r, c, "/"); err != nil {
		return nil, err
	}
	if c.Kind == Ticket && r.Method != http.MethodGet {
		key, err := os.ReadFile(a.WWWKey)
		if err != nil {
			return nil, fmt.Errorf("reading CSRF key: %w", err)
		}
		if !VerifyCSRF(key, id.UserID, c.CSRF, a.now()) {
			return nil, a.deny(ReasonBadCSRF)
		}
	}
	return id, nil
}

// User names the credential's owner for logs: the ticket's user or the token id.
func (c Credential) User() string {
	if c.Kind == Ticket {
		return TicketUser(c.Ticket)
	}
	return c.TokenID
}

// Privileges returns the privileges the caller holds on path; a privilege is held when its key
// is present (the value is only the propagate flag).
func (a *Authenticator) Privileges(ctx context.Context, r *http.Request, id *api.Identity, path string) (map[string]bool, error) {
	return a.privileges(r.WithContext(ctx), Extract(r), path)
}

// sync drops cached answers when the access files changed, and returns until when an answer
// for c may be kept: never past the ticket's lifetime or the user's or token's expiry.
func (a *Authenticator) sync(c Credential) (time.Time, error) {
	if a.Access == nil {
		return time.Time{}, nil
	}
	stamp, cfg, err := a.Access.Current()
	if err != nil {
		return time.Time{}, fmt.Errorf("unable to verify credentials, cannot read the cluster's access files: %v: %w", err, api.ErrUpstream)
	}
	a.Cache.Sync(stamp)
	var until time.Time
	earliest := func(epoch int64) {
		if t := time.Unix(epoch, 0); epoch > 0 && (until.IsZero() || t.Before(until)) {
			until = t
		}
	}
	switch c.Kind {
	case Ticket:
		if f := strings.SplitN(c.Ticket, ":", 4); len(f) == 4 {
			if ts, err := strconv.ParseInt(f[2], 16, 64); err == nil {
				earliest(ts + int64(ticketLifetime/time.Second))
			}
		}
		earliest(cfg.Users[TicketUser(c.Ticket)])
	case Token:
		user, _, _ := strings.Cut(c.TokenID, "!")
		earliest(cfg.Users[user])
		earliest(cfg.Tokens[c.TokenID])
	}
	return until, nil
}

func (a *Authenticator) privileges(r *http.Request, c Credential, path string) (map[string]bool, error) {
	return a.privilegesAs(r, c, path, path)
}

// privilegesAs asks pveproxy for the caller's privileges on path and caches the answer
// under label (the path itself, or the subtree it stands for).
func (a *Authenticator) privilegesAs(r *http.Request, c Credential, label, path string) (map[string]bool, error) {
	until, err := a.sync(c)
	if err != nil {
		return nil, err
	}
	key := cacheKey(c, label)
	if p, ok := a.Cache.Get(key); ok {
		return p, nil
	}
	tree, err := a.fetch(r, c, path)
	if err != nil {
		return nil, err
	}
	privs := map[string]bool{}
	for p := range tree[path] {
		privs[p] = true
	}
	a.Cache.Put(key, privs, until)
	return privs, nil
}

// fetch asks pveproxy for the caller's privileges on path, or on every path of the caller's
// effective tree when path is "": {path: {priv: propagate}}. A privilege is granted iff its
// key is present; the value is only whether it propagates. The credential goes to pveproxy
// as it arrived (Credential.Raw), so pveproxy reads exactly what it would have read itself.
func (a *Authenticator) fetch(r *http.Request, c Credential, path string) (map[string]map[string]bool, error) {
	u := a.Upstream.JoinPath("/api2/json/access/permissions")
	if path != "" {
		u.RawQuery = url.Values{"path": {path}}.Encode()
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	switch c.Kind {
	case Ticket:
		req.Header.Set("Cookie", "PVEAuthCookie="+c.Raw)
	case Token:
		req.Header.Set("Authorization", "PVEAPIToken="+c.Raw)
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unable to verify credentials, pveproxy unreachable (%v): %w", err, api.ErrUpstream)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		// pveproxy answers "No ticket" (a ticket still waiting for its second factor) or
		// "Authentication failed!"; nothing else reaches a client.
		reason := proxy.ReasonOf(resp)
		if reason != ReasonNoTicket {
			reason = ReasonAuthFailed
			a.LogFailure(r, c.User(), "rejected by pveproxy")
		}
		return nil, api.Unauthorized(reason)
	case resp.StatusCode == http.StatusBadRequest && path != "":
		// Not a path pveproxy takes as an ACL path (a node name of 300 characters in a
		// call for another node): nothing is granted there.
		return map[string]map[string]bool{path: {}}, nil
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("unable to verify credentials, pveproxy answered %s: %w", resp.Status, api.ErrUpstream)
	}
	var env struct {
		Data map[string]map[string]json.Number `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("unable to verify credentials, unreadable permissions: %v: %w", err, api.ErrUpstream)
	}
	out := make(map[string]map[string]bool, len(env.Data))
	for p, privs := range env.Data {
		m := make(map[string]bool, len(privs))
		for k, v := range privs {
			m[k] = v.String() != "0"
		}
		out[p] = m
	}
	return out, nil
}

// HasOn tells for each path whether the caller holds priv there, with PVE's rules exactly
// and without asking pveproxy once per path (a listing of 2,000 VMs):
//   - a path pveproxy's effective tree covers (a default path, a pool member, a node of the
//     ACL tree, see pve.UserConfig.Listed) has what the tree says, and nothing when the tree
//     leaves it out: PVE omits paths without privileges, NoAccess ones included;
//   - any other path has no ACL entry and no pool of its own, so PVE's walk down the ACL tree
//     gives it what it gives every such path below the same nearest covered ancestor: one
//     call with path= for the first of them answers for all.
//
// Without Access (no user.cfg) every path is asked for.
func (a *Authenticator) HasOn(ctx context.Context, r *http.Request, id *api.Identity, priv string, paths []string) (map[string]bool, error) {
	c := Extract(r)
	r = r.WithContext(ctx)
	out := make(map[string]bool, len(paths))
	var cfg *pve.UserConfig
	if a.Access != nil {
		var err error
		if _, cfg, err = a.Access.Current(); err != nil {
			return nil, fmt.Errorf("reading the cluster's user.cfg: %v: %w", err, api.ErrUpstream)
		}
	}
	var tree map[string]bool
	under := map[string]bool{} // nearest listed ancestor -> granted
	for _, p := range paths {
		if cfg == nil {
			privs, err := a.privileges(r, c, p)
			if err != nil {
				return nil, err
			}
			out[p] = privs[priv]
			continue
		}
		if cfg.Listed(p) {
			if tree == nil {
				var err error
				if tree, err = a.treeFor(r, c, priv); err != nil {
					return nil, err
				}
			}
			out[p] = tree[p]
			continue
		}
		anc := p
		for anc != "/" && !cfg.Listed(anc) {
			anc = parentPath(anc)
		}
		granted, ok := under[anc]
		if !ok {
			// Every unlisted path below anc has what p has: asked once, cached for all.
			privs, err := a.privilegesAs(r, c, "\x00below\x00"+anc, p)
			if err != nil {
				return nil, err
			}
			granted = privs[priv]
			under[anc] = granted
		}
		out[p] = granted
	}
	return out, nil
}

// treeFor is the caller's effective tree flattened for one privilege: path -> held.
func (a *Authenticator) treeFor(r *http.Request, c Credential, priv string) (map[string]bool, error) {
	until, err := a.sync(c)
	if err != nil {
		return nil, err
	}
	key := cacheKey(c, "\x00tree\x00"+priv)
	if flat, ok := a.Cache.Get(key); ok {
		return flat, nil
	}
	tree, err := a.fetch(r, c, "")
	if err != nil {
		return nil, err
	}
	flat := map[string]bool{}
	for p, privs := range tree {
		if _, ok := privs[priv]; ok {
			flat[p] = true
		}
	}
	a.Cache.Put(key, flat, until)
	return flat, nil
}

func parentPath(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func cacheKey(c Credential, path string) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%s\x00%s", c.Kind, c.Raw, path)
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// Cache holds positive permission answers for a short time, and never across a change of
// the access files (Sync). Keys are hashes, so no secret is kept in memory beyond the
// request; failures are never cached.
type Cache struct {
	mu      sync.Mutex
	ttl     time.Duration
	max     int
	entries map[[32]byte]*cacheEntry
	order   [][32]byte // insertion order for eviction
	stamp   string
	now     func() time.Time
}

// Sync drops every entry when stamp (the access files' state) differs from the last one.
func (c *Cache) Sync(stamp string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if stamp != c.stamp {
		c.stamp = stamp
		clear(c.entries)
		c.order = c.order[:0]
	}
}

type cacheEntry struct {
	privs   map[string]bool
	expires time.Time
}

// NewCache makes a cache; ttl 0 or max 0 disables it.
func NewCache(ttl time.Duration, max int) *Cache {
	return &Cache{ttl: ttl, max: max, entries: map[[32]byte]*cacheEntry{}, now: time.Now}
}

// Get returns a live entry.
func (c *Cache) Get(k [32]byte) (map[string]bool, bool) {
	if c == nil || c.ttl <= 0 || c.max <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || c.now().After(e.expires) {
		return nil, false
	}
	return e.privs, true
}

// Put stores an entry until the TTL, or until notAfter when that is sooner (zero: no
// bound), evicting the oldest ones (and expired ones) when full.
func (c *Cache) Put(k [32]byte, privs map[string]bool, notAfter time.Time) {
	if c == nil || c.ttl <= 0 || c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok {
		c.order = append(c.order, k)
	}
	expires := c.now().Add(c.ttl)
	if !notAfter.IsZero() && notAfter.Before(expires) {
		expires = notAfter
	}
	c.entries[k] = &cacheEntry{privs: privs, expires: expires}
	for len(c.entries) > c.max && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		delete(c.entries, old)
	}
	if len(c.order) > 2*c.max { // compact after many re-puts of the same keys
		kept := c.order[:0]
		for _, k := range c.order {
			if _, ok := c.entries[k]; ok {
				kept = append(kept, k)
			}
		}
		c.order = kept
	}
}

// Len is the number of entries (tests).
func (c *Cache) Len() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.entries) }
