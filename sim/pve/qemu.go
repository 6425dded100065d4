package pve

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

type vmRuntime struct {
	running bool
	started time.Time
}

func (c *Cluster) confPath(node string, vmid int64) string {
	return filepath.Join(c.shared, "nodes", node, "qemu-server", fmt.Sprintf("%d.conf", vmid))
}

// vmNode finds the node holding a VM's config ("" when none does).
func (c *Cluster) vmNode(vmid int64) string {
	for _, n := range c.names {
		if _, err := os.Stat(c.confPath(n, vmid)); err == nil {
			return n
		}
	}
	return ""
}

// allVMs lists (vmid, node) for every config in the cluster.
func (c *Cluster) allVMs() map[int64]string {
	out := map[int64]string{}
	for _, n := range c.names {
		ents, _ := os.ReadDir(filepath.Join(c.shared, "nodes", n, "qemu-server"))
		for _, e := range ents {
			if id, err := strconv.ParseInt(strings.TrimSuffix(e.Name(), ".conf"), 10, 64); err == nil && strings.HasSuffix(e.Name(), ".conf") {
				out[id] = n
			}
		}
	}
	return out
}

func (c *Cluster) readVM(node string, vmid int64) (*pve.VMConfig, error) {
	b, err := os.ReadFile(c.confPath(node, vmid))
	if errors.Is(err, os.ErrNotExist) {
		return nil, httpStatus("Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", node, vmid)
	}
	if err != nil {
		return nil, err
	}
	return pve.ParseVMConfig(b)
}

