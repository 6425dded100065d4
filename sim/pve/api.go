package pve

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/sim/pveschema"
	"github.com/pvesnap/pvesnap/sim/reference"
)

// The API side of pveproxy and pvedaemon: pve-manager's PVE/HTTPServer.pm (auth_handler,
// rest_handler), pve-common's RESTHandler.pm (find_handler, handle) and pve-http-server's
// formatters. Every route's parameters, permission check, proxyto and token rule come from
// PVE's own schema (sim/reference), not from this file.

// apiError is a PVE::Exception: status, message (ending in a newline, as PVE's do) and the
// per-parameter messages of a 400.
type apiError struct {
	Code    int
	Message string
	Errors  map[string]string
}

func (e *apiError) Error() string { return strings.TrimRight(e.Message, "\n") }

func withNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

// httpErr is raise(msg, code => …); a handler's plain die is httpErr(500, …).
func httpErr(code int, format string, args ...any) *apiError {
	return &apiError{Code: code, Message: withNewline(fmt.Sprintf(format, args...))}
}

// paramErr is raise_param_exc.
func paramErr(errs map[string]string) *apiError {
	return &apiError{Code: http.StatusBadRequest, Message: "Parameter verification failed.\n", Errors: errs}
}

// permErr is raise_perm_exc.
func permErr(what string) *apiError {
	msg := "Permission check failed"
	if what != "" {
		msg += " (" + what + ")"
	}
	return &apiError{Code: http.StatusForbidden, Message: msg + "\n"}
}

func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return &apiError{Code: http.StatusInternalServerError, Message: withNewline(err.Error())}
}

// route is one method of one path the stand-in serves; everything else about it comes from
// the schema.
type route struct {
	method, path string
	segs         []string
	info         *reference.PVEMethod
	props        map[string]pveschema.Schema // parameters, [n] families as declared
	handler      func(*call) (any, error)
}

// RouteInfo names a route the stand-in serves (the schema tests walk them).
type RouteInfo struct{ Method, Path string }

// call is one invocation of a route.
type call struct {
	n      *Node
	c      *Cluster
	req    *request
	user   string // the authenticated user or token id ("" for unauthenticated calls)
	token  bool
	params map[string]any
	total  int
}

func (c *call) has(name string) bool { return c.params[name] != nil }

func (c *call) str(name string) string {
	s, _ := pveschema.Scalar(c.params[name])
	return s
}

func (c *call) int(name string) int64 {
	n, _ := strconv.ParseInt(c.str(name), 10, 64)
	return n
}

// bool reads a boolean parameter: "1"/"0" from forms, true/false or numbers from JSON.
func (c *call) bool(name string) bool {
	switch v := c.params[name].(type) {
	case bool:
		return v
	case nil:
		return false
	}
	return c.str(name) == "1"
}

// root reports whether the caller is root@pam itself (not one of its tokens).
func (c *call) root() bool { return c.user == "root@pam" }

func (c *call) privileges(path string) map[string]int {
	cfg, err := c.c.access.config()
	if err != nil {
		return nil
	}
	return cfg.permissions(c.user, path)
}

// check is RPCEnvironment::check: every privilege on path.
func (c *call) check(path string, privs ...string) error {
	have := c.privileges(path)
	for _, p := range privs {
		if _, ok := have[p]; !ok {
			return permErr(path + ", " + p)
		}
	}
	return nil
}

// checkAny is check_any.
func (c *call) checkAny(path string, privs ...string) error {
	have := c.privileges(path)
	for _, p := range privs {
		if _, ok := have[p]; ok {
			return nil
		}
	}
	return permErr(path + ", " + strings.Join(privs, "|"))
}

func (c *call) holds(path, priv string) bool {
	_, ok := c.privileges(path)[priv]
	return ok
}

// checkAPI2 is check_api2_permissions with exec_api2_perm_check, for the route's declared
// permissions (before its parameters are validated, as in PVE).
func (c *call) checkAPI2(perm map[string]any) error {
	if c.user == "" {
		if perm != nil && perm["user"] == "world" {
			return nil
		}
		return permErr("user != null")
	}
	if c.root() {
		return nil
	}
	if perm == nil {
		return permErr("user != root@pam")
	}
	if perm["user"] == "all" {
		return nil
	}
	if chk, ok := perm["check"].([]any); ok {
		if ok, err := c.permCheck(chk, false); err != nil || ok {
			return err
		}
	}
	return permErr("")
}

