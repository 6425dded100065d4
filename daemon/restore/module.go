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

// KindRestore is the task handler.
const KindRestore = "restore"

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
	}
}

// Start recovers dead jobs now and then periodically.
func (m *Module) Start(ctx context.Context) error {
	every := m.RecoverEvery
	if every == 0 {
		every = 30 * time.Second
	}
	go func() {
		for {
			m.Recover(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	}()
	return nil
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
		if u, err := tasks.ParseUPID(jr.UPID); err == nil && m.Tasks != nil && m.Tasks.Dir.IsRunning(u) {
			continue // its worker is alive and will finish
		}
		if jr.UPID == "" && jr.State == StateRunning {
			continue // between the API's Begin and the task's start
		}
		m.R.Logger.Info("recovering restore job whose worker is gone", "job", jr.ID, "state", jr.State, "upid", jr.UPID)
		logf := func(f string, a ...any) { m.R.Logger.Info(fmt.Sprintf(f, a...), "job", jr.ID) }
		if jr.UPID != "" && m.Tasks != nil {
			if w := m.Tasks.Dir.AppendLog(jr.UPID); w != nil {
				fmt.Fprintf(w, "pvesnap: the worker of this restore is gone; the daemon finishes its journal (%s)\n", jr.State)
				logf = func(f string, a ...any) {
					fmt.Fprintf(w, f+"\n", a...)
					m.R.Logger.Info(fmt.Sprintf(f, a...), "job", jr.ID)
				}
				defer w.Close()
			}
		}
		m.R.ReleaseLocks(ctx, jr.ID)
		err := Unwind(ctx, m.R.DB, jr.ID, m.R.Exec, logf)
		if err != nil {
			m.R.Logger.Warn("recovery incomplete; retried later", "job", jr.ID, "err", err)
			logf("TASK ERROR: restore interrupted; recovery incomplete, retried later: %v", oneLine(err))
			continue
		}
		if jr.State == StateCommitted {
			logf("TASK WARNINGS: 1 (restore interrupted after it committed: completed by recovery)")
		} else {
			logf("TASK ERROR: restore interrupted and rolled back by recovery")
		}
		n++
	}
	return n
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

var (
	nodeParam  = api.Param{Name: "node", Type: api.String, Format: "pve-node", Check: pve.CheckNode, Description: "The cluster node name."}
	pointRe    = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,38}[a-z0-9]:[A-Za-z0-9][A-Za-z0-9:._-]{0,200}$`)
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

// Routes is the restore call.
func (m *Module) Routes() []*api.Route {
	return []*api.Route{{
		Method: "POST", Path: "/nodes/{node}/pvesnap/restore", Name: "restore",
		Description: "Restore a VM from an array snapshot, in place (mode=overwrite: the VM's disks are replaced; a safety snapshot is taken first) or as a new VM (mode=new). Runs as a task.",
		Permission:  api.Permission{User: "all", Description: "VM.Audit on /vms/<vmid>; overwrite: VM.Config.Disk and VM.PowerMgmt on /vms/<vmid> and Datastore.AllocateSpace on the disks' storages; new: VM.Allocate on /vms/<newid>, Datastore.AllocateSpace on the target storage, VM.PowerMgmt on /vms/<newid> to start it"},
		Params: []api.Param{nodeParam,
			{Name: "vmid", Type: api.Integer, Minimum: api.Min(100), Maximum: api.Max(999999999), Description: "The source VM (existing or deleted)."},
			{Name: "ctime", Type: api.Integer, Optional: true, Minimum: api.Min(1), Description: "Creation time of the source incarnation (a reused VMID). Default: the existing VM, else the newest deleted one."},
			{Name: "point", Type: api.String, Pattern: pointRe, MaxLength: 256, Description: "The restore point: <array>:<protection group snapshot or suffix>, as listed by /nodes/{node}/pvesnap/vms/{vmid}."},
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
	vmPath := fmt.Sprintf("/vms/%d", spec.VMID)
	if err := check(vmPath, "VM.Audit"); err != nil {
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
		if err := check(vmPath, "VM.Config.Disk", "VM.PowerMgmt"); err != nil {
			return "", err
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

func inventoryError(err error) error {
	switch {
	case errors.Is(err, inventory.ErrPredatesDisk):
		return api.Errorf(http.StatusConflict, "%v", err)
	case errors.Is(err, inventory.ErrUnknown):
		return api.Errorf(http.StatusNotFound, "%v", err)
	}
	return api.Errorf(http.StatusBadRequest, "%v", err)
}