func (c *Cluster) writeVM(node string, vmid int64, cfg *pve.VMConfig) error {
	b := pve.FormatVMConfig(cfg.Description, cfg.Order, cfg.Props)
	p := c.confPath(node, vmid)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// WriteVMConfig writes a VM config file as an operator's `qm create` would leave it (tests).
func (c *Cluster) WriteVMConfig(node string, vmid int64, content string) error {
	return os.WriteFile(c.confPath(node, vmid), []byte(content), 0o640)
}

// vmParams are the VM config keys the simulator accepts, named as in PVE's schema.
func vmParams(create bool) []api.Param {
	s := func(name, desc string) api.Param {
		return api.Param{Name: name, Type: api.String, Optional: true, Description: desc}
	}
	idx := func(name string, max int, desc string) api.Param {
		return api.Param{Name: name + "[n]", MaxIndex: max, Type: api.String, Optional: true, Description: desc}
	}
	l := []api.Param{
		s("name", "Set a name for the VM. Only used on the configuration web interface."),
		{Name: "memory", Type: api.String, Optional: true, Description: "Memory properties."},
		{Name: "cores", Type: api.Integer, Optional: true, Minimum: api.Min(1), Description: "The number of cores per socket."},
		{Name: "sockets", Type: api.Integer, Optional: true, Minimum: api.Min(1), Description: "The number of CPU sockets."},
		s("cpu", "Emulated CPU type."),
		{Name: "ostype", Type: api.String, Optional: true, Enum: []string{"other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26", "solaris"}, Description: "Specify guest operating system."},
		{Name: "scsihw", Type: api.String, Optional: true, Enum: []string{"lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi"}, Description: "SCSI controller model"},
		s("boot", "Specify guest boot order."),
		s("agent", "Enable/disable communication with the QEMU Guest Agent and its properties."),
		s("description", "Description for the VM. Shown in the web-interface VM's summary."),
		s("tags", "Tags of the VM. This is only meta information."),
		{Name: "onboot", Type: api.Boolean, Optional: true, Description: "Specifies whether a VM will be started during system bootup."},
		s("bios", "Select BIOS implementation."),
		s("machine", "Specify the QEMU machine."),
		s("vga", "Configure the VGA hardware."),
		s("smbios1", "Specify SMBIOS type 1 fields."),
		s("vmgenid", "Set VM Generation ID."),
		s("efidisk0", "Configure a disk for storing EFI vars."),
		s("tpmstate0", "Configure a Disk for storing TPM state."),
		idx("net", 31, "Specify network devices."),
		idx("scsi", 30, "Use volume as SCSI hard disk or CD-ROM (n is 0 to 30)."),
		idx("virtio", 15, "Use volume as VIRTIO hard disk (n is 0 to 15)."),
		idx("sata", 5, "Use volume as SATA hard disk or CD-ROM (n is 0 to 5)."),
		idx("ide", 3, "Use volume as IDE hard disk or CD-ROM (n is 0 to 3)."),
		idx("unused", 255, "Reference to unused volumes."),
		idx("serial", 3, "Create a serial device inside the VM (n is 0 to 3)"),
		s("lock", "Lock/unlock the VM."),
	}
	if create {
		l = append(l,
			api.Param{Name: "start", Type: api.Boolean, Optional: true, Default: false, Description: "Start VM after it was created successfully."},
			s("pool", "Add the VM to the specified pool."),
			api.Param{Name: "storage", Type: api.String, Optional: true, Check: pve.CheckStorageID, Format: "pve-storage-id", Description: "Default storage."},
			api.Param{Name: "unique", Type: api.Boolean, Optional: true, Description: "Assign a unique random ethernet address."})
	} else {
		l = append(l,
			s("delete", "A list of settings you want to delete."),
			s("revert", "Revert a pending change."),
			api.Param{Name: "digest", Type: api.String, Optional: true, MaxLength: 64, Description: "Prevent changes if current configuration file has different SHA1 digest."},
			api.Param{Name: "skiplock", Type: api.Boolean, Optional: true, Description: "Ignore locks - only root is allowed to use this option."})
	}
	return l
}

var newDiskRe = regexp.MustCompile(`^([a-z][a-z0-9\-_.]*[a-z0-9]):(\d+(?:\.\d+)?)$`)

// configPriv is the privilege qemu-server checks for changing key.
func configPriv(key string) string {
	switch {
	case pve.IsDiskKey(key):
		return "VM.Config.Disk"
	case pve.IsNetKey(key):
		return "VM.Config.Network"
	case key == "memory" || key == "balloon" || key == "shares":
		return "VM.Config.Memory"
	case key == "cores" || key == "sockets" || key == "cpu" || key == "vcpus" || key == "cpulimit" || key == "cpuunits" || key == "affinity":
		return "VM.Config.CPU"
	case key == "scsihw" || key == "vga" || key == "machine" || key == "bios" || strings.HasPrefix(key, "serial") || key == "efidisk0" || key == "tpmstate0":
		return "VM.Config.HWType"
	}
	return "VM.Config.Options"
}

// allocateNewDisks turns "<storage>:<GiB>" values into new volumes, like qemu-server's
// create_disks.
func (c *Cluster) allocateNewDisks(node string, vmid int64, props map[string]string, order []string, t *tasks.Task) error {
	keys := append([]string(nil), order...)
	sort.Strings(keys)
	for _, k := range keys {
		if !pve.IsDiskKey(k) {
			continue
		}
		opts := pve.ParsePropertyString(props[k], "file")
		m := newDiskRe.FindStringSubmatch(opts["file"])
		if m == nil {
			continue
		}
		sid := m[1]
		gib, _ := strconv.ParseFloat(m[2], 64)
		size := int64(gib * (1 << 30))
		if _, err := c.activeStorage(node, sid); err != nil {
			return err
		}
		st := c.volumes(node, sid)
		name := ""
		for i := 0; i < 1000; i++ {
			cand := fmt.Sprintf("vm-%d-disk-%d", vmid, i)
			if !st.Exists(cand) {
				name = cand
				break
			}
		}
		if err := st.Create(name, size, volstore.Meta{Tags: []string{fmt.Sprintf("pve-vm-%d", vmid)}}); err != nil {
			return err
		}
		if t != nil {
			t.Logf("%s: successfully created disk '%s:%s,size=%s'", k, sid, name, sizeString(size))
		}
		parts := []string{sid + ":" + name}
		for ok, ov := range opts {
			if ok != "file" && ok != "size" {
				parts = append(parts, ok+"="+ov)
			}
		}
		sort.Strings(parts[1:])
		parts = append(parts, "size="+sizeString(size))
		props[k] = strings.Join(parts, ",")
	}
	return nil
}

func sizeString(b int64) string {
	switch {
	case b%(1<<30) == 0:
		return fmt.Sprintf("%dG", b>>30)
	case b%(1<<20) == 0:
		return fmt.Sprintf("%dM", b>>20)
	}
	return fmt.Sprintf("%dK", b>>10)
}

func (c *Cluster) qemuRoutes(n *Node) []*api.Route {
	return []*api.Route{
		{Method: "GET", Path: "/nodes/{node}/qemu", Name: "vmlist", Description: "Virtual machine index (per node).",
			Permission: api.Permission{User: "all", Description: "Only list VMs where you have VM.Audit permissons on /vms/<vmid>."},
			Params:     []api.Param{nodeParam, {Name: "full", Type: api.Boolean, Optional: true, Description: "Determine the full status of active VMs."}},
			Returns:    api.Returns{Type: "array", Properties: vmStatusProps},
			ProxyTo:    "node",
			Handler: func(call *api.Call) (any, error) {
				var out []map[string]any
				for vmid, node := range c.allVMs() {
					if node != n.Name {
						continue
					}
					if ok, _ := call.Has(fmt.Sprintf("/vms/%d", vmid), "VM.Audit"); !ok {
						continue
					}
					cfg, err := c.readVM(node, vmid)
					if err != nil {
						continue
					}
					out = append(out, c.vmStatus(vmid, cfg))
				}
				sort.Slice(out, func(i, j int) bool { return out[i]["vmid"].(int64) < out[j]["vmid"].(int64) })
				return nonNil(out), nil
			}},
		{Method: "POST", Path: "/nodes/{node}/qemu", Name: "create_vm", Description: "Create or restore a virtual machine.",
			Permission: api.Permission{User: "all", Description: "You need 'VM.Allocate' permissions on /vms/{vmid} or on the VM pool /pool/{pool}; 'Datastore.AllocateSpace' on any used storage."},
			Params:     append([]api.Param{nodeParam, vmidParam}, vmParams(true)...),
			Returns:    api.Returns{Type: "string"}, ProxyTo: "node", Protected: true,
			Handler: func(call *api.Call) (any, error) { return c.createVM(n, call) }},
		{Method: "GET", Path: "/nodes/{node}/qemu/{vmid}/config", Name: "vm_config", Description: "Get the virtual machine configuration with pending configuration changes applied.",
			Permission: api.Permission{Path: "/vms/{vmid}", Privs: []string{"VM.Audit"}},
			Params: []api.Param{nodeParam, vmidParam,
				{Name: "current", Type: api.Boolean, Optional: true, Default: false, Description: "Get current values (instead of pending values)."},
				{Name: "snapshot", Type: api.String, Optional: true, MaxLength: 40, Description: "Fetch config values from given snapshot."}},
			Returns: api.Returns{Type: "object"}, ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) {
				vmid := call.Params.Int("vmid")
				cfg, err := c.readVM(n.Name, vmid)
				if err != nil {
					return nil, err
				}
				props := cfg.Props
				if s := call.Params.Str("snapshot"); s != "" {
					sp, ok := cfg.Snapshots[s]
					if !ok {
						return nil, httpStatus("snapshot '%s' does not exist", s)
					}
					props = sp
				}
				out := map[string]any{"digest": cfg.Digest()}
				for k, v := range props {
					out[k] = typedConfigValue(k, v)
				}
				if !call.Params.Bool("current") && call.Params.Str("snapshot") == "" {
					for k, v := range cfg.Pending {
						out[k] = typedConfigValue(k, v)
					}
				}
				if cfg.Description != "" {
					out["description"] = cfg.Description
				}
				return out, nil
			}},
		{Method: "POST", Path: "/nodes/{node}/qemu/{vmid}/config", Name: "update_vm_async", Description: "Set virtual machine options (asynchronous API).",
			Permission: configPerm,
			Params: append(append([]api.Param{nodeParam, vmidParam}, vmParams(false)...),
				api.Param{Name: "background_delay", Type: api.Integer, Optional: true, Minimum: api.Min(1), Maximum: api.Max(30), Description: "Time to wait for the task to finish."}),
			Returns: api.Returns{Type: "string"}, ProxyTo: "node", Protected: true,
			Handler: func(call *api.Call) (any, error) { return c.updateVM(n, call, true) }},
		{Method: "PUT", Path: "/nodes/{node}/qemu/{vmid}/config", Name: "update_vm", Description: "Set virtual machine options (synchronous API).",
			Permission: configPerm,
			Params:     append([]api.Param{nodeParam, vmidParam}, vmParams(false)...),
			Returns:    api.Returns{Type: "null"}, ProxyTo: "node", Protected: true,
			Handler: func(call *api.Call) (any, error) { return c.updateVM(n, call, false) }},
		{Method: "GET", Path: "/nodes/{node}/qemu/{vmid}/status/current", Name: "vm_status", Description: "Get virtual machine status.",
			Permission: api.Permission{Path: "/vms/{vmid}", Privs: []string{"VM.Audit"}},
			Params:     []api.Param{nodeParam, vmidParam}, Returns: api.Returns{Type: "object", Properties: vmStatusProps}, ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) {
				cfg, err := c.readVM(n.Name, call.Params.Int("vmid"))
				if err != nil {
					return nil, err
				}
				s := c.vmStatus(call.Params.Int("vmid"), cfg)
				s["ha"] = map[string]any{"managed": 0}
				return s, nil
			}},
		{Method: "POST", Path: "/nodes/{node}/qemu/{vmid}/status/start", Name: "vm_start", Description: "Start virtual machine.",
			Permission: api.Permission{Path: "/vms/{vmid}", Privs: []string{"VM.PowerMgmt"}},
			Params: []api.Param{nodeParam, vmidParam,
				{Name: "skiplock", Type: api.Boolean, Optional: true, Description: "Ignore locks - only root is allowed to use this option."},
				{Name: "timeout", Type: api.Integer, Optional: true, Minimum: api.Min(0), Description: "Wait maximal timeout seconds."}},
			Returns: api.Returns{Type: "string"}, ProxyTo: "node", Protected: true,
			Handler: func(call *api.Call) (any, error) { return c.power(n, call, true) }},
		{Method: "POST", Path: "/nodes/{node}/qemu/{vmid}/status/stop", Name: "vm_stop", Description: "Stop virtual machine.",
			Permission: api.Permission{Path: "/vms/{vmid}", Privs: []string{"VM.PowerMgmt"}},
			Params: []api.Param{nodeParam, vmidParam,
				{Name: "skiplock", Type: api.Boolean, Optional: true, Description: "Ignore locks - only root is allowed to use this option."},
				{Name: "keepActive", Type: api.Boolean, Optional: true, Default: false, Description: "Do not deactivate storage volumes."},
				{Name: "timeout", Type: api.Integer, Optional: true, Minimum: api.Min(0), Description: "Wait maximal timeout seconds."},
				{Name: "overrule-shutdown", Type: api.Boolean, Optional: true, Default: false, Description: "Try to abort active 'qmshutdown' tasks before stopping."}},
			Returns: api.Returns{Type: "string"}, ProxyTo: "node", Protected: true,
			Handler: func(call *api.Call) (any, error) { return c.power(n, call, false) }},
		{Method: "DELETE", Path: "/nodes/{node}/qemu/{vmid}", Name: "destroy_vm", Description: "Destroy the VM and  all used/owned volumes.",
			Permission: api.Permission{Path: "/vms/{vmid}", Privs: []string{"VM.Allocate"}},
			Params: []api.Param{nodeParam, vmidParam,
				{Name: "skiplock", Type: api.Boolean, Optional: true, Description: "Ignore locks - only root is allowed to use this option."},
				{Name: "purge", Type: api.Boolean, Optional: true, Description: "Remove VMID from configurations, like backup & replication jobs and HA."},
				{Name: "destroy-unreferenced-disks", Type: api.Boolean, Optional: true, Default: true, Description: "If set, destroy additionally all disks not referenced in the config but with a matching VMID from all enabled storages."}},
			Returns: api.Returns{Type: "string"}, ProxyTo: "node", Protected: true,
			Handler: func(call *api.Call) (any, error) { return c.destroyVM(n, call) }},
	}
}

