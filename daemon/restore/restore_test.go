package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/lvm"
)

var ctx = context.Background()

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func openDB(t *testing.T) *store.DB {
	db, err := store.Open(filepath.Join(t.TempDir(), "pvesnap.db"))
	must(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// The journal: undos run in reverse; after the commit only cleanups run; a failed undo leaves
// the job for a retry, which runs only what is left.
func TestJournalUnwind(t *testing.T) {
	for _, committed := range []bool{false, true} {
		t.Run(fmt.Sprintf("committed=%v", committed), func(t *testing.T) {
			db := openDB(t)
			j, err := Begin(ctx, db, "job1", KindRestore, "vm:100", map[string]int{"vmid": 100})
			must(t, err)
			if _, err := Begin(ctx, db, "job2", KindRestore, "vm:100", nil); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "job job1") {
				t.Fatalf("second restore of VM 100: %v", err)
			}
			must(t, j.Step(ctx, "copy", Action{Kind: "a"}, func() error { return nil }))
			must(t, j.Step(ctx, "create", Action{Kind: "b", Revert: true}, func() error { return nil }))
			must(t, j.Step(ctx, "noop", None, func() error { return nil }))
			if committed {
				must(t, j.Step(ctx, "commit", None, func() error { return j.Commit(ctx) }))
				must(t, j.Step(ctx, "old", Action{Kind: "c"}, func() error { return nil }))
			} else {
				if err := j.Step(ctx, "swap", Action{Kind: "d", Revert: true}, func() error { return errors.New("boom") }); err == nil {
					t.Fatal("step error lost")
				}
			}
			var ran []string
			fail := true
			exec := func(ctx context.Context, a Action) error {
				ran = append(ran, a.Kind)
				if a.Kind == "a" && fail {
					return errors.New("array unreachable")
				}
				return nil
			}
			err = Unwind(ctx, db, "job1", exec, t.Logf)
			want := "d b a"
			if committed {
				want = "c a"
			}
			if strings.Join(ran, " ") != want || err == nil {
				t.Fatalf("first unwind ran %v (%v), want %s and an error", ran, err, want)
			}
			jobs, _ := Unfinished(ctx, db)
			if len(jobs) != 1 || jobs[0].State != StateStuck {
				t.Fatalf("after a failed undo: %+v", jobs)
			}
			if _, err := Begin(ctx, db, "job3", KindRestore, "vm:100", nil); !errors.Is(err, ErrBusy) {
				t.Fatal("a job whose cleanup failed must keep its target")
			}
			ran, fail = nil, false
			must(t, Unwind(ctx, db, "job1", exec, t.Logf))
			if strings.Join(ran, " ") != "a" {
				t.Fatalf("retry ran %v, want only the failed one", ran)
			}
			var state string
			db.QueryRow(`SELECT state FROM jobs WHERE id = 'job1'`).Scan(&state)
			if (committed && state != StateDone) || (!committed && state != StateRolledBack) {
				t.Fatalf("final state %s", state)
			}
			if _, err := Begin(ctx, db, "job4", KindRestore, "vm:100", nil); err != nil {
				t.Fatalf("after the job ended: %v", err)
			}
		})
	}
}

const srcConfig = `#web server
#second%20line
agent: 1
boot: order=scsi0;net0
lock: backup
memory: 2048
meta: creation-qemu=9.2.0,ctime=1700000000
name: web
net0: virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1
net1: e1000=BC:24:11:DD:EE:FF,bridge=vmbr1,link_down=0
parent: pre-upgrade
scsi0: san1:vm-100-disk-0,discard=on,size=32G
scsi1: san1:vm-100-disk-1,size=8G
ide0: local:iso/debian.iso,media=cdrom
ide2: san1:vm-100-cloudinit,media=cdrom
efidisk0: local-lvm:vm-100-disk-2,efitype=4m,size=4M
unused0: san1:vm-100-disk-9
smbios1: uuid=0b9d3fb0-7a0c-4a4e-8a4c-5b0c3b8f0e11
vmgenid: 6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d

[PENDING]
memory: 4096

[special:cloudinit]
ipconfig0: ip=dhcp

[pre-upgrade]
#before the upgrade
memory: 2048
scsi0: san1:vm-100-disk-0,size=32G
`

// A new VM's config is what qmrestore makes of a vzdump backup of the source: only the current
// section (snapshots, pending changes and special sections left out, and said so), the
// restored disks, unusedN only when restored, its own cloud-init drive, fresh MACs and
// identities.
func TestReplay(t *testing.T) {
	src, err := pve.ParseVMConfig([]byte(srcConfig))
	must(t, err)
	now := time.Unix(1800000000, 0)
	out, notes := Replay(src, ReplayOptions{Name: "web-restored", Disks: map[string]string{"scsi0": "san2:vm-200-disk-0", "scsi1": "san2:vm-200-disk-1"},
		CloudInit: "san2:vm-200-cloudinit", LinkDown: true, MACPrefix: "02:AB:CD", Now: now})
	cfg, err := pve.ParseVMConfig(out)
	must(t, err)
	p := cfg.Props
	if p["scsi0"] != "san2:vm-200-disk-0,discard=on,size=32G" || p["scsi1"] != "san2:vm-200-disk-1,size=8G" || p["ide0"] != "local:iso/debian.iso,media=cdrom" {
		t.Errorf("disks: %v", p)
	}
	if p["ide2"] != "san2:vm-200-cloudinit,media=cdrom" {
		t.Errorf("the cloud-init drive must be the new VM's own, not VM 100's: %q", p["ide2"])
	}
	wantNotes := []string{"disk efidisk0 (local-lvm:vm-100-disk-2) is not restored (not on the restored array volumes)",
		"pending configuration changes found (not included into the restored VM)",
		"snapshots found (not included into the restored VM)",
		"special config section found (not included into the restored VM)"}
	if _, ok := p["efidisk0"]; ok || strings.Join(notes, "|") != strings.Join(wantNotes, "|") {
		t.Errorf("efidisk0 %q, notes %q", p["efidisk0"], notes)
	}
	for _, k := range []string{"lock", "parent", "unused0"} {
		if _, ok := p[k]; ok {
			t.Errorf("%s carried over", k)
		}
	}
	if len(cfg.Snapshots) != 0 || len(cfg.Pending) != 0 || len(cfg.Special) != 0 || p["memory"] != "2048" {
		t.Errorf("sections carried over: snapshots %v pending %v special %v memory %s", cfg.Snapshots, cfg.Pending, cfg.Special, p["memory"])
	}
	if p["name"] != "web-restored" || p["meta"] != "creation-qemu=9.2.0,ctime=1800000000" {
		t.Errorf("name %s meta %s", p["name"], p["meta"])
	}
	mac := regexp.MustCompile(`^virtio=02:AB:CD:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2},bridge=vmbr0,firewall=1,link_down=1$`)
	if !mac.MatchString(p["net0"]) || !strings.Contains(p["net1"], "link_down=1") || strings.Contains(p["net1"], "DD:EE:FF") {
		t.Errorf("NICs: %s / %s", p["net0"], p["net1"])
	}
	if p["vmgenid"] == src.Props["vmgenid"] || !strings.HasPrefix(p["smbios1"], "uuid=") || p["smbios1"] == src.Props["smbios1"] {
		t.Errorf("a restored copy must not share vmgenid/SMBIOS UUID: %s %s", p["vmgenid"], p["smbios1"])
	}
	if cfg.Description != "web server\nsecond line" || p["agent"] != "1" || p["boot"] != "order=scsi0;net0" {
		t.Errorf("kept settings: %q %v", cfg.Description, p)
	}
	// unused0 asked for and restored: it stays a detached disk of the new VM.
	out, _ = Replay(src, ReplayOptions{Disks: map[string]string{"scsi0": "san1:vm-300-disk-0", "unused0": "san1:vm-300-disk-1"}, PreserveMACs: true, Now: now})
	cfg, _ = pve.ParseVMConfig(out)
	if cfg.Props["net0"] != "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1" || cfg.Props["net1"] != "e1000=BC:24:11:DD:EE:FF,bridge=vmbr1,link_down=0" {
		t.Errorf("preserved MACs: %s / %s", cfg.Props["net0"], cfg.Props["net1"])
	}
	if cfg.Props["unused0"] != "san1:vm-300-disk-1" {
		t.Errorf("restored unused0: %q", cfg.Props["unused0"])
	}
	if _, ok := cfg.Props["ide2"]; ok {
		t.Errorf("a cloud-init drive without a volume made for it: %q", cfg.Props["ide2"])
	}
}

// Every section keeps its own '#' description when a config is rewritten (an in-place
// restore's link_down and unlock rewrite the VM's whole config).
func TestConfigRewriteKeepsSections(t *testing.T) {
	root := t.TempDir()
	v := VMs{PVE: filepath.Join(root, "pve"), Lock: filepath.Join(root, "lock"), Node: "pve1"}
	must(t, os.MkdirAll(filepath.Join(v.PVE, "nodes", "pve1", "qemu-server"), 0o755))
	must(t, os.WriteFile(filepath.Join(v.PVE, "nodes", "pve1", "qemu-server", "100.conf"), []byte(srcConfig+"\n[old-day]\n#first line\n#second line\nmemory: 1024\n"), 0o640))
	must(t, v.Update(100, SetLinkDown))
	b, _ := os.ReadFile(filepath.Join(v.PVE, "nodes", "pve1", "qemu-server", "100.conf"))
	cfg, err := pve.ParseVMConfig(b)
	must(t, err)
	if cfg.SectionDescriptions["pre-upgrade"] != "before the upgrade" || cfg.SectionDescriptions["old-day"] != "first line\nsecond line" {
		t.Errorf("snapshot descriptions lost:\n%s", b)
	}
	if cfg.Description != "web server\nsecond line" || cfg.Pending["memory"] != "4096" || cfg.Special["cloudinit"]["ipconfig0"] != "ip=dhcp" {
		t.Errorf("sections lost:\n%s", b)
	}
	if !strings.Contains(cfg.Props["net0"], "link_down=1") {
		t.Errorf("the change itself: %s", cfg.Props["net0"])
	}
}

// A new VM's VMID is reserved with a marker; only that marker lets the undo remove it.
func TestReserve(t *testing.T) {
	root := t.TempDir()
	v := VMs{PVE: filepath.Join(root, "pve"), Lock: filepath.Join(root, "lock"), Node: "pve1"}
	os.MkdirAll(filepath.Join(v.PVE, "nodes", "pve2", "qemu-server"), 0o755)
	os.WriteFile(filepath.Join(v.PVE, "nodes", "pve2", "qemu-server", "100.conf"), []byte("name: x\n"), 0o640)
	os.MkdirAll(filepath.Join(v.PVE, "nodes", "pve1", "lxc"), 0o755)
	os.WriteFile(filepath.Join(v.PVE, "nodes", "pve1", "lxc", "101.conf"), []byte("hostname: c\n"), 0o640)
	if id, err := v.NextID(); err != nil || id != 102 {
		t.Fatalf("next id %d %v", id, err)
	}
	if err := v.Reserve(100, "m"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("VMID of another node: %v", err)
	}
	must(t, v.Reserve(102, "pvesnap restore job abc in progress"))
	if err := v.Reserve(102, "x"); err == nil {
		t.Fatal("reserved twice")
	}
	must(t, v.Unreserve(102, "another job"))
	if !v.Exists(102) {
		t.Fatal("removed with a foreign marker")
	}
	must(t, v.Unreserve(102, "pvesnap restore job abc in progress"))
	if v.Exists(102) {
		t.Fatal("reservation left behind")
	}
	must(t, v.Unreserve(102, "pvesnap restore job abc in progress")) // idempotent
}

// The undo actions refuse what the job did not create.
func TestExecGuards(t *testing.T) {
	r := &Restorer{}
	for _, a := range []Action{
		{Kind: "array-destroy-volume", Args: map[string]string{"array": "fa1", "volume": "vm-100-disk-0"}},
		{Kind: "lvm-deactivate-vg", Args: map[string]string{"vg": "pve"}},
	} {
		if err := r.Exec(ctx, a); err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("%v: %v", a, err)
		}
	}
	if owned(lvmLV("vm-100-disk-0", "pve-vm-100"), map[string]string{"tag": "pvesnap-abc"}) {
		t.Error("an LV without the job's tag counted as the job's")
	}
	if !owned(lvmLV("pvesnap-abc-scsi0", "pve-vm-100", "pvesnap-abc"), map[string]string{"tag": "pvesnap-abc"}) {
		t.Error("the job's LV not recognised")
	}
	if owned(lvmLV("vm-100-disk-0"), map[string]string{}) {
		t.Error("no guard must mean not owned")
	}
}

