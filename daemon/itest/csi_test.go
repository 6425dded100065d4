package itest

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

type contentItem struct {
	Volid string `json:"volid"`
	Size  int64  `json:"size"`
	VMID  int64  `json:"vmid"`
}

func content(t *testing.T, c *simpve.Client, sid string) map[string]contentItem {
	t.Helper()
	d, err := c.Must("GET", "/nodes/pve1/storage/"+sid+"/content", nil)
	must(t, err)
	var l []contentItem
	json.Unmarshal(d, &l)
	out := map[string]contentItem{}
	for _, it := range l {
		out[it.Volid] = it
	}
	return out
}

// statusOnce is the plugin's first poll: GET …/tasks/{upid}/status right after the call.
func statusOnce(t *testing.T, c *simpve.Client, upid string) (string, string) {
	t.Helper()
	d, err := c.Must("GET", "/nodes/pve1/tasks/"+upid+"/status", nil)
	must(t, err)
	var s struct {
		Status     string  `json:"status"`
		Exitstatus string  `json:"exitstatus"`
		PID        float64 `json:"pid"`
		Starttime  float64 `json:"starttime"`
	}
	if err := json.Unmarshal(d, &s); err != nil || s.PID == 0 || s.Starttime == 0 {
		t.Fatalf("status %s: numbers must be JSON numbers (%v)", d, err)
	}
	return s.Status, s.Exitstatus
}

// csiSequence is what proxmox-csi-plugin does for CreateSnapshot then DeleteSnapshot, with
// go-proxmox's JSON bodies.
func csiSequence(t *testing.T, e *Env, c *simpve.Client, sid string, source string) {
	t.Helper()
	c.JSON = true
	for _, p := range []string{"/storage/" + sid, "/nodes", "/nodes/pve1/storage/" + sid + "/status"} {
		if _, err := c.Must("GET", p, nil); err != nil {
			t.Fatalf("lookup %s: %v", p, err)
		}
	}
	before := content(t, c, sid)
	src, ok := before[sid+":"+source]
	if !ok {
		t.Fatalf("source %s not listed: %v", source, before)
	}
	target := "vm-9999-snapshot-" + strings.ReplaceAll(t.Name(), "/", "-")
	target = strings.ToLower(strings.ReplaceAll(target, "_", "-"))
	start := time.Now()
	d, err := c.Must("POST", "/nodes/pve1/storage/"+sid+"/content/"+source, url.Values{"target": {target}})
	if err != nil {
		t.Fatal(err)
	}
	upid := simpve.UPIDOf(d)
	status, exit := statusOnce(t, c, upid)
	t.Logf("copy %s:%s -> %s answered in %s, first poll: %s/%s", sid, source, target, time.Since(start).Round(time.Millisecond), status, exit)
	if status != "stopped" || exit != "OK" {
		t.Fatalf("first poll %s/%s: an instant copy must be finished when the UPID is returned", status, exit)
	}
	if !strings.Contains(upid, ":imgcopy::") {
		t.Errorf("UPID %s: PVE's copy task type is imgcopy with an empty id", upid)
	}
	after := content(t, c, sid)
	got, ok := after[sid+":"+target]
	if !ok || got.Size != src.Size || got.VMID != 9999 {
		t.Fatalf("new volume %+v (source %+v): the plugin reads ReadyToUse from its size", got, src)
	}
	// The clone holds the source's bytes.
	st := e.Sim.Store("pve1", sid)
	a, _ := os.ReadFile(st.Path(source))
	b, _ := os.ReadFile(st.Path(target))
	if !bytes.Equal(a, b) {
		t.Fatal("the copy does not hold the source's data")
	}
	// DeleteSnapshot: DELETE, then the plugin polls every second for 30 s.
	d, err = c.Must("DELETE", "/nodes/pve1/storage/"+sid+"/content/"+target, nil)
	must(t, err)
	for i := 0; i < 30; i++ {
		if status, exit = statusOnce(t, c, simpve.UPIDOf(d)); status == "stopped" {
			break
		}
		time.Sleep(time.Second)
	}
	if status != "stopped" || exit != "OK" {
		t.Fatalf("delete: %s/%s", status, exit)
	}
	if _, still := content(t, c, sid)[sid+":"+target]; still {
		t.Fatal("deleted volume still listed")
	}
}

func seedVolume(t *testing.T, e *Env, sid, name string, size int64) {
	t.Helper()
	st := e.Sim.Store("pve1", sid)
	must(t, st.Create(name, size, volstore.Meta{}))
	f, _ := os.OpenFile(st.Path(name), os.O_WRONLY, 0)
	f.WriteAt([]byte(strings.Repeat("pvesnap data ", 1000)), 1<<20)
	f.Close()
}

