package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/tasks"
)

// Module serves the inventory on /nodes/{node}/pvesnap/… and keeps it fresh: VM configs are
// scanned every ScanInterval, array snapshots refreshed every RefreshInterval (0: only on
// demand and after pvesnap's own snapshots).
type Module struct {
	Inv             *Inventory
	Tasks           *tasks.Service
	ScanInterval    time.Duration
	RefreshInterval time.Duration
	// Devices describes the devices under the storages (nil: the node's, through Inv).
	Devices *Devices

	devicesOnce sync.Once
}

func (m *Module) devices() *Devices {
	m.devicesOnce.Do(func() {
		if m.Devices == nil {
			m.Devices = &Devices{Inv: m.Inv}
		}
	})
	return m.Devices
}

var (
	nodeParam  = api.Param{Name: "node", Type: api.String, Format: "pve-node", Check: pve.CheckNode, Description: "The cluster node name."}
	vmidParam  = api.Param{Name: "vmid", Type: api.Integer, Minimum: api.Min(100), Maximum: api.Max(999999999), Description: "The (unique) ID of the VM."}
	ctimeParam = api.Param{Name: "ctime", Type: api.Integer, Optional: true, Minimum: api.Min(1),
		Description: "Creation time of the VM incarnation (a VMID reused after a VM was destroyed is another VM). Default: the existing VM, else the newest deleted one."}
)

// Start scans and refreshes in the background until ctx ends.
func (m *Module) Start(ctx context.Context) error {
	scan := m.ScanInterval
	if scan == 0 {
		scan = 5 * time.Second
	}
	go func() {
		if _, err := m.Inv.Refresh(ctx); err != nil && ctx.Err() == nil {
			m.Inv.logger().Warn("inventory refresh", "err", err)
		}
		scanT := time.NewTicker(scan)
		defer scanT.Stop()
		var refresh <-chan time.Time
		if m.RefreshInterval > 0 {
			t := time.NewTicker(m.RefreshInterval)
			defer t.Stop()
			refresh = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-scanT.C:
				if err := m.Inv.ScanVMs(ctx); err != nil && ctx.Err() == nil {
					m.Inv.logger().Warn("scanning VM configs", "err", err)
				}
			case <-refresh:
				if _, err := m.Inv.Refresh(ctx); err != nil && ctx.Err() == nil {
					m.Inv.logger().Warn("inventory refresh", "err", err)
				}
			}
		}
	}()
	return nil
}

// Handlers are the inventory's task kinds.
func (m *Module) Handlers() map[string]tasks.Handler {
	return map[string]tasks.Handler{
		KindSnapshot: func(ctx context.Context, t *tasks.Task, raw json.RawMessage) error {
			var spec SnapshotSpec
			if err := json.Unmarshal(raw, &spec); err != nil {
				return err
			}
			return m.Inv.SnapshotVM(ctx, t, spec)
		},
	}
}

func vmPath(vmid int64) string { return "/vms/" + strconv.FormatInt(vmid, 10) }

func apiError(err error) error {
	switch {
	case errors.Is(err, ErrUnknown):
		return api.Errorf(http.StatusNotFound, "%v", err)
	case errors.Is(err, ErrPredatesDisk):
		return api.Errorf(http.StatusConflict, "%v", err)
	}
	return err
}