// The undo of "create LV" when the create failed because the name was taken: the LV there is
// another's, it is left alone, and the undo is done (a refusal here would leave the job stuck
// in cleanup-failed, blocking the VMID for good).
func TestUndoCreateOfForeignLV(t *testing.T) {
	var removed [][]string
	run := runner.Func(func(_ context.Context, argv []string) ([]byte, error) {
		switch argv[0] {
		case "lvs":
			return []byte(`{"report":[{"lv":[{"vg_name":"vgsan1","lv_name":"vm-200-disk-2","lv_size":"8388608","lv_attr":"-wi-------","lv_tags":"pve-vm-200"}]}]}`), nil
		case "lvremove":
			removed = append(removed, argv)
		}
		return nil, nil
	})
	r := &Restorer{LVM: &lvm.LVM{Run: run}}
	undo := Action{Kind: "lvm-remove-lv", Revert: true, Args: map[string]string{"storage": "san1", "vg": "vgsan1", "lv": "vm-200-disk-2", "tag": "pvesnap-abc"}}
	if err := r.Exec(ctx, undo); err != nil {
		t.Errorf("undo of a create that never happened: %v", err)
	}
	guarded := Action{Kind: "lvm-remove-lv", Args: map[string]string{"storage": "san1", "vg": "vgsan1", "lv": "vm-200-disk-2", "require_tag": "pvesnap-abc"}}
	if err := r.Exec(ctx, guarded); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("removal of an LV that must be the job's: %v", err)
	}
	if len(removed) != 0 {
		t.Errorf("the other's LV was removed: %v", removed)
	}
}