func (c *call) permCheck(chk []any, noerr bool) (bool, error) {
	if len(chk) == 0 {
		return false, fmt.Errorf("no permission test specified")
	}
	switch chk[0] {
	case "and":
		for _, sub := range chk[1:] {
			s, _ := sub.([]any)
			if ok, err := c.permCheck(s, noerr); !ok || err != nil {
				return ok, err
			}
		}
		return true, nil
	case "or":
		for _, sub := range chk[1:] {
			s, _ := sub.([]any)
			if ok, _ := c.permCheck(s, true); ok {
				return true, nil
			}
		}
		if noerr {
			return false, nil
		}
		return false, permErr("")
	case "perm":
		if len(chk) < 3 {
			return false, fmt.Errorf("missing parameters")
		}
		tmpl, _ := chk[1].(string)
		var privs []string
		for _, p := range chk[2].([]any) {
			privs = append(privs, fmt.Sprint(p))
		}
		opts := map[string]any{}
		for i := 3; i+1 < len(chk); i += 2 {
			opts[fmt.Sprint(chk[i])] = chk[i+1]
		}
		if rp, ok := opts["require_param"].(string); ok && c.params[rp] == nil {
			if noerr {
				return false, nil
			}
			return false, permErr("")
		}
		path := normalizePath(templateReplace(tmpl, c.params))
		var err error
		if opts["any"] != nil {
			err = c.checkAny(path, privs...)
		} else {
			err = c.check(path, privs...)
		}
		if err != nil {
			if noerr {
				return false, nil
			}
			return false, err
		}
		return true, nil
	}
	return false, fmt.Errorf("unknown permission test %v", chk[0])
}

var templateVarRe = regexp.MustCompile(`\{(\w+)\}`)

// templateReplace is PVE::Tools::template_replace.
func templateReplace(tmpl string, params map[string]any) string {
	return templateVarRe.ReplaceAllStringFunc(tmpl, func(m string) string {
		s, _ := pveschema.Scalar(params[m[1:len(m)-1]])
		return s
	})
}

// normalizePath is PVE::AccessControl::normalize_path ("" when PVE returns undef).
func normalizePath(p string) string {
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

var aclPathRe = regexp.MustCompile(`^[[:alnum:].\-_/]+$`)

// indexMax is the highest index of a "[n]" parameter family, qemu-server's constants
// ($MAX_NETS, $MAX_SCSI_DISKS, …); apidata.js folds net0 … net31 into net[n].
var indexMax = map[string]int{"net": 31, "ipconfig": 31, "scsi": 30, "virtio": 15, "sata": 5, "ide": 3, "unused": 255,
	"serial": 3, "parallel": 2, "usb": 13, "hostpci": 15, "numa": 7, "virtiofs": 9, "mp": 255, "dev": 255}

var indexedKeyRe = regexp.MustCompile(`^([a-z_]+?)(0|[1-9][0-9]*)$`)

// concreteProps returns the schema of each given parameter, unfolding "[n]" families.
func concreteProps(decl map[string]pveschema.Schema, given map[string]any) map[string]pveschema.Schema {
	out := map[string]pveschema.Schema{}
	for k, s := range decl {
		if !strings.HasSuffix(k, "[n]") {
			out[k] = s
		}
	}
	for k := range given {
		if _, ok := out[k]; ok {
			continue
		}
		if m := indexedKeyRe.FindStringSubmatch(k); m != nil {
			if s, ok := decl[m[1]+"[n]"]; ok {
				if i, _ := strconv.Atoi(m[2]); i <= indexMax[m[1]] {
					out[k] = s
				}
			}
		}
	}
	return out
}

// validate is RESTHandler::handle's parameter step: legacy '-list' arrays joined, then
// JSONSchema::validate against the method's parameters (no additional properties).
func validate(r *route, params map[string]any) *apiError {
	props := concreteProps(r.props, params)
	for k, v := range params {
		s, ok := props[k]
		if !ok {
			continue
		}
		if l, isList := v.([]any); isList && s["type"] == "string" && strings.HasSuffix(fmt.Sprint(s["format"]), "-list") {
			parts := make([]string, len(l))
			for i, x := range l {
				parts[i], _ = pveschema.Scalar(x)
			}
			params[k] = strings.Join(parts, ",")
		} else if !isList && v != nil && s["type"] == "array" {
			params[k] = []any{v}
		}
	}
	if errs := pveschema.CheckObject(params, props, false); len(errs) > 0 {
		return paramErr(errs)
	}
	return nil
}

// decodeURLEncoded is AnyEvent.pm's decode_urlencoded: pairs split on '&' or ';', '+' and
// %XX decoded, a key without value undefined, a repeated key a list.
func decodeURLEncoded(data string) map[string]any {
	res := map[string]any{}
	if data == "" {
		return res
	}
	unescape := func(s string) string {
		s = strings.ReplaceAll(s, "+", " ")
		return pctRe.ReplaceAllStringFunc(s, func(m string) string {
			n, _ := strconv.ParseUint(m[1:], 16, 8)
			return string([]byte{byte(n)})
		})
	}
	for _, kv := range strings.FieldsFunc(data, func(r rune) bool { return r == '&' || r == ';' }) {
		parts := strings.Split(kv, "=")
		for len(parts) > 1 && parts[len(parts)-1] == "" { // Perl's split drops trailing empty fields
			parts = parts[:len(parts)-1]
		}
		k := unescape(parts[0])
		if len(parts) < 2 {
			res[k] = nil
			continue
		}
		v := unescape(parts[1])
		switch old := res[k].(type) {
		case nil:
			res[k] = v
		case []any:
			res[k] = append(old, v)
		default:
			res[k] = []any{old, v}
		}
	}
	return res
}

var pctRe = regexp.MustCompile(`%[0-9a-fA-F]{2}`)

// extractParams is extract_params: a JSON or form body for POST and PUT, the query string
// over it, and ExtJS's _dc cache buster dropped.
func extractParams(req *request, body []byte) (map[string]any, error) {
	params := map[string]any{}
	if req.Method == "POST" || req.Method == "PUT" {
		ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
		if ct == "application/json" {
			dec := json.NewDecoder(strings.NewReader(string(body)))
			dec.UseNumber()
			var obj any
			if err := dec.Decode(&obj); err != nil {
				return nil, fmt.Errorf("malformed JSON string: %v", err)
			}
			m, ok := obj.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("Not a HASH reference")
			}
			params = m
		} else {
			params = decodeURLEncoded(string(body))
		}
	}
	for k, v := range decodeURLEncoded(req.URL.RawQuery) {
		params[k] = v
	}
	delete(params, "_dc")
	return params, nil
}

