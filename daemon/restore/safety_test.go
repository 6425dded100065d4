package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
)

// memLVM answers the LVM commands of a swap (lvs, lvrename, lvremove) from a table of LVs in
// one VG, and fails the commands a test names.
type memLVM struct {
	mu    sync.Mutex
	vg    string
	lvs   map[string]memLV // by name
	fail  map[string]error // command -> its failure
	calls []string
}

type memLV struct {
	uuid string
	tags []string
}

func (m *memLVM) Run(ctx context.Context, argv []string, _ ...runner.Option) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, strings.Join(argv, " "))
	if err := m.fail[argv[0]]; err != nil {
		return nil, &runner.ExecError{Argv: argv, ExitCode: 5, Stderr: err.Error(), Err: err}
	}
	switch argv[0] {
	case "lvs":
		var rows []map[string]string
		for _, name := range slices.Sorted(maps.Keys(m.lvs)) {
			rows = append(rows, map[string]string{"vg_name": m.vg, "lv_name": name, "lv_uuid": m.lvs[name].uuid, "lv_size": "4194304",
				"lv_tags": strings.Join(m.lvs[name].tags, ",")})
		}
		b, _ := json.Marshal(map[string]any{"report": []map[string]any{{"lv": rows}}})
		return b, nil
	case "lvrename": // lvrename VG FROM TO
		from, to := argv[2], argv[3]
		lv, ok := m.lvs[from]
		if !ok {
			return nil, fmt.Errorf("Existing logical volume \"%s\" not found in volume group \"%s\"", from, m.vg)
		}
		if _, taken := m.lvs[to]; taken {
			return nil, fmt.Errorf("Logical Volume \"%s\" already exists in volume group \"%s\"", to, m.vg)
		}
		delete(m.lvs, from)
		m.lvs[to] = lv
		return nil, nil
	case "lvremove": // lvremove -f VG/LV
		_, name, _ := strings.Cut(argv[2], "/")
		delete(m.lvs, name)
		return nil, nil
	}
	return nil, fmt.Errorf("memLVM: %v not emulated", argv)
}

// byUUID finds an LV's current name.
func (m *memLVM) byUUID(uuid string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for n, lv := range m.lvs {
		if lv.uuid == uuid {
			return n
		}
	}
	return ""
}

