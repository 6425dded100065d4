package pve_test

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// TestClusterTasks: GET /cluster/tasks lists every node's recent tasks as pvestatd
// broadcast them; with Sys.Audit on / all of them, else the caller's own, a token's split
// into user and tokenid (so a token sees its tasks only through its user).
func TestClusterTasks(t *testing.T) {
	c, root := startCluster(t, "pve1", "pve2")
	c.AddUser("op@pve", "pw")
	c.AddACL("/vms", "op@pve", "PVEVMAdmin", true)
	c.AddACL("/storage", "op@pve", "PVEDatastoreAdmin", true)
	op, _ := simpve.NewClient(c.URL("pve1"), c.CAFile())
	if err := op.Login("op@pve", "pw"); err != nil {
		t.Fatal(err)
	}
	wait := func(cl *simpve.Client, d json.RawMessage) string {
		upid := simpve.UPIDOf(d)
		if st, err := cl.WaitTask(upid, 5*time.Second); err != nil || st != "OK" {
			t.Fatalf("task %s: %q %v", upid, st, err)
		}
		return upid
	}
	rootTask := wait(root, must(t, root, "POST", "/nodes/pve2/qemu", url.Values{"vmid": {"200"}}))
	opTask := wait(op, must(t, op, "POST", "/nodes/pve1/qemu", url.Values{"vmid": {"100"}}))
	c.Pvestatd()
	list := func(cl *simpve.Client) map[string]map[string]any {
		var l []map[string]any
		json.Unmarshal(must(t, cl, "GET", "/cluster/tasks", nil), &l)
		out := map[string]map[string]any{}
		for _, e := range l {
			out[e["upid"].(string)] = e
		}
		return out
	}
	all := list(root)
	if all[rootTask] == nil || all[opTask] == nil {
		t.Fatalf("root sees %v, want both tasks", all)
	}
	if e := all[opTask]; e["user"] != "op@pve" || e["node"] != "pve1" || e["status"] != "OK" || e["endtime"] == nil {
		t.Errorf("entry %v", e)
	}
	mine := list(op)
	if mine[opTask] == nil || mine[rootTask] != nil || len(mine) != 1 {
		t.Errorf("op@pve sees %v, want its own task only", mine)
	}
}