// findRoute is find_handler: path components (empty ones skipped) matched against the
// table; a content {volume} takes the rest of the path (Storage.pm's fragmentDelimiter ”).
func (n *Node) findRoute(method, rel string) (*route, map[string]string) {
	var comps []string
	for _, c := range strings.Split(rel, "/") {
		if c != "" {
			comps = append(comps, c)
		}
	}
	for _, r := range n.routes {
		if r.method != method {
			continue
		}
		vars := map[string]string{}
		ok := true
		for i, s := range r.segs {
			if i >= len(comps) {
				ok = false
				break
			}
			if strings.HasPrefix(s, "{") {
				name := s[1 : len(s)-1]
				if name == "volume" && i == len(r.segs)-1 {
					vars[name] = strings.Join(comps[i:], "/")
					comps = comps[:i+1]
					continue
				}
				if strings.ContainsAny(comps[i], " \t\n") {
					ok = false
					break
				}
				vars[name] = comps[i]
				continue
			}
			if s != comps[i] {
				ok = false
				break
			}
		}
		if ok && len(comps) == len(r.segs) {
			return r, vars
		}
	}
	return nil, nil
}

var absURIRe = regexp.MustCompile(`^/api2/+([a-z][a-z0-9]+)(/.*)?$`)

// serveAPI answers /api2/…: authentication (auth_handler), the body checks that follow it,
// then rest_handler and the formatter.
func (n *Node) serveAPI(req *request, path string) *response {
	m := absURIRe.FindStringSubmatch(path)
	if m == nil {
		return rawError(http.StatusNotImplemented, "no such uri")
	}
	format, rel := m[1], m[2]
	if rel == "" {
		rel = "/"
	}
	auth, aerr := n.c.access.authenticate(req, rel, n.c.o.Release)
	if aerr != nil {
		return &response{Code: aerr.Code, Message: aerr.Message, Delay: n.c.authDelay()}
	}
	if req.bodyLen > 0 {
		if req.Method != "PUT" && req.Method != "POST" {
			return rawError(http.StatusNotImplemented, fmt.Sprintf("Unexpected content for method '%s'", req.Method))
		}
		if req.bodyLen > maxPostSize {
			return rawError(http.StatusNotImplemented, "for data too large")
		}
		ctype := req.Header.Get("Content-Type")
		if ct, _, _ := mime.ParseMediaType(ctype); ctype != "" && ct != "application/x-www-form-urlencoded" && ct != "application/json" {
			return rawError(506, fmt.Sprintf("upload 'Content-Type '%s' not implemented", ctype))
		}
	}
	body, err := req.readBody()
	if err != nil {
		return &response{noAnswer: true}
	}
	if format != "json" && format != "extjs" {
		return rawError(http.StatusNotImplemented, fmt.Sprintf("no formatter for uri %s, %s", rel, format))
	}
	params, err := extractParams(req, body)
	if err != nil {
		return rawError(http.StatusInternalServerError, err.Error()+"\n")
	}
	r, vars := n.findRoute(req.Method, rel)
	if r == nil {
		return n.format(format, nil, 0, &apiError{Code: http.StatusNotImplemented, Message: fmt.Sprintf("Method '%s %s' not implemented", req.Method, rel)})
	}
	c := &call{n: n, c: n.c, req: req, user: auth.user, token: auth.token, params: params}
	data, err := n.run(c, r, vars, body)
	if fwd, ok := err.(forwarded); ok {
		return fwd.resp
	}
	resp := n.format(format, data, c.total, err)
	if resp.Code == http.StatusUnauthorized {
		resp.Delay = n.c.authDelay() // rest_handler's 401s wait too (POST /access/ticket)
	}
	return resp
}