func lvmLV(name string, tags ...string) lvm.LV { return lvm.LV{Name: name, Tags: tags} }

// The state disk fills up: journaling refuses with SQLite's own reason, and what was
// recorded before stays readable (the daemon can still unwind it).
func TestJournalDiskFull(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("SKIP: a small tmpfs for a full disk needs mount privileges: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", dir).Run()
	db, err := store.Open(filepath.Join(dir, "pvesnap.db"))
	must(t, err)
	defer db.Close()
	j, err := Begin(ctx, db, "first", KindRestore, "vm:100", map[string]string{})
	must(t, err)
	must(t, j.Step(ctx, "copy", Action{Kind: "array-destroy-volume", Args: map[string]string{"volume": "pvesnap-first-0"}}, func() error { return nil }))
	big := strings.Repeat("x", 16<<10)
	var full error
	for i := 0; i < 200 && full == nil; i++ {
		_, full = Begin(ctx, db, fmt.Sprintf("filler%03d", i), KindRestore, fmt.Sprintf("vm:%d", 1000+i), map[string]string{"pad": big})
	}
	if full == nil || !strings.Contains(full.Error(), "full") {
		t.Fatalf("filling the disk: %v", full)
	}
	jobs, err := Unfinished(ctx, db)
	if err != nil || len(jobs) == 0 || jobs[0].ID != "first" {
		t.Fatalf("after the disk filled: %v %+v", err, jobs)
	}
	var ran []string
	Unwind(ctx, db, "first", func(ctx context.Context, a Action) error { ran = append(ran, a.Args["volume"]); return nil }, t.Logf)
	if len(ran) != 1 || ran[0] != "pvesnap-first-0" {
		t.Fatalf("the recorded undo did not run on a full disk: %v", ran)
	}
}

