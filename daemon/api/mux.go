package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// MaxBody is pveproxy's $limit_max_post: larger non-multipart bodies are refused.
const MaxBody = 512 << 10

// ForwardedHeader marks a call one pvesnap forwarded to the pvesnap of the node it names. It
// can only stop a second forward; it never makes a node act for another. The front door
// removes it from any request whose mark does not prove it came from a node of the cluster.
const ForwardedHeader = "X-Pvesnap-Forwarded"

// Peer forwards a call to the pvesnap of another node.
type Peer interface {
	Forward(w http.ResponseWriter, r *http.Request, node string) error
}

// Options configure a Mux.
type Options struct {
	Authz       Authorizer
	PassThrough http.Handler // pveproxy
	Peer        Peer
	LocalNode   string
	Logger      *slog.Logger
	// Mark sets AnsweredHeader to this value on the answers of owned routes ("" = none).
	Mark string
}

// Mux dispatches /api2/{json,extjs} calls to owned routes and everything else to PassThrough.
type Mux struct {
	Options
	routes []*Route
	router chi.Router
}

// NewMux checks the table and builds the router; it refuses a table with any problem.
func NewMux(routes []*Route, o Options) (*Mux, error) {
	if errs := CheckTable(routes); len(errs) > 0 {
		return nil, fmt.Errorf("route table: %w", errors.Join(errs...))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Mux{Options: o, routes: routes}
	r := chi.NewRouter()
	for _, rt := range routes {
		for _, f := range []Format{JSON, ExtJS} {
			r.Method(rt.Method, "/api2/"+string(f)+rt.Path, m.handler(rt, f))
		}
	}
	r.NotFound(o.PassThrough.ServeHTTP)
	r.MethodNotAllowed(o.PassThrough.ServeHTTP)
	m.router = r
	return m, nil
}

// AnsweredHeader marks answers pvesnap gave itself (the rest come from pveproxy): operators
// and tests can tell who refused a call.
const AnsweredHeader = "X-Pvesnap"

func (m *Mux) mark(w http.ResponseWriter) {
	if m.Mark != "" {
		w.Header().Set(AnsweredHeader, m.Mark)
	}
}

// Routes returns the table (for docs and tests).
func (m *Mux) Routes() []*Route { return m.routes }

func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if FormatOf(r.URL.Path) == "" {
		m.PassThrough.ServeHTTP(w, r)
		return
	}
	m.router.ServeHTTP(w, r)
}

