package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/proxy"
)

// Authenticator validates credentials and reads privileges by asking the local pveproxy
// (GET /access/permissions?path=…) with the caller's own credential, so pvesnap applies the
// exact privilege model of the cluster: ACL propagation, groups, pools, token privilege
// separation. It never decides on its own that a credential is valid.
type Authenticator struct {
	Upstream *url.URL
	Client   *http.Client
	// WWWKey is /etc/pve/pve-www.key, the CSRF secret's source.
	WWWKey string
	// FailDelay holds back 401s decided here, as pveproxy does (3 s). 401s relayed from
	// pveproxy were already delayed there.
	FailDelay time.Duration
	Cache     *Cache
	Now       func() time.Time
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

type credKey struct{}

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
			return nil, a.deny(ReasonBadTicket)
		}
		id = &api.Identity{UserID: user, Ticket: true}
	case Token:
		if c.Secret == "" {
			return nil, a.deny(ReasonNoTokenID)
		}
		user, _, ok := strings.Cut(c.TokenID, "!")
		if !ok {
			return nil, a.deny(ReasonBadTokenVal)
		}
		id = &api.Identity{UserID: user, TokenID: c.TokenID}
	}
	// Validation: the caller's permissions on "/" (cached on success).
	if _, err := a.privileges(r.Context(), c, "/"); err != nil {
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

// Privileges returns the privileges the caller holds on path; a privilege is held when its key
// is present (the value is only the propagate flag).
func (a *Authenticator) Privileges(ctx context.Context, r *http.Request, id *api.Identity, path string) (map[string]bool, error) {
	return a.privileges(ctx, Extract(r), path)
}

func (a *Authenticator) privileges(ctx context.Context, c Credential, path string) (map[string]bool, error) {
	key := cacheKey(c, path)
	if p, ok := a.Cache.Get(key); ok {
		return p, nil
	}
	tree, err := a.fetch(ctx, c, path)
	if err != nil {
		return nil, err
	}
	privs := map[string]bool{}
	for p := range tree[path] {
		privs[p] = true
	}
	a.Cache.Put(key, privs)
	return privs, nil
}

// fetch asks pveproxy for the caller's privileges on path, or on every path of the caller's
// effective tree when path is "": {path: {priv: propagate}}. A privilege is granted iff its
// key is present; the value is only whether it propagates.
func (a *Authenticator) fetch(ctx context.Context, c Credential, path string) (map[string]map[string]bool, error) {
	u := a.Upstream.JoinPath("/api2/json/access/permissions")
	if path != "" {
		u.RawQuery = url.Values{"path": {path}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	switch c.Kind {
	case Ticket:
		req.AddCookie(&http.Cookie{Name: "PVEAuthCookie", Value: url.PathEscape(c.Ticket)})
	case Token:
		req.Header.Set("Authorization", "PVEAPIToken="+c.TokenID+"="+c.Secret)
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unable to verify credentials, pveproxy unreachable (%v): %w", err, api.ErrUpstream)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		reason := proxy.ReasonOf(resp)
		if reason == "" {
			reason = ReasonBadTicket
		}
		return nil, api.Unauthorized(reason)
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

// HasOn tells for each path whether the caller holds priv there, from one fetch of the
// caller's whole effective tree (a listing of 2,000 VMs must not ask pveproxy 2,000 times).
// A path missing from the tree inherits from its nearest listed ancestor the privileges that
// propagate: pveproxy lists every ACL path and every pool member, so nothing else can change
// the answer below it.
func (a *Authenticator) HasOn(ctx context.Context, r *http.Request, id *api.Identity, priv string, paths []string) (map[string]bool, error) {
	c := Extract(r)
	key := cacheKey(c, "\x00tree\x00"+priv)
	flat, ok := a.Cache.Get(key)
	if !ok {
		tree, err := a.fetch(ctx, c, "")
		if err != nil {
			return nil, err
		}
		// Cached flat: "path" -> granted-and-propagates, for the one privilege asked.
		flat = map[string]bool{}
		for p, privs := range tree {
			if prop, ok := privs[priv]; ok {
				flat[p] = prop
			} else {
				flat["\x00"+p] = false // listed without the privilege
			}
		}
		a.Cache.Put(key, flat)
	}
	out := make(map[string]bool, len(paths))
	for _, p := range paths {
		out[p] = grantedOn(flat, p)
	}
	return out, nil
}

// grantedOn evaluates a path against a flattened tree (see HasOn).
func grantedOn(flat map[string]bool, path string) bool {
	if _, ok := flat[path]; ok {
		return true
	}
	if _, ok := flat["\x00"+path]; ok {
		return false
	}
	for p := path; p != "/"; {
		p = parentPath(p)
		if prop, ok := flat[p]; ok {
			return prop
		}
		if _, ok := flat["\x00"+p]; ok {
			return false
		}
	}
	return false
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
	fmt.Fprintf(h, "%d\x00%s\x00%s\x00%s\x00%s", c.Kind, c.Ticket, c.TokenID, c.Secret, path)
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// Cache holds positive permission answers for a short time. Keys are hashes, so no secret is
// kept in memory beyond the request; failures are never cached.
type Cache struct {
	mu      sync.Mutex
	ttl     time.Duration
	max     int
	entries map[[32]byte]*cacheEntry
	order   [][32]byte // insertion order for eviction
	now     func() time.Time
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

// Put stores an entry, evicting the oldest ones (and expired ones) when full.
func (c *Cache) Put(k [32]byte, privs map[string]bool) {
	if c == nil || c.ttl <= 0 || c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok {
		c.order = append(c.order, k)
	}
	c.entries[k] = &cacheEntry{privs: privs, expires: c.now().Add(c.ttl)}
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
