package itest

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// authEntry describes how to call one owned route and what PVE's rules say about it.
type authEntry struct {
	// path builds the request path and parameters for a fresh call (targets must be unique).
	call func(e *Env, n int) (path string, params url.Values)
	// acl is the ACL path and privilege the route needs ("" path: any authenticated user).
	aclPath, priv string
	// deniedCode/deniedMsg is the answer without the privilege.
	deniedCode int
	deniedMsg  string
	// poolable: the ACL path is a VM or storage, which pools can grant.
	poolable bool
	// role grants priv.
	role string
	// codeChecked: the handler checks several privileges on several paths; only the
	// credential cases, a user without any and an administrator are tried.
	codeChecked bool
	// asNode: the route is another node's pvesnap's; every client presents that node's
	// certificate, as the node's pvesnap calls it on a user's behalf.
	asNode string
}

var seq atomic.Int64

// authMatrix has one entry per route pvesnap owns; TestAuthMatrix fails for a route without.
func authMatrix() map[string]authEntry {
	volume := func(e *Env, n int) string {
		name := fmt.Sprintf("vm-100-disk-%d", 100+n)
		e.Sim.Store("pve1", "local-zfs").Create(name, 1<<20, volMeta())
		return name
	}
	task := func(e *Env, n int) string {
		st, err := e.Tasks["pve1"].Start(t0ctx(), jobSleep(2))
		if err != nil {
			panic(err)
		}
		return st.UPID
	}
	audit := func(path string) authEntry {
		return authEntry{call: func(e *Env, n int) (string, url.Values) { return path, nil }, aclPath: "/", priv: "Sys.Audit",
			role: "PVEAuditor", deniedCode: 403, deniedMsg: "Permission check failed (/, Sys.Audit)"}
	}
	modify := func(call func(e *Env, n int) (string, url.Values)) authEntry {
		return authEntry{call: call, aclPath: "/", priv: "Sys.Modify", role: "Administrator", deniedCode: 403,
			deniedMsg: "Permission check failed (/, Sys.Modify)"}
	}
	arrayAt := func(e *Env, n int) string { return "/cluster/pvesnap/arrays/" + labArray(e, n) }
	statusEntry := audit("")
	statusEntry.call = func(e *Env, n int) (string, url.Values) { return arrayAt(e, n) + "/status", nil }
	readEntry := audit("")
	readEntry.call = func(e *Env, n int) (string, url.Values) { return arrayAt(e, n), nil }
	return map[string]authEntry{
		"GET /nodes/{node}/pvesnap/vms": {
			// Any user may call; the list is filtered by VM.Audit (TestInventoryAPI).
			call: func(e *Env, n int) (string, url.Values) { e.inventoryVM(); return "/nodes/pve1/pvesnap/vms", nil }},
		"GET /nodes/{node}/pvesnap/storages": {
			call: func(e *Env, n int) (string, url.Values) { e.inventoryVM(); return "/nodes/pve1/pvesnap/storages", nil }},
		"GET /nodes/{node}/pvesnap/devices": {
			call:    func(e *Env, n int) (string, url.Values) { e.inventoryVM(); return "/nodes/pve1/pvesnap/devices", nil },
			aclPath: "/nodes/pve1", priv: "Sys.Audit", role: "PVEAuditor",
			deniedCode: 403, deniedMsg: "Permission check failed (/nodes/pve1, Sys.Audit)"},
		"GET /nodes/{node}/pvesnap/vms/{vmid}": {
			call:    func(e *Env, n int) (string, url.Values) { e.inventoryVM(); return "/nodes/pve1/pvesnap/vms/100", nil },
			aclPath: "/vms/100", priv: "VM.Audit", role: "PVEAuditor", poolable: true,
			deniedCode: 403, deniedMsg: "Permission check failed (/vms/100, VM.Audit)"},
		"POST /nodes/{node}/pvesnap/vms/{vmid}/snapshot": {
			call: func(e *Env, n int) (string, url.Values) {
				e.inventoryVM()
				return "/nodes/pve1/pvesnap/vms/100/snapshot", url.Values{"suffix": {fmt.Sprintf("m%d", n)}}
			},
			aclPath: "/vms/100", priv: "VM.Snapshot", role: "PVEVMAdmin", poolable: true,
			deniedCode: 403, deniedMsg: "Permission check failed (/vms/100, VM.Snapshot)"},
		"POST /nodes/{node}/pvesnap/restore": {
			call: func(e *Env, n int) (string, url.Values) {
				e.inventoryVM()
				_, err := e.fa.Array.SnapshotVolumes(fmt.Sprintf("p%d", n), "pve-san1")
				must(e.T, err)
				return "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {fmt.Sprintf("fa1:p%d", n)}, "mode": {"new"}}
			},
			codeChecked: true, aclPath: "/vms/100", role: "Administrator",
			deniedCode: 403, deniedMsg: "Permission check failed (/vms/100, VM.Backup)"},
		"GET /cluster/pvesnap/arrays":       audit("/cluster/pvesnap/arrays"),
		"GET /nodes/{node}/pvesnap/pending": audit("/nodes/pve1/pvesnap/pending"),
		"POST /cluster/pvesnap/arrays": modify(func(e *Env, n int) (string, url.Values) {
			return "/cluster/pvesnap/arrays", url.Values{"array": {fmt.Sprintf("fa%d", n)}, "type": {"flasharray"},
				"endpoint": {"https://fa.invalid"}, "token": {"token-0123456"}, "check": {"0"}}
		}),
		"GET /cluster/pvesnap/arrays/{array}":        readEntry,
		"GET /cluster/pvesnap/arrays/{array}/status": statusEntry,
		"PUT /cluster/pvesnap/arrays/{array}": modify(func(e *Env, n int) (string, url.Values) {
			return arrayAt(e, n), url.Values{"comment": {"changed"}}
		}),
		"DELETE /cluster/pvesnap/arrays/{array}": modify(func(e *Env, n int) (string, url.Values) { return arrayAt(e, n), nil }),
		"GET /nodes/{node}/pvesnap": {
			call:    func(e *Env, n int) (string, url.Values) { return "/nodes/pve1/pvesnap", nil },
			aclPath: "/nodes/pve1", priv: "Sys.Audit", role: "PVEAuditor",
			deniedCode: 403, deniedMsg: "Permission check failed (/nodes/pve1, Sys.Audit)"},
		"GET /nodes/{node}/tasks/{upid}/status": {
			call:    func(e *Env, n int) (string, url.Values) { return "/nodes/pve1/tasks/" + task(e, n) + "/status", nil },
			aclPath: "/nodes/pve1", priv: "Sys.Audit", role: "PVEAuditor",
			deniedCode: 403, deniedMsg: "Permission check failed (/nodes/pve1, Sys.Audit)"},
		"GET /nodes/{node}/tasks/{upid}/log": {
			call:    func(e *Env, n int) (string, url.Values) { return "/nodes/pve1/tasks/" + task(e, n) + "/log", nil },
			aclPath: "/nodes/pve1", priv: "Sys.Audit", role: "PVEAuditor",
			deniedCode: 403, deniedMsg: "Permission check failed (/nodes/pve1, Sys.Audit)"},
		"DELETE /nodes/{node}/tasks/{upid}": {
			call:    func(e *Env, n int) (string, url.Values) { return "/nodes/pve1/tasks/" + task(e, n), nil },
			aclPath: "/nodes/pve1", priv: "Sys.Modify", role: "Administrator",
			deniedCode: 403, deniedMsg: "Permission check failed (/nodes/pve1, Sys.Modify)"},
		"GET /nodes/{node}/tasks": {
			// Any authenticated user may list (the list is filtered): no denial case.
			call: func(e *Env, n int) (string, url.Values) { return "/nodes/pve1/tasks", nil }},
		"POST /nodes/{node}/storage/{storage}/content/{volume}": {
			call: func(e *Env, n int) (string, url.Values) {
				return "/nodes/pve1/storage/local-zfs/content/" + volume(e, n), url.Values{"target": {fmt.Sprintf("vm-101-disk-%d", 100+n)}}
			},
			aclPath: "/storage/local-zfs", priv: "Datastore.Allocate", role: "PVEDatastoreAdmin", poolable: true,
			// Without Datastore.Allocate the call is PVE's, which allows only root@pam.
			deniedCode: 403, deniedMsg: "Permission check failed (user != root@pam)"},
		"POST /nodes/{node}/pvesnap/receive": {
			// pve2's pvesnap prepares a move to pve1 for the caller.
			call: func(e *Env, n int) (string, url.Values) {
				return "/nodes/pve1/pvesnap/receive", url.Values{"storage": {"local-lvm"}, "volume": {fmt.Sprintf("vm-100-disk-%d", 100+n)},
					"source_node": {"pve2"}, "source": {"local-lvm:vm-100-disk-0"}, "format": {"block"}, "size": {"1048576"}}
			},
			asNode:  "pve2",
			aclPath: "/storage/local-lvm", priv: "Datastore.Allocate", role: "PVEDatastoreAdmin", poolable: true,
			deniedCode: 403, deniedMsg: "Permission check failed (/storage/local-lvm, Datastore.Allocate)"},
		"DELETE /nodes/{node}/storage/{storage}/content/{volume}": {
			call: func(e *Env, n int) (string, url.Values) {
				return "/nodes/pve1/storage/local-zfs/content/" + volume(e, n), nil
			},
			aclPath: "/storage/local-zfs", priv: "Datastore.Allocate", role: "PVEDatastoreAdmin", poolable: true,
			deniedCode: 403, deniedMsg: "Permission check failed (/storage/local-zfs, Datastore.Allocate)"},
	}
}

