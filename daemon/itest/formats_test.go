package itest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/auth"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// The formats pvesnap shares with PVE, each written by one side and read by the other, both
// ways. The simulator is an independent reading of PVE (it shares no code with the daemon):
// where the two readings differ, one of these fails.

// TestCrossTickets: a ticket the stand-in issued is read by the daemon (the user inside it,
// the cookie it forwards to pveproxy to check it), and the daemon's forwarding of it is
// accepted by the stand-in; a forged one is refused by the stand-in when the daemon forwards it.
func TestCrossTickets(t *testing.T) {
	e := Start(t)
	e.Sim.AddUser("ops.team+1@pve", "pw")
	e.Sim.AddACL("/", "ops.team+1@pve", "PVEAuditor", true)
	for _, user := range []string{"root@pam", "ops.team+1@pve"} {
		ticket, _, err := e.Sim.Ticket(user)
		must(t, err)
		if got := auth.TicketUser(ticket); got != user {
			t.Errorf("daemon reads user %q from the stand-in's ticket for %q", got, user)
		}
		a := &auth.Authenticator{Upstream: mustURL(t, e.Sim.URL("pve1")), Client: simHTTP(t, e), WWWKey: filepath.Join(e.Sim.Shared(), "pve-www.key")}
		req, _ := http.NewRequest("GET", "/api2/json/nodes/pve1/pvesnap", nil)
		req.AddCookie(&http.Cookie{Name: "PVEAuthCookie", Value: url.PathEscape(ticket)})
		id, err := a.Authenticate(req)
		if err != nil || id.UserID != user {
			t.Errorf("%s: the daemon's check of the stand-in's ticket through the stand-in: %v %v", user, id, err)
		}
		forged := ticket[:len(ticket)-8] + "AAAAAAA="
		req, _ = http.NewRequest("GET", "/api2/json/nodes/pve1/pvesnap", nil)
		req.AddCookie(&http.Cookie{Name: "PVEAuthCookie", Value: url.PathEscape(forged)})
		if _, err := a.Authenticate(req); err == nil {
			t.Errorf("%s: a forged ticket passed", user)
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	must(t, err)
	return u
}

func simHTTP(t *testing.T, e *Env) *http.Client {
	c, err := simpve.NewClient(e.Sim.URL("pve1"), e.Sim.CAFile())
	must(t, err)
	return c.HTTP
}

// TestCrossCSRF: the stand-in's CSRF token verifies with the daemon's HMAC, and a token the
// daemon computes is accepted by the stand-in on a write.
func TestCrossCSRF(t *testing.T) {
	e := Start(t)
	key, err := os.ReadFile(filepath.Join(e.Sim.Shared(), "pve-www.key"))
	must(t, err)
	ticket, csrf, err := e.Sim.Ticket("root@pam")
	must(t, err)
	now := time.Now()
	if !auth.VerifyCSRF(key, "root@pam", csrf, now) {
		t.Errorf("the daemon refuses the stand-in's CSRF token %q", csrf)
	}
	if auth.VerifyCSRF(key, "other@pve", csrf, now) {
		t.Errorf("the stand-in's token for root@pam passes for another user")
	}
	direct, err := simpve.NewClient(e.Sim.URL("pve1"), e.Sim.CAFile())
	must(t, err)
	direct.Ticket, direct.CSRF = ticket, auth.MakeCSRF(key, "root@pam", now)
	r, err := direct.Do("POST", "/nodes/pve1/qemu", url.Values{"vmid": {"321"}})
	must(t, err)
	if r.Code != 200 {
		t.Errorf("the stand-in refuses the daemon's CSRF token: %d %s", r.Code, r.Status)
	}
	direct.CSRF = auth.MakeCSRF(key, "someone@pve", now)
	if r, _ := direct.Do("POST", "/nodes/pve1/qemu", url.Values{"vmid": {"322"}}); r.Code != 401 {
		t.Errorf("a daemon-made token for another user: %d %s", r.Code, r.Status)
	}
}

// TestCrossUPIDsAndTaskFiles: a task the daemon runs (its UPID, log, active and index
// entries) is read by the stand-in's task endpoints, and a task the stand-in runs is read by
// the daemon's task directory code.
func TestCrossUPIDsAndTaskFiles(t *testing.T) {
	e := Start(t)
	direct := e.Root("pve1")
	direct.Base = e.Sim.URL("pve1")
	must(t, direct.Login("root@pam", "pvesnap"))

	// daemon -> stand-in
	st, err := e.Tasks["pve1"].Start(context.Background(), jobSleep(2))
	must(t, err)
	u, err := tasks.ParseUPID(st.UPID)
	must(t, err)
	if e.Tasks["pve1"].Wait(st, 10*time.Second) != "OK" {
		t.Fatalf("daemon task %s did not finish", st.UPID)
	}
	s := status(t, direct, "pve1", st.UPID)
	if s.Status != "stopped" || s.Exitstatus != "OK" || s.User != "root@pam" || s.ID != "100" || s.Type != "pvesnaptest" ||
		s.PID != float64(u.PID) || s.Starttime != float64(u.StartTime) {
		t.Errorf("the stand-in reads the daemon's task as %+v (UPID %+v)", s, u)
	}
	if lines, total := taskLog(t, direct, "pve1", st.UPID, 0, 0); total < 3 || lines[total-1].T != "TASK OK" {
		t.Errorf("the stand-in reads the daemon's log as %d lines: %+v", total, lines)
	}
	e.Sim.Pvestatd() // archive it into index as pvestatd does
	r, err := direct.Do("GET", "/nodes/pve1/tasks", url.Values{"typefilter": {"pvesnaptest"}})
	must(t, err)
	if !strings.Contains(string(r.Data), st.UPID) || !strings.Contains(string(r.Data), `"status":"OK"`) {
		t.Errorf("the stand-in's task list (index) lacks the daemon's task: %s", r.Data)
	}

	// stand-in -> daemon
	d, err := direct.Must("POST", "/nodes/pve1/qemu", url.Values{"vmid": {"150"}})
	must(t, err)
	simUPID := simpve.UPIDOf(d)
	if st, _ := direct.WaitTask(simUPID, 5*time.Second); st != "OK" {
		t.Fatalf("stand-in task %s: %s", simUPID, st)
	}
	su, err := tasks.ParseUPID(simUPID)
	if err != nil || su.String() != simUPID || su.Type != "qmcreate" || su.ID != "150" || su.User != "root@pam" {
		t.Fatalf("the daemon decodes the stand-in's UPID %q as %+v, %v", simUPID, su, err)
	}
	dir := &tasks.Dir{Root: e.Sim.NodePaths("pve1").Tasks}
	if ds, err := dir.Status(simUPID); err != nil || ds.ExitStatus != "OK" {
		t.Errorf("the daemon reads the stand-in's task as %+v, %v", ds, err)
	}
	e.Sim.Pvestatd()
	items, _, err := dir.List(tasks.ListQuery{Source: "all", Auditor: true, TypeFilter: "qmcreate"})
	must(t, err)
	if len(items) != 1 || items[0].UPID != simUPID || items[0].Status != "OK" || items[0].EndTime == 0 {
		t.Errorf("the daemon lists the stand-in's tasks as %+v", items)
	}
}

// TestCrossStorageConfig: storage.cfg written by the stand-in (as pvesm would) is read by the
// daemon, and sections written with the daemon's section-config writer are read by the
// stand-in.
func TestCrossStorageConfig(t *testing.T) {
	e := Start(t)
	must(t, e.Sim.AddStorage(&simpve.Storage{ID: "fast-zfs", Type: "zfspool", Props: map[string]string{"pool": "tank/vms",
		"sparse": "1", "content": "images", "nodes": "pve1"}}))
	must(t, e.Sim.AddStorage(&simpve.Storage{ID: "san9", Type: "lvm", Props: map[string]string{"vgname": "vgsan9",
		"shared": "1", "content": "images", "disable": "1"}}))
	b, err := os.ReadFile(filepath.Join(e.Sim.Shared(), "storage.cfg"))
	must(t, err)
	cfg, err := pve.ParseStorageConfig(b)
	if err != nil {
		t.Fatalf("the daemon cannot read the stand-in's storage.cfg: %v\n%s", err, b)
	}
	if z := cfg["fast-zfs"]; z == nil || z.Type != "zfspool" || z.Pool != "tank/vms" || !z.Sparse || !z.OnNode("pve1") || z.OnNode("pve2") {
		t.Errorf("fast-zfs as the daemon reads it: %+v", z)
	}
	if s := cfg["san9"]; s == nil || s.VGName != "vgsan9" || !s.Shared || !s.Disabled || !s.HasContent("images") {
		t.Errorf("san9 as the daemon reads it: %+v", s)
	}

	var secs []*pve.Section
	for _, s := range []struct{ typ, id string }{{"lvmthin", "thin2"}, {"dir", "local"}} {
		sec := &pve.Section{Type: s.typ, ID: s.id}
		secs = append(secs, sec)
	}
	secs[0].Set("thinpool", "data2")
	secs[0].Set("vgname", "pve2")
	secs[0].Set("content", "images,rootdir")
	secs[0].Set("nodes", "pve1")
	secs[1].Set("path", "/var/lib/vz")
	secs[1].Set("content", "iso,backup")
	must(t, e.Sim.SetStorageConfig(string(pve.FormatSectionConfig(secs))))
	scfg, err := e.Sim.StorageConfig()
	if err != nil {
		t.Fatalf("the stand-in cannot read the daemon's section config: %v\n%s", err, pve.FormatSectionConfig(secs))
	}
	if th := scfg["thin2"]; th == nil || th.Type != "lvmthin" || th.ThinPool != "data2" || th.VGName != "pve2" ||
		!th.HasContent("rootdir") || !th.OnNode("pve1") {
		t.Errorf("thin2 as the stand-in reads it: %+v", th)
	}
}

// TestCrossVMConfigs: a config qemu-server's stand-in wrote is read by the daemon (disks,
// NICs, creation time, description), and one the daemon writes (as a restore does) is parsed
// by the stand-in with the config schema, value for value.
func TestCrossVMConfigs(t *testing.T) {
	e := Start(t)
	root := e.Root("pve1")
	root.Base = e.Sim.URL("pve1")
	must(t, root.Login("root@pam", "pvesnap"))
	desc := "web: front end\n100% ours"
	d, err := root.Must("POST", "/nodes/pve1/qemu", url.Values{"vmid": {"130"}, "name": {"web"}, "memory": {"2048"},
		"scsi0": {"local-lvm:1,discard=on"}, "net0": {"virtio,bridge=vmbr0,firewall=1"}, "allow-ksm": {"0"},
		"description": {desc}, "tags": {"prod;web"}})
	must(t, err)
	if st, _ := root.WaitTask(simpve.UPIDOf(d), 5*time.Second); st != "OK" {
		t.Fatalf("qmcreate: %s", st)
	}
	raw, err := os.ReadFile(filepath.Join(e.Sim.NodePaths("pve1").PVE, "qemu-server", "130.conf"))
	must(t, err)
	cfg, err := pve.ParseVMConfig(raw)
	if err != nil {
		t.Fatalf("the daemon cannot read the stand-in's config: %v\n%s", err, raw)
	}
	disks := cfg.Disks()
	if len(disks) != 1 || disks[0].Key != "scsi0" || disks[0].Volid.String() != "local-lvm:vm-130-disk-0" || disks[0].Opts["discard"] != "on" {
		t.Errorf("disks as the daemon reads them: %+v\n%s", disks, raw)
	}
	if cfg.CTime() == 0 || cfg.Description != desc || cfg.Props["allow-ksm"] != "0" {
		t.Errorf("ctime %d, description %q, allow-ksm %q as the daemon reads them\n%s", cfg.CTime(), cfg.Description, cfg.Props["allow-ksm"], raw)
	}

	// daemon -> stand-in: the config written back as the restore code writes configs.
	cfg.Props["name"] = "web-restored"
	cfg.Props["net0"] = strings.Replace(cfg.Props["net0"], "firewall=1", "firewall=1,link_down=1", 1)
	out := pve.FormatVMConfig(cfg.Description, cfg.Order, cfg.Props)
	must(t, e.Sim.WriteVMConfig("pve1", 131, string(out)))
	got, err := e.Sim.ReadVMConfig("pve1", 131)
	if err != nil {
		t.Fatalf("the stand-in refuses the daemon's config: %v\n%s", err, out)
	}
	for k, v := range cfg.Props {
		if got[k] != v {
			t.Errorf("%s: the stand-in reads %q, the daemon wrote %q", k, got[k], v)
		}
	}
	if got["description"] != desc {
		t.Errorf("description: the stand-in reads %q from the daemon's config, want %q\n%s", got["description"], desc, out)
	}
	var conf map[string]any
	if err := decode(root, "/nodes/pve1/qemu/131/config", &conf); err != nil || conf["name"] != "web-restored" {
		t.Errorf("GET config of the daemon-written VM: %v %v", conf, err)
	}
}

func decode(c *simpve.Client, path string, v any) error {
	d, err := c.Must("GET", path, nil)
	if err != nil {
		return err
	}
	return json.Unmarshal(d, v)
}
