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
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

// Modes.
const (
	Overwrite = "overwrite"
	NewVM     = "new"
)

// Spec is one restore, as the API validated it.
type Spec struct {
	Job     string   `json:"job"`
	Mode    string   `json:"mode"`
	VMID    int64    `json:"vmid"`
	CTime   int64    `json:"ctime,omitempty"` // source incarnation (0: the existing VM)
	Point   string   `json:"point"`           // "<array>:<point>"
	Disks   []string `json:"disks,omitempty"` // disk keys (all on array volumes when empty)
	NewVMID int64    `json:"newid,omitempty"`
	Name    string   `json:"name,omitempty"`
	Storage string   `json:"storage,omitempty"` // target storage of a new VM's disks
	// DiskStorage are targets of single disks of a new VM (disk key -> storage).
	DiskStorage   map[string]string `json:"disk_storage,omitempty"`
	PreserveMACs  bool              `json:"preserve_macs,omitempty"`
	LinkDown      bool              `json:"link_down,omitempty"`
	Start         bool              `json:"start,omitempty"`
	ForceHostCopy bool              `json:"force_host_copy,omitempty"`
	Safety        bool              `json:"safety_snapshot"`
}

// TargetStorage is where a new VM's disk goes: its own target, else the common one, else
// the storage of the disk it is restored from (source).
func (s Spec) TargetStorage(key, source string) string {
	if sid := s.DiskStorage[key]; sid != "" {
		return sid
	}
	if s.Storage != "" {
		return s.Storage
	}
	return source
}

// Target is what the job locks: a VM in place, or the new VMID.
func (s Spec) Target() string {
	if s.Mode == NewVM {
		return fmt.Sprintf("vm:%d", s.NewVMID)
	}
	return fmt.Sprintf("vm:%d", s.VMID)
}

var jobRe = regexp.MustCompile(`^[a-z0-9]{6,16}$`)

// CheckJob validates a job id: it becomes part of array volume, VG and LV tag names.
func CheckJob(id string) error {
	if !jobRe.MatchString(id) {
		return fmt.Errorf("invalid job id %q: 6 to 16 lower-case letters and digits", id)
	}
	return nil
}

// Restorer runs restores on this node.
type Restorer struct {
	Node      string
	Inv       *inventory.Inventory
	NodePaths arrays.NodePaths
	LVM       *lvm.LVM
	Host      Host
	VMs       VMs
	DB        *store.DB
	Engine    engine.Options
	Logger    *slog.Logger
	// DeviceWait bounds the wait for a connected volume's device.
	DeviceWait time.Duration
}

// names of what a job creates: all start with pvesnap, so cleanup can only touch them (the
// temporary array volumes also name cluster and node: Identity.TempVolume).
func tempVG(job string, i int) string { return fmt.Sprintf("pvesnap_%s_%d", job, i) }
func newLV(job, key string) string    { return fmt.Sprintf("pvesnap-%s-%s", job, key) }
func oldLV(job, key string) string    { return fmt.Sprintf("pvesnap-%s-old-%s", job, key) }
func jobTag(job string) string        { return "pvesnap-" + job }
func marker(job string) string        { return "pvesnap restore job " + job + " in progress" }

// staged is one source array volume imported on this node.
type staged struct {
	array, snapshot, volume string // volume: the temp copy
	serial, device, vg      string
	lvs                     map[string]lvm.LV // by name in the temp VG
}

