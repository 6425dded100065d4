package arrays

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/pure"
)

// Module serves /cluster/pvesnap/arrays: the arrays' settings are cluster-wide, so any node
// answers. Reading needs Sys.Audit on /, changing Sys.Modify on / (as for /storage).
type Module struct {
	Config *Config
	Node   NodePaths
	Logger *slog.Logger
	// Timeout bounds a connection test.
	Timeout time.Duration
}

var (
	idParam       = api.Param{Name: "array", Type: api.String, Check: CheckID, Description: "The array ID (as in arrays.cfg)."}
	endpointParam = api.Param{Name: "endpoint", Type: api.String, MaxLength: 256, Description: "Management address of the array: https://<host>[:port]."}
	tokenParam    = api.Param{Name: "token", Type: api.String, MaxLength: 256, Description: "API token of an array user (kept in /etc/pve/priv/pvesnap, never returned)."}
	caParam       = api.Param{Name: "ca", Type: api.String, Optional: true, MaxLength: 4096, Description: "PEM file of the CA (or self-signed certificate) the array's TLS certificate must chain to. Default: the system's CAs."}
	hgParam       = api.Param{Name: "hostgroup", Type: api.String, Optional: true, MaxLength: 63, Description: "Host group to connect restored volumes to. Default: the array host that holds the node's initiators."}
	commentParam  = api.Param{Name: "comment", Type: api.String, Optional: true, MaxLength: 4096, Description: "Description."}
	disableParam  = api.Param{Name: "disable", Type: api.Boolean, Optional: true, Description: "Flag to disable the array."}
)

var arrayProps = map[string]string{"array": "string", "type": "string", "endpoint": "string", "ca": "string",
	"hostgroup": "string", "comment": "string", "disable": "boolean", "digest": "string"}

func (m *Module) view(a Array, digest string) map[string]any {
	out := map[string]any{"array": a.ID, "type": a.Type, "endpoint": a.Endpoint, "digest": digest}
	for k, v := range map[string]string{"ca": a.CA, "hostgroup": a.HostGroup, "comment": a.Comment} {
		if v != "" {
			out[k] = v
		}
	}
	if a.Disable {
		out["disable"] = 1
	}
	return out
}

func notFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return api.Errorf(http.StatusNotFound, "%v", err)
	}
	return err
}

