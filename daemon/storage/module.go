package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/peer"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

// Module holds the storage intercepts.
type Module struct {
	Node    string
	Storage *pve.StorageConfig
	Run     runner.Runner
	// ZFSDev is the ZFS control device (/dev/zfs) for the instant copy's ioctls; "" or a
	// missing device means the zfs command.
	ZFSDev string
	// Sys is /sys (the ZFS module's version decides between its ioctls and the zfs command).
	Sys     string
	Tasks   *tasks.Service
	LockDir string
	Logger  *slog.Logger
	// InstantWait is how long a call waits for an instant copy's task to finish, so the
	// client's first poll already sees it stopped (go-proxmox polls again only after 15 s).
	InstantWait time.Duration
	// Offloadable tells whether a VG's PVs are on devices that can copy inside the storage.
	Offloadable func(ctx context.Context, vg string) (bool, string)
	// Engine is used by thick-LVM copies in the worker.
	Engine engine.Options
	// Peers are the other nodes' pvesnap, for moves (copies with target_node); nil makes
	// pveproxy answer those.
	Peers *peer.Peers
	// RunDir holds the sockets through which the daemon hands a move's stream to its task.
	RunDir string
	// StreamWait is how long a move's receiving task waits for its stream to begin, and the
	// daemon for the task to take it (0: a minute).
	StreamWait time.Duration
}

// Job kinds run in task workers.
const (
	KindZFSClone  = "storage-zfs-clone"
	KindZFSDelete = "storage-zfs-delete"
	KindThinSnap  = "storage-lvmthin-snapshot"
	KindLVMCopy   = "storage-lvm-copy"
)

// CopySpec is a copy job.
type CopySpec struct {
	Storage string `json:"storage"`
	Pool    string `json:"pool,omitempty"` // zfs
	VG      string `json:"vg,omitempty"`   // lvm
	Source  string `json:"source"`
	Target  string `json:"target"`
}

// DeleteSpec is a delete job.
type DeleteSpec struct {
	Storage string `json:"storage"`
	Pool    string `json:"pool"`
	Volume  string `json:"volume"`
}

var (
	nodeParam    = api.Param{Name: "node", Type: api.String, Format: "pve-node", Check: pve.CheckNode, Description: "The cluster node name."}
	storageParam = api.Param{Name: "storage", Type: api.String, Optional: true, Format: "pve-storage-id", Check: pve.CheckStorageID, Description: "The storage identifier."}
	volumeParam  = api.Param{Name: "volume", Type: api.String, Description: "Volume identifier"}
)

// Routes are the intercepted PVE calls.
func (m *Module) Routes() []*api.Route {
	return []*api.Route{
		{Method: "POST", Path: "/nodes/{node}/storage/{storage}/content/{volume}", Name: "copy",
			Description: "Copy a volume: instant on zfspool (snapshot + clone) and lvmthin (thin snapshot), offloaded to the array on thick LVM over an offload-capable LUN (also with target_node on a shared storage, which every node sees alike); with target_node on a local zfspool, lvmthin or lvm storage, a move to that node's pvesnap (ZFS send stream, or a block stream that skips zeros). A target that is no valid volume name for the storage is refused with 400 saying why. Any other copy goes to pveproxy unchanged.",
			Permission:  api.Permission{User: "all", Description: "Datastore.Allocate on /storage/<storage> (and on the target's storage), checked in code because the storage may come from the volid; a move is checked again by the target node; without it the call goes to pveproxy, which allows only root@pam"},
			Params: []api.Param{nodeParam, storageParam, volumeParam,
				// No maximum length, as in PVE: a storage pvesnap copies checks the name by its own
				// rules and says which one a bad name breaks (names.go).
				{Name: "target", Type: api.String, Description: "Target volume identifier"},
				{Name: "target_node", Type: api.String, Optional: true, Check: pve.CheckNode, Format: "pve-node", Description: "Target node. Default is local node."}},
			Returns: api.Returns{Type: "string", Description: "the UPID of the copy task"},
			ProxyTo: "node", Intercept: true, Protected: true,
			Handler: m.copy},
		{Method: "DELETE", Path: "/nodes/{node}/storage/{storage}/content/{volume}", Name: "delete",
			Description: "Delete a volume. On zfspool, pvesnap keeps clones' data: a volume whose snapshots have pvesnap clones is promoted away first, and the origin snapshot of a deleted clone is removed once nothing depends on it. Other storages go to pveproxy unchanged.",
			Permission:  api.Permission{User: "all", Description: "Datastore.Allocate on /storage/<storage>, checked in code; without it the call goes to pveproxy"},
			Params: []api.Param{nodeParam, storageParam, volumeParam,
				{Name: "delay", Type: api.Integer, Optional: true, Minimum: api.Min(1), Maximum: api.Max(30), Description: "Time to wait for the task to finish. We return 'null' if the task finish within that time."}},
			Returns: api.Returns{Type: "string", Description: "the UPID of the delete task (null with delay, when it finished in time)"},
			ProxyTo: "node", Intercept: true, Protected: true,
			Handler: m.delete},
		m.receiveRoute(),
	}
}

