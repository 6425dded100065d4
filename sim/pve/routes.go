package pve

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/pve"
)

// routes is every path and method the simulated pveproxy answers; anything else gets PVE's
// 501 "Method '…' not implemented".
func (c *Cluster) routes(n *Node) []*api.Route {
	var rs []*api.Route
	rs = append(rs, c.clusterRoutes(n)...)
	rs = append(rs, c.accessRoutes(n)...)
	rs = append(rs, c.qemuRoutes(n)...)
	rs = append(rs, c.storageRoutes(n)...)
	rs = append(rs, c.taskRoutes(n)...)
	return rs
}

// Routes returns the route table of a node (schema tests walk it).
func (c *Cluster) Routes(node string) []*api.Route { return c.nodes[node].mux.Routes() }

func (c *Cluster) clusterRoutes(n *Node) []*api.Route {
	return []*api.Route{
		{Method: "GET", Path: "/version", Name: "version", Description: "API version details, including some parts of the global datacenter config.",
			Permission: api.Permission{User: "all", Description: "any authenticated user"},
			Returns:    api.Returns{Type: "object", Properties: map[string]string{"version": "string", "release": "string", "repoid": "string"}},
			Handler: func(call *api.Call) (any, error) {
				v := c.o.Release
				rel := v
				if i := strings.LastIndexByte(v, '.'); i > 0 {
					rel = v[:i]
				}
				return map[string]any{"version": v, "release": rel, "repoid": "5e1bdd1c9c1ab"}, nil
			}},
		{Method: "GET", Path: "/cluster/status", Name: "get_status", Description: "Get cluster status information.",
			Permission: api.Permission{Path: "/", Privs: []string{"Sys.Audit"}},
			Returns:    api.Returns{Type: "array", Properties: map[string]string{"type": "string", "id": "string", "name": "string", "nodes": "integer", "version": "integer", "quorate": "boolean", "nodeid": "integer", "ip": "string", "local": "boolean", "online": "boolean", "level": "string"}},
			Handler: func(call *api.Call) (any, error) {
				var out []map[string]any
				if c.o.ClusterName != "" {
					out = append(out, map[string]any{"type": "cluster", "id": "cluster", "name": c.o.ClusterName, "nodes": len(c.names), "version": 2, "quorate": 1})
				}
				for i, name := range c.names {
					nodeid := i + 1
					if c.o.ClusterName == "" {
						nodeid = 0
					}
					out = append(out, map[string]any{"type": "node", "id": "node/" + name, "name": name, "nodeid": nodeid,
						"ip": c.nodes[name].IP, "local": boolInt(name == n.Name), "online": 1, "level": ""})
				}
				return out, nil
			}},
		{Method: "GET", Path: "/cluster/resources", Name: "resources", Description: "Resources index (cluster wide).",
			Permission: api.Permission{User: "all", Description: "any authenticated user; entries are filtered by VM.Audit, Datastore.Audit and Sys.Audit"},
			Params:     []api.Param{{Name: "type", Type: api.String, Optional: true, Enum: []string{"vm", "storage", "node", "sdn"}, Description: "Resource type."}},
			Returns: api.Returns{Type: "array", Properties: map[string]string{"id": "string", "type": "string", "vmid": "integer", "node": "string",
				"name": "string", "status": "string", "storage": "string", "plugintype": "string", "shared": "integer", "content": "string",
				"disk": "integer", "maxdisk": "integer", "maxcpu": "number", "maxmem": "integer", "mem": "integer", "cpu": "number",
				"uptime": "integer", "template": "integer", "lock": "string", "tags": "string", "pool": "string", "level": "string"}},
			Handler: func(call *api.Call) (any, error) { return c.resources(call) }},
		{Method: "GET", Path: "/cluster/nextid", Name: "nextid", Description: "Get next free VMID. Pass a VMID to assert that its free (at time of check).",
			Permission: api.Permission{User: "all", Description: "any authenticated user"},
			Params:     []api.Param{{Name: "vmid", Type: api.Integer, Optional: true, Minimum: api.Min(100), Maximum: api.Max(999999999), Description: "The (unique) ID of the VM."}},
			Returns:    api.Returns{Type: "integer", Description: "The next free VMID."},
			Handler: func(call *api.Call) (any, error) {
				used := c.allVMs()
				if call.Params.Has("vmid") {
					id := call.Params.Int("vmid")
					if _, ok := used[id]; ok {
						return nil, api.ParamErr("vmid", fmt.Sprintf("VM %d already exists", id))
					}
					return strconv.FormatInt(id, 10), nil
				}
				for id := int64(100); id < 1000000; id++ {
					if _, ok := used[id]; !ok {
						return strconv.FormatInt(id, 10), nil // a string, as Perl serialises it
					}
				}
				return nil, httpStatus("unable to get any free VMID in range [100, 999999]")
			}},
		{Method: "GET", Path: "/nodes", Name: "index", Description: "Cluster node index.",
			Permission: api.Permission{User: "all", Description: "any authenticated user"},
			Returns:    api.Returns{Type: "array", Properties: map[string]string{"node": "string", "status": "string", "cpu": "number", "maxcpu": "integer", "mem": "integer", "maxmem": "integer", "uptime": "integer", "level": "string", "ssl_fingerprint": "string"}},
			Handler: func(call *api.Call) (any, error) {
				var out []map[string]any
				for _, name := range c.names {
					out = append(out, map[string]any{"node": name, "status": "online", "cpu": 0.02, "maxcpu": 8, "mem": int64(4) << 30,
						"maxmem": int64(64) << 30, "uptime": 86400, "level": "", "id": "node/" + name, "type": "node"})
				}
				return out, nil
			}},
	}
}