// An in-place restore that fails after the disk swap is rolled back; when renaming the VM's
// original LV back fails, the original is never removed, the VM stays locked and stopped
// (the undos that depend on the rename are held), and a later resume finishes the rollback
// with the original back under its name.
func TestRollbackNeverRemovesOriginal(t *testing.T) {
	const job = "abcdef1234"
	root := t.TempDir()
	db := openDB(t)
	fake := &memLVM{vg: "vgsan1", lvs: map[string]memLV{
		"vm-100-disk-0":         {uuid: "ORIGINAL", tags: []string{"pve-vm-100"}},
		newLV(job, "scsi0"):     {uuid: "RESTORED", tags: []string{"pve-vm-100", jobTag(job)}},
		"vm-100-disk-1":         {uuid: "OTHER-DISK"},
		"pvesnap-zzz-old-scsi0": {uuid: "SOMEONE-ELSES"},
	}}
	r := &Restorer{Node: "pve1", LVM: &lvm.LVM{Run: fake}, DB: db, VMs: VMs{PVE: filepath.Join(root, "pve"), Lock: filepath.Join(root, "lock"), Node: "pve1"}}
	j, err := Begin(ctx, db, job, KindRestore, "vm:100", nil)
	must(t, err)
	var undone []string
	vmUndos := func(ctx context.Context, a Action) error {
		if strings.HasPrefix(a.Kind, "vm-") {
			undone = append(undone, a.Kind)
			return nil
		}
		return r.Exec(ctx, a)
	}
	// What Run and swapDisks journal before the swap: the VM's lock, and its stop.
	must(t, j.Step(ctx, "lock VM", Action{Kind: "vm-unlock", Chain: ChainTarget, Args: map[string]string{"vmid": "100", "lock": lockRestore}}, func() error { return nil }))
	must(t, j.Step(ctx, "stop VM", Action{Kind: "vm-start", Revert: true, Chain: ChainTarget, Args: map[string]string{"vmid": "100", "was_running": "true"}}, func() error { return nil }))
	var log strings.Builder
	task := tasks.NewTask(tasks.UPID{}, tasks.Job{}, &log)
	p := plan{src: inventory.DiskSource{Disk: inventory.DiskView{DiskID: inventory.DiskID{Key: "scsi0", Volid: "san1:vm-100-disk-0", Storage: "san1"}}},
		vg: "vgsan1", dst: newLV(job, "scsi0")}
	must(t, r.swapDisk(ctx, task, j, Spec{Job: job, VMID: 100}, p))
	if fake.byUUID("RESTORED") != "vm-100-disk-0" || fake.byUUID("ORIGINAL") != oldLV(job, "scsi0") {
		t.Fatalf("after the swap: %v", fake.lvs)
	}
	// A later step fails; renames fail too (say, the storage lock's VG metadata is busy).
	fake.fail = map[string]error{"lvrename": errors.New("Volume group \"vgsan1\" has insufficient free space")}
	err = Unwind(ctx, db, job, vmUndos, t.Logf)
	if err == nil || !strings.Contains(err.Error(), "held until the failed ones succeed") {
		t.Fatalf("unwind with failing renames: %v", err)
	}
	if fake.byUUID("ORIGINAL") == "" {
		t.Fatalf("the VM's original disk was removed by a rollback; calls:\n%s", strings.Join(fake.calls, "\n"))
	}
	for _, c := range fake.calls {
		if strings.HasPrefix(c, "lvremove") {
			t.Errorf("a rollback ran %q", c)
		}
	}
	if len(undone) != 0 {
		t.Errorf("the VM was restarted or unlocked on mixed disks: %v", undone)
	}
	jobs, _ := Unfinished(ctx, db)
	if len(jobs) != 1 || jobs[0].State != StateStuck {
		t.Fatalf("job after a failed undo: %+v", jobs)
	}
	st, err := JobStatusOf(ctx, db, job)
	must(t, err)
	if txt := st.String(); !strings.Contains(txt, "failed") || !strings.Contains(txt, "lvm-rename-lv") || !strings.Contains(txt, "held") {
		t.Errorf("status does not explain the stuck job:\n%s", txt)
	}
	// The cause is gone: resuming finishes the rollback.
	fake.fail = nil
	must(t, Unwind(ctx, db, job, vmUndos, t.Logf))
	if fake.byUUID("ORIGINAL") != "vm-100-disk-0" || fake.byUUID("RESTORED") != newLV(job, "scsi0") || fake.byUUID("SOMEONE-ELSES") == "" {
		t.Fatalf("after the resumed rollback: %v", fake.lvs)
	}
	if strings.Join(undone, " ") != "vm-start vm-unlock" {
		t.Errorf("undos of the VM after the rollback: %v", undone)
	}
}