// volumeArg resolves {storage} and {volume} ("name" or "storage:name").
func volumeArg(call *api.Call) (sid, vol string, ok bool) {
	vol = call.Params.Str("volume")
	sid = call.Params.Str("storage")
	if s, v, found := strings.Cut(vol, ":"); found {
		if sid != "" && s != sid {
			return "", "", false
		}
		sid, vol = s, v
	}
	return sid, vol, sid != "" && vol != ""
}

// allowed checks Datastore.Allocate on the storage; false means "let pveproxy decide".
func allowed(call *api.Call, sid string) (bool, error) {
	ok, err := call.Has("/storage/"+sid, "Datastore.Allocate")
	return ok, err
}

// served reports a storage type pvesnap copies itself, with names it can pass to commands.
func served(st *pve.Storage) bool {
	switch st.Type {
	case "zfspool":
		return CheckDataset(st.Pool) == nil
	case "lvmthin", "lvm":
		return lvm.CheckName("volume group", st.VGName) == nil
	}
	return false
}

func (m *Module) copy(call *api.Call) (any, error) {
	sid, vol, ok := volumeArg(call)
	if !ok || pve.CheckStorageID(sid) != nil {
		return nil, api.ErrPassThrough
	}
	st, err := m.Storage.Get(sid)
	if err != nil || st.Disabled || !st.OnNode(m.Node) || !served(st) {
		return nil, api.ErrPassThrough // pveproxy answers with PVE's own error
	}
	tst, target := st, call.Params.Str("target")
	if s, v, found := strings.Cut(target, ":"); found {
		if pve.CheckStorageID(s) != nil {
			return nil, api.ErrPassThrough
		}
		if tst, err = m.Storage.Get(s); err != nil || !served(tst) {
			return nil, api.ErrPassThrough
		}
		target = v
	}
	tnode := call.Params.Str("target_node")
	if tnode == "" {
		tnode = m.Node
	}
	// The storages are pvesnap's: whether the caller may allocate on them decides who answers.
	for _, s := range []string{st.ID, tst.ID} {
		if ok, err := allowed(call, s); err != nil || !ok {
			if err != nil {
				return nil, err
			}
			return nil, api.ErrPassThrough
		}
	}
	// A shared storage is the same on every node: a copy "to" another node is made here, and
	// "moving" a volume to itself there is PVE's (its storage_migrate has nothing to do).
	sameShared := st.Shared && tst.ID == st.ID
	if sameShared && tnode != m.Node && target == vol {
		return nil, api.ErrPassThrough
	}
	move := tnode != m.Node && !sameShared
	op := opOther
	switch {
	case move:
		op = opMove
	case tst.ID == st.ID && st.Type == "zfspool":
		op = opInstant
	}
	if err := checkTargetName(tst, vol, target, op); err != nil {
		return nil, api.ParamErr("target", err.Error())
	}
	if _, err := pve.ParseDiskName(vol); err != nil {
		return nil, api.ErrPassThrough
	}
	if _, err := pve.ParseDiskName(target); err != nil {
		return nil, api.ErrPassThrough
	}
	if move {
		return m.move(call, st, tst, vol, target, tnode)
	}
	if tst.ID != st.ID {
		return nil, api.ErrPassThrough // a copy to another storage on this node: PVE's storage_migrate
	}
	var kind string
	spec := CopySpec{Storage: sid, Source: vol, Target: target}
	switch st.Type {
	case "zfspool":
		kind, spec.Pool = KindZFSClone, st.Pool
	case "lvmthin":
		kind, spec.VG = KindThinSnap, st.VGName
	case "lvm":
		if m.Offloadable == nil {
			return nil, api.ErrPassThrough
		}
		if ok, why := m.Offloadable(call.Ctx, st.VGName); !ok {
			m.Logger.Info("thick LVM copy left to pveproxy", "storage", sid, "reason", why)
			return nil, api.ErrPassThrough
		}
		kind, spec.VG = KindLVMCopy, st.VGName
	}
	if err := m.precheck(call.Ctx, st, spec); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(spec)
	started, err := m.Tasks.Start(call.Ctx, tasks.Job{Type: "imgcopy", ID: "", User: call.Auth.Name(), Kind: kind, Spec: b})
	if err != nil {
		return nil, err
	}
	if kind != KindLVMCopy {
		m.Tasks.Wait(started, m.InstantWait)
	}
	return started.UPID, nil
}