// configPerm is qemu-server's check for config updates: any VM.Config.* on the VM to call at
// all, then the privilege of each changed option in code.
var configPerm = api.Permission{Path: "/vms/{vmid}", Any: true, Privs: []string{"VM.Config.Disk", "VM.Config.CDROM",
	"VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType", "VM.Config.Options", "VM.Config.Cloudinit"},
	Description: "the privilege of each changed option is checked in code"}

var vmStatusProps = map[string]string{"vmid": "integer", "name": "string", "status": "string", "qmpstatus": "string",
	"cpus": "number", "maxmem": "integer", "mem": "integer", "maxdisk": "integer", "disk": "integer", "uptime": "integer",
	"cpu": "number", "netin": "integer", "netout": "integer", "diskread": "integer", "diskwrite": "integer", "lock": "string",
	"tags": "string", "template": "boolean", "pid": "integer", "agent": "boolean", "ha": "object"}

// typedConfigValue returns numbers for the config keys PVE's schema types as integers.
func typedConfigValue(k, v string) any {
	switch k {
	case "cores", "sockets", "vcpus", "balloon", "onboot", "template", "numa":
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return v
}

func (c *Cluster) vmStatus(vmid int64, cfg *pve.VMConfig) map[string]any {
	c.mu.Lock()
	rt := c.vms[vmid]
	c.mu.Unlock()
	status := "stopped"
	var uptime int64
	if rt != nil && rt.running {
		status = "running"
		uptime = int64(time.Since(rt.started).Seconds())
	}
	mem := int64(2048)
	if m, err := strconv.ParseInt(pve.ParsePropertyString(cfg.Props["memory"], "current")["current"], 10, 64); err == nil {
		mem = m
	}
	cores, sockets := int64(1), int64(1)
	if v, err := strconv.ParseInt(cfg.Props["cores"], 10, 64); err == nil {
		cores = v
	}
	if v, err := strconv.ParseInt(cfg.Props["sockets"], 10, 64); err == nil {
		sockets = v
	}
	var maxdisk int64
	for _, d := range cfg.Disks() {
		if d.Key == "scsi0" || d.Key == "virtio0" || d.Key == "sata0" || d.Key == "ide0" {
			maxdisk = parseSizeOpt(d.Opts["size"])
			break
		}
	}
	s := map[string]any{"vmid": vmid, "status": status, "qmpstatus": status, "cpus": cores * sockets, "maxmem": mem << 20,
		"mem": int64(0), "maxdisk": maxdisk, "uptime": uptime, "cpu": 0.0, "netin": int64(0),
		"netout": int64(0), "diskread": int64(0), "diskwrite": int64(0)}
	if name := cfg.Props["name"]; name != "" {
		s["name"] = name
	} else {
		s["name"] = fmt.Sprintf("VM %d", vmid)
	}
	if l := cfg.Props["lock"]; l != "" {
		s["lock"] = l
	}
	if t := cfg.Props["tags"]; t != "" {
		s["tags"] = t
	}
	if cfg.Props["template"] == "1" {
		s["template"] = 1
	}
	if status == "running" {
		s["pid"] = int64(c.pid)
	}
	return s
}

func parseSizeOpt(s string) int64 {
	if s == "" {
		return 0
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'K':
		mult = 1 << 10
	case 'M':
		mult = 1 << 20
	case 'G':
		mult = 1 << 30
	case 'T':
		mult = 1 << 40
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	f, _ := strconv.ParseFloat(s, 64)
	return int64(f * float64(mult))
}

func (c *Cluster) checkVMAllocate(call *api.Call, vmid int64, pool string) error {
	if pool != "" {
		if ok, err := call.Has("/pool/"+pool, "VM.Allocate"); err != nil || ok {
			return err
		}
	}
	return call.Check(fmt.Sprintf("/vms/%d", vmid), "VM.Allocate")
}

func (c *Cluster) createVM(n *Node, call *api.Call) (any, error) {
	vmid := call.Params.Int("vmid")
	if err := c.checkVMAllocate(call, vmid, call.Params.Str("pool")); err != nil {
		return nil, err
	}
	props := map[string]string{}
	var order []string
	for k, v := range call.Params {
		switch k {
		case "node", "vmid", "start", "pool", "storage", "unique":
			continue
		}
		props[k] = fmt.Sprint(v)
		if b, ok := v.(bool); ok {
			props[k] = fmt.Sprint(boolInt(b))
		}
		order = append(order, k)
		if pve.IsDiskKey(k) {
			if m := newDiskRe.FindStringSubmatch(pve.ParsePropertyString(props[k], "file")["file"]); m != nil {
				if err := call.Check("/storage/"+m[1], "Datastore.AllocateSpace"); err != nil {
					return nil, err
				}
			}
		}
	}
	if _, ok := props["lock"]; ok && (call.Auth.UserID != "root@pam" || call.Auth.TokenID != "") {
		return nil, api.Errorf(http.StatusForbidden, "only root can set 'lock' config")
	}
	sort.Strings(order)
	if other := c.vmNode(vmid); other != "" {
		return nil, httpStatus("unable to create VM %d - VM %d already exists on node '%s'", vmid, vmid, other)
	}
	// create_and_lock_config: the config exists, locked, before the worker starts.
	if err := os.WriteFile(c.confPath(n.Name, vmid), []byte("lock: create\n"), 0o640); err != nil {
		return nil, err
	}
	start := call.Params.Bool("start")
	pool := call.Params.Str("pool")
	return n.runTask("qmcreate", fmt.Sprint(vmid), call.Auth.Name(), func(t *tasks.Task) error {
		time.Sleep(150 * time.Millisecond) // long enough for a client to see "lock: create"
		if err := c.allocateNewDisks(n.Name, vmid, props, order, t); err != nil {
			os.Remove(c.confPath(n.Name, vmid))
			return fmt.Errorf("unable to create VM %d - %v", vmid, err)
		}
		for _, k := range order {
			if pve.IsNetKey(k) {
				props[k] = ensureMAC(props[k])
			}
		}
		props["meta"] = fmt.Sprintf("creation-qemu=9.2.0,ctime=%d", time.Now().Unix())
		props["smbios1"] = "uuid=" + uuid.New().String()
		props["vmgenid"] = uuid.New().String()
		order = append(order, "meta", "smbios1", "vmgenid")
		cfg := &pve.VMConfig{Props: props, Order: order, Description: props["description"]}
		delete(props, "description")
		if err := c.writeVM(n.Name, vmid, cfg); err != nil {
			return err
		}
		if pool != "" {
			c.appendUserCfg(fmt.Sprintf("pool:%s::%d::", pool, vmid))
		}
		if start {
			c.setRunning(vmid, true)
			t.Logf("starting VM %d", vmid)
		}
		return nil
	}), nil
}

// ensureMAC gives a NIC without an address one with PVE's prefix BC:24:11.
func ensureMAC(v string) string {
	opts := pve.ParsePropertyString(v, "model")
	model := opts["model"]
	for _, m := range []string{"virtio", "e1000", "rtl8139", "vmxnet3", "e1000e"} {
		if _, ok := opts[m]; ok {
			return v
		}
	}
	if _, ok := opts["macaddr"]; ok {
		return v
	}
	if model == "" {
		model = "virtio"
	}
	mac := "BC:24:11:" + strings.ToUpper(randomHex(1)+":"+randomHex(1)+":"+randomHex(1))
	rest := strings.TrimPrefix(strings.TrimPrefix(v, "model="+model), model)
	return model + "=" + mac + rest
}

func (c *Cluster) setRunning(vmid int64, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.vms[vmid] = &vmRuntime{running: true, started: time.Now()}
	} else {
		delete(c.vms, vmid)
	}
}

// IsRunning reports a VM's simulated power state.
func (c *Cluster) IsRunning(vmid int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	rt := c.vms[vmid]
	return rt != nil && rt.running
}

func checkLock(cfg *pve.VMConfig, vmid int64, skiplock bool) error {
	if l := cfg.Props["lock"]; l != "" && l != "suspended" && !skiplock {
		return httpStatus("VM is locked (%s)", l)
	}
	return nil
}

func (c *Cluster) updateVM(n *Node, call *api.Call, async bool) (any, error) {
	vmid := call.Params.Int("vmid")
	path := fmt.Sprintf("/vms/%d", vmid)
	skip := call.Params.Bool("skiplock")
	root := call.Auth.UserID == "root@pam" && call.Auth.TokenID == ""
	if skip && !root {
		return nil, api.Errorf(http.StatusForbidden, "Permission check failed (user != root@pam)")
	}
	changes := map[string]string{}
	var deletes []string
	for k, v := range call.Params {
		switch k {
		case "node", "vmid", "digest", "skiplock", "background_delay", "revert":
			continue
		case "delete":
			deletes = splitComma(fmt.Sprint(v))
			continue
		}
		s := fmt.Sprint(v)
		if b, ok := v.(bool); ok {
			s = fmt.Sprint(boolInt(b))
		}
		changes[k] = s
	}
	for _, k := range append(sortedNames(changes), deletes...) {
		if k == "lock" && !root {
			return nil, api.Errorf(http.StatusForbidden, "only root can set '%s' config", k)
		}
		if err := call.Check(path, configPriv(k)); err != nil {
			return nil, err
		}
	}
	cfg, err := c.readVM(n.Name, vmid)
	if err != nil {
		return nil, err
	}
	if d := call.Params.Str("digest"); d != "" && d != cfg.Digest() {
		return nil, httpStatus("detected modified configuration - file changed by other user? Try again.")
	}
	if _, unlocking := changes["lock"]; !unlocking && !slices.Contains(deletes, "lock") {
		if err := checkLock(cfg, vmid, skip); err != nil {
			return nil, err
		}
	}
	apply := func(t *tasks.Task) error {
		cfg, err := c.readVM(n.Name, vmid)
		if err != nil {
			return err
		}
		keys := sortedNames(changes)
		if err := c.allocateNewDisks(n.Name, vmid, changes, keys, t); err != nil {
			return err
		}
		for _, k := range keys {
			if k == "description" {
				cfg.Description = changes[k]
				continue
			}
			if _, ok := cfg.Props[k]; !ok {
				cfg.Order = append(cfg.Order, k)
			}
			cfg.Props[k] = changes[k]
		}
		for _, k := range deletes {
			delete(cfg.Props, k)
		}
		return c.writeVM(n.Name, vmid, cfg)
	}
	if !async {
		return nil, apply(nil)
	}
	upid := n.runTask("qmconfig", fmt.Sprint(vmid), call.Auth.Name(), apply)
	if d := call.Params.Int("background_delay"); d > 0 {
		n.waitTask(upid, time.Duration(d)*time.Second)
	}
	return upid, nil
}

func (c *Cluster) power(n *Node, call *api.Call, start bool) (any, error) {
	vmid := call.Params.Int("vmid")
	skip := call.Params.Bool("skiplock")
	if skip && (call.Auth.UserID != "root@pam" || call.Auth.TokenID != "") {
		return nil, api.Errorf(http.StatusForbidden, "Permission check failed (user != root@pam)")
	}
	cfg, err := c.readVM(n.Name, vmid)
	if err != nil {
		return nil, err
	}
	if err := checkLock(cfg, vmid, skip); err != nil {
		return nil, err
	}
	typ := "qmstop"
	if start {
		typ = "qmstart"
		if c.IsRunning(vmid) {
			return nil, httpStatus("VM %d already running", vmid)
		}
	}
	return n.runTask(typ, fmt.Sprint(vmid), call.Auth.Name(), func(t *tasks.Task) error {
		c.setRunning(vmid, start)
		return nil
	}), nil
}

func (c *Cluster) destroyVM(n *Node, call *api.Call) (any, error) {
	vmid := call.Params.Int("vmid")
	cfg, err := c.readVM(n.Name, vmid)
	if err != nil {
		return nil, err
	}
	if err := checkLock(cfg, vmid, call.Params.Bool("skiplock")); err != nil {
		return nil, err
	}
	if c.IsRunning(vmid) {
		return nil, httpStatus("VM %d is running - destroy failed", vmid)
	}
	unref := !call.Params.Has("destroy-unreferenced-disks") || call.Params.Bool("destroy-unreferenced-disks")
	return n.runTask("qmdestroy", fmt.Sprint(vmid), call.Auth.Name(), func(t *tasks.Task) error {
		owner := fmt.Sprintf("vm-%d-", vmid)
		for _, d := range cfg.Disks() {
			if strings.HasPrefix(d.Volid.Volume, owner) {
				if err := c.volumes(n.Name, d.Volid.Storage).Destroy(d.Volid.Volume, true); err != nil && !errors.Is(err, volstore.ErrNotFound) {
					t.Warnf("could not remove disk '%s', check manually: %v", d.Volid, err)
				} else {
					t.Logf("Removed disk '%s'", d.Volid)
				}
			}
		}
		if unref {
			all, _, _ := c.storageConfig()
			for sid, st := range all {
				if !st.OnNode(n.Name) || st.Disabled {
					continue
				}
				vols, _ := c.volumes(n.Name, sid).List()
				for _, v := range vols {
					if strings.HasPrefix(v.Name, owner) {
						if err := c.volumes(n.Name, sid).Destroy(v.Name, true); err == nil {
							t.Logf("Removed unreferenced disk '%s:%s'", sid, v.Name)
						}
					}
				}
			}
		}
		if err := os.Remove(c.confPath(n.Name, vmid)); err != nil {
			return err
		}
		t.Logf("purging VM %d from related configurations..", vmid)
		return nil
	}), nil
}
