package restore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/tasks"
)

// Module serves POST /nodes/{node}/pvesnap/restore and, at start and every RecoverEvery,
// finishes the undos of jobs whose worker died.
type Module struct {
	R            *Restorer
	Tasks        *tasks.Service
	RecoverEvery time.Duration
}

// Task kinds: a restore, and a sweep of leftover temporary array volumes.
const (
	KindRestore = "restore"
	KindSweep   = "sweep"
)

// SweepSpec is a sweep task's job.
type SweepSpec struct {
	DryRun bool          `json:"dry_run,omitempty"`
	Grace  time.Duration `json:"grace"`
}

// Handlers are the restore's task kinds.
func (m *Module) Handlers() map[string]tasks.Handler {
	return map[string]tasks.Handler{
		KindRestore: func(ctx context.Context, t *tasks.Task, raw json.RawMessage) error {
			var s Spec
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
			return m.R.Run(ctx, t, s)
		},
		KindSweep: func(ctx context.Context, t *tasks.Task, raw json.RawMessage) error {
			var s SweepSpec
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
			found, err := m.R.Sweep(ctx, s.DryRun, s.Grace, t.Logf)
			t.Logf("%d leftover temporary volume(s) found", len(found))
			return err
		},
	}
}

// SweepEvery is how often the daemon looks for leftover temporary array volumes (and at start).
const SweepEvery = 6 * time.Hour