// precheck refuses what the task would refuse anyway, with PVE-like messages and status.
func (m *Module) precheck(ctx context.Context, st *pve.Storage, spec CopySpec) error {
	switch st.Type {
	case "zfspool":
		src, dst := spec.Pool+"/"+spec.Source, spec.Pool+"/"+spec.Target
		found, err := m.zfs().Existing(ctx, src, dst)
		if err != nil {
			return err
		}
		if !found[src] {
			return api.Errorf(http.StatusInternalServerError, "no such volume '%s:%s'", st.ID, spec.Source)
		}
		if found[dst] {
			return api.Errorf(http.StatusInternalServerError, "volume '%s:%s' already exists", st.ID, spec.Target)
		}
	case "lvmthin", "lvm":
		l := &lvm.LVM{Run: m.Run}
		lvs, err := l.LVs(ctx, spec.VG)
		if err != nil {
			return err
		}
		var src, dst bool
		for _, lv := range lvs {
			src = src || lv.Name == spec.Source
			dst = dst || lv.Name == spec.Target
		}
		if !src {
			return api.Errorf(http.StatusInternalServerError, "no such volume '%s:%s'", st.ID, spec.Source)
		}
		if dst {
			return api.Errorf(http.StatusInternalServerError, "volume '%s:%s' already exists", st.ID, spec.Target)
		}
	}
	return nil
}

func (m *Module) delete(call *api.Call) (any, error) {
	sid, vol, ok := volumeArg(call)
	if !ok || pve.CheckStorageID(sid) != nil {
		return nil, api.ErrPassThrough
	}
	dn, err := pve.ParseDiskName(vol)
	if err != nil {
		return nil, api.ErrPassThrough
	}
	st, err := m.Storage.Get(sid)
	if err != nil || st.Type != "zfspool" || st.Disabled || !st.OnNode(m.Node) || CheckDataset(st.Pool) != nil {
		return nil, api.ErrPassThrough // LVM and others: PVE's own delete is right
	}
	if ok, err := allowed(call, sid); err != nil || !ok {
		if err != nil {
			return nil, err
		}
		return nil, api.ErrPassThrough
	}
	if ok, err := m.zfs().Exists(call.Ctx, st.Pool+"/"+vol); err != nil {
		return nil, err
	} else if !ok {
		return nil, api.Errorf(http.StatusInternalServerError, "no such volume '%s:%s'", sid, vol)
	}
	b, _ := json.Marshal(DeleteSpec{Storage: sid, Pool: st.Pool, Volume: vol})
	started, err := m.Tasks.Start(call.Ctx, tasks.Job{Type: "imgdel", ID: fmt.Sprintf("%d@%s", dn.VMID, sid), User: call.Auth.Name(), Kind: KindZFSDelete, Spec: b})
	if err != nil {
		return nil, err
	}
	wait := m.InstantWait
	if d := call.Params.Int("delay"); d > 0 {
		wait = time.Duration(d) * time.Second
	}
	status := m.Tasks.Wait(started, wait)
	if call.Params.Int("delay") > 0 && status == "OK" {
		return nil, nil
	}
	return started.UPID, nil
}

func (m *Module) zfs() ZFS { return ZFS{Run: m.Run, Dev: m.ZFSDev, Sys: m.Sys} }

// Handlers are the job kinds the task workers run.
func (m *Module) Handlers() map[string]tasks.Handler {
	return map[string]tasks.Handler{
		KindZFSClone:    m.zfsClone,
		KindZFSDelete:   m.zfsDelete,
		KindThinSnap:    m.thinSnapshot,
		KindLVMCopy:     m.lvmCopy,
		KindMoveSend:    m.moveSend,
		KindMoveReceive: m.moveReceive,
	}
}

// lock takes a flock on name in the lock directory (exclusive or shared) and returns unlock.
func (m *Module) lock(ctx context.Context, name string, exclusive bool) (func(), error) {
	if err := os.MkdirAll(m.LockDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(m.LockDir, "pvesnap-"+strings.ReplaceAll(name, "/", "_")+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		} else if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
