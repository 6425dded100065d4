package pve_test

import (
	"encoding/json"
	"net/url"

	"strings"
	"testing"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/reference"
)

// Where real pveproxy answers differently from its own apidata.js, each with the reason; any
// other difference fails the test. "*" covers every undeclared field of a route.
var realButUndeclared = map[string]string{
	"GET /nodes/{node}/tasks/{upid}/status tokenid": "Tasks.pm splits a token user into user and tokenid",
	"GET /nodes id":                     "Nodes.pm's index returns cluster resource entries, which carry id and type",
	"GET /nodes type":                   "see id",
	"GET /storage *":                    "Storage.pm's index returns each storage's whole config entry",
	"POST /access/ticket cap":           "the GUI reads its capabilities from the ticket answer",
	"GET /cluster/nextid $: got string": "Perl serialises the id as a string; go-proxmox and Telmate decode a string",
	"GET /cluster/tasks *":              "Cluster.pm's tasks returns the broadcast task entries whole; its schema declares only upid",
}

// allowed reports whether a validation error is one of the documented real behaviours.
func allowed(route *simpve.RouteInfo, e string) bool {
	key := route.Method + " " + route.Path
	if f := undeclaredField(e); f != "" {
		_, one := realButUndeclared[key+" "+f]
		_, all := realButUndeclared[key+" *"]
		return one || all
	}
	for k := range realButUndeclared {
		if strings.HasPrefix(k, key+" $") && strings.HasPrefix(e, strings.TrimPrefix(k, key+" ")) {
			return true
		}
	}
	return false
}

func startCluster(t *testing.T, nodes ...string) (*simpve.Cluster, *simpve.Client) {
	t.Helper()
	return startClusterWith(t, simpve.Options{}, nodes...)
}