// Start recovers dead jobs now and then periodically, and sweeps leftover temporary array
// volumes at start and every SweepEvery: a sweep that finds something runs as a task, so what
// it removes is in the task list.
func (m *Module) Start(ctx context.Context) error {
	every := m.RecoverEvery
	if every == 0 {
		every = 30 * time.Second
	}
	go func() {
		var swept time.Time
		for {
			m.Recover(ctx)
			if err := m.R.CleanStaleDevices(ctx, func(f string, a ...any) { m.R.Logger.Info(fmt.Sprintf(f, a...)) }); err != nil {
				m.R.Logger.Warn("removing devices of volumes disconnected from host groups", "err", err)
			}
			if time.Since(swept) > SweepEvery {
				swept = time.Now()
				m.sweepIfNeeded(ctx)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	}()
	return nil
}

// sweepIfNeeded looks (read-only) for leftovers and starts a sweep task when there are any.
func (m *Module) sweepIfNeeded(ctx context.Context) {
	found, err := m.R.Sweep(ctx, true, SweepGrace, func(string, ...any) {})
	if err != nil {
		m.R.Logger.Warn("looking for leftover temporary array volumes", "err", err)
	}
	if len(found) == 0 || m.Tasks == nil {
		return
	}
	if _, err := m.StartSweep(ctx, SweepSpec{Grace: SweepGrace}, "root@pam"); err != nil {
		m.R.Logger.Warn("starting a sweep of leftover temporary array volumes", "err", err)
	}
}

// StartSweep starts a sweep task.
func (m *Module) StartSweep(ctx context.Context, s SweepSpec, user string) (string, error) {
	b, _ := json.Marshal(s)
	st, err := m.Tasks.Start(ctx, tasks.Job{Type: "pvesnapsweep", User: user, Kind: KindSweep, Spec: b})
	if err != nil {
		return "", err
	}
	return st.UPID, nil
}

// Recover unwinds every unfinished job whose worker is gone: the undos of a job that did
// not commit, the cleanup of one that did. Each recovery is appended to the job's task log.
func (m *Module) Recover(ctx context.Context) int {
	jobs, err := Unfinished(ctx, m.R.DB)
	if err != nil {
		m.R.Logger.Warn("listing unfinished restores", "err", err)
		return 0
	}
	n := 0
	for _, jr := range jobs {
		if m.workerAlive(jr) {
			continue // its worker will finish
		}
		if jr.UPID == "" && jr.State == StateRunning && time.Since(jr.created) < orphanGrace {
			continue // between the API's Begin and the task's start
		}
		unlock, err := m.R.lockJob(jr.ID, 0)
		if err != nil {
			continue // 'pvesnap restore --resume' has it
		}
		if m.recoverJob(ctx, jr, nil) == nil {
			n++
		}
		unlock()
	}
	return n
}

// orphanGrace is how long a job may wait for its task after Begin: a daemon that died in
// between left a job no worker will ever run, which would hold its VM for good. Such a job
// never journaled a step (the worker journals the first), so rolling it back does nothing.
const orphanGrace = 2 * time.Minute

func (m *Module) workerAlive(jr JobRecord) bool {
	u, err := tasks.ParseUPID(jr.UPID)
	return err == nil && m.Tasks != nil && m.Tasks.Dir.IsRunning(u)
}

// Resume finishes one job's unwind now ('pvesnap restore --resume'): after its failed undo's
// cause was fixed, or for a job whose worker died. A job whose worker still runs is refused.
func (m *Module) Resume(ctx context.Context, job string, out func(string, ...any)) error {
	if err := CheckJob(job); err != nil {
		return err
	}
	// The daemon's recovery may be at it: wait for it, then look again.
	unlock, err := m.R.lockJob(job, 2*time.Minute)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := JobStatusOf(ctx, m.R.DB, job)
	if err != nil {
		return err
	}
	switch st.State {
	case StateRunning, StateCommitted, StateStuck:
	default:
		out("restore job %s is %s: nothing left to do", job, st.State)
		return nil
	}
	if m.workerAlive(st.JobRecord) {
		return fmt.Errorf("restore job %s is still run by its worker (task %s)", job, st.UPID)
	}
	return m.recoverJob(ctx, st.JobRecord, out)
}

// recoverJob unwinds a job whose worker is gone, logging to the job's task log (and out).
func (m *Module) recoverJob(ctx context.Context, jr JobRecord, out func(string, ...any)) error {
	m.R.Logger.Info("recovering restore job whose worker is gone", "job", jr.ID, "state", jr.State, "upid", jr.UPID)
	logf := func(f string, a ...any) {
		m.R.Logger.Info(fmt.Sprintf(f, a...), "job", jr.ID)
		if out != nil {
			out(f, a...)
		}
	}
	if jr.UPID != "" && m.Tasks != nil {
		if w := m.Tasks.Dir.AppendLog(jr.UPID); w != nil {
			fmt.Fprintf(w, "pvesnap: the worker of this restore is gone; the daemon finishes its journal (%s)\n", jr.State)
			inner := logf
			logf = func(f string, a ...any) {
				fmt.Fprintf(w, f+"\n", a...)
				inner(f, a...)
			}
			defer w.Close()
		}
	}
	m.R.ReleaseLocks(ctx, jr.ID)
	err := Unwind(ctx, m.R.DB, jr.ID, m.R.Exec, logf)
	switch {
	case err != nil:
		m.R.Logger.Warn("recovery incomplete; retried later", "job", jr.ID, "err", err)
		logf("TASK ERROR: restore interrupted; recovery incomplete, retried later: %v", oneLine(err))
	case jr.State == StateCommitted:
		logf("TASK WARNINGS: 1 (restore interrupted after it committed: completed by recovery)")
	default:
		logf("TASK ERROR: restore interrupted and rolled back by recovery")
	}
	return err
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

var (
	nodeParam  = api.Param{Name: "node", Type: api.String, Format: "pve-node", Check: pve.CheckNode, Description: "The cluster node name."}
	pointRe    = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,38}[a-z0-9]:[A-Za-z0-9][A-Za-z0-9:._/-]{0,200}$`)
	diskListRe = regexp.MustCompile(`^[a-z]+[0-9]+(,[a-z]+[0-9]+)*$`)
	// <disk>:<storage>[,...]: the storage IDs are checked by pve.CheckStorageID.
	diskStorageRe = regexp.MustCompile(`^[a-z]+[0-9]+:[^,:]+(,[a-z]+[0-9]+:[^,:]+)*$`)
)

// parseDiskStorage reads disk-storage: <disk>:<storage>[,...], each disk once.
func parseDiskStorage(v string) (map[string]string, error) {
	if v == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, pair := range strings.Split(v, ",") {
		key, sid, _ := strings.Cut(pair, ":")
		if err := pve.CheckStorageID(sid); err != nil {
			return nil, api.ParamErr("disk-storage", err.Error())
		}
		if _, dup := out[key]; dup {
			return nil, api.ParamErr("disk-storage", "disk "+key+" is given twice")
		}
		out[key] = sid
	}
	return out, nil
}

func newJobID() string {
	b := make([]byte, 5)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Routes are the restore call and the list of temporary volumes pending eradication.
func (m *Module) Routes() []*api.Route {
	return []*api.Route{{
		Method: "POST", Path: "/nodes/{node}/pvesnap/restore", Name: "restore",
		Description: "Restore a VM from an array snapshot, in place (mode=overwrite: the VM's disks are replaced; a safety snapshot is taken first) or as a new VM (mode=new). Runs as a task.",
		Permission:  api.Permission{User: "all", Description: "What PVE requires to restore a backup of <vmid>: VM.Backup on /vms/<vmid>. Overwrite: also VM.PowerMgmt on /vms/<vmid> (pvesnap stops and starts it) and Datastore.AllocateSpace on the disks' storages. New: VM.Allocate on /vms/<newid>, Datastore.AllocateSpace on the target storages, VM.PowerMgmt on /vms/<newid> to start it, and for its config what qmrestore checks: SDN.Use on its bridges and VLANs, Mapping.Use on mapped devices, root@pam for raw host PCI and USB devices."},
		Params: []api.Param{nodeParam,
			{Name: "vmid", Type: api.Integer, Minimum: api.Min(100), Maximum: api.Max(999999999), Description: "The source VM (existing or deleted)."},
			{Name: "ctime", Type: api.Integer, Optional: true, Minimum: api.Min(1), Description: "Creation time of the source incarnation (a reused VMID). Default: the existing VM, else the newest deleted one."},
			{Name: "point", Type: api.String, Pattern: pointRe, MaxLength: 256, Description: "The restore point as listed by /nodes/{node}/pvesnap/vms/{vmid}: <array>:<protection group snapshot>, <array>:<suffix> of volume snapshots taken together, or <array>:<snapshot> where a suffix names several points."},
			{Name: "mode", Type: api.String, Enum: []string{NewVM, Overwrite}, Optional: true, Default: NewVM, Description: "overwrite: replace the VM's disks; new: create a new VM."},
			{Name: "disks", Type: api.String, Optional: true, Pattern: diskListRe, MaxLength: 512, Description: "Disks to restore (comma-separated keys such as scsi0). Default: every disk on an array volume."},
			{Name: "newid", Type: api.Integer, Optional: true, Minimum: api.Min(100), Maximum: api.Max(999999999), Description: "VMID of the new VM. Default: the next free one."},
			{Name: "name", Type: api.String, Optional: true, Pattern: regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?$`), Description: "Name of the new VM. Default: the source's."},
			{Name: "storage", Type: api.String, Optional: true, Check: pve.CheckStorageID, Format: "pve-storage-id", Description: "LVM storage for the new VM's disks. Default: the source disks' storages."},
			{Name: "disk-storage", Type: api.String, Optional: true, Pattern: diskStorageRe, MaxLength: 2048, Description: "LVM storage of single disks of the new VM: <disk>:<storage>[,...] (e.g. scsi1:lvm2). The other disks go to storage."},
			{Name: "preserve-macs", Type: api.Boolean, Optional: true, Description: "Keep the NICs' MAC addresses (new VM). Default: fresh MACs with the datacenter's prefix."},
			{Name: "link-down", Type: api.Boolean, Optional: true, Description: "Set link_down=1 on every NIC, so the restored VM starts off the network."},
			{Name: "start", Type: api.Boolean, Optional: true, Description: "Start the VM after the restore."},
			{Name: "force-host-copy", Type: api.Boolean, Optional: true, Description: "Copy through the host instead of offloading to the array."},
			{Name: "safety-snapshot", Type: api.Boolean, Optional: true, Default: true, Description: "Overwrite: snapshot the VM's array volumes first (kept)."}},
		Returns: api.Returns{Type: "string", Description: "the task's UPID"},
		ProxyTo: "node",
		Handler: m.start,
	}, {
		Method: "GET", Path: "/nodes/{node}/pvesnap/pending", Name: "pending",
		Description: "Temporary volumes of this cluster that an array holds destroyed until it eradicates them itself (SafeMode refused their eradication), with the date it will; an array that cannot be asked is listed with its error.",
		Permission:  api.Permission{Path: "/", Privs: []string{"Sys.Audit"}},
		Params:      []api.Param{nodeParam},
		Returns: api.Returns{Type: "array", Properties: map[string]string{"array": "string", "volume": "string", "serial": "string", "job": "string",
			"eradicates": "integer", "manual_eradication": "string", "error": "string"}},
		Handler: func(c *api.Call) (any, error) { return m.R.Pending(c.Ctx) },
	}}
}

