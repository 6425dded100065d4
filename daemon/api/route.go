package api

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// HandlerFunc answers a call: the result goes into {"data":…}. Returning ErrPassThrough hands
// the request to pveproxy unchanged.
type HandlerFunc func(c *Call) (any, error)

// Permission is a route's declared privilege check, like PVE's `permissions => {check => …}`.
type Permission struct {
	// Path is the ACL path; {name} is replaced by the parameter's value ("/storage/{storage}").
	Path string
	// Privs must all be held on Path, or one of them when Any is set.
	Privs []string
	Any   bool
	// User "all" declares that any authenticated user may call the route and the handler checks
	// the rest in code; Description must then say what it checks. User "world" needs no
	// authentication at all (PVE's login and version-discovery calls).
	User        string
	Description string
}

// Declared reports whether p says anything at all: every owned route must.
func (p Permission) Declared() bool {
	return (p.Path != "" && len(p.Privs) > 0) || ((p.User == "all" || p.User == "world") && p.Description != "")
}

// String renders the permission for docs and the route dump.
func (p Permission) String() string {
	switch p.User {
	case "all":
		return "any authenticated user; " + p.Description
	case "world":
		return "no authentication; " + p.Description
	}
	join := " and "
	if p.Any {
		join = " or "
	}
	s := strings.Join(p.Privs, join) + " on " + p.Path
	if p.Description != "" {
		s += "; " + p.Description
	}
	return s
}

// Returns documents a route's result.
type Returns struct {
	Type        string // "string", "object", "array", "null", "integer"
	Description string
	// Properties lists the fields of an object or of each array item, for docs and shape tests.
	Properties map[string]string
}

// Route is one method on one path that pvesnap answers itself.
type Route struct {
	Method      string
	Path        string // relative to /api2/<format>, chi syntax: /nodes/{node}/pvesnap/restore
	Name        string
	Description string
	Permission  Permission
	Params      []Param
	Returns     Returns
	// ProxyTo names the parameter holding the node whose pvesnap must answer the call; a call
	// for another node is forwarded to it, never run here.
	ProxyTo string
	// Intercept marks a PVE path that pvesnap answers only in some cases and otherwise passes
	// to pveproxy (the handler returns ErrPassThrough).
	Intercept bool
	// Protected marks calls that need root on the node (documentation, like PVE's flag).
	Protected bool
	Handler   HandlerFunc
}

// Identity is an authenticated caller.
type Identity struct {
	UserID  string // user@realm
	TokenID string // user@realm!token, empty for tickets
	Ticket  bool
}

// Name is how PVE names the caller in a task: the token id for tokens, else the user id.
func (i *Identity) Name() string {
	if i.TokenID != "" {
		return i.TokenID
	}
	return i.UserID
}

// Authorizer authenticates requests and tells which privileges the caller holds on a path.
// It is implemented by daemon/auth; declared here where it is consumed.
type Authorizer interface {
	Authenticate(r *http.Request) (*Identity, error)
	Privileges(ctx context.Context, r *http.Request, id *Identity, path string) (map[string]bool, error)
}

// TreeAuthorizer answers one privilege on many paths at once (optional for an Authorizer).
type TreeAuthorizer interface {
	HasOn(ctx context.Context, r *http.Request, id *Identity, priv string, paths []string) (map[string]bool, error)
}

// Call is one invocation of a route.
type Call struct {
	Ctx    context.Context
	R      *http.Request
	W      http.ResponseWriter
	Format Format
	Route  *Route
	Params Params
	Auth   *Identity
	Body   []byte
	authz  Authorizer
}

// Check requires every one of privs on path, with PVE's 403 naming the first missing one.
func (c *Call) Check(path string, privs ...string) error {
	have, err := c.authz.Privileges(c.Ctx, c.R, c.Auth, path)
	if err != nil {
		return err
	}
	for _, p := range privs {
		if !have[p] {
			return PermError(path, p)
		}
	}
	return nil
}

// CheckAny requires one of privs on path; the 403 lists them joined by '|' as PVE does.
func (c *Call) CheckAny(path string, privs ...string) error {
	have, err := c.authz.Privileges(c.Ctx, c.R, c.Auth, path)
	if err != nil {
		return err
	}
	for _, p := range privs {
		if have[p] {
			return nil
		}
	}
	return PermError(path, strings.Join(privs, "|"))
}

// Has reports whether the caller holds priv on path (no error for "no").
func (c *Call) Has(path, priv string) (bool, error) {
	have, err := c.authz.Privileges(c.Ctx, c.R, c.Auth, path)
	return have[priv], err
}

// HasOn reports for each path whether the caller holds priv there (for filtering lists).
func (c *Call) HasOn(priv string, paths []string) (map[string]bool, error) {
	if t, ok := c.authz.(TreeAuthorizer); ok {
		return t.HasOn(c.Ctx, c.R, c.Auth, priv, paths)
	}
	out := make(map[string]bool, len(paths))
	for _, p := range paths {
		ok, err := c.Has(p, priv)
		if err != nil {
			return nil, err
		}
		out[p] = ok
	}
	return out, nil
}

var placeholder = regexp.MustCompile(`\{([a-z_-]+)\}`)

// expandPath fills {name} placeholders of an ACL path from the call's parameters.
func expandPath(tmpl string, p Params) (string, error) {
	var missing string
	out := placeholder.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := m[1 : len(m)-1]
		v, ok := p[name]
		if !ok {
			missing = name
			return ""
		}
		return fmt.Sprint(v)
	})
	if missing != "" {
		return "", fmt.Errorf("permission path %s: parameter %q not given", tmpl, missing)
	}
	return out, nil
}

// CheckTable verifies a route table the way PVE's RESTHandler does at registration: every route
// has a handler and a declared permission, a method and path once, path parameters declared.
// It returns every problem found.
func CheckTable(routes []*Route) []error {
	var errs []error
	seen := map[string]bool{}
	for _, r := range routes {
		key := r.Method + " " + r.Path
		if seen[key] {
			errs = append(errs, fmt.Errorf("%s: declared twice", key))
		}
		seen[key] = true
		if r.Handler == nil {
			errs = append(errs, fmt.Errorf("%s: no handler", key))
		}
		if !r.Permission.Declared() {
			errs = append(errs, fmt.Errorf("%s: no permission declared", key))
		}
		if r.Name == "" || r.Description == "" {
			errs = append(errs, fmt.Errorf("%s: no name or description", key))
		}
		declared := map[string]Param{}
		for _, p := range r.Params {
			declared[p.Name] = p
		}
		for _, m := range placeholder.FindAllStringSubmatch(r.Path, -1) {
			// PVE itself declares some path parameters optional (storage, when the volume is
			// a full volid): declared is what matters.
			if _, ok := declared[m[1]]; !ok {
				errs = append(errs, fmt.Errorf("%s: path parameter %s not declared", key, m[1]))
			}
		}
		for _, m := range placeholder.FindAllStringSubmatch(r.Permission.Path, -1) {
			if _, ok := declared[m[1]]; !ok {
				errs = append(errs, fmt.Errorf("%s: permission path uses undeclared parameter %s", key, m[1]))
			}
		}
		if r.ProxyTo != "" {
			if _, ok := declared[r.ProxyTo]; !ok {
				errs = append(errs, fmt.Errorf("%s: proxyto parameter %s not declared", key, r.ProxyTo))
			}
		}
	}
	return errs
}