// startClusterWith starts a cluster with o's other options (directory, nodes, name and
// timings are the tests'), its storages, and a client logged in as root@pam on the first node.
func startClusterWith(t *testing.T, o simpve.Options, nodes ...string) (*simpve.Cluster, *simpve.Client) {
	t.Helper()
	if len(nodes) == 0 {
		nodes = []string{"pve1", "pve2"}
	}
	o.Dir, o.Nodes, o.ClusterName, o.AuthFailDelay, o.PvestatdInterval = t.TempDir(), nodes, "lab", 10*time.Millisecond, time.Hour
	c, err := simpve.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetStorageConfig(simpve.DefaultStorageConfig); err != nil {
		t.Fatal(err)
	}
	cl, err := simpve.NewClient(c.URL(nodes[0]), c.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Login("root@pam", "pvesnap"); err != nil {
		t.Fatal(err)
	}
	return c, cl
}

type example struct {
	method, path string
	params       url.Values
	want         int // expected status (200 when 0)
}

// TestRoutesMatchSchema calls every route sim/pve serves (their parameters, permissions and
// proxyto are PVE's schema's by construction) and checks each answer's shape against the
// schema's "returns", PVE 9's in full and PVE 8's for the fields it declares too.
func TestRoutesMatchSchema(t *testing.T) {
	c, cl := startCluster(t)

	// State the examples need: a VM with a disk, a volume, finished tasks.
	upid := simpve.UPIDOf(must(t, cl, "POST", "/nodes/pve1/qemu", url.Values{"vmid": {"100"}, "name": {"web"}, "memory": {"2048"},
		"cores": {"2"}, "scsi0": {"local-lvm:1"}, "net0": {"virtio,bridge=vmbr0"}, "scsihw": {"virtio-scsi-single"}}))
	if st, err := cl.WaitTask(upid, 5*time.Second); err != nil || st != "OK" {
		t.Fatalf("qmcreate: %q %v", st, err)
	}
	must(t, cl, "POST", "/nodes/pve1/storage/local-lvm/content", url.Values{"vmid": {"100"}, "filename": {"vm-100-disk-9"}, "size": {"4M"}})

	examples := []example{
		{method: "GET", path: "/version"},
		{method: "GET", path: "/cluster/status"},
		{method: "GET", path: "/cluster/resources"},
		{method: "GET", path: "/cluster/nextid"},
		{method: "GET", path: "/cluster/tasks"},
		{method: "GET", path: "/nodes/pve1/qemu/100"},
		{method: "GET", path: "/nodes"},
		{method: "GET", path: "/nodes/pve1/qemu"},
		{method: "POST", path: "/nodes/pve1/qemu", params: url.Values{"vmid": {"101"}, "name": {"db"}, "virtio0": {"local-zfs:1"}}},
		{method: "GET", path: "/nodes/pve1/qemu/100/config"},
		{method: "POST", path: "/nodes/pve1/qemu/100/config", params: url.Values{"description": {"edited"}}},
		{method: "PUT", path: "/nodes/pve1/qemu/100/config", params: url.Values{"name": {"web2"}, "onboot": {"1"}}},
		{method: "GET", path: "/nodes/pve1/qemu/100/status/current"},
		{method: "POST", path: "/nodes/pve1/qemu/100/status/start"},
		{method: "POST", path: "/nodes/pve1/qemu/100/status/stop"},
		{method: "DELETE", path: "/nodes/pve1/qemu/101"},
		{method: "GET", path: "/storage"},
		{method: "GET", path: "/storage/local-lvm"},
		{method: "GET", path: "/nodes/pve1/storage"},
		{method: "GET", path: "/nodes/pve1/storage/local-lvm/status"},
		{method: "GET", path: "/nodes/pve1/storage/local-lvm/content"},
		{method: "POST", path: "/nodes/pve1/storage/local-lvm/content", params: url.Values{"vmid": {"100"}, "filename": {"vm-100-disk-8"}, "size": {"1G"}}},
		{method: "GET", path: "/nodes/pve1/storage/local-lvm/content/vm-100-disk-9"},
		{method: "POST", path: "/nodes/pve1/storage/local-lvm/content/vm-100-disk-9", params: url.Values{"target": {"vm-100-disk-10"}}},
		{method: "DELETE", path: "/nodes/pve1/storage/local-lvm/content/vm-100-disk-8"},
		{method: "GET", path: "/nodes/pve1/tasks", params: url.Values{"source": {"all"}}},
		{method: "GET", path: "/nodes/pve1/tasks/" + upid},
		{method: "GET", path: "/nodes/pve1/tasks/" + upid + "/status"},
		{method: "GET", path: "/nodes/pve1/tasks/" + upid + "/log"},
		{method: "DELETE", path: "/nodes/pve1/tasks/" + upid},
		{method: "POST", path: "/access/ticket", params: url.Values{"username": {"root@pam"}, "password": {"pvesnap"}}},
		{method: "GET", path: "/access/permissions", params: url.Values{"path": {"/vms/100"}}},
	}
	covered := map[string]bool{}
	for _, ex := range examples {
		r, err := cl.Do(ex.method, ex.path, ex.params)
		if err != nil {
			t.Fatal(err)
		}
		want := ex.want
		if want == 0 {
			want = 200
		}
		if r.Code != want {
			t.Errorf("%s %s: %d %s %s", ex.method, ex.path, r.Code, r.Status, r.Raw)
			continue
		}
		route := matchRoute(c.Routes("pve1"), ex.method, ex.path)
		if route == nil {
			t.Errorf("%s %s: no route", ex.method, ex.path)
			continue
		}
		covered[route.Method+" "+route.Path] = true
		// Let tasks finish so later examples see settled state.
		if s := simpve.UPIDOf(r.Data); strings.HasPrefix(s, "UPID:") {
			cl.WaitTask(s, 5*time.Second)
		}
		// The simulator is PVE 9: its answers are checked against PVE 9's schema in full and
		// against PVE 8's for the types of the fields PVE 8 declares too.
		var v any
		dec := json.NewDecoder(strings.NewReader(string(r.Data)))
		dec.UseNumber()
		dec.Decode(&v)
		for _, version := range reference.PVEVersions {
			schema, _ := reference.PVE(version)
			m := schema[route.Path][route.Method]
			if m == nil {
				continue
			}
			for _, e := range reference.Validate(reference.PVEDialect, m.Returns, v) {
				if allowed(route, e) || (version == "pve8" && undeclaredField(e) != "") {
					continue
				}
				t.Errorf("%s: %s %s returns: %s", version, route.Method, route.Path, e)
			}
		}
	}
	for _, r := range c.Routes("pve1") {
		if !covered[r.Method+" "+r.Path] {
			t.Errorf("%s %s has no example call: the test must exercise every route", r.Method, r.Path)
		}
	}
}

func undeclaredField(e string) string {
	i := strings.Index(e, "property \"")
	if i < 0 || !strings.Contains(e, "not in the schema") {
		return ""
	}
	rest := e[i+len("property \""):]
	return rest[:strings.IndexByte(rest, '"')]
}

func must(t *testing.T, cl *simpve.Client, method, path string, p url.Values) json.RawMessage {
	t.Helper()
	d, err := cl.Must(method, path, p)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func matchRoute(routes []simpve.RouteInfo, method, path string) *simpve.RouteInfo {
	segs := strings.Split(path, "/")
	for _, r := range routes {
		if r.Method != method {
			continue
		}
		rs := strings.Split(r.Path, "/")
		if len(rs) != len(segs) {
			continue
		}
		ok := true
		for i := range rs {
			if !strings.HasPrefix(rs[i], "{") && rs[i] != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return &r
		}
	}
	return nil
}