func (c *Cluster) resources(call *api.Call) (any, error) {
	typ := call.Params.Str("type")
	var out []map[string]any
	if typ == "" || typ == "vm" {
		for vmid, node := range c.allVMs() {
			if ok, _ := call.Has(fmt.Sprintf("/vms/%d", vmid), "VM.Audit"); !ok {
				continue
			}
			cfg, err := c.readVM(node, vmid)
			if err != nil {
				continue
			}
			s := c.vmStatus(vmid, cfg)
			delete(s, "qmpstatus")
			s["disk"] = int64(0)
			s["id"] = fmt.Sprintf("qemu/%d", vmid)
			s["type"] = "qemu"
			s["node"] = node
			s["maxcpu"] = s["cpus"]
			delete(s, "cpus")
			if _, ok := s["template"]; !ok {
				s["template"] = 0
			}
			out = append(out, s)
		}
	}
	if typ == "" || typ == "storage" {
		cfg, _, err := c.storageConfig()
		if err != nil {
			return nil, err
		}
		for _, node := range c.names {
			for _, sid := range sortedNames(cfg) {
				st := cfg[sid]
				if !st.OnNode(node) || st.Disabled {
					continue
				}
				if ok, _ := anyPriv(call, "/storage/"+sid, "Datastore.Audit", "Datastore.AllocateSpace"); !ok {
					continue
				}
				s := c.storageStatus(node, st)
				out = append(out, map[string]any{"id": "storage/" + node + "/" + sid, "type": "storage", "storage": sid, "node": node,
					"plugintype": st.Type, "status": "available", "shared": boolInt(st.Shared), "content": strings.Join(st.Content, ","),
					"disk": s["used"], "maxdisk": s["total"]})
			}
		}
	}
	if typ == "" || typ == "node" {
		for _, name := range c.names {
			if ok, _ := call.Has("/nodes/"+name, "Sys.Audit"); !ok {
				continue
			}
			out = append(out, map[string]any{"id": "node/" + name, "type": "node", "node": name, "status": "online", "cpu": 0.02,
				"maxcpu": 8, "mem": int64(4) << 30, "maxmem": int64(64) << 30, "disk": int64(10) << 30, "maxdisk": int64(100) << 30,
				"uptime": 86400, "level": "", "cgroup-mode": 2})
		}
	}
	return nonNil(out), nil
}