// Run performs a journaled restore; on error everything it did is undone.
func (r *Restorer) Run(ctx context.Context, t *tasks.Task, spec Spec) (err error) {
	if err := CheckJob(spec.Job); err != nil {
		return err
	}
	j := &Journal{DB: r.DB, Job: spec.Job}
	j.faultHook()
	j.SetUPID(ctx, t.ID)
	defer func() {
		if err != nil {
			t.Logf("restore failed: %v", err)
			t.Logf("undoing what the restore did")
			if uerr := Unwind(context.WithoutCancel(ctx), r.DB, spec.Job, r.Exec, t.Logf); uerr != nil {
				err = fmt.Errorf("%w; cleanup failed too (the daemon retries it): %v", err, uerr)
			}
		}
	}()
	detail, sources, err := r.Inv.Sources(ctx, spec.VMID, spec.CTime, spec.Point, spec.Disks)
	if err != nil {
		return err
	}
	t.Logf("restore %s of VM %d (%s, created %s) from %s: %d disk(s)", spec.Mode, spec.VMID, detail.Name,
		time.Unix(detail.CTime, 0).UTC().Format(time.RFC3339), spec.Point, len(sources))
	if spec.Mode == Overwrite && detail.State != inventory.Live {
		return fmt.Errorf("VM %d does not exist any more: restore it as a new VM", spec.VMID)
	}
	// In place: refuse what PVE would refuse before anything is done, and take the VM's lock
	// first, so nothing (a backup, a migration, a config change) starts on it meanwhile.
	if spec.Mode == Overwrite {
		if _, err := r.VMs.CheckOverwrite(spec.VMID, "", spec.Start); err != nil {
			return err
		}
		if err := j.Step(ctx, "lock VM", Action{Kind: "vm-unlock", Chain: ChainTarget,
			Args: map[string]string{"vmid": strconv.FormatInt(spec.VMID, 10), "lock": lockRestore}},
			func() error { return r.VMs.SetLock(ctx, spec.VMID, lockRestore) }); err != nil {
			return fmt.Errorf("%s %w", emsg(spec.VMID), err)
		}
		t.Logf("VM %d locked (%s)", spec.VMID, lockRestore)
	}
	arr, err := r.Inv.Arrays.Get(sources[0].Array)
	if err != nil {
		return err
	}
	client, err := r.Inv.Client(arr)
	if err != nil {
		return err
	}

	// New VM: reserve the VMID first, so a clash fails before any work.
	if spec.Mode == NewVM {
		if err := j.Step(ctx, "reserve VMID", Action{Kind: "vm-unreserve", Revert: true, Chain: ChainTarget,
			Args: map[string]string{"vmid": strconv.FormatInt(spec.NewVMID, 10), "marker": marker(spec.Job)}},
			func() error { return r.VMs.Reserve(spec.NewVMID, marker(spec.Job)) }); err != nil {
			return err
		}
		t.Logf("VMID %d reserved", spec.NewVMID)
	}

	// Safety snapshot of the volumes about to change (in place only).
	if spec.Mode == Overwrite && spec.Safety {
		vols := map[string]bool{}
		for _, s := range sources {
			vols[s.Volume] = true
		}
		names := slices.Sorted(maps.Keys(vols))
		suffix := "pvesnap-safety-" + spec.Job
		if err := j.Step(ctx, "safety snapshot", None, func() error {
			snaps, err := client.CreateVolumeSnapshots(ctx, names, suffix)
			for _, s := range snaps {
				t.Logf("safety snapshot %s taken (kept: delete it on the array when no longer needed)", s.Name)
			}
			return err
		}); err != nil {
			return err
		}
	}

	disks, err := r.Stage(ctx, j, sources, t.Logf)
	if err != nil {
		return err
	}
	plans := make([]plan, 0, len(disks))
	for _, d := range disks {
		plans = append(plans, plan{src: d.Source, srcLV: d.LV, srcVG: d.VG})
	}
	if err := r.activate(ctx, j, plans); err != nil {
		return err
	}
	if spec.Mode == Overwrite {
		return r.overwrite(ctx, t, j, spec, plans)
	}
	return r.newVM(ctx, t, j, spec, detail, plans)
}

type plan struct {
	src   inventory.DiskSource
	srcLV lvm.LV
	srcVG string // the staged VG holding srcLV
	vg    string // target VG
	dst   string // target LV name (new LV)
}

// StagedDisk is one disk of a restore point made readable on this node: its LV in the copy
// of the snapshot, imported under a VG name of the job.
type StagedDisk struct {
	Source inventory.DiskSource
	VG     string
	LV     lvm.LV
}

// Path is the staged LV's block device under dev (/dev).
func (d StagedDisk) Path(dev string) string { return filepath.Join(dev, d.VG, d.LV.Name) }

// Stage makes the snapshots holding sources readable on this node, each step journaled in j
// with its undo: every array volume's snapshot is copied to a temporary volume, connected to
// this node, found by serial and its VG imported under a name of the job; then each disk's LV
// is checked to be that very disk (the LV UUID), not another of the same name. It is the first
// half of every restore: pvesnap's own, and PVE's qmrestore through the backup provider.
// Nothing is activated. On error, what was done stays journaled for the caller's Unwind.
func (r *Restorer) Stage(ctx context.Context, j *Journal, sources []inventory.DiskSource, logf func(string, ...any)) ([]StagedDisk, error) {
	if len(sources) == 0 {
		return nil, errors.New("nothing to stage: no disk")
	}
	arr, err := r.Inv.Arrays.Get(sources[0].Array)
	if err != nil {
		return nil, err
	}
	client, err := r.Inv.Client(arr)
	if err != nil {
		return nil, err
	}
	id, err := NewIdentity(r.VMs.PVE, r.Node)
	if err != nil {
		return nil, err
	}
	stage, order := stagingPlan(id, j.Job, sources)
	target, err := arrays.Target(ctx, client, arr, r.NodePaths)
	if err != nil {
		return nil, err
	}
	for _, vol := range order {
		if err := r.stage(ctx, logf, j, client, arr, target, stage[vol]); err != nil {
			return nil, err
		}
	}
	return stagedDisks(stage, sources)
}

// Staged finds again what Stage made for job (after a restart of the process that staged it):
// the same VGs, their LVs read back and checked as Stage checks them.
func (r *Restorer) Staged(ctx context.Context, job string, sources []inventory.DiskSource) ([]StagedDisk, error) {
	id, err := NewIdentity(r.VMs.PVE, r.Node)
	if err != nil {
		return nil, err
	}
	stage, order := stagingPlan(id, job, sources)
	for _, vol := range order {
		st := stage[vol]
		lvs, err := r.LVM.LVs(ctx, st.vg)
		if err != nil {
			return nil, fmt.Errorf("staged volume group %s: %w", st.vg, err)
		}
		st.lvs = map[string]lvm.LV{}
		for _, lv := range lvs {
			st.lvs[lv.Name] = lv
		}
	}
	return stagedDisks(stage, sources)
}

