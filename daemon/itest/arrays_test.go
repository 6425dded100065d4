package itest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/lvm/engine/enginetest"
	"github.com/pvesnap/pvesnap/sim/flasharray"
)

// Arrays are managed through :8009 with PVE's privileges: Sys.Audit on / to read,
// Sys.Modify on / to change. The API token goes in and never comes out, nor into the logs.
func TestArraysAPI(t *testing.T) {
	e := Start(t)
	fa := flasharray.New("fa-lab", nil)
	must(t, fa.CreateHost("pve1-host", []string{"iqn.1993-08.org.debian:01:pve1"}, nil, nil))
	srv, err := flasharray.Listen(fa, "127.0.0.1:0", t.TempDir())
	must(t, err)
	defer srv.Close()
	tokenB, _ := os.ReadFile(srv.TokenFile)
	token := strings.TrimSpace(string(tokenB))

	root := e.Root("pve1")
	auditor, _ := e.Token("pve1", "audit@pve", map[string]string{"/": "PVEAuditor"})
	admin, _ := e.Token("pve1", "admin@pve", map[string]string{"/": "PVEAdmin"}) // no Sys.Modify
	nobody, _ := e.Token("pve1", "nobody@pve", map[string]string{"/vms": "PVEVMAdmin"})

	add := url.Values{"array": {"fa1"}, "type": {"flasharray"}, "endpoint": {srv.URL}, "token": {token}, "ca": {srv.CAFile},
		"comment": {"lab array"}}
	if r, _ := admin.Do("POST", "/cluster/pvesnap/arrays", add); r.Code != 403 || !strings.Contains(r.Status, "Permission check failed (/, Sys.Modify)") {
		t.Fatalf("PVEAdmin adding an array: %d %s", r.Code, r.Status)
	}
	bad := url.Values{}
	for k, v := range add {
		bad[k] = v
	}
	bad.Set("token", "wrong-token-123")
	if r, _ := root.Do("POST", "/cluster/pvesnap/arrays", bad); r.Code != 400 || !strings.Contains(r.Status, "refused the API token") {
		t.Fatalf("wrong token: %d %s", r.Code, r.Status)
	}
	bad.Set("token", token)
	bad.Set("endpoint", "http://"+strings.TrimPrefix(srv.URL, "https://"))
	if r, _ := root.Do("POST", "/cluster/pvesnap/arrays", bad); r.Code != 400 || !strings.Contains(r.Status, "must be https") {
		t.Fatalf("http endpoint: %d %s", r.Code, r.Status)
	}
	if r, _ := root.Do("POST", "/cluster/pvesnap/arrays", add); r.Code != 200 {
		t.Fatalf("root adding: %d %s", r.Code, r.Status)
	}
	if r, _ := root.Do("POST", "/cluster/pvesnap/arrays", add); r.Code != 400 || !strings.Contains(r.Status, "already defined") {
		t.Fatalf("adding twice: %d %s", r.Code, r.Status)
	}
	r, err := auditor.Do("GET", "/cluster/pvesnap/arrays", nil)
	must(t, err)
	var list []map[string]any
	json.Unmarshal(r.Data, &list)
	if r.Code != 200 || len(list) != 1 || list[0]["array"] != "fa1" || list[0]["endpoint"] != srv.URL || list[0]["comment"] != "lab array" {
		t.Fatalf("list: %d %s", r.Code, r.Raw)
	}
	if r, _ := nobody.Do("GET", "/cluster/pvesnap/arrays", nil); r.Code != 403 {
		t.Fatalf("no Sys.Audit: %d", r.Code)
	}
	r, err = auditor.Do("GET", "/cluster/pvesnap/arrays/fa1/status", nil)
	must(t, err)
	var st map[string]any
	json.Unmarshal(r.Data, &st)
	if r.Code != 200 || st["array_name"] != "fa-lab" || st["rest_version"] != "2.44" || st["target"] != "host pve1-host" {
		t.Fatalf("status: %d %s", r.Code, r.Raw)
	}
	if r, _ := auditor.Do("PUT", "/cluster/pvesnap/arrays/fa1", url.Values{"hostgroup": {"hg"}}); r.Code != 403 {
		t.Fatalf("auditor changing: %d", r.Code)
	}
	if r, _ := root.Do("PUT", "/cluster/pvesnap/arrays/fa1", url.Values{"hostgroup": {"pve-hg"}, "delete": {"comment"}}); r.Code != 200 {
		t.Fatalf("update: %d %s", r.Code, r.Status)
	}
	if r, _ := root.Do("PUT", "/cluster/pvesnap/arrays/fa1", url.Values{"delete": {"endpoint"}}); r.Code != 400 {
		t.Fatalf("deleting the endpoint: %d %s", r.Code, r.Status)
	}
	r, _ = root.Do("GET", "/cluster/pvesnap/arrays/fa1", nil)
	var one map[string]any
	json.Unmarshal(r.Data, &one)
	if one["hostgroup"] != "pve-hg" || one["comment"] != nil {
		t.Fatalf("after update: %s", r.Raw)
	}
	// A host group only says which group the node's host must be in: copies are connected
	// to the host, never the group; a group that does not hold it is reported.
	r, _ = root.Do("GET", "/cluster/pvesnap/arrays/fa1/status", nil)
	if !strings.Contains(string(r.Raw), `host group pve-hg configured for pvesnap`) || !strings.Contains(string(r.Raw), "Host group does not exist.") {
		t.Fatalf("status with a host group the array lacks: %s", r.Raw)
	}
	must(t, fa.CreateHostGroup("pve-hg", "pve1-host"))
	r, _ = root.Do("GET", "/cluster/pvesnap/arrays/fa1/status", nil)
	if !strings.Contains(string(r.Raw), `"target":"host pve1-host"`) {
		t.Fatalf("status with the node's host in the host group: %s", r.Raw)
	}
	if r, _ := root.Do("GET", "/cluster/pvesnap/arrays/nope", nil); r.Code != 404 {
		t.Fatalf("unknown array: %d", r.Code)
	}
	if r, _ := root.Do("GET", "/cluster/pvesnap/arrays/..%2Fetc", nil); r.Code != 400 {
		t.Fatalf("bad id: %d %s", r.Code, r.Status)
	}
	if r, _ := root.Do("DELETE", "/cluster/pvesnap/arrays/fa1", nil); r.Code != 200 {
		t.Fatalf("delete: %d %s", r.Code, r.Status)
	}
	if r, _ := root.Do("GET", "/cluster/pvesnap/arrays/fa1", nil); r.Code != 404 {
		t.Fatalf("after delete: %d", r.Code)
	}
	if strings.Contains(e.logs.String(), token) {
		t.Fatal("the API token appears in pvesnap's log")
	}
	if !strings.Contains(e.logs.String(), "array added") {
		t.Fatal("the change is not logged at all (the log capture is broken)")
	}
}