func TestCSISequenceZFSWithToken(t *testing.T) {
	e := Start(t)
	seedVolume(t, e, "local-zfs", "vm-100-disk-0", 8<<20)
	c, _ := e.Token("pve1", "kubernetes-csi@pve", map[string]string{"/": "PVEAuditor", "/storage": "PVEDatastoreAdmin"})
	csiSequence(t, e, c, "local-zfs", "vm-100-disk-0")
	// No snapshot of pvesnap's is left behind on the source.
	snaps, _ := e.Sim.Store("pve1", "local-zfs").Snapshots("vm-100-disk-0")
	if len(snaps) != 0 {
		t.Fatalf("snapshots left: %+v", snaps)
	}
}

func TestCSISequenceLVMThinWithTicket(t *testing.T) {
	e := Start(t)
	seedVolume(t, e, "local-lvm", "vm-100-disk-0", 8<<20)
	e.Sim.AddUser("csi@pve", "secret")
	e.Sim.AddACL("/", "csi@pve", "PVEAuditor", true)
	e.Sim.AddACL("/storage/local-lvm", "csi@pve", "PVEDatastoreAdmin", true)
	c := e.Client("pve1")
	must(t, c.Login("csi@pve", "secret"))
	// Deleting on lvmthin is PVE's own (pass-through); the sequence must still hold.
	csiSequence(t, e, c, "local-lvm", "vm-100-disk-0")
}

func TestCopyWithoutTicketCSRFIsRefused(t *testing.T) {
	e := Start(t)
	seedVolume(t, e, "local-zfs", "vm-100-disk-0", 1<<20)
	c := e.Root("pve1")
	c.CSRF = "6B000000:forged"
	r, err := c.Do("POST", "/nodes/pve1/storage/local-zfs/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-1"}})
	must(t, err)
	if r.Code != 401 || r.Status != "Permission denied - invalid csrf token" {
		t.Fatalf("%d %q", r.Code, r.Status)
	}
}

// TestNotInterceptedCopiesPassThrough: what pvesnap does not handle reaches PVE unchanged and
// gets PVE's answer (here PVE's root@pam-only rule and its full copy).
func TestNotInterceptedCopiesPassThrough(t *testing.T) {
	e := Start(t)
	seedVolume(t, e, "local-zfs", "vm-100-disk-0", 1<<20)
	c, _ := e.Token("pve1", "csi@pve", map[string]string{"/storage/local-zfs": "PVEDatastoreUser"}) // no Datastore.Allocate
	c.JSON = true
	r, err := c.Do("POST", "/nodes/pve1/storage/local-zfs/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-1"}})
	must(t, err)
	if r.Code != 403 || r.Status != "Permission check failed (user != root@pam)" {
		t.Fatalf("without Datastore.Allocate: %d %q, want PVE's own refusal", r.Code, r.Status)
	}
	root := e.Root("pve1")
	root.JSON = true
	// A copy to another storage is PVE's (a full copy task in the simulator), and so is a
	// copy with a target node.
	for _, params := range []url.Values{{"target": {"local-lvm:vm-100-disk-7"}}, {"target": {"vm-100-disk-8"}, "target_node": {"pve1x"}}} {
		r, err := root.Do("POST", "/nodes/pve1/storage/local-zfs/content/vm-100-disk-0", params)
		must(t, err)
		if params.Get("target_node") != "" {
			if r.Code != 500 || !strings.Contains(r.Status, "hostname lookup 'pve1x' failed") {
				t.Fatalf("copy to another node: %d %q (PVE's answer expected)", r.Code, r.Status)
			}
			continue
		}
		if r.Code != 200 {
			t.Fatalf("copy to another storage: %d %q", r.Code, r.Status)
		}
		if st, _ := root.WaitTask(simpve.UPIDOf(r.Data), 5*time.Second); st != "OK" {
			t.Fatalf("PVE's copy task: %s", st)
		}
	}
	if !e.Sim.Store("pve1", "local-lvm").Exists("vm-100-disk-7") {
		t.Fatal("the passed-through copy did not reach PVE")
	}
}