// TestAuthMatrix calls every owned route with each kind of credential and grant and expects
// pveproxy's exact answers.
func TestAuthMatrix(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	matrix := authMatrix()
	for _, r := range e.Daemons["pve1"].Mux.Routes() {
		key := r.Method + " " + r.Path
		if strings.Contains(r.Path, "itest-") {
			continue // test-only route
		}
		entry, ok := matrix[key]
		if !ok {
			t.Errorf("%s has no auth matrix entry: every owned route must be tested", key)
			continue
		}
		t.Run(strings.ReplaceAll(key, "/", "_"), func(t *testing.T) { runAuthCases(t, e, r, entry) })
	}
}

func runAuthCases(t *testing.T, e *Env, r *api.Route, en authEntry) {
	write := r.Method != http.MethodGet
	client := func() *simpve.Client {
		c := e.Client("pve1")
		if en.asNode != "" {
			e.presentNodeCert(c, en.asNode)
		}
		return c
	}
	fresh := func(acls func(user string)) *simpve.Client {
		n := seq.Add(1)
		user := fmt.Sprintf("u%d@pve", n)
		e.Sim.AddUser(user, "pw")
		acls(user)
		c := client()
		must(t, c.Login(user, "pw"))
		return c
	}
	do := func(name string, c *simpve.Client) *simpve.Response {
		path, params := en.call(e, int(seq.Add(1)))
		resp, err := c.Do(r.Method, path, params)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return resp
	}
	expect := func(name string, resp *simpve.Response, code int, msg string) {
		t.Helper()
		if resp.Code != code || resp.Status != msg {
			t.Errorf("%s: got %d %q, want %d %q", name, resp.Code, resp.Status, code, msg)
		}
		if code == 401 && len(resp.Raw) != 0 {
			t.Errorf("%s: a 401 from pveproxy has an empty body, got %q", name, resp.Raw)
		}
	}
	allowed := func(name string, resp *simpve.Response) {
		t.Helper()
		if resp.Code == 401 || resp.Code == 403 || resp.Code >= 500 {
			t.Errorf("%s: refused with %d %q %s", name, resp.Code, resp.Status, resp.Raw)
		}
	}
	expect("no credential", do("no credential", client()), 401, "No ticket")
	bad := client()
	e.Sim.AddUser("tok@pve", "pw")
	id, _, _ := e.Sim.AddToken("tok@pve", fmt.Sprintf("t%d", seq.Add(1)), false)
	bad.Token = id + "=00000000-0000-0000-0000-000000000000"
	// pveproxy (9.1.5 and later) tells a client no more than that its credential failed.
	expect("bad token", do("bad token", bad), 401, "Authentication failed!")
	old := client()
	old.Ticket, old.CSRF, _ = e.Sim.TicketAt("root@pam", time.Now().Add(-3*time.Hour))
	expect("expired ticket", do("expired ticket", old), 401, "Authentication failed!")
	if write {
		noCSRF := client()
		must(t, noCSRF.Login("root@pam", "pvesnap"))
		noCSRF.CSRF = ""
		expect("ticket without CSRF on a write", do("no csrf", noCSRF), 401, "Permission denied - invalid csrf token")
	}
	if en.aclPath == "" {
		allowed("any user", do("any user", fresh(func(string) {})))
		return
	}
	if en.codeChecked {
		expect("no privilege at all", do("none", fresh(func(u string) { e.Sim.AddACL("/", u, "NoAccess", true) })), en.deniedCode, en.deniedMsg)
		allowed("administrator", do("admin", fresh(func(u string) { e.Sim.AddACL("/", u, en.role, true) })))
		return
	}
	lacking := fresh(func(u string) { e.Sim.AddACL("/", u, "NoAccess", true) })
	expect("lacking the privilege", do("lacking", lacking), en.deniedCode, en.deniedMsg)
	allowed("propagate=0 ACL on the path", do("propagate=0", fresh(func(u string) { e.Sim.AddACL(en.aclPath, u, en.role, false) })))
	allowed("via a group", do("group", fresh(func(u string) {
		g := fmt.Sprintf("g%d", seq.Add(1))
		e.Sim.AddGroup(g, u)
		e.Sim.AddACL(en.aclPath, "@"+g, en.role, true)
	})))
	if en.poolable {
		allowed("via a pool", do("pool", fresh(func(u string) {
			// A VM belongs to one pool only (PVE ignores it in any later pool): one pool
			// per member, each user granted on it.
			p := "pool" + strings.NewReplacer("/", "-").Replace(en.aclPath)
			if vmid, ok := strings.CutPrefix(en.aclPath, "/vms/"); ok {
				e.Sim.AddPool(p, []string{vmid}, nil)
			} else {
				e.Sim.AddPool(p, nil, []string{strings.TrimPrefix(en.aclPath, "/storage/")})
			}
			e.Sim.AddACL("/pool/"+p, u, en.role, true)
		})))
	}
	allowed("valid", do("valid", fresh(func(u string) { e.Sim.AddACL("/", u, en.role, true) })))
	tokC := client()
	e.Sim.AddUser(fmt.Sprintf("t%d@pve", seq.Add(1)), "pw")
	tu := fmt.Sprintf("tv%d@pve", seq.Add(1))
	e.Sim.AddUser(tu, "pw")
	e.Sim.AddACL("/", tu, en.role, true)
	tid, sec, _ := e.Sim.AddToken(tu, "tok", true)
	e.Sim.AddACL("/", tid, en.role, true)
	tokC.Token = tid + "=" + sec
	allowed("valid privilege-separated token", do("token", tokC))
}