// stagingPlan is one staging per source array volume, in the order of first appearance, with
// the names of its temporary volume (of this cluster and node: id) and VG.
func stagingPlan(id Identity, job string, sources []inventory.DiskSource) (map[string]*staged, []string) {
	stage := map[string]*staged{}
	var order []string
	for _, s := range sources {
		if _, ok := stage[s.Volume]; !ok {
			i := len(order)
			stage[s.Volume] = &staged{array: s.Array, snapshot: s.Snapshot, volume: id.TempVolume(job, i), vg: tempVG(job, i)}
			order = append(order, s.Volume)
		}
	}
	return stage, order
}

// stagedDisks finds each disk's LV in its staged VG and checks it is that very disk (the LV
// UUID), not another of the same name.
func stagedDisks(stage map[string]*staged, sources []inventory.DiskSource) ([]StagedDisk, error) {
	out := make([]StagedDisk, 0, len(sources))
	for _, s := range sources {
		st := stage[s.Volume]
		_, lvName, _ := strings.Cut(s.Disk.Volid, ":")
		src, ok := st.lvs[lvName]
		if !ok {
			return nil, fmt.Errorf("snapshot %s does not contain %s (disk %s)", s.Snapshot, lvName, s.Disk.Key)
		}
		if !s.Disk.Holds(src.UUID) {
			return nil, fmt.Errorf("%w: in snapshot %s, %s has LV UUID %s, but disk %s (%s) is LV %s: a different disk of the same name",
				inventory.ErrPredatesDisk, s.Snapshot, lvName, src.UUID, s.Disk.Key, s.Disk.Volid, s.Disk.LVUUID)
		}
		out = append(out, StagedDisk{Source: s, VG: st.vg, LV: src})
	}
	return out, nil
}

func (r *Restorer) stage(ctx context.Context, logf func(string, ...any), j *Journal, c *pure.Client, arr arrays.Array, target pure.Target, st *staged) error {
	if err := j.Step(ctx, "copy "+st.snapshot, Action{Kind: "array-destroy-volume", Chain: ChainStaging, Args: map[string]string{"array": arr.ID, "volume": st.volume}},
		func() error {
			v, err := c.CopyVolume(ctx, st.volume, st.snapshot, false)
			st.serial = v.Serial
			return err
		}); err != nil {
		return err
	}
	logf("array %s: %s copied to %s (serial %s)", arr.ID, st.snapshot, st.volume, st.serial)
	var lun int
	if err := j.Step(ctx, "connect "+st.volume, Action{Kind: "array-disconnect", Chain: ChainStaging, Args: map[string]string{"array": arr.ID,
		"volume": st.volume, "host": target.Host, "hostgroup": target.HostGroup, "serial": st.serial}},
		func() error {
			conn, err := c.Connect(ctx, st.volume, target)
			lun = conn.LUN
			if conn.NSID > 0 {
				lun = conn.NSID
			}
			return err
		}); err != nil {
		return err
	}
	logf("connected %s to %s as LUN %d", st.volume, target, lun)
	if err := j.Step(ctx, "find device "+st.serial, Action{Kind: "host-remove-devices", Chain: ChainStaging, Args: map[string]string{"serial": st.serial}},
		func() error {
			r.Host.Rescan(st.serial, lun, logf)
			wait := r.DeviceWait
			if wait == 0 {
				wait = 2 * time.Minute
			}
			dev, err := r.Host.Wait(ctx, st.serial, wait, logf)
			st.device = dev
			return err
		}); err != nil {
		return err
	}
	logf("device %s has serial %s", st.device, st.serial)
	if err := j.Step(ctx, "import VG as "+st.vg, Action{Kind: "lvm-deactivate-vg", Chain: ChainStaging, Args: map[string]string{"vg": st.vg}},
		func() error { return r.LVM.ImportClone(ctx, st.vg, st.device) }); err != nil {
		return fmt.Errorf("vgimportclone %s: %w", st.device, err)
	}
	lvs, err := r.LVM.LVs(ctx, st.vg)
	if err != nil {
		return err
	}
	st.lvs = map[string]lvm.LV{}
	for _, lv := range lvs {
		st.lvs[lv.Name] = lv
	}
	logf("imported the snapshot's volume group as %s (%d LVs)", st.vg, len(lvs))
	return nil
}

// activate activates only the LVs the restore reads.
func (r *Restorer) activate(ctx context.Context, j *Journal, plans []plan) error {
	return j.Step(ctx, "activate source LVs", None, func() error {
		for _, p := range plans {
			if err := r.LVM.Activate(ctx, p.srcVG, p.srcLV.Name, true); err != nil {
				return err
			}
		}
		return nil
	})
}