// flashArray starts the environment's simulated FlashArray (once).
func (e *Env) flashArray() *flasharray.Server {
	if e.fa == nil {
		srv, err := flasharray.Listen(flasharray.New("fa-lab", nil), "127.0.0.1:0", e.T.TempDir())
		must(e.T, err)
		e.T.Cleanup(func() { srv.Close() })
		e.fa = srv
	}
	return e.fa
}

// withArray makes storage san1 a single-PV VG on volume pve-san1 of the simulated array,
// configured as array fa1, on every node: /dev/sdb with the volume's NAA in each node's fake
// sysfs. It returns the array.
func (e *Env) withArray() *flasharray.Array {
	srv := e.flashArray()
	serial, err := srv.Array.CreateVolume("pve-san1", 1<<40)
	must(e.T, err)
	for _, n := range e.Sim.Nodes() {
		must(e.T, srv.Array.CreateHost(n, []string{"iqn.1993-08.org.debian:01:" + n}, nil, nil))
		e.hw(n).AddLU("sdb", dm.Dev{Major: 8, Minor: 16}, &enginetest.LU{Vendor: "PURE", Product: "FlashArray", Revision: "8888",
			Serial: serial, NAA: pure.NAA(serial), Blocks: 1 << 31, BlockSize: 512, ThirdPartyCopy: true})
	}
	// The array last: configuring it makes the daemons map their storages again, and the
	// devices must be there by then.
	tok, _ := os.ReadFile(srv.TokenFile)
	c := &arrays.Config{PVE: e.Sim.NodePaths(e.Sim.Nodes()[0]).PVE}
	must(e.T, c.Add(arrays.Array{ID: "fa1", Type: arrays.TypeFlashArray, Endpoint: srv.URL, CA: srv.CAFile}, strings.TrimSpace(string(tok))))
	return srv.Array
}

// labArray configures a fresh array id pointing at the environment's simulated FlashArray.
func labArray(e *Env, n int) string {
	e.flashArray()
	tok, err := os.ReadFile(e.fa.TokenFile)
	must(e.T, err)
	id := fmt.Sprintf("fa%d", n)
	c := &arrays.Config{PVE: e.Sim.NodePaths("pve1").PVE}
	must(e.T, c.Add(arrays.Array{ID: id, Type: arrays.TypeFlashArray, Endpoint: e.fa.URL, CA: e.fa.CAFile}, strings.TrimSpace(string(tok))))
	return id
}