// Routes are the array management calls.
func (m *Module) Routes() []*api.Route {
	audit := api.Permission{Path: "/", Privs: []string{"Sys.Audit"}}
	modify := api.Permission{Path: "/", Privs: []string{"Sys.Modify"}}
	return []*api.Route{
		{Method: "GET", Path: "/cluster/pvesnap/arrays", Name: "index", Description: "List the configured storage arrays.",
			Permission: audit, Returns: api.Returns{Type: "array", Properties: arrayProps},
			Handler: func(c *api.Call) (any, error) {
				all, err := m.Config.List()
				if err != nil {
					return nil, err
				}
				digest := m.Config.Digest()
				out := []map[string]any{}
				for _, a := range all {
					out = append(out, m.view(a, digest))
				}
				return out, nil
			}},
		{Method: "POST", Path: "/cluster/pvesnap/arrays", Name: "create",
			Description: "Add a storage array. Unless check is 0, pvesnap logs in with the token first and refuses an array it cannot reach.",
			Permission:  modify, Protected: true,
			Params: []api.Param{idParam, {Name: "type", Type: api.String, Enum: []string{TypeFlashArray}, Description: "Array type."},
				endpointParam, tokenParam, caParam, hgParam, commentParam, disableParam,
				{Name: "check", Type: api.Boolean, Optional: true, Default: true, Description: "Log in to the array before saving."}},
			Returns: api.Returns{Type: "null"},
			Handler: func(c *api.Call) (any, error) {
				p := c.Params
				a := Array{ID: p.Str("array"), Type: p.Str("type"), Endpoint: strings.TrimRight(p.Str("endpoint"), "/"), CA: p.Str("ca"),
					HostGroup: p.Str("hostgroup"), Comment: p.Str("comment"), Disable: p.Bool("disable")}
				if err := a.Validate(); err != nil {
					return nil, api.Errorf(http.StatusBadRequest, "%v", err)
				}
				if !p.Has("check") || p.Bool("check") {
					if _, err := m.probe(c.Ctx, a, p.Str("token")); err != nil {
						return nil, api.Errorf(http.StatusBadRequest, "array %s not added: %v", a.ID, err)
					}
				}
				if err := m.Config.Add(a, p.Str("token")); err != nil {
					return nil, api.Errorf(http.StatusBadRequest, "%v", err)
				}
				m.Logger.Info("array added", "array", a.ID, "endpoint", a.Endpoint, "user", c.Auth.Name())
				return nil, nil
			}},
		{Method: "GET", Path: "/cluster/pvesnap/arrays/{array}", Name: "read", Description: "Read an array's settings (never its token).",
			Permission: audit, Params: []api.Param{idParam}, Returns: api.Returns{Type: "object", Properties: arrayProps},
			Handler: func(c *api.Call) (any, error) {
				a, err := m.Config.Get(c.Params.Str("array"))
				if err != nil {
					return nil, notFound(err)
				}
				return m.view(a, m.Config.Digest()), nil
			}},
		{Method: "PUT", Path: "/cluster/pvesnap/arrays/{array}", Name: "update", Description: "Change an array's settings or token.",
			Permission: modify, Protected: true,
			Params: []api.Param{idParam, opt(endpointParam), opt(tokenParam), caParam, hgParam, commentParam, disableParam,
				{Name: "delete", Type: api.String, Optional: true, MaxLength: 4096, Description: "A list of settings you want to delete (ca, hostgroup, comment, disable)."},
				{Name: "digest", Type: api.String, Optional: true, MaxLength: 40, Description: "Prevent changes if the file has a different digest."}},
			Returns: api.Returns{Type: "null"},
			Handler: func(c *api.Call) (any, error) {
				p := c.Params
				deletes := strings.FieldsFunc(p.Str("delete"), func(r rune) bool { return r == ',' || r == ';' || r == ' ' })
				for _, d := range deletes {
					if d != "ca" && d != "hostgroup" && d != "comment" && d != "disable" {
						return nil, api.ParamErr("delete", fmt.Sprintf("cannot delete '%s'", d))
					}
				}
				err := m.Config.Update(p.Str("array"), p.Str("digest"), func(a *Array) {
					for _, d := range deletes {
						switch d {
						case "ca":
							a.CA = ""
						case "hostgroup":
							a.HostGroup = ""
						case "comment":
							a.Comment = ""
						case "disable":
							a.Disable = false
						}
					}
					if p.Has("endpoint") {
						a.Endpoint = strings.TrimRight(p.Str("endpoint"), "/")
					}
					if p.Has("ca") {
						a.CA = p.Str("ca")
					}
					if p.Has("hostgroup") {
						a.HostGroup = p.Str("hostgroup")
					}
					if p.Has("comment") {
						a.Comment = p.Str("comment")
					}
					if p.Has("disable") {
						a.Disable = p.Bool("disable")
					}
				}, p.Str("token"))
				if err != nil {
					if errors.Is(err, ErrNotFound) {
						return nil, notFound(err)
					}
					return nil, api.Errorf(http.StatusBadRequest, "%v", err)
				}
				m.Logger.Info("array updated", "array", p.Str("array"), "token_changed", p.Str("token") != "", "user", c.Auth.Name())
				return nil, nil
			}},
		{Method: "DELETE", Path: "/cluster/pvesnap/arrays/{array}", Name: "delete",
			Description: "Remove an array from pvesnap's configuration (nothing on the array is touched).",
			Permission:  modify, Protected: true, Params: []api.Param{idParam}, Returns: api.Returns{Type: "null"},
			Handler: func(c *api.Call) (any, error) {
				if err := m.Config.Remove(c.Params.Str("array")); err != nil {
					return nil, notFound(err)
				}
				m.Logger.Info("array removed", "array", c.Params.Str("array"), "user", c.Auth.Name())
				return nil, nil
			}},
		{Method: "GET", Path: "/cluster/pvesnap/arrays/{array}/status", Name: "status",
			Description: "Log in to the array and report what pvesnap sees: REST version, array identity, and where this node's volumes would be connected.",
			Permission:  audit, Params: []api.Param{idParam},
			Returns: api.Returns{Type: "object", Properties: map[string]string{"array": "string", "rest_version": "string",
				"array_name": "string", "array_id": "string", "purity": "string", "target": "string", "target_error": "string"}},
			Handler: func(c *api.Call) (any, error) {
				a, err := m.Config.Get(c.Params.Str("array"))
				if err != nil {
					return nil, notFound(err)
				}
				tok, err := m.Config.Token(a.ID)
				if err != nil {
					return nil, err
				}
				return m.probe(c.Ctx, a, tok)
			}},
	}
}

func opt(p api.Param) api.Param { p.Optional = true; return p }

// Status is what a connection test reports.
type Status struct {
	Array       string `json:"array"`
	RESTVersion string `json:"rest_version"`
	ArrayName   string `json:"array_name"`
	ArrayID     string `json:"array_id"`
	Purity      string `json:"purity"`
	Target      string `json:"target,omitempty"`
	TargetError string `json:"target_error,omitempty"`
}

func (m *Module) probe(ctx context.Context, a Array, token string) (*Status, error) {
	return Check(ctx, a, token, m.Node, m.Timeout, m.Logger)
}

// Check logs in to an array with token (within timeout, 30 s when 0) and reports what
// pvesnap sees of it, then logs out.
func Check(ctx context.Context, a Array, token string, node NodePaths, timeout time.Duration, logger *slog.Logger) (*Status, error) {
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := pure.New(a.Endpoint, token, pure.Options{CAFile: a.CA, Timeout: timeout, Logger: logger})
	if err != nil {
		return nil, err
	}
	defer c.Logout(context.WithoutCancel(ctx))
	return Probe(ctx, c, a, node)
}

// Probe reports what pvesnap sees of an array through c.
func Probe(ctx context.Context, c *pure.Client, a Array, node NodePaths) (*Status, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return nil, err
	}
	arrs, err := c.Arrays(ctx)
	if err != nil {
		return nil, err
	}
	if len(arrs) != 1 {
		return nil, fmt.Errorf("array %s: GET /arrays returned %d items", a.ID, len(arrs))
	}
	st := &Status{Array: a.ID, RESTVersion: v, ArrayName: arrs[0].Name, ArrayID: arrs[0].ID, Purity: arrs[0].Version}
	if t, err := Target(ctx, c, a, node); err != nil {
		st.TargetError = err.Error()
	} else {
		st.Target = t.String()
	}
	return st, nil
}