// After the commit, the original is removed, and only the job's own set-aside LV.
func TestCommitRemovesOnlyTheReplaced(t *testing.T) {
	const job = "abcdef5678"
	root := t.TempDir()
	db := openDB(t)
	fake := &memLVM{vg: "vgsan1", lvs: map[string]memLV{
		"vm-100-disk-0":     {uuid: "ORIGINAL"},
		newLV(job, "scsi0"): {uuid: "RESTORED", tags: []string{jobTag(job)}},
	}}
	r := &Restorer{Node: "pve1", LVM: &lvm.LVM{Run: fake}, DB: db, VMs: VMs{PVE: filepath.Join(root, "pve"), Lock: filepath.Join(root, "lock"), Node: "pve1"}}
	j, err := Begin(ctx, db, job, KindRestore, "vm:100", nil)
	must(t, err)
	task := tasks.NewTask(tasks.UPID{}, tasks.Job{}, &strings.Builder{})
	p := plan{src: inventory.DiskSource{Disk: inventory.DiskView{DiskID: inventory.DiskID{Key: "scsi0", Volid: "san1:vm-100-disk-0", Storage: "san1"}}},
		vg: "vgsan1", dst: newLV(job, "scsi0")}
	must(t, r.swapDisk(ctx, task, j, Spec{Job: job, VMID: 100}, p))
	must(t, r.commit(ctx, j))
	must(t, Unwind(ctx, db, job, r.Exec, t.Logf))
	if len(fake.lvs) != 1 || fake.byUUID("RESTORED") != "vm-100-disk-0" {
		t.Fatalf("after the commit: %v", fake.lvs)
	}
	if _, err := os.Stat(filepath.Join(r.VMs.PVE, "priv", "lock", "storage-san1")); !os.IsNotExist(err) {
		t.Errorf("storage lock left: %v", err)
	}
}

// In-place restores PVE would refuse are refused before anything is done, in PVE's words; so
// are VMs the HA manager would restart meanwhile and VMs of another node.
func TestOverwriteRefusals(t *testing.T) {
	root := t.TempDir()
	v := VMs{PVE: filepath.Join(root, "pve"), Lock: filepath.Join(root, "lock"), Node: "pve1"}
	for _, n := range []string{"pve1", "pve2"} {
		must(t, os.MkdirAll(filepath.Join(v.PVE, "nodes", n, "qemu-server"), 0o755))
	}
	must(t, os.MkdirAll(filepath.Join(v.PVE, "ha"), 0o755))
	must(t, os.WriteFile(filepath.Join(v.PVE, "ha", "resources.cfg"), []byte("vm: 106\n\tstate started\n\tmax_restart 1\n\nvm: 107\n\tstate ignored\n\nvm: 108\n\tgroup g1\n\nct: 109\n\tstate stopped\n\nvm: 110\n\tstate stopped\n"), 0o640))
	base := "name: x\nscsi0: san1:vm-%d-disk-0,size=4G\n"
	for _, c := range []struct {
		vmid  int64
		extra string
		node  string
		start bool
		want  string // "" = accepted
	}{
		{vmid: 100},
		{vmid: 101, extra: "lock: backup\n", want: "unable to restore VM 101 - VM is locked (backup)"},
		{vmid: 102, extra: "lock: migrate\n", want: "unable to restore VM 102 - VM is locked (migrate)"},
		{vmid: 103, extra: "lock: suspended\n", want: "unable to restore VM 103 - VM is locked (suspended)"},
		{vmid: 104, extra: "protection: 1\n", want: "unable to restore VM 104 - - protection mode enabled"},
		{vmid: 105, node: "pve2", want: "VM 105 is on node pve2"},
		{vmid: 106, want: "VM is managed by HA (state started)"},
		{vmid: 107},
		{vmid: 108, want: "VM is managed by HA (state started)"}, // no state line: started
		{vmid: 110},
		{vmid: 110, start: true, want: "VM is managed by HA (state stopped)"},
		{vmid: 111, node: "none", want: "Configuration file 'nodes/pve1/qemu-server/111.conf' does not exist"},
	} {
		node := c.node
		if node == "" {
			node = "pve1"
		}
		if node != "none" {
			must(t, os.WriteFile(filepath.Join(v.PVE, "nodes", node, "qemu-server", fmt.Sprintf("%d.conf", c.vmid)), []byte(fmt.Sprintf(base, c.vmid)+c.extra), 0o640))
		}
		_, err := v.CheckOverwrite(c.vmid, "", c.start)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("VM %d: refused: %v", c.vmid, err)
		case c.want != "" && (err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("VM %d: %v, want %q", c.vmid, err, c.want)
		}
	}
	// The restore's own lock is expected once taken; its removal meanwhile is refused.
	must(t, os.WriteFile(filepath.Join(v.PVE, "nodes", "pve1", "qemu-server", "120.conf"), []byte("name: x\nlock: create\n"), 0o640))
	if _, err := v.CheckOverwrite(120, lockRestore, false); err != nil {
		t.Errorf("with its own lock: %v", err)
	}
	if _, err := v.CheckOverwrite(100, lockRestore, false); err == nil || !strings.Contains(err.Error(), "lock 'create' was removed") {
		t.Errorf("lock removed meanwhile: %v", err)
	}
}