// Routes are the inventory calls.
func (m *Module) Routes() []*api.Route {
	vmProps := map[string]string{"vmid": "integer", "ctime": "integer", "ctime_source": "string", "name": "string", "node": "string",
		"state": "string", "deleted": "integer", "disks": "integer", "mapped_disks": "integer", "restore_points": "integer",
		"newest": "integer", "problems": "array"}
	return []*api.Route{
		{Method: "GET", Path: "/nodes/{node}/pvesnap/vms", Name: "vms",
			Description: "VMs of the cluster, existing and deleted, with how many array snapshots can restore them. Only VMs the caller has VM.Audit on are listed.",
			Permission: api.Permission{User: "all", Description: "the list is filtered by VM.Audit on /vms/<vmid>; refresh needs Sys.Audit on / (it asks every array, " +
				"as the arrays' status does)"},
			Params:  []api.Param{nodeParam, {Name: "refresh", Type: api.Boolean, Optional: true, Description: "Re-read the arrays' snapshots first."}},
			Returns: api.Returns{Type: "array", Properties: vmProps}, ProxyTo: "node",
			Handler: func(c *api.Call) (any, error) {
				if c.Params.Bool("refresh") {
					if err := c.Check("/", "Sys.Audit"); err != nil {
						return nil, err
					}
					if _, err := m.Inv.Refresh(c.Ctx); err != nil {
						return nil, err
					}
				} else if err := m.Inv.ScanVMs(c.Ctx); err != nil {
					return nil, err
				}
				views, err := m.Inv.Tree(c.Ctx, nil)
				if err != nil {
					return nil, err
				}
				paths := make([]string, len(views))
				for i, v := range views {
					paths[i] = vmPath(v.VMID)
				}
				allowed, err := c.HasOn("VM.Audit", paths)
				if err != nil {
					return nil, err
				}
				out := make([]VMView, 0, len(views))
				for _, v := range views {
					if allowed[vmPath(v.VMID)] {
						out = append(out, v)
					}
				}
				return out, nil
			}},
		{Method: "GET", Path: "/nodes/{node}/pvesnap/vms/{vmid}", Name: "vm",
			Description: "One VM incarnation: its disks, where they live on the arrays, and its restore points, newest first; points taken before a disk existed are flagged predates_disk.",
			Permission:  api.Permission{Path: "/vms/{vmid}", Privs: []string{"VM.Audit"}},
			Params:      []api.Param{nodeParam, vmidParam, ctimeParam},
			Returns: api.Returns{Type: "object", Properties: map[string]string{"vmid": "integer", "ctime": "integer", "state": "string",
				"disk_list": "array", "points": "array"}},
			ProxyTo: "node",
			Handler: func(c *api.Call) (any, error) {
				if err := m.Inv.ScanVMs(c.Ctx); err != nil {
					return nil, err
				}
				d, err := m.Inv.Detail(c.Ctx, c.Params.Int("vmid"), c.Params.Int("ctime"))
				if err != nil {
					return nil, apiError(err)
				}
				return d, nil
			}},
		{Method: "POST", Path: "/nodes/{node}/pvesnap/vms/{vmid}/snapshot", Name: "snapshot",
			Description: "Snapshot the array volumes holding the VM's disks now, in one call per array with one suffix; the guest's filesystems are frozen around it when its agent runs.",
			Permission:  api.Permission{Path: "/vms/{vmid}", Privs: []string{"VM.Snapshot"}},
			Params: []api.Param{nodeParam, vmidParam,
				{Name: "suffix", Type: api.String, Optional: true, MaxLength: 63, Check: CheckSuffix, Description: "Snapshot suffix. Default: pvesnap-<vmid>-<UTC time>."},
				{Name: "freeze", Type: api.Boolean, Optional: true, Description: "Freeze the guest's filesystems through the guest agent. Default: when the VM has the agent enabled."}},
			Returns: api.Returns{Type: "string", Description: "the task's UPID"}, ProxyTo: "node",
			Handler: func(c *api.Call) (any, error) {
				vmid := c.Params.Int("vmid")
				d, err := m.Inv.Detail(c.Ctx, vmid, 0)
				if err != nil || d.State != Live {
					if err := m.Inv.ScanVMs(c.Ctx); err != nil {
						return nil, err
					}
					if d, err = m.Inv.Detail(c.Ctx, vmid, 0); err != nil {
						return nil, apiError(err)
					}
				}
				if d.State != Live {
					return nil, api.Errorf(http.StatusNotFound, "VM %d does not exist (its last incarnation was deleted %s)", vmid, fmtTime(d.Deleted*1000))
				}
				spec := SnapshotSpec{VMID: vmid, Suffix: c.Params.Str("suffix"), Freeze: c.Params.Bool("freeze")}
				if spec.Suffix == "" {
					spec.Suffix = DefaultSuffix(vmid, m.Inv.now())
				}
				if !c.Params.Has("freeze") {
					incs, err := m.Inv.Incarnations(c.Ctx, vmid)
					if err == nil {
						for _, in := range incs {
							if in.CTime == d.CTime {
								cfg, err := pve.ParseVMConfig([]byte(in.Config))
								spec.Freeze = err == nil && AgentEnabled(cfg)
							}
						}
					}
				}
				b, _ := json.Marshal(spec)
				st, err := m.Tasks.Start(c.Ctx, tasks.Job{Type: "pvesnapsnap", ID: strconv.FormatInt(vmid, 10), User: c.Auth.Name(), Kind: KindSnapshot, Spec: b})
				if err != nil {
					return nil, err
				}
				return st.UPID, nil
			}},
		{Method: "GET", Path: "/nodes/{node}/pvesnap/storages", Name: "storages",
			Description: "How each LVM storage of the node maps to an array volume (VG, PV, device identity, serial, array, volume and its pod), or why it does not; where several arrays have the volume (ActiveCluster), which one was chosen and why.",
			Permission: api.Permission{User: "all", Description: "the list is filtered by Datastore.Audit on /storage/<storage>; refresh needs Sys.Audit on " +
				"/nodes/<node> (it reads the node's devices again, as the node's disk list does)"},
			Params: []api.Param{nodeParam, {Name: "refresh", Type: api.Boolean, Optional: true, Description: "Map again instead of the last result."}},
			Returns: api.Returns{Type: "array", Properties: map[string]string{"storage": "string", "vg": "string", "pvs": "array", "serial": "string",
				"identity": "string", "array": "string", "volume": "string", "pod": "string", "state": "string", "reason": "string",
				"choice": "string"}},
			ProxyTo: "node",
			Handler: func(c *api.Call) (any, error) {
				maxAge := MapMaxAge
				if c.Params.Bool("refresh") {
					if err := c.Check("/nodes/"+c.Params.Str("node"), "Sys.Audit"); err != nil {
						return nil, err
					}
					maxAge = 0
				}
				maps, err := m.Inv.Maps(c.Ctx, maxAge)
				if err != nil {
					return nil, err
				}
				return auditable(c, maps, func(s StorageMap) string { return s.Storage })
			}},
		{Method: "GET", Path: "/nodes/{node}/pvesnap/devices", Name: "devices",
			Description: "The devices under each physical volume of the node's LVM storages, as they describe themselves: identity, paths, copy-offload capabilities, " +
				"block sizes, protection information and health (with a warning naming what a device reports as critical). Read once per device and kept until the storage mapping is made again.",
			Permission: api.Permission{Path: "/nodes/{node}", Privs: []string{"Sys.Audit"},
				Description: "as the node's disk list and SMART data; rows are filtered by Datastore.Audit on /storage/<storage>, as the storage mapping is"},
			Params: []api.Param{nodeParam, {Name: "refresh", Type: api.Boolean, Optional: true, Description: "Map and ask the devices again instead of the last answers."}},
			Returns: api.Returns{Type: "array", Properties: map[string]string{"storage": "string", "vg": "string", "pv": "string", "devices": "array",
				"warning": "string", "error": "string"}},
			ProxyTo: "node",
			Handler: func(c *api.Call) (any, error) {
				pvs, err := m.devices().List(c.Ctx, c.Params.Bool("refresh"))
				if err != nil {
					return nil, err
				}
				return auditable(c, pvs, func(p PVDevices) string { return p.Storage })
			}},
	}
}

// auditable keeps the rows about storages the caller has Datastore.Audit on, as PVE lists a
// node's storages.
func auditable[T any](c *api.Call, rows []T, storage func(T) string) ([]T, error) {
	paths := make([]string, len(rows))
	for i, r := range rows {
		paths[i] = "/storage/" + storage(r)
	}
	allowed, err := c.HasOn("Datastore.Audit", paths)
	if err != nil {
		return nil, err
	}
	out := []T{}
	for _, r := range rows {
		if allowed["/storage/"+storage(r)] {
			out = append(out, r)
		}
	}
	return out, nil
}

// String names the module in logs.
func (m *Module) String() string { return fmt.Sprintf("inventory of node %s", m.Inv.Node) }