// BufferBody reads a request body of at most MaxBody bytes and makes it replayable, so a
// handler can decline late and the request still reaches pveproxy byte for byte.
func BufferBody(r *http.Request) ([]byte, error) {
	if r.GetBody != nil {
		rc, err := r.GetBody()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	if r.ContentLength > MaxBody {
		return nil, errTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBody {
		return nil, errTooLarge
	}
	r.Body.Close()
	r.ContentLength = int64(len(b))
	r.TransferEncoding = nil
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r.Body, _ = r.GetBody()
	return b, nil
}

// errTooLarge is pveproxy's answer to a body over $limit_max_post: 501 "for data too large".
var errTooLarge = &Error{Code: http.StatusNotImplemented, Message: "for data too large"}

// IsTooLarge reports whether err is the oversized-body refusal.
func IsTooLarge(err error) bool { return err == errTooLarge }

func (m *Mux) handler(rt *Route, f Format) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status := 0
		var who string
		defer func() {
			if status != 0 {
				m.Logger.Info("api call", "method", r.Method, "path", r.URL.Path, "user", who,
					"status", status, "duration", time.Since(start))
			}
		}()
		fail := func(err error) {
			e := AsError(err)
			status = e.Code
			m.mark(w)
			WriteError(w, f, e)
		}
		// A credential refused by the authorizer is pveproxy's 401 in every format.
		failAuth := func(err error) {
			if e := AsError(err); e.Code == http.StatusUnauthorized {
				status = e.Code
				m.mark(w)
				WriteUnauthorized(w, strings.SplitN(strings.TrimSpace(e.Message), "\n", 2)[0])
				return
			}
			fail(err)
		}
		rc := chi.RouteContext(r.Context())
		vars := map[string]string{}
		for i, k := range rc.URLParams.Keys {
			v, err := url.PathUnescape(rc.URLParams.Values[i])
			if err != nil || v == "" {
				// pveproxy answers malformed and empty segments itself (501 for "nodes//…").
				m.PassThrough.ServeHTTP(w, r)
				return
			}
			vars[k] = v
		}
		// pveproxy authenticates every call before anything else, a call for another node
		// included (pve-http-server's auth_handler runs before the handler is looked up), and
		// reads no body before; the authorizer holds back its own 401s like pveproxy (3 s).
		id := &Identity{}
		if rt.Permission.User != "world" {
			var err error
			if id, err = m.Authz.Authenticate(r); err != nil {
				failAuth(err)
				return
			}
		}
		who = id.Name()
		if r.Method == http.MethodGet || r.Method == http.MethodDelete {
			if r.ContentLength > 0 || len(r.TransferEncoding) > 0 {
				fail(Errorf(http.StatusNotImplemented, "Unexpected content for method '%s'", r.Method))
				return
			}
		}
		body, err := BufferBody(r)
		if err != nil {
			if IsTooLarge(err) {
				fail(err)
			} else {
				fail(Errorf(http.StatusBadRequest, "reading request body: %v", err))
			}
			return
		}
		raw, perr := readParams(r, body, vars)
		if perr != nil {
			if rt.Intercept {
				m.PassThrough.ServeHTTP(w, r)
				return
			}
			fail(perr)
			return
		}
		c := &Call{Ctx: r.Context(), R: r, W: w, Format: f, Route: rt, Auth: id, Body: body, authz: m.Authz}
		// check is the route's declared permission on its path filled from params.
		check := func(params Params) bool {
			if rt.Permission.Path == "" {
				return true
			}
			path, err := expandPath(rt.Permission.Path, params)
			if err == nil {
				if rt.Permission.Any {
					err = c.CheckAny(path, rt.Permission.Privs...)
				} else {
					err = c.Check(path, rt.Permission.Privs...)
				}
			}
			if err != nil {
				if rt.Intercept && AsError(err).Code == http.StatusForbidden {
					// Not ours to allow: pveproxy applies its own rules and gives its own answer.
					m.PassThrough.ServeHTTP(w, r)
					return false
				}
				failAuth(err)
				return false
			}
			return true
		}
		if rt.ProxyTo != "" && vars[rt.ProxyTo] != m.LocalNode {
			// As pveproxy's rest_handler: the declared permission is checked with the call's
			// parameters as they came, then the call goes to its node, which validates them
			// and checks again.
			unchecked := Params{}
			for k, v := range raw {
				unchecked[k] = scalarString(v)
			}
			if check(unchecked) {
				m.forward(w, r, rt, vars[rt.ProxyTo], fail)
			}
			return
		}
		params, perr := validate(rt.Params, raw)
		if perr != nil {
			if rt.Intercept {
				m.PassThrough.ServeHTTP(w, r)
				return
			}
			fail(perr)
			return
		}
		c.Params = params
		if !check(params) {
			return
		}
		data, err := m.call(c)
		if errors.Is(err, ErrPassThrough) {
			if r.GetBody != nil {
				r.Body, _ = r.GetBody()
			}
			m.PassThrough.ServeHTTP(w, r)
			return
		}
		if err != nil {
			m.Logger.Debug("api call failed", "method", r.Method, "path", r.URL.Path, "err", err)
			fail(err)
			return
		}
		status = http.StatusOK
		m.mark(w)
		WriteData(w, f, data)
	}
}

// call runs the handler, turning a panic into a 500 so one bad call cannot take the daemon down.
func (m *Mux) call(c *Call) (data any, err error) {
	defer func() {
		if p := recover(); p != nil {
			m.Logger.Error("handler panic", "route", c.Route.Method+" "+c.Route.Path, "panic", fmt.Sprint(p))
			err = Errorf(http.StatusInternalServerError, "internal error in %s", c.Route.Name)
		}
	}()
	return c.Route.Handler(c)
}

func (m *Mux) forward(w http.ResponseWriter, r *http.Request, rt *Route, node string, fail func(error)) {
	if r.Header.Get(ForwardedHeader) != "" {
		fail(Errorf(http.StatusInternalServerError,
			"request for node '%s' was forwarded to node '%s': refusing to act for another node", node, m.LocalNode))
		return
	}
	if m.Peer == nil {
		fail(Errorf(http.StatusServiceUnavailable, "no route to pvesnap on node '%s'", node))
		return
	}
	err := m.Peer.Forward(w, r, node)
	if err == nil {
		return
	}
	if rt.Intercept && errors.Is(err, ErrUpstream) {
		// No pvesnap there: pveproxy forwards the call to that node's pveproxy itself.
		if r.GetBody != nil {
			r.Body, _ = r.GetBody()
		}
		m.PassThrough.ServeHTTP(w, r)
		return
	}
	fail(err)
}

// PathOf returns the API path of a request without the /api2/<format> prefix.
func PathOf(urlPath string) string {
	for _, p := range []string{"/api2/json", "/api2/extjs"} {
		if strings.HasPrefix(urlPath, p+"/") {
			return urlPath[len(p):]
		}
	}
	return urlPath
}