// What qmrestore checks on the config a new VM gets (check_bridge_access,
// check_mapping_access), for a user who is not root@pam.
func TestRestoredConfigPermissions(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "sdn"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "sdn", "vnets.cfg"), []byte("vnet: vnet1\n\tzone zone1\n\ttag 100\n"), 0o640))
	zone := SDNZone(root)
	for _, c := range []struct {
		name, cfg string
		granted   []string // "path priv"
		want      string   // "" = allowed; else the refused path or message
	}{
		{"bridge", "net0: virtio=BC:24:11:00:00:01,bridge=vmbr0\n", []string{"/sdn/zones/localnetwork/vmbr0 SDN.Use"}, ""},
		{"bridge without SDN.Use", "net0: virtio=BC:24:11:00:00:01,bridge=vmbr0\n", nil, "/sdn/zones/localnetwork/vmbr0"},
		{"VLAN tag", "net0: virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=42\n", []string{"/sdn/zones/localnetwork/vmbr0 SDN.Use"}, "/sdn/zones/localnetwork/vmbr0/42"},
		{"trunks", "net0: virtio=BC:24:11:00:00:01,bridge=vmbr0,trunks=10;20-21\n",
			[]string{"/sdn/zones/localnetwork/vmbr0/10 SDN.Use", "/sdn/zones/localnetwork/vmbr0/20 SDN.Use"}, "/sdn/zones/localnetwork/vmbr0/21"},
		{"SDN vnet", "net0: virtio=BC:24:11:00:00:01,bridge=vnet1\n", []string{"/sdn/zones/localnetwork/vnet1 SDN.Use"}, "/sdn/zones/zone1/vnet1"},
		{"raw PCI device", "hostpci0: 0000:01:00.0,pcie=1\n", nil, "only root can set 'hostpci0' config for non-mapped devices"},
		{"mapped PCI device", "hostpci0: mapping=gpu1,pcie=1\n", []string{"/mapping/pci/gpu1 Mapping.Use"}, ""},
		{"mapped PCI device without Mapping.Use", "hostpci0: mapping=gpu1\n", nil, "/mapping/pci/gpu1"},
		{"raw USB device", "usb0: host=1234:5678\n", nil, "only root can set 'usb0' config for real devices"},
		{"SPICE USB", "usb0: host=spice\n", nil, ""},
		{"mapped USB device", "usb1: mapping=key\n", nil, "/mapping/usb/key"},
		{"hardware RNG", "rng0: source=/dev/hwrng\n", nil, "/mapping/hwrng"},
		{"virtiofs", "virtiofs0: dirid=share1\n", nil, "/mapping/dir/share1"},
	} {
		cfg, err := pveParse(c.cfg)
		must(t, err)
		check := func(path string, privs ...string) error {
			if slices.Contains(c.granted, path+" "+privs[0]) {
				return nil
			}
			return fmt.Errorf("Permission check failed (%s, %s)", path, privs[0])
		}
		err = CheckRestoredConfig(cfg, "user@pve", check, zone)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if err := CheckRestoredConfig(cfg, "root@pam", check, zone); err != nil {
			t.Errorf("%s: root@pam refused: %v", c.name, err)
		}
	}
}