// forwarded carries the answer of the node a call was proxied to.
type forwarded struct{ resp *response }

func (forwarded) Error() string { return "forwarded" }

// run is rest_handler plus RESTHandler::handle.
func (n *Node) run(c *call, r *route, vars map[string]string, body []byte) (any, error) {
	for _, k := range slices.Sorted(maps.Keys(c.params)) {
		if v, ok := vars[k]; ok {
			if s, _ := pveschema.Scalar(c.params[k]); s != v {
				return nil, paramErr(map[string]string{k: "duplicate parameter (already defined in URI) with conflicting values!"})
			}
		}
	}
	for k, v := range vars {
		c.params[k] = v
	}
	if c.token && r.info.AllowToken == 0 {
		return nil, permErr(fmt.Sprintf("URI '%s' not available with API token, need proper ticket.\n", strings.TrimPrefix(c.req.URL.Path, "/api2/json")))
	}
	if err := c.checkAPI2(r.info.Permissions); err != nil {
		return nil, err
	}
	if pt := r.info.ProxyTo; pt != "" {
		node := c.str(pt)
		if node != "localhost" && node != n.Name {
			other, err := n.c.nodeOf(node)
			if err != nil {
				return nil, err
			}
			if c.req.Header.Get("PVEDisableProxy") != "" {
				return nil, httpErr(http.StatusInternalServerError, "proxy loop detected")
			}
			return nil, forwarded{other.forward(c.req, body)}
		}
	}
	if err := validate(r, c.params); err != nil {
		return nil, err
	}
	return r.handler(c)
}

// forward is proxy_request: the call as the client made it, to the node's own pveproxy,
// marked so it is not proxied again.
func (n *Node) forward(orig *request, body []byte) *response {
	req := *orig
	req.Header = orig.Header.Clone()
	req.Header.Set("PVEDisableProxy", "true")
	req.body = strings.NewReader(string(body))
	req.bodyRead = false
	return n.serveAPI(&req, req.URL.Path)
}

const jsonContentType = "application/json;charset=UTF-8"

// format is the json and extjs formatters (Formatter/Standard.pm's prepare_response_data).
func (n *Node) format(format string, data any, total int, err error) *response {
	env := map[string]any{"data": data}
	code, msg := http.StatusOK, ""
	if err != nil {
		e := asAPIError(err)
		env["data"] = nil
		code, msg = e.Code, e.Message
		if len(e.Errors) > 0 {
			env["errors"] = e.Errors
		}
		env["message"] = msg
	} else if total != 0 {
		env["total"] = total
	}
	if format == "extjs" {
		env["success"] = 1
		if err != nil {
			env["success"] = 0
			env["status"] = code
			code, msg = http.StatusOK, ""
		}
	}
	b, jerr := json.Marshal(env)
	if jerr != nil {
		return rawError(http.StatusInternalServerError, jerr.Error())
	}
	return &response{Code: code, Message: msg, Header: http.Header{"Content-Type": {jsonContentType}}, Body: b}
}

// authDelay is how long 401 answers are held back (pveproxy: 3 s).
func (c *Cluster) authDelay() time.Duration { return c.o.AuthFailDelay }