func (m *Module) start(c *api.Call) (any, error) {
	p := c.Params
	spec := Spec{Job: newJobID(), Mode: p.Str("mode"), VMID: p.Int("vmid"), CTime: p.Int("ctime"), Point: p.Str("point"),
		NewVMID: p.Int("newid"), Name: p.Str("name"), Storage: p.Str("storage"), PreserveMACs: p.Bool("preserve-macs"),
		LinkDown: p.Bool("link-down"), Start: p.Bool("start"), ForceHostCopy: p.Bool("force-host-copy"), Safety: !p.Has("safety-snapshot") || p.Bool("safety-snapshot")}
	if d := p.Str("disks"); d != "" {
		spec.Disks = strings.Split(d, ",")
	}
	var err error
	if spec.DiskStorage, err = parseDiskStorage(p.Str("disk-storage")); err != nil {
		return nil, err
	}
	return m.Launch(c.Ctx, spec, c.Auth.Name(), c.Check)
}

// Launch validates a restore, records its job and starts its task; check verifies the
// caller's privileges (the CLI, run by root, passes nil).
func (m *Module) Launch(ctx context.Context, spec Spec, user string, check func(path string, privs ...string) error) (string, error) {
	if check == nil {
		check = func(string, ...string) error { return nil }
	}
	if spec.Job == "" {
		spec.Job = newJobID()
	}
	if spec.Mode == "" {
		spec.Mode = NewVM
	}
	// Reading X's disks is what restoring a backup of X is: VM.Backup on /vms/X (PVE's
	// check_volume_access for backup archives), whatever the mode.
	vmPath := fmt.Sprintf("/vms/%d", spec.VMID)
	if err := check(vmPath, "VM.Backup"); err != nil {
		return "", err
	}
	inv := m.R.Inv
	if err := inv.ScanVMs(ctx); err != nil {
		return "", err
	}
	detail, sources, err := inv.Sources(ctx, spec.VMID, spec.CTime, spec.Point, spec.Disks)
	if errors.Is(err, inventory.ErrUnknown) {
		// A snapshot taken on the array since the last refresh: look again once.
		if _, rerr := inv.Refresh(ctx); rerr == nil {
			detail, sources, err = inv.Sources(ctx, spec.VMID, spec.CTime, spec.Point, spec.Disks)
		}
	}
	if err != nil {
		return "", inventoryError(err)
	}
	if spec.Mode == NewVM {
		keys, err := withVMState(detail, spec.Disks)
		if err != nil {
			return "", refusedError(err)
		}
		if len(keys) != len(spec.Disks) {
			spec.Disks = keys
			if detail, sources, err = inv.Sources(ctx, spec.VMID, spec.CTime, spec.Point, spec.Disks); err != nil {
				return "", inventoryError(err)
			}
		}
	}
	spec.CTime = detail.CTime
	storages := map[string]bool{}
	switch spec.Mode {
	case Overwrite:
		if detail.State != inventory.Live {
			return "", api.Errorf(http.StatusBadRequest, "VM %d (created %s) was deleted: restore it with mode=new",
				spec.VMID, time.Unix(detail.CTime, 0).UTC().Format(time.RFC3339))
		}
		if spec.NewVMID != 0 || spec.Name != "" || spec.Storage != "" || len(spec.DiskStorage) > 0 || spec.PreserveMACs {
			return "", api.ParamErr("mode", "newid, name, storage, disk-storage and preserve-macs apply to mode=new only")
		}
		// PVE lets a user with VM.Backup restore over the existing VM (checked above); pvesnap
		// also stops and restarts it, which is VM.PowerMgmt.
		if err := check(vmPath, "VM.PowerMgmt"); err != nil {
			return "", err
		}
		if _, err := m.R.VMs.CheckOverwrite(spec.VMID, "", spec.Start); err != nil {
			return "", refusedError(err)
		}
		for _, s := range sources {
			storages[s.Disk.Storage] = true
		}
	case NewVM:
		if spec.NewVMID == 0 {
			if spec.NewVMID, err = m.R.VMs.NextID(); err != nil {
				return "", err
			}
		} else if m.R.VMs.Exists(spec.NewVMID) {
			return "", api.Errorf(http.StatusBadRequest, "VM %d already exists", spec.NewVMID)
		}
		newPath := fmt.Sprintf("/vms/%d", spec.NewVMID)
		if err := check(newPath, "VM.Allocate"); err != nil {
			return "", err
		}
		if spec.Start {
			if err := check(newPath, "VM.PowerMgmt"); err != nil {
				return "", err
			}
		}
		restored := map[string]bool{}
		for _, s := range sources {
			restored[s.Disk.Key] = true
			storages[spec.TargetStorage(s.Disk.Key, s.Disk.Storage)] = true
		}
		for key := range spec.DiskStorage {
			if !restored[key] {
				return "", api.ParamErr("disk-storage", "disk "+key+" is not restored from "+spec.Point)
			}
		}
		src, err := m.R.sourceConfig(ctx, spec.VMID, detail.CTime)
		if err != nil {
			return "", err
		}
		if err := CheckRestoredConfig(src, user, check, SDNZone(m.R.VMs.PVE)); err != nil {
			return "", refusedError(err)
		}
	default:
		return "", api.ParamErr("mode", "value '"+spec.Mode+"' does not have a value in the enumeration 'new, overwrite'")
	}
	for sid := range storages {
		if _, err := m.R.storageVG(sid); err != nil {
			return "", api.Errorf(http.StatusBadRequest, "%v", err)
		}
		if err := check("/storage/"+sid, "Datastore.AllocateSpace"); err != nil {
			return "", err
		}
	}
	j, err := Begin(ctx, m.R.DB, spec.Job, KindRestore, spec.Target(), spec)
	if err != nil {
		if errors.Is(err, ErrBusy) {
			return "", api.Errorf(http.StatusConflict, "%v", err)
		}
		return "", err
	}
	st, err := m.Tasks.Start(ctx, tasks.Job{Type: "pvesnaprestore", ID: fmt.Sprint(spec.VMID), User: user, Kind: KindRestore,
		JobID: spec.Job, Spec: MarshalSpec(spec)})
	if err != nil {
		setState(context.WithoutCancel(ctx), m.R.DB, spec.Job, StateRolledBack, err.Error())
		return "", err
	}
	j.SetUPID(ctx, st.UPID)
	return st.UPID, nil
}