// TestForgedHeadersCannotRedirect: no header makes a node act on another node's storage, and
// a client's X-Pvesnap-Forwarded changes nothing (only a node's signed mark counts).
func TestForgedHeadersCannotRedirect(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	for _, n := range []string{"pve1", "pve2"} {
		e.Sim.Store(n, "local-zfs").Create("vm-100-disk-0", 1<<20, volMeta())
	}
	c := e.Root("pve1")
	req := func(headers map[string]string) *http.Response {
		r, err := http.NewRequest("DELETE", e.URL("pve1")+"/api2/json/nodes/pve2/storage/local-zfs/content/vm-100-disk-0", nil)
		must(t, err)
		r.AddCookie(&http.Cookie{Name: "PVEAuthCookie", Value: url.PathEscape(c.Ticket)})
		r.Header.Set("CSRFPreventionToken", c.CSRF)
		for k, v := range headers {
			r.Header.Set(k, v)
		}
		resp, err := c.HTTP.Do(r)
		must(t, err)
		resp.Body.Close()
		return resp
	}
	resp := req(map[string]string{api.ForwardedHeader: "pve2", "X-Forwarded-Node": "pve1"})
	if resp.StatusCode != 200 {
		t.Fatalf("delete for pve2 with forged headers: %s", resp.Status)
	}
	time.Sleep(300 * time.Millisecond)
	if !e.Sim.Store("pve1", "local-zfs").Exists("vm-100-disk-0") {
		t.Fatal("pve1's volume was deleted by a call for pve2")
	}
	if e.Sim.Store("pve2", "local-zfs").Exists("vm-100-disk-0") {
		t.Fatal("pve2's volume was not deleted")
	}
}

func TestCORS(t *testing.T) {
	e := Start(t)
	pre := func(origin string) *http.Response {
		r, _ := http.NewRequest("OPTIONS", e.URL("pve1")+"/api2/json/nodes/pve1/pvesnap", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "POST")
		r.Header.Set("Access-Control-Request-Headers", "csrfpreventiontoken")
		resp, err := e.Client("pve1").HTTP.Do(r)
		must(t, err)
		resp.Body.Close()
		return resp
	}
	for _, o := range []string{"https://pve1:8006", "https://127.0.0.1:8006"} {
		resp := pre(o)
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != o || resp.Header.Get("Access-Control-Allow-Credentials") != "true" ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "CSRFPreventionToken") {
			t.Errorf("%s: %s %v", o, resp.Status, resp.Header)
		}
	}
	for _, o := range []string{"https://evil.example:8006", "http://pve1:8006", "https://pve1:9999", "https://pve10:8006",
		"https://pve1.example.org:8006", "https://pve1.evil.example:8006"} {
		resp := pre(o)
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s was allowed", o)
		}
	}
}