func TestFreeDiskName(t *testing.T) {
	taken := map[string]bool{"vm-200-disk-0": true, "vm-200-disk-2": true, "vm-20-disk-1": true, "vm-2000-disk-1": true}
	if got, err := freeDiskName(taken, 200); err != nil || got != "vm-200-disk-1" {
		t.Errorf("freeDiskName = %q, %v; want vm-200-disk-1 (the orphaned disk-0 and disk-2 kept)", got, err)
	}
	if got, _ := freeDiskName(taken, 20); got != "vm-20-disk-0" {
		t.Errorf("freeDiskName(20) = %q: names of other VMs must not count", got)
	}
	full := map[string]bool{}
	for n := 0; n < 100; n++ {
		full[fmt.Sprintf("vm-201-disk-%d", n)] = true
	}
	if _, err := freeDiskName(full, 201); err == nil || !strings.Contains(err.Error(), "unable to allocate") {
		t.Errorf("100 disks taken: %v", err)
	}
}

// A new VM's disks go to their own target, else the common one, else their source's storage;
// disk-storage names each disk once, with a storage ID PVE accepts.
func TestDiskStorage(t *testing.T) {
	m, err := parseDiskStorage("scsi1:lvm2,virtio0:san-b")
	if err != nil || len(m) != 2 || m["scsi1"] != "lvm2" || m["virtio0"] != "san-b" {
		t.Fatalf("parse: %v %v", m, err)
	}
	for bad, want := range map[string]string{"scsi1:lvm2,scsi1:lvm3": "disk scsi1 is given twice", "scsi1:x": "storage ID 'x' contains illegal characters",
		"scsi1:-x": "storage ID '-x'"} {
		_, err := parseDiskStorage(bad)
		if e := api.AsError(err); err == nil || !strings.Contains(e.Errors["disk-storage"], want) {
			t.Errorf("%q: %v, want a disk-storage error %q", bad, err, want)
		}
	}
	s := Spec{DiskStorage: m}
	if got := s.TargetStorage("scsi1", "san1"); got != "lvm2" {
		t.Errorf("scsi1 goes to %s", got)
	}
	if got := s.TargetStorage("scsi0", "san1"); got != "san1" {
		t.Errorf("scsi0 without targets goes to %s, not its source's storage", got)
	}
	s.Storage = "lvm9"
	if got := s.TargetStorage("scsi0", "san1"); got != "lvm9" {
		t.Errorf("scsi0 goes to %s, not the common target", got)
	}
	if got := s.TargetStorage("scsi1", "san1"); got != "lvm2" {
		t.Errorf("scsi1's own target lost to the common one: %s", got)
	}
}