// storageVG returns the VG of an LVM storage active on this node.
func (r *Restorer) storageVG(sid string) (string, error) {
	st, err := r.Inv.Storage.Get(sid)
	if err != nil {
		return "", err
	}
	if st.Type != "lvm" || !st.OnNode(r.Node) || st.Disabled {
		return "", fmt.Errorf("storage '%s' is not an LVM storage available on node %s", sid, r.Node)
	}
	return st.VGName, nil
}

// lockStorage takes PVE's cluster-wide storage lock (as cfs_lock_storage does: a directory
// in /etc/pve/priv/lock that pmxcfs expires after 120 s) around LVM metadata changes on a
// shared VG. The job is recorded as its holder, so that recovery can release at once a lock
// whose worker died instead of leaving the storage blocked for two minutes.
func (r *Restorer) lockStorage(j *Journal, sid string) (func(), error) {
	dir := filepath.Join(r.VMs.PVE, "priv", "lock", "storage-"+sid)
	os.MkdirAll(filepath.Dir(dir), 0o700)
	deadline := time.Now().Add(150 * time.Second)
	for {
		err := os.Mkdir(dir, 0o700)
		if err == nil {
			job := ""
			if j != nil {
				job = j.Job
			}
			r.DB.ExecContext(context.Background(), `INSERT OR REPLACE INTO held_locks (path, job, taken) VALUES (?, ?, ?)`, dir, job, time.Now().Unix())
			return func() {
				os.Remove(dir)
				r.DB.ExecContext(context.Background(), `DELETE FROM held_locks WHERE path = ? AND job = ?`, dir, job)
			}, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		if st, serr := os.Stat(dir); serr == nil && time.Since(st.ModTime()) > 120*time.Second {
			os.Remove(dir)
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cannot lock storage %s: got timeout", sid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ReleaseLocks frees the cluster locks a dead job's worker held.
func (r *Restorer) ReleaseLocks(ctx context.Context, job string) {
	rows, err := r.DB.QueryContext(ctx, `SELECT path FROM held_locks WHERE job = ?`, job)
	if err != nil {
		return
	}
	var paths []string
	for rows.Next() {
		var p string
		if rows.Scan(&p) == nil {
			paths = append(paths, p)
		}
	}
	rows.Close()
	for _, p := range paths {
		os.Remove(p)
		r.DB.ExecContext(ctx, `DELETE FROM held_locks WHERE path = ? AND job = ?`, p, job)
	}
}

// createLV allocates a target LV tagged for the VM and for this job (the job tag is what
// allows the undo to remove it).
func (r *Restorer) createLV(ctx context.Context, j *Journal, sid, vg, name string, size int64, vmid int64) error {
	return j.Step(ctx, "create "+vg+"/"+name, Action{Kind: "lvm-remove-lv", Revert: true, Chain: ChainTarget,
		Args: map[string]string{"storage": sid, "vg": vg, "lv": name, "tag": jobTag(j.Job)}},
		func() error {
			unlock, err := r.lockStorage(j, sid)
			if err != nil {
				return err
			}
			defer unlock()
			vgs, err := r.LVM.VGs(ctx)
			if err != nil {
				return err
			}
			for _, g := range vgs {
				if g.Name == vg && g.Free < size {
					return fmt.Errorf("volume group %s has %s free; %s needs %s", vg, tasks.HumanBytes(g.Free), name, tasks.HumanBytes(size))
				}
			}
			return r.LVM.Create(ctx, vg, name, size, lvm.CreateOptions{Tags: []string{fmt.Sprintf("pve-vm-%d", vmid), jobTag(j.Job)}})
		})
}

// cloudInitSize is PVE's size of a cloud-init volume (QemuServer::Cloudinit::CLOUDINIT_DISK_SIZE).
const cloudInitSize = 4 << 20

// freeDiskName is the first vm-<vmid>-disk-<n> not taken, as PVE's find_free_diskname picks
// it: a VMID that is free in the cluster can still have orphaned volumes on a storage (a
// destroy that failed half-way), and those are not ours to reuse or remove.
func freeDiskName(taken map[string]bool, vmid int64) (string, error) {
	for n := 0; n < 100; n++ { // PVE's limit too
		if name := fmt.Sprintf("vm-%d-disk-%d", vmid, n); !taken[name] {
			return name, nil
		}
	}
	return "", fmt.Errorf("unable to allocate an image name for VM %d: vm-%d-disk-0 to -99 all exist", vmid, vmid)
}

// copyDisk copies one disk with the engine (offloaded when the array can).
func (r *Restorer) copyDisk(ctx context.Context, t *tasks.Task, j *Journal, p plan, force bool) error {
	src := "/dev/" + p.srcVG + "/" + p.srcLV.Name
	dst := "/dev/" + p.vg + "/" + p.dst
	return j.Step(ctx, "copy "+p.src.Disk.Key, None, func() error {
		o := r.Engine
		o.ForceHost = force
		o.Log = func(f string, a ...any) { t.Logf(f, a...) }
		start := time.Now()
		o.Progress = func(done, total int64) { t.Progress(done, total, start, 5*time.Second) }
		res, err := engine.Copy(ctx, src, dst, o)
		if err != nil {
			return fmt.Errorf("copying disk %s: %w", p.src.Disk.Key, err)
		}
		t.Logf("disk %s: %s copied in %s: %s offloaded to the array, %s through the host (%s as zeroes)",
			p.src.Disk.Key, tasks.HumanBytes(res.Bytes), res.Duration.Round(time.Millisecond),
			tasks.HumanBytes(res.Offloaded), tasks.HumanBytes(res.HostCopied), tasks.HumanBytes(res.Zeroed))
		return nil
	})
}

func (r *Restorer) overwrite(ctx context.Context, t *tasks.Task, j *Journal, spec Spec, plans []plan) error {
	for i := range plans {
		p := &plans[i]
		vg, err := r.storageVG(p.src.Disk.Storage)
		if err != nil {
			return err
		}
		p.vg, p.dst = vg, newLV(spec.Job, p.src.Disk.Key)
		if err := r.createLV(ctx, j, p.src.Disk.Storage, vg, p.dst, p.srcLV.Size, spec.VMID); err != nil {
			return err
		}
		if err := r.copyDisk(ctx, t, j, *p, spec.ForceHostCopy); err != nil {
			return err
		}
	}
	return r.swapDisks(ctx, t, j, spec, plans)
}

// lockRestore is the lock an in-place restore holds on the VM: the one qemu-server's restore
// over an existing VM takes (create_and_lock_config).
const lockRestore = "create"

// swapDisks replaces the VM's disks with the restored LVs beside them: the VM, locked since
// the restore began, is checked again, stopped, and each original LV is set aside under the
// job's name before the restored one takes its name. The originals are removed only after
// the commit; a rollback renames them back.
func (r *Restorer) swapDisks(ctx context.Context, t *tasks.Task, j *Journal, spec Spec, plans []plan) error {
	vmid := strconv.FormatInt(spec.VMID, 10)
	cfg, err := r.VMs.CheckOverwrite(spec.VMID, lockRestore, spec.Start)
	if err != nil {
		return err
	}
	for _, p := range plans {
		if got := pve.ParsePropertyString(cfg.Props[p.src.Disk.Key], "file")["file"]; got != p.src.Disk.Volid {
			return refusef("%s disk %s changed while the restore ran (now '%s', was %s): refusing to replace it", emsg(spec.VMID), p.src.Disk.Key, got, p.src.Disk.Volid)
		}
	}
	running, err := r.VMs.Running(ctx, spec.VMID)
	if err != nil {
		return err
	}
	if err := j.Step(ctx, "stop VM", Action{Kind: "vm-start", Revert: true, Chain: ChainTarget, Args: map[string]string{"vmid": vmid, "was_running": strconv.FormatBool(running)}},
		func() error {
			if running {
				t.Logf("shutting VM %d down", spec.VMID)
				if err := r.VMs.Shutdown(ctx, spec.VMID, 3*time.Minute); err != nil {
					return err
				}
			}
			// Stopped, and it stays so: the lock refuses a start by anyone but root with
			// skiplock. Checked, because a disk swapped under a running VM is corruption.
			if still, err := r.VMs.Running(ctx, spec.VMID); err != nil || still {
				if err == nil {
					err = refusef("%s vm is running", emsg(spec.VMID))
				}
				return err
			}
			return nil
		}); err != nil {
		return err
	}
	for _, p := range plans {
		if err := r.swapDisk(ctx, t, j, spec, p); err != nil {
			return err
		}
	}
	if spec.LinkDown {
		nets := map[string]string{}
		for k, v := range cfg.Props {
			if pve.IsNetKey(k) {
				nets[k] = v
			}
		}
		b, _ := json.Marshal(nets)
		if err := j.Step(ctx, "link_down", Action{Kind: "vm-set-nets", Revert: true, Chain: ChainTarget,
			Args: map[string]string{"vmid": vmid, "nets": string(b)}},
			func() error { return r.VMs.Update(spec.VMID, SetLinkDown) }); err != nil {
			return err
		}
	}
	// The swapped-in LVs are the same disks: they keep the replaced ones' identity, so the
	// snapshots taken before this restore still restore them.
	if err := j.Step(ctx, "record disk identities", None, func() error {
		for _, p := range plans {
			_, orig, _ := strings.Cut(p.src.Disk.Volid, ":")
			lv, err := r.findLV(ctx, p.vg, orig)
			if err != nil || lv == nil {
				return fmt.Errorf("%s/%s after the swap: %v", p.vg, orig, err)
			}
			if err := r.Inv.RecordLineage(ctx, lv.UUID, p.src.Disk.DiskID); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := r.commit(ctx, j); err != nil {
		return err
	}
	return r.finish(ctx, t, j, spec, spec.VMID)
}

// swapDisk sets the VM's original LV aside and gives its name to the restored one, under the
// storage's lock. The original's removal is journaled first, as an action that runs only
// after the commit (a crash at any later point still removes it once the job commits; a
// rollback renames it back instead and never removes it).
func (r *Restorer) swapDisk(ctx context.Context, t *tasks.Task, j *Journal, spec Spec, p plan) error {
	sid := p.src.Disk.Storage
	_, orig, _ := strings.Cut(p.src.Disk.Volid, ":")
	old := oldLV(spec.Job, p.src.Disk.Key)
	if err := j.Step(ctx, "replaced disk "+p.src.Disk.Key, Action{Kind: "lvm-remove-lv", Committed: true,
		Args: map[string]string{"storage": sid, "vg": p.vg, "lv": old, "require_prefix": oldLV(spec.Job, "")}},
		func() error { return nil }); err != nil {
		return err
	}
	unlock, err := r.lockStorage(j, sid)
	if err != nil {
		return err
	}
	defer unlock()
	if err := j.Step(ctx, "set aside "+orig, Action{Kind: "lvm-rename-lv", Revert: true, Chain: ChainTarget,
		Args: map[string]string{"storage": sid, "vg": p.vg, "from": old, "to": orig, "require_prefix": oldLV(spec.Job, "")}},
		func() error { return r.LVM.Rename(ctx, p.vg, orig, old) }); err != nil {
		return err
	}
	if err := j.Step(ctx, "swap in "+orig, Action{Kind: "lvm-rename-lv", Revert: true, Chain: ChainTarget,
		Args: map[string]string{"storage": sid, "vg": p.vg, "from": orig, "to": p.dst, "require_tag": jobTag(spec.Job)}},
		func() error { return r.LVM.Rename(ctx, p.vg, p.dst, orig) }); err != nil {
		return err
	}
	t.Logf("disk %s: %s/%s now holds the snapshot's data", p.src.Disk.Key, p.vg, orig)
	return nil
}

func (r *Restorer) commit(ctx context.Context, j *Journal) error {
	return j.Step(ctx, "commit", None, func() error { return j.Commit(ctx) })
}

// finish cleans up after a committed restore and starts the VM when asked.
func (r *Restorer) finish(ctx context.Context, t *tasks.Task, j *Journal, spec Spec, vmid int64) error {
	t.Logf("restore committed; cleaning up")
	if err := Unwind(ctx, r.DB, spec.Job, r.Exec, t.Logf); err != nil {
		t.Warnf("cleanup incomplete (the daemon retries it): %v", err)
	}
	if spec.Start {
		t.Logf("starting VM %d", vmid)
		if err := r.VMs.Start(ctx, vmid, false); err != nil {
			t.Warnf("VM %d restored but did not start: %v", vmid, err)
		}
	}
	return nil
}

// sourceConfig is the remembered config of the incarnation of vmid created at ctime.
func (r *Restorer) sourceConfig(ctx context.Context, vmid, ctime int64) (*pve.VMConfig, error) {
	incs, err := r.Inv.Incarnations(ctx, vmid)
	if err != nil {
		return nil, err
	}
	for _, in := range incs {
		if in.CTime == ctime {
			cfg, err := pve.ParseVMConfig([]byte(in.Config))
			if err != nil {
				return nil, fmt.Errorf("remembered config of VM %d: %w", vmid, err)
			}
			return cfg, nil
		}
	}
	return nil, fmt.Errorf("no config of VM %d (created %d) is remembered", vmid, ctime)
}

func (r *Restorer) newVM(ctx context.Context, t *tasks.Task, j *Journal, spec Spec, detail *inventory.VMDetail, plans []plan) error {
	srcCfg, err := r.sourceConfig(ctx, spec.VMID, detail.CTime)
	if err != nil {
		return err
	}
	disks := map[string]string{}
	taken := map[string]map[string]bool{} // per VG: LV names that exist or this restore chose
	// storage gives the VG of an LVM storage of this node and the LV names taken in it.
	storage := func(sid string) (string, map[string]bool, error) {
		vg, err := r.storageVG(sid)
		if err != nil {
			return "", nil, err
		}
		if taken[vg] == nil {
			lvs, err := r.LVM.LVs(ctx, vg)
			if err != nil {
				return "", nil, err
			}
			taken[vg] = map[string]bool{}
			for _, lv := range lvs {
				taken[vg][lv.Name] = true
			}
		}
		return vg, taken[vg], nil
	}
	sort.Slice(plans, func(a, b int) bool { return plans[a].src.Disk.Key < plans[b].src.Disk.Key })
	for i := range plans {
		p := &plans[i]
		sid := spec.TargetStorage(p.src.Disk.Key, p.src.Disk.Storage)
		vg, names, err := storage(sid)
		if err != nil {
			return err
		}
		name, err := freeDiskName(names, spec.NewVMID)
		if err != nil {
			return fmt.Errorf("storage '%s': %w", sid, err)
		}
		names[name] = true
		p.vg, p.dst = vg, name
		if err := r.createLV(ctx, j, sid, vg, p.dst, p.srcLV.Size, spec.NewVMID); err != nil {
			return err
		}
		disks[p.src.Disk.Key] = sid + ":" + p.dst
		if err := r.copyDisk(ctx, t, j, *p, spec.ForceHostCopy); err != nil {
			return err
		}
	}
	// The cloud-init drive is the new VM's own, as a clone's is: an empty volume of PVE's
	// size, named after the new VM, whose content PVE generates when the VM starts.
	cloudInit := ""
	for _, k := range slices.Sorted(maps.Keys(srcCfg.Props)) {
		if !pve.IsDiskKey(k) || !IsCloudInit(srcCfg.Props[k]) {
			continue
		}
		sid := spec.Storage
		if sid == "" {
			sid, _, _ = strings.Cut(pve.ParsePropertyString(srcCfg.Props[k], "file")["file"], ":")
			if _, err := r.storageVG(sid); err != nil {
				sid = spec.TargetStorage(plans[0].src.Disk.Key, plans[0].src.Disk.Storage) // not an LVM storage of this node: beside the first disk
			}
		}
		vg, names, err := storage(sid)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("vm-%d-cloudinit", spec.NewVMID)
		if names[name] {
			return fmt.Errorf("storage '%s' already has %s, which this restore did not make: remove it or restore as another VMID", sid, name)
		}
		names[name] = true
		if err := r.createLV(ctx, j, sid, vg, name, cloudInitSize, spec.NewVMID); err != nil {
			return err
		}
		cloudInit = sid + ":" + name
		t.Logf("cloud-init drive %s: %s (generated by PVE when the VM starts)", k, cloudInit)
		break
	}
	name := spec.Name
	if name == "" {
		name = srcCfg.Props["name"]
	}
	cfg, notes := Replay(srcCfg, ReplayOptions{Name: name, Disks: disks, CloudInit: cloudInit, PreserveMACs: spec.PreserveMACs,
		LinkDown: spec.LinkDown, MACPrefix: MACPrefix(r.VMs.PVE), Now: time.Now()})
	for _, n := range notes {
		if strings.HasPrefix(n, "disk ") {
			t.Warnf("%s", n)
		} else {
			t.Logf("%s", n)
		}
	}
	// The config keeps the job's marker and lock until the commit, so a rollback removes it.
	withMarker := append([]byte("#"+marker(spec.Job)+"\nlock: create\n"), cfg...)
	if err := j.Step(ctx, "write config", None, func() error { return r.VMs.Write(spec.NewVMID, withMarker) }); err != nil {
		return err
	}
	// Journaled before the commit, run only after it: a crash between the two cannot leave the
	// new VM with 'lock: create' for good, and a rollback never makes the half-made VM usable.
	if err := j.Step(ctx, "finalize config", Action{Kind: "vm-finalize", Committed: true, Chain: ChainTarget,
		Args: map[string]string{"vmid": strconv.FormatInt(spec.NewVMID, 10), "marker": marker(spec.Job)}},
		func() error { return nil }); err != nil {
		return err
	}
	if err := r.commit(ctx, j); err != nil {
		return err
	}
	t.Logf("VM %d created from VM %d at %s", spec.NewVMID, spec.VMID, spec.Point)
	return r.finish(ctx, t, j, spec, spec.NewVMID)
}

// Exec runs one undo or cleanup action.
func (r *Restorer) Exec(ctx context.Context, a Action) error {
	arg := a.Args
	switch a.Kind {
	case "none":
		return nil
	case "array-destroy-volume":
		if !strings.HasPrefix(arg["volume"], "pvesnap-") {
			return fmt.Errorf("refusing to destroy %s: not a pvesnap volume", arg["volume"])
		}
		c, err := r.client(arg["array"])
		if err != nil {
			return err
		}
		if err := c.DestroyVolume(ctx, arg["volume"]); err != nil && !errors.Is(err, pure.ErrNotFound) && !errors.Is(err, pure.ErrDestroyed) {
			return err
		}
		if err := c.EradicateVolume(ctx, arg["volume"]); err != nil && !errors.Is(err, pure.ErrNotFound) {
			if errors.Is(err, pure.ErrEradicateDisabled) {
				// SafeMode: it stays destroyed until the array eradicates it by itself.
				logf(ctx)("%s", PendingEradication(ctx, c, arg["array"], arg["volume"], err))
				return nil
			}
			return err
		}
		return nil
	case "array-disconnect":
		c, err := r.client(arg["array"])
		if err != nil {
			return err
		}
		serial := arg["serial"]
		if serial == "" && arg["hostgroup"] != "" {
			serial = serialOf(ctx, c, arg["volume"]) // a journal that did not record it
		}
		err = c.Disconnect(ctx, arg["volume"], pure.Target{Host: arg["host"], HostGroup: arg["hostgroup"]})
		if err != nil && !errors.Is(err, pure.ErrDestroyed) {
			return err
		}
		if arg["hostgroup"] != "" && serial != "" {
			// A copy connected to a whole host group (by an earlier pvesnap): every member
			// node has its devices, and each removes its own.
			if err := r.RequestPeerCleanup(serial, arg["array"], arg["volume"], arg["hostgroup"]); err != nil {
				return err
			}
			logf(ctx)("asked the cluster's nodes to remove their devices of %s (serial %s)", arg["volume"], serial)
		}
		if serial == "" {
			return nil // nothing known to look for: host-remove-devices ran before
		}
		// The array presents the volume no more: what reappeared meanwhile goes now.
		return r.Host.Gone(ctx, serial, 30*time.Second, logf(ctx))
	case "host-remove-devices":
		if arg["serial"] == "" {
			return nil // the copy never returned a serial: nothing can be connected
		}
		return r.Host.Remove(ctx, arg["serial"], logf(ctx))
	case "lvm-deactivate-vg":
		if !strings.HasPrefix(arg["vg"], "pvesnap_") {
			return fmt.Errorf("refusing to deactivate %s: not a pvesnap VG", arg["vg"])
		}
		if err := r.LVM.VGChange(ctx, arg["vg"], false); err != nil && !notFound(err) {
			return err
		}
		return nil
	case "lvm-remove-lv":
		lv, err := r.findLV(ctx, arg["vg"], arg["lv"])
		if err != nil || lv == nil {
			return err
		}
		if !owned(*lv, arg) {
			if arg["tag"] != "" {
				// The job's lvcreate sets its tag in the same metadata commit, so an LV of that
				// name without it was there first (the lvcreate failed on it): the job made
				// nothing to undo, and what is there belongs to someone else.
				return nil
			}
			return fmt.Errorf("refusing to remove %s/%s: not created by this job", arg["vg"], arg["lv"])
		}
		unlock, err := r.lockStorage(nil, arg["storage"])
		if err != nil {
			return err
		}
		defer unlock()
		return r.LVM.Remove(ctx, arg["vg"], arg["lv"])
	case "lvm-rename-lv":
		// Under the storage's lock, as the forward rename was: LVM metadata of a shared VG
		// changes from one node at a time.
		if arg["storage"] != "" {
			unlock, err := r.lockStorage(nil, arg["storage"])
			if err != nil {
				return err
			}
			defer unlock()
		}
		lv, err := r.findLV(ctx, arg["vg"], arg["from"])
		if err != nil || lv == nil {
			return err // already renamed back, or never renamed
		}
		if !owned(*lv, arg) {
			return fmt.Errorf("refusing to rename %s/%s: not the job's LV", arg["vg"], arg["from"])
		}
		return r.LVM.Rename(ctx, arg["vg"], arg["from"], arg["to"])
	case "vm-unlock":
		vmid, _ := strconv.ParseInt(arg["vmid"], 10, 64)
		return r.VMs.Unlock(ctx, vmid, arg["lock"])
	case "vm-start":
		vmid, _ := strconv.ParseInt(arg["vmid"], 10, 64)
		if arg["was_running"] != "true" {
			return nil
		}
		if running, err := r.VMs.Running(ctx, vmid); err != nil || running {
			return err
		}
		return r.VMs.Start(ctx, vmid, true) // the restore's own lock is still held
	case "vm-set-nets":
		vmid, _ := strconv.ParseInt(arg["vmid"], 10, 64)
		var nets map[string]string
		if err := json.Unmarshal([]byte(arg["nets"]), &nets); err != nil {
			return fmt.Errorf("NIC settings to restore: %w", err)
		}
		return r.VMs.Update(vmid, func(c *pve.VMConfig) { maps.Copy(c.Props, nets) })
	case "vm-unreserve":
		vmid, _ := strconv.ParseInt(arg["vmid"], 10, 64)
		return r.VMs.Unreserve(vmid, arg["marker"])
	case "vm-finalize":
		vmid, _ := strconv.ParseInt(arg["vmid"], 10, 64)
		return r.VMs.Update(vmid, func(c *pve.VMConfig) {
			if strings.Contains(c.Description, arg["marker"]) {
				var keep []string
				for _, l := range strings.Split(c.Description, "\n") {
					if l != arg["marker"] {
						keep = append(keep, l)
					}
				}
				c.Description = strings.Join(keep, "\n")
				if c.Props["lock"] == "create" {
					delete(c.Props, "lock")
				}
			}
		})
	}
	return fmt.Errorf("unknown action %q", a.Kind)
}

func (r *Restorer) client(id string) (*pure.Client, error) {
	a, err := r.Inv.Arrays.Get(id)
	if err != nil {
		return nil, err
	}
	return r.Inv.Client(a)
}

func (r *Restorer) findLV(ctx context.Context, vg, name string) (*lvm.LV, error) {
	lvs, err := r.LVM.LVs(ctx, vg)
	if err != nil {
		if notFound(err) {
			return nil, nil
		}
		return nil, err
	}
	for _, lv := range lvs {
		if lv.Name == name {
			return &lv, nil
		}
	}
	return nil, nil
}

// owned checks an action's guard: the LV carries the job's tag or a name of the job.
func owned(lv lvm.LV, arg map[string]string) bool {
	if t := arg["require_tag"]; t != "" {
		return slices.Contains(lv.Tags, t)
	}
	if t := arg["tag"]; t != "" {
		return slices.Contains(lv.Tags, t)
	}
	if p := arg["require_prefix"]; p != "" {
		return strings.HasPrefix(lv.Name, p)
	}
	return false
}

func notFound(err error) bool {
	s := err.Error()
	return strings.Contains(s, "not found") || strings.Contains(s, "Cannot process volume group")
}

// MarshalSpec is the task spec.
func MarshalSpec(s Spec) json.RawMessage { b, _ := json.Marshal(s); return b }