// withVMState adds the VM's EFI variables and TPM state to the disks a new VM gets: they are
// part of the machine (boot entries, Secure Boot keys, sealed secrets such as BitLocker's),
// so a new VM gets them from the same point in time, and is refused when the point cannot
// hold them.
func withVMState(d *inventory.VMDetail, keys []string) ([]string, error) {
	for _, dk := range d.DiskList {
		if dk.Key != "efidisk0" && dk.Key != "tpmstate0" {
			continue
		}
		if dk.Mapping != inventory.Mapped {
			return nil, refusef("VM %d's %s (%s) is not on an array volume (%s), so no restore point holds it, and a new VM without it would not be the same machine (EFI variables, TPM state): restore in place, or move the disk to array-backed storage first",
				d.VMID, dk.Key, dk.Volid, dk.Reason)
		}
		if len(keys) > 0 && !slices.Contains(keys, dk.Key) {
			keys = append(keys, dk.Key)
		}
	}
	return keys, nil
}

// refusedError answers a restore PVE would refuse with 409 and its words; a failed privilege
// check passes through as the 403 it is.
func refusedError(err error) error {
	if errors.Is(err, ErrRefused) {
		return api.Errorf(http.StatusConflict, "%v", err)
	}
	return err
}

func inventoryError(err error) error {
	switch {
	case errors.Is(err, inventory.ErrPredatesDisk):
		return api.Errorf(http.StatusConflict, "%v", err)
	case errors.Is(err, inventory.ErrUnknown):
		return api.Errorf(http.StatusNotFound, "%v", err)
	}
	return api.Errorf(http.StatusBadRequest, "%v", err)
}