// TestZFSCloneChains: clone of a clone, then delete the origin first; every volume keeps its
// data and nothing of pvesnap's is left.
func TestZFSCloneChains(t *testing.T) {
	e := Start(t)
	seedVolume(t, e, "local-zfs", "vm-100-disk-0", 4<<20)
	c := e.Root("pve1")
	copyVol := func(src, dst string) {
		t.Helper()
		d, err := c.Must("POST", "/nodes/pve1/storage/local-zfs/content/"+src, url.Values{"target": {dst}})
		must(t, err)
		if st, _ := c.WaitTask(simpve.UPIDOf(d), 5*time.Second); st != "OK" {
			t.Fatalf("copy %s -> %s: %s", src, dst, st)
		}
	}
	del := func(vol string) string {
		t.Helper()
		d, err := c.Must("DELETE", "/nodes/pve1/storage/local-zfs/content/"+vol, nil)
		must(t, err)
		st, _ := c.WaitTask(simpve.UPIDOf(d), 5*time.Second)
		return st
	}
	st := e.Sim.Store("pve1", "local-zfs")
	orig, _ := os.ReadFile(st.Path("vm-100-disk-0"))
	copyVol("vm-100-disk-0", "vm-200-disk-0")
	copyVol("vm-200-disk-0", "vm-300-disk-0")
	copyVol("vm-100-disk-0", "vm-400-disk-0")
	if got := del("vm-100-disk-0"); got != "OK" {
		t.Fatalf("delete of the origin: %s", got)
	}
	for _, v := range []string{"vm-200-disk-0", "vm-300-disk-0", "vm-400-disk-0"} {
		b, err := os.ReadFile(st.Path(v))
		if err != nil || !bytes.Equal(b, orig) {
			t.Fatalf("%s lost its data after its origin was deleted: %v", v, err)
		}
	}
	for _, v := range []string{"vm-200-disk-0", "vm-300-disk-0", "vm-400-disk-0"} {
		if got := del(v); got != "OK" {
			t.Fatalf("delete %s: %s", v, got)
		}
	}
	vols, _ := st.List()
	snaps, _ := st.Snapshots("")
	if len(vols) != 0 || len(snaps) != 0 {
		t.Fatalf("left behind: volumes %+v snapshots %+v", vols, snaps)
	}
}

func TestZFSDeleteRefusesForeignClones(t *testing.T) {
	e := Start(t)
	seedVolume(t, e, "local-zfs", "vm-100-disk-0", 1<<20)
	st := e.Sim.Store("pve1", "local-zfs")
	// A clone made outside pvesnap (e.g. by hand): pvesnap must not restructure it.
	must(t, st.Snapshot("vm-100-disk-0", "manual"))
	must(t, st.Clone("vm-100-disk-0@manual", "vm-101-disk-0", volstore.Meta{}))
	c := e.Root("pve1")
	d, err := c.Must("DELETE", "/nodes/pve1/storage/local-zfs/content/vm-100-disk-0", nil)
	must(t, err)
	got, _ := c.WaitTask(simpve.UPIDOf(d), 5*time.Second)
	if !strings.Contains(got, "dependent clones not made by pvesnap") || !st.Exists("vm-100-disk-0") {
		t.Fatalf("exit status %q", got)
	}
}

// TestProxmoxerCSI drives the sequence with Debian's python3-proxmoxer (form bodies) through
// pvesnap, with a token and with a password ticket.
func TestProxmoxerCSI(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import proxmoxer, requests").Run(); err != nil {
		t.Skipf("SKIP: python3-proxmoxer is not installed (make test installs it): %v", err)
	}
	e := Start(t)
	seedVolume(t, e, "local-zfs", "vm-100-disk-0", 4<<20)
	e.Sim.AddUser("csi@pve", "secret")
	e.Sim.AddACL("/", "csi@pve", "PVEAuditor", true)
	e.Sim.AddACL("/storage", "csi@pve", "PVEDatastoreAdmin", true)
	_, secret, _ := e.Sim.AddToken("csi@pve", "csi", false)
	host, port, _ := strings.Cut(strings.TrimPrefix(e.URL("pve1"), "https://"), ":")
	for _, mode := range []string{"token-json", "password"} {
		cmd := exec.Command("/usr/bin/python3", "testdata/pvesnap_client.py", host, port, mode, "local-zfs", "vm-100-disk-0", "vm-9999-snapshot-"+strings.Split(mode, "-")[0])
		cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+e.Sim.CAFile(), "PVE_USER=csi@pve", "PVE_TOKEN_NAME=csi",
			"PVE_TOKEN_VALUE="+secret, "PVE_PASSWORD=secret")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "OK ") {
			t.Fatalf("%s: %v\n%s", mode, err, out)
		}
		t.Logf("%s: %s", mode, strings.TrimSpace(string(out)))
	}
}
