package pve

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/sim/pveschema"
)

// routeTable is every path and method the simulated pveproxy answers, each bound to its
// method in PVE's schema; anything else gets PVE's 501 "Method '…' not implemented".
func (c *Cluster) routeTable(n *Node) ([]*route, error) {
	var rs []*route
	rs = append(rs, c.clusterRoutes(n)...)
	rs = append(rs, c.accessRoutes()...)
	rs = append(rs, c.qemuRoutes(n)...)
	rs = append(rs, c.storageRoutes(n)...)
	rs = append(rs, c.taskRoutes(n)...)
	for _, r := range rs {
		info := c.schema[r.path][r.method]
		if info == nil {
			return nil, fmt.Errorf("sim/pve: %s %s is not in PVE's API schema", r.method, r.path)
		}
		r.info = info
		r.props = propsOf(toAny(info.Parameters.Properties))
		r.segs = strings.Split(strings.Trim(r.path, "/"), "/")
	}
	return rs, nil
}

func toAny(m map[string]map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Routes lists what a node serves.
func (c *Cluster) Routes(node string) []RouteInfo {
	var out []RouteInfo
	for _, r := range c.nodes[node].routes {
		out = append(out, RouteInfo{Method: r.method, Path: r.path})
	}
	return out
}

func (c *Cluster) clusterRoutes(n *Node) []*route {
	return []*route{
		{method: "GET", path: "/version", handler: func(call *call) (any, error) {
			v := c.o.Release
			rel := v
			if i := strings.LastIndexByte(v, '.'); i > 0 {
				rel = v[:i]
			}
			return map[string]any{"version": v, "release": rel, "repoid": "5e1bdd1c9c1ab"}, nil
		}},
		{method: "GET", path: "/cluster/status", handler: func(call *call) (any, error) {
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
		{method: "GET", path: "/cluster/resources", handler: func(call *call) (any, error) { return c.resources(call) }},
		{method: "GET", path: "/cluster/tasks", handler: func(call *call) (any, error) { return c.clusterTasks(call) }},
		{method: "GET", path: "/cluster/nextid", handler: func(call *call) (any, error) {
			used := c.allVMs()
			if call.has("vmid") {
				id := call.int("vmid")
				if _, ok := used[id]; ok {
					return nil, paramErr(map[string]string{"vmid": fmt.Sprintf("VM %d already exists", id)})
				}
				return call.str("vmid"), nil
			}
			for id := int64(100); id < 1000000; id++ {
				if _, ok := used[id]; !ok {
					return strconv.FormatInt(id, 10), nil // a string, as Perl serialises it
				}
			}
			return nil, httpErr(500, "unable to get any free VMID in range [100, 1000000]")
		}},
		{method: "GET", path: "/nodes", handler: func(call *call) (any, error) {
			var out []map[string]any
			for _, name := range c.names {
				out = append(out, map[string]any{"node": name, "status": "online", "cpu": 0.02, "maxcpu": 8, "mem": int64(4) << 30,
					"maxmem": int64(64) << 30, "uptime": 86400, "level": "", "id": "node/" + name, "type": "node"})
			}
			return out, nil
		}},
	}
}

func (c *Cluster) resources(call *call) (any, error) {
	typ := call.str("type")
	var out []map[string]any
	if typ == "" || typ == "vm" {
		for vmid, node := range c.allVMs() {
			if !call.holds(fmt.Sprintf("/vms/%d", vmid), "VM.Audit") {
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
		cfg, err := c.storageConfig()
		if err != nil {
			return nil, err
		}
		for _, node := range c.names {
			for _, sid := range slices.Sorted(maps.Keys(cfg)) {
				st := cfg[sid]
				if !st.OnNode(node) || st.Disabled {
					continue
				}
				if !call.holds("/storage/"+sid, "Datastore.Audit") && !call.holds("/storage/"+sid, "Datastore.AllocateSpace") {
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
			if !call.holds("/nodes/"+name, "Sys.Audit") {
				continue
			}
			out = append(out, map[string]any{"id": "node/" + name, "type": "node", "node": name, "status": "online", "cpu": 0.02,
				"maxcpu": 8, "mem": int64(4) << 30, "maxmem": int64(64) << 30, "disk": int64(10) << 30, "maxdisk": int64(100) << 30,
				"uptime": 86400, "level": "", "cgroup-mode": 2})
		}
	}
	return nonNil(out), nil
}

func (c *Cluster) accessRoutes() []*route {
	return []*route{
		{method: "POST", path: "/access/ticket", handler: func(call *call) (any, error) { return c.createTicket(call) }},
		{method: "GET", path: "/access/permissions", handler: func(call *call) (any, error) {
			cfg, err := c.access.config()
			if err != nil {
				return nil, err
			}
			who := call.user
			if call.has("userid") {
				who = call.str("userid")
			}
			owner, _, isToken := splitTokenID(who)
			if who != call.user && !(isToken && owner == call.user) {
				if err := call.check("/access", "Sys.Audit"); err != nil {
					return nil, err
				}
			}
			if p := call.str("path"); p != "" {
				return map[string]map[string]int{p: cfg.permissions(who, p)}, nil
			}
			return cfg.effectivePermissions(who), nil
		}},
	}
}

// createTicket is POST /access/ticket: check_user_enabled, then a ticket as password (its
// user or root@pam's), else the password; with path and privs only the check is answered.
// Every failure is the same 401 "authentication failure", as PVE hides which part failed.
func (c *Cluster) createTicket(call *call) (any, error) {
	user := call.str("username")
	if call.has("realm") {
		user += "@" + call.str("realm")
	}
	pw := call.str("password")
	fail := &apiError{Code: http.StatusUnauthorized, Message: "authentication failure\n"}
	cfg, err := c.access.config()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if cfg.checkUserEnabled(user, now) != nil {
		return nil, fail
	}
	if call.has("path") && call.has("privs") {
		ok := false
		if tu, err := c.access.keys.verifyTicket(pw, now); err == nil && tu == user {
			ok = true
		} else if c.access.checkPassword(user, pw) {
			ok = true
		}
		path := normalizePath(call.str("path"))
		privs := pveschema.SplitList(call.str("privs"))
		if !ok || path == "" || len(privs) == 0 {
			return nil, fail
		}
		perms := cfg.permissions(user, path)
		for _, p := range privs {
			if _, held := perms[p]; !held {
				return nil, fail
			}
		}
		return map[string]any{"username": user}, nil
	}
	if tu, err := c.access.keys.verifyTicket(pw, now); err == nil && (tu == "root@pam" || tu == user) {
		// a valid ticket renews itself; root@pam may create tickets for other users
	} else if !c.access.checkPassword(user, pw) {
		return nil, fail
	}
	ticket, err := c.access.keys.makeTicket(user, now)
	if err != nil {
		return nil, err
	}
	csrf, err := c.access.keys.makeCSRF(user, now)
	if err != nil {
		return nil, err
	}
	res := map[string]any{"username": user, "ticket": ticket, "CSRFPreventionToken": csrf, "cap": cfg.apiCapabilities(user)}
	if c.o.ClusterName != "" {
		if _, ok := cfg.permissions(user, "/")["Sys.Audit"]; ok {
			res["clustername"] = c.o.ClusterName
		}
	}
	return res, nil
}