func (c *Cluster) accessRoutes(n *Node) []*api.Route {
	return []*api.Route{
		{Method: "POST", Path: "/access/ticket", Name: "create_ticket", Description: "Create or verify authentication ticket.",
			Permission: api.Permission{User: "world", Description: "You need to pass valid credientials."},
			Params: []api.Param{
				{Name: "username", Type: api.String, MaxLength: 64, Description: "User name"},
				{Name: "password", Type: api.String, Description: "The secret password. This can also be a valid ticket."},
				{Name: "realm", Type: api.String, Optional: true, MaxLength: 32, Description: "You can optionally pass the realm using this parameter."},
				{Name: "otp", Type: api.String, Optional: true, Description: "One-time password for Two-factor authentication."},
				{Name: "path", Type: api.String, Optional: true, MaxLength: 64, Description: "Verify ticket, and check if user have access 'privs' on 'path'"},
				{Name: "privs", Type: api.String, Optional: true, MaxLength: 64, Description: "Verify ticket, and check if user have access 'privs' on 'path'"},
				{Name: "new-format", Type: api.Boolean, Optional: true, Description: "This parameter is now ignored and assumed to be 1."},
				{Name: "tfa-challenge", Type: api.String, Optional: true, Description: "The signed TFA challenge string the user wants to respond to."}},
			Returns: api.Returns{Type: "object", Properties: map[string]string{"username": "string", "ticket": "string", "CSRFPreventionToken": "string", "clustername": "string", "cap": "object"}},
			Handler: func(call *api.Call) (any, error) { return c.createTicket(call) }},
		{Method: "GET", Path: "/access/permissions", Name: "permissions", Description: "Retrieve effective permissions of given user/token.",
			Permission: api.Permission{User: "all", Description: "Each user/token is allowed to dump their own permissions (or that of owned tokens). A user can dump the permissions of another user or their tokens if they have 'Sys.Audit' permission on /access."},
			Params: []api.Param{
				{Name: "userid", Type: api.String, Optional: true, Description: "User ID or full API token ID"},
				{Name: "path", Type: api.String, Optional: true, MaxLength: 256, Description: "Only dump this specific path, not the whole tree."}},
			Returns: api.Returns{Type: "object"},
			Handler: func(call *api.Call) (any, error) {
				cfg, err := c.access.config()
				if err != nil {
					return nil, err
				}
				me := call.Auth.Name()
				who := call.Params.Str("userid")
				if who == "" {
					who = me
				}
				owner, _, _ := strings.Cut(who, "!")
				if who != me && owner != me {
					if err := call.Check("/access", "Sys.Audit"); err != nil {
						return nil, err
					}
				}
				if _, ok := cfg.users[owner]; !ok && owner != "root@pam" {
					return nil, httpStatus("user '%s' does not exist", owner)
				}
				res := map[string]map[string]int{}
				paths := cfg.effectivePaths()
				if p := call.Params.Str("path"); p != "" {
					paths = []string{p}
				}
				for _, p := range paths {
					perms := cfg.permissions(who, normPath(p))
					if len(perms) == 0 && call.Params.Str("path") == "" {
						continue
					}
					m := map[string]int{}
					for k, prop := range perms {
						m[k] = boolInt(prop)
					}
					res[p] = m
				}
				return res, nil
			}},
	}
}

func (c *Cluster) createTicket(call *api.Call) (any, error) {
	user := call.Params.Str("username")
	if r := call.Params.Str("realm"); r != "" && !strings.Contains(user, "@") {
		user += "@" + r
	}
	pw := call.Params.Str("password")
	fail := func() (any, error) {
		if d := c.access.delay; d > 0 {
			time.Sleep(d)
		}
		return nil, api.Unauthorized("authentication failure")
	}
	cfg, err := c.access.config()
	if err != nil {
		return nil, err
	}
	u, ok := cfg.users[user]
	if !ok || !u.enabled || !pve.ValidUserID(user) {
		return fail()
	}
	if strings.HasPrefix(pw, "PVE:") { // ticket renewal: the password is a valid ticket
		tu, ok := c.access.verifyTicket(pw, time.Now())
		if !ok || (tu != user && tu != "root@pam") {
			return fail()
		}
	} else if !c.access.checkPassword(user, pw) {
		return fail()
	}
	if p := call.Params.Str("path"); p != "" {
		perms := cfg.permissions(user, normPath(p))
		for _, priv := range splitComma(call.Params.Str("privs")) {
			if _, ok := perms[priv]; !ok {
				return fail()
			}
		}
		return map[string]any{"username": user}, nil
	}
	ticket, csrf, err := c.Ticket(user)
	if err != nil {
		return nil, err
	}
	res := map[string]any{"username": user, "ticket": ticket, "CSRFPreventionToken": csrf, "cap": c.caps(cfg, user)}
	if c.o.ClusterName != "" {
		res["clustername"] = c.o.ClusterName
	}
	return res, nil
}

// caps are the GUI capabilities returned with a ticket (what Ext.state 'GuiCap' holds).
func (c *Cluster) caps(cfg *accessConfig, user string) map[string]map[string]int {
	groups := map[string]string{"vms": "/vms", "storage": "/storage", "nodes": "/nodes", "access": "/access", "dc": "/", "sdn": "/sdn", "mapping": "/mapping"}
	out := map[string]map[string]int{}
	for g, p := range groups {
		m := map[string]int{}
		for priv := range cfg.permissions(user, p) {
			m[priv] = 1
		}
		out[g] = m
	}
	return out
}