// An in-place restore's link_down is undone by putting the NICs back as they were.
func TestLinkDownUndo(t *testing.T) {
	root := t.TempDir()
	v := VMs{PVE: filepath.Join(root, "pve"), Lock: filepath.Join(root, "lock"), Node: "pve1"}
	must(t, os.MkdirAll(filepath.Join(v.PVE, "nodes", "pve1", "qemu-server"), 0o755))
	conf := filepath.Join(v.PVE, "nodes", "pve1", "qemu-server", "100.conf")
	must(t, os.WriteFile(conf, []byte("name: x\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nnet1: e1000=BC:24:11:00:00:02,bridge=vmbr1,link_down=0\n"), 0o640))
	before, _ := os.ReadFile(conf)
	orig, _ := pveParse(string(before))
	must(t, v.Update(100, SetLinkDown))
	b, _ := json.Marshal(map[string]string{"net0": orig.Props["net0"], "net1": orig.Props["net1"]})
	r := &Restorer{VMs: v}
	must(t, r.Exec(ctx, Action{Kind: "vm-set-nets", Args: map[string]string{"vmid": "100", "nets": string(b)}}))
	after, _ := os.ReadFile(conf)
	cfg, _ := pveParse(string(after))
	if cfg.Props["net0"] != orig.Props["net0"] || cfg.Props["net1"] != orig.Props["net1"] {
		t.Fatalf("NICs after the undo:\n%s", after)
	}
}

// A new VM gets the source's EFI variables and TPM state, or the restore is refused.
func TestVMStateDisks(t *testing.T) {
	disk := func(key, mapping string) inventory.DiskView {
		return inventory.DiskView{DiskID: inventory.DiskID{Key: key, Volid: "san1:vm-100-" + key}, Mapping: mapping, Reason: "why"}
	}
	d := &inventory.VMDetail{VMView: inventory.VMView{VMID: 100}, DiskList: []inventory.DiskView{disk("scsi0", inventory.Mapped),
		disk("efidisk0", inventory.Mapped), disk("tpmstate0", inventory.Mapped)}}
	keys, err := withVMState(d, []string{"scsi0"})
	if err != nil || strings.Join(keys, ",") != "scsi0,efidisk0,tpmstate0" {
		t.Fatalf("scsi0 asked for: %v %v", keys, err)
	}
	if keys, err := withVMState(d, nil); err != nil || keys != nil {
		t.Fatalf("all disks (the default includes them): %v %v", keys, err)
	}
	d.DiskList[1] = disk("efidisk0", "not-on-array")
	if _, err := withVMState(d, []string{"scsi0"}); err == nil || !strings.Contains(err.Error(), "efidisk0 (san1:vm-100-efidisk0) is not on an array volume") {
		t.Fatalf("EFI disk off the array: %v", err)
	}
}

// A job whose daemon died between Begin and the task's start is rolled back once the grace
// is over, instead of holding its VM for good.
func TestOrphanedJobRecovered(t *testing.T) {
	db := openDB(t)
	_, err := Begin(ctx, db, "orphan0001", KindRestore, "vm:100", nil)
	must(t, err)
	m := &Module{R: &Restorer{DB: db, Logger: slogDiscard(), VMs: VMs{Lock: t.TempDir()}}}
	if n := m.Recover(ctx); n != 0 {
		t.Fatalf("a fresh job without task recovered: %d", n)
	}
	must(t, execDB(db, `UPDATE jobs SET created = created - 600 WHERE id = 'orphan0001'`))
	if n := m.Recover(ctx); n != 1 {
		t.Fatalf("orphaned job recovered: %d", n)
	}
	if _, err := Begin(ctx, db, "next00001", KindRestore, "vm:100", nil); err != nil {
		t.Fatalf("VM 100 after the orphan's recovery: %v", err)
	}
}

func pveParse(s string) (*pve.VMConfig, error) { return pve.ParseVMConfig([]byte(s)) }

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func execDB(db *store.DB, q string) error { _, err := db.Exec(q); return err }
