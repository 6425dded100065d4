package pve

import (
	"errors"
	"fmt"
	"maps"
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

	"github.com/pvesnap/pvesnap/sim/pveschema"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// The qemu-server API (API2/Qemu.pm) as far as the simulator serves it: list, create,
// config read and update, status, start, stop, destroy. VMs do not run; a started VM is a
// flag with a start time.

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

// readVM loads a VM's config; one that PVE would not parse cleanly is an error.
func (c *Cluster) readVM(node string, vmid int64) (*vmConfig, error) {
	b, err := os.ReadFile(c.confPath(node, vmid))
	if errors.Is(err, os.ErrNotExist) {
		return nil, httpErr(500, "Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", node, vmid)
	}
	if err != nil {
		return nil, err
	}
	return c.parseVMConfig(vmid, b)
}

// ReadVMConfig parses a VM's config as the stand-in reads it (tests).
func (c *Cluster) ReadVMConfig(node string, vmid int64) (map[string]string, error) {
	cfg, err := c.readVM(node, vmid)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range cfg.props {
		out[k] = v
	}
	if cfg.description != "" {
		out["description"] = cfg.description
	}
	return out, nil
}

func (c *Cluster) writeVM(node string, vmid int64, cfg *vmConfig) error {
	p := c.confPath(node, vmid)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, cfg.format(), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// WriteVMConfig writes a VM config file as an operator's `qm create` would leave it (tests).
func (c *Cluster) WriteVMConfig(node string, vmid int64, content string) error {
	return os.WriteFile(c.confPath(node, vmid), []byte(content), 0o640)
}

var newDiskRe = regexp.MustCompile(`^([a-z][a-z0-9\-_.]*[a-z0-9]):(\d+(?:\.\d+)?)$`)

// configPriv is the privilege qemu-server's check_vm_modify_config_perm wants for key.
func configPriv(key string) string {
	switch {
	case pveschema.IsDriveName(key) || strings.HasPrefix(key, "unused"):
		return "VM.Config.Disk"
	case regexp.MustCompile(`^net\d+$`).MatchString(key):
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

// drivePropertyString renders a parsed drive back (file first, the rest sorted), as
// print_drive does.
func drivePropertyString(d map[string]any) string {
	parts := []string{fmt.Sprint(d["file"])}
	for _, k := range slices.Sorted(maps.Keys(d)) {
		if k != "file" {
			parts = append(parts, k+"="+fmt.Sprint(d[k]))
		}
	}
	return strings.Join(parts, ",")
}

// allocateNewDisks turns "<storage>:<GiB>" drives into new volumes, like create_disks.
func (c *Cluster) allocateNewDisks(node string, vmid int64, props map[string]string, t *task) error {
	for _, k := range slices.Sorted(maps.Keys(props)) {
		if !pveschema.IsDriveName(k) {
			continue
		}
		d, err := c.parseDrive(k, props[k])
		if err != nil {
			continue
		}
		m := newDiskRe.FindStringSubmatch(fmt.Sprint(d["file"]))
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
		for i := 0; i < 1000 && name == ""; i++ {
			if cand := fmt.Sprintf("vm-%d-disk-%d", vmid, i); !st.Exists(cand) {
				name = cand
			}
		}
		if err := st.Create(name, size, volstore.Meta{Tags: []string{fmt.Sprintf("pve-vm-%d", vmid)}}); err != nil {
			return err
		}
		if t != nil {
			t.logf("%s: successfully created disk '%s:%s,size=%s'", k, sid, name, sizeString(size))
		}
		d["file"] = sid + ":" + name
		d["size"] = sizeString(size)
		props[k] = drivePropertyString(d)
	}
	return nil
}

// sizeString is PVE::JSONSchema::format_size.
func sizeString(b int64) string {
	switch {
	case b%(1<<40) == 0:
		return fmt.Sprintf("%dT", b>>40)
	case b%(1<<30) == 0:
		return fmt.Sprintf("%dG", b>>30)
	case b%(1<<20) == 0:
		return fmt.Sprintf("%dM", b>>20)
	case b%(1<<10) == 0:
		return fmt.Sprintf("%dK", b>>10)
	}
	return strconv.FormatInt(b, 10)
}

func (c *Cluster) qemuRoutes(n *Node) []*route {
	vmid := func(call *call) int64 { return call.int("vmid") }
	return []*route{
		{method: "GET", path: "/nodes/{node}/qemu", handler: func(call *call) (any, error) {
			var out []map[string]any
			for id, node := range c.allVMs() {
				if node != n.Name || !call.holds(fmt.Sprintf("/vms/%d", id), "VM.Audit") {
					continue
				}
				cfg, err := c.readVM(node, id)
				if err != nil {
					continue
				}
				out = append(out, c.vmStatus(id, cfg))
			}
			sort.Slice(out, func(i, j int) bool { return out[i]["vmid"].(int64) < out[j]["vmid"].(int64) })
			return nonNil(out), nil
		}},
		{method: "POST", path: "/nodes/{node}/qemu", handler: func(call *call) (any, error) { return c.createVM(n, call) }},
		{method: "GET", path: "/nodes/{node}/qemu/{vmid}", handler: func(call *call) (any, error) {
			if _, err := c.readVM(n.Name, vmid(call)); err != nil {
				return nil, err
			}
			var out []map[string]string
			for _, s := range []string{"config", "pending", "status", "unlink", "vncproxy", "termproxy", "migrate", "resize",
				"move", "rrd", "rrddata", "monitor", "agent", "snapshot", "spiceproxy", "sendkey", "firewall", "mtunnel",
				"remote_migrate"} {
				out = append(out, map[string]string{"subdir": s})
			}
			return out, nil
		}},
		{method: "GET", path: "/nodes/{node}/qemu/{vmid}/config", handler: func(call *call) (any, error) {
			cfg, err := c.readVM(n.Name, vmid(call))
			if err != nil {
				return nil, err
			}
			props := cfg.props
			if s := call.str("snapshot"); s != "" {
				sp, ok := cfg.snapshots[s]
				if !ok {
					return nil, httpErr(500, "snapshot '%s' does not exist", s)
				}
				props = sp
			}
			out := map[string]any{"digest": cfg.digest}
			for k, v := range props {
				out[k] = c.typedValue(k, v)
			}
			if !call.bool("current") && call.str("snapshot") == "" {
				for k, v := range cfg.pending {
					if k != "delete" {
						out[k] = c.typedValue(k, v)
					}
				}
			}
			if cfg.description != "" {
				out["description"] = cfg.description
			}
			return out, nil
		}},
		{method: "POST", path: "/nodes/{node}/qemu/{vmid}/config", handler: func(call *call) (any, error) { return c.updateVM(n, call, true) }},
		{method: "PUT", path: "/nodes/{node}/qemu/{vmid}/config", handler: func(call *call) (any, error) { return c.updateVM(n, call, false) }},
		{method: "GET", path: "/nodes/{node}/qemu/{vmid}/status/current", handler: func(call *call) (any, error) {
			cfg, err := c.readVM(n.Name, vmid(call))
			if err != nil {
				return nil, err
			}
			s := c.vmStatus(vmid(call), cfg)
			s["ha"] = map[string]any{"managed": 0}
			return s, nil
		}},
		{method: "POST", path: "/nodes/{node}/qemu/{vmid}/status/start", handler: func(call *call) (any, error) { return c.power(n, call, true) }},
		{method: "POST", path: "/nodes/{node}/qemu/{vmid}/status/stop", handler: func(call *call) (any, error) { return c.power(n, call, false) }},
		{method: "DELETE", path: "/nodes/{node}/qemu/{vmid}", handler: func(call *call) (any, error) { return c.destroyVM(n, call) }},
	}
}

func (c *Cluster) vmStatus(vmid int64, cfg *vmConfig) map[string]any {
	c.mu.Lock()
	rt := c.vms[vmid]
	c.mu.Unlock()
	status := "stopped"
	var uptime int64
	if rt != nil && rt.running {
		status = "running"
		uptime = int64(time.Since(rt.started).Seconds())
	}
	mem := int64(512) // qemu-server's default
	if f, ok := c.vmProps["memory"]["format"].(map[string]any); ok && cfg.props["memory"] != "" {
		if m, err := pveschema.ParsePropertyString(propsOf(f), cfg.props["memory"], "memory"); err == nil {
			if v, err := strconv.ParseInt(fmt.Sprint(m["current"]), 10, 64); err == nil {
				mem = v
			}
		}
	}
	cores, sockets := int64(1), int64(1)
	if v, err := strconv.ParseInt(cfg.props["cores"], 10, 64); err == nil {
		cores = v
	}
	if v, err := strconv.ParseInt(cfg.props["sockets"], 10, 64); err == nil {
		sockets = v
	}
	var maxdisk int64
	for _, d := range c.disks(cfg.props) {
		if d.key == "scsi0" || d.key == "virtio0" || d.key == "sata0" || d.key == "ide0" {
			maxdisk, _ = pveschema.ParseSize(fmt.Sprint(d.opts["size"]))
			break
		}
	}
	s := map[string]any{"vmid": vmid, "status": status, "qmpstatus": status, "cpus": cores * sockets, "maxmem": mem << 20,
		"mem": int64(0), "maxdisk": maxdisk, "uptime": uptime, "cpu": 0.0, "netin": int64(0),
		"netout": int64(0), "diskread": int64(0), "diskwrite": int64(0)}
	if name := cfg.props["name"]; name != "" {
		s["name"] = name
	} else {
		s["name"] = fmt.Sprintf("VM %d", vmid)
	}
	if l := cfg.props["lock"]; l != "" {
		s["lock"] = l
	}
	if t := cfg.props["tags"]; t != "" {
		s["tags"] = t
	}
	if perlTrue(cfg.props["template"]) {
		s["template"] = 1
	}
	if status == "running" {
		s["pid"] = c.pid
	}
	return s
}

func (c *Cluster) checkVMAllocate(call *call, vmid int64, pool string) error {
	if pool != "" && call.holds("/pool/"+pool, "VM.Allocate") {
		return nil
	}
	return call.check(fmt.Sprintf("/vms/%d", vmid), "VM.Allocate")
}

// paramString renders a parameter as it lands in a config (booleans as 0/1).
func paramString(v any) string {
	switch x := v.(type) {
	case bool:
		return strconv.Itoa(boolInt(x))
	}
	s, _ := pveschema.Scalar(v)
	return s
}

func (c *Cluster) createVM(n *Node, call *call) (any, error) {
	vmid := call.int("vmid")
	if err := c.checkVMAllocate(call, vmid, call.str("pool")); err != nil {
		return nil, err
	}
	props := map[string]string{}
	for k, v := range call.params {
		switch k {
		case "node", "vmid", "start", "pool", "storage", "unique", "archive", "force", "live-restore", "bwlimit":
			continue
		}
		props[k] = paramString(v)
		if pveschema.IsDriveName(k) {
			if d, err := c.parseDrive(k, props[k]); err == nil {
				if m := newDiskRe.FindStringSubmatch(fmt.Sprint(d["file"])); m != nil {
					if err := call.check("/storage/"+m[1], "Datastore.AllocateSpace"); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	if _, ok := props["lock"]; ok && !call.root() {
		return nil, httpErr(http.StatusForbidden, "only root can set 'lock' config")
	}
	if other := c.vmNode(vmid); other != "" {
		return nil, httpErr(500, "unable to create VM %d - VM %d already exists on node '%s'", vmid, vmid, other)
	}
	// create_and_lock_config: the config exists, locked, before the worker starts.
	if err := os.WriteFile(c.confPath(n.Name, vmid), []byte("lock: create\n"), 0o640); err != nil {
		return nil, err
	}
	start := call.bool("start")
	pool := call.str("pool")
	return n.runTask("qmcreate", fmt.Sprint(vmid), call.user, func(t *task) error {
		time.Sleep(150 * time.Millisecond) // long enough for a client to see "lock: create"
		if err := c.allocateNewDisks(n.Name, vmid, props, t); err != nil {
			os.Remove(c.confPath(n.Name, vmid))
			return fmt.Errorf("unable to create VM %d - %v", vmid, err)
		}
		for k, v := range props {
			if regexp.MustCompile(`^net\d+$`).MatchString(k) {
				props[k] = c.ensureMAC(v)
			}
		}
		props["meta"] = fmt.Sprintf("creation-qemu=9.2.0,ctime=%d", time.Now().Unix())
		if props["smbios1"] == "" {
			props["smbios1"] = "uuid=" + uuid.New().String()
		}
		if props["vmgenid"] == "" || props["vmgenid"] == "1" {
			props["vmgenid"] = uuid.New().String()
		}
		cfg := &vmConfig{props: props, description: props["description"]}
		delete(props, "description")
		if err := c.writeVM(n.Name, vmid, cfg); err != nil {
			return err
		}
		if pool != "" {
			c.editUserCfg(func(lines []string) []string {
				for i, l := range lines {
					f := strings.Split(l, ":")
					if len(f) >= 4 && f[0] == "pool" && f[1] == pool {
						if f[3] != "" {
							f[3] += ","
						}
						f[3] += fmt.Sprint(vmid)
						lines[i] = strings.Join(f, ":")
					}
				}
				return lines
			})
		}
		if start {
			c.setRunning(vmid, true)
			t.logf("starting VM %d", vmid)
		}
		return nil
	})
}

// ensureMAC gives a NIC without an address one with Proxmox's prefix BC:24:11, as
// create_vm does.
func (c *Cluster) ensureMAC(v string) string {
	f, ok := c.vmProps["net[n]"]["format"].(map[string]any)
	if !ok {
		return v
	}
	d, err := pveschema.ParsePropertyString(propsOf(f), v, "net")
	if err != nil {
		return v
	}
	if d["macaddr"] != nil {
		return v
	}
	model := fmt.Sprint(d["model"])
	if d["model"] == nil {
		model = "virtio"
	}
	mac := "BC:24:11:" + strings.ToUpper(randomHex(1)+":"+randomHex(1)+":"+randomHex(1))
	parts := []string{model + "=" + mac}
	for _, k := range slices.Sorted(maps.Keys(d)) {
		if k != "model" && k != "macaddr" {
			parts = append(parts, k+"="+fmt.Sprint(d[k]))
		}
	}
	return strings.Join(parts, ",")
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

// checkLock is PVE::AbstractConfig::check_lock.
func checkLock(cfg *vmConfig, skiplock bool) error {
	if l := cfg.props["lock"]; l != "" && l != "suspended" && !skiplock {
		return httpErr(500, "VM is locked (%s)", l)
	}
	return nil
}

func (c *Cluster) updateVM(n *Node, call *call, async bool) (any, error) {
	vmid := call.int("vmid")
	path := fmt.Sprintf("/vms/%d", vmid)
	skip := call.bool("skiplock")
	if skip && !call.root() {
		return nil, permErr("user != root@pam")
	}
	changes := map[string]string{}
	var deletes []string
	for k, v := range call.params {
		switch k {
		case "node", "vmid", "digest", "skiplock", "background_delay", "revert", "force":
			continue
		case "delete":
			deletes = pveschema.SplitList(paramString(v))
			continue
		}
		changes[k] = paramString(v)
	}
	for _, k := range append(slices.Sorted(maps.Keys(changes)), deletes...) {
		if k == "lock" && !call.root() {
			return nil, httpErr(http.StatusForbidden, "only root can set '%s' config", k)
		}
		if err := call.check(path, configPriv(k)); err != nil {
			return nil, err
		}
	}
	cfg, err := c.readVM(n.Name, vmid)
	if err != nil {
		return nil, err
	}
	if d := call.str("digest"); d != "" && d != cfg.digest {
		return nil, httpErr(500, "detected modified configuration - file changed by other user? Try again.")
	}
	_, unlocking := changes["lock"]
	for _, d := range deletes {
		unlocking = unlocking || d == "lock"
	}
	if !unlocking {
		if err := checkLock(cfg, skip); err != nil {
			return nil, err
		}
	}
	apply := func(t *task) error {
		cfg, err := c.readVM(n.Name, vmid)
		if err != nil {
			return err
		}
		if err := c.allocateNewDisks(n.Name, vmid, changes, t); err != nil {
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(changes)) {
			if k == "description" {
				cfg.description = changes[k]
				continue
			}
			cfg.props[k] = changes[k]
		}
		for _, k := range deletes {
			if k == "description" {
				cfg.description = ""
			}
			delete(cfg.props, k)
		}
		return c.writeVM(n.Name, vmid, cfg)
	}
	if !async {
		return nil, apply(nil)
	}
	upid, err := n.runTask("qmconfig", fmt.Sprint(vmid), call.user, apply)
	if err != nil {
		return nil, err
	}
	if d := call.int("background_delay"); d > 0 {
		n.waitTask(upid, time.Duration(d)*time.Second)
	}
	return upid, nil
}

func (c *Cluster) power(n *Node, call *call, start bool) (any, error) {
	vmid := call.int("vmid")
	skip := call.bool("skiplock")
	if skip && !call.root() {
		return nil, permErr("user != root@pam")
	}
	cfg, err := c.readVM(n.Name, vmid)
	if err != nil {
		return nil, err
	}
	if err := checkLock(cfg, skip); err != nil {
		return nil, err
	}
	typ := "qmstop"
	if start {
		typ = "qmstart"
		if c.IsRunning(vmid) {
			return nil, httpErr(500, "VM %d already running", vmid)
		}
	}
	return n.runTask(typ, fmt.Sprint(vmid), call.user, func(t *task) error {
		c.setRunning(vmid, start)
		return nil
	})
}

func (c *Cluster) destroyVM(n *Node, call *call) (any, error) {
	vmid := call.int("vmid")
	cfg, err := c.readVM(n.Name, vmid)
	if err != nil {
		return nil, err
	}
	if err := checkLock(cfg, call.bool("skiplock")); err != nil {
		return nil, err
	}
	if c.IsRunning(vmid) {
		return nil, httpErr(500, "VM %d is running - destroy failed", vmid)
	}
	unref := !call.has("destroy-unreferenced-disks") || call.bool("destroy-unreferenced-disks")
	return n.runTask("qmdestroy", fmt.Sprint(vmid), call.user, func(t *task) error {
		owner := fmt.Sprintf("vm-%d-", vmid)
		for _, d := range c.disks(cfg.props) {
			if !strings.HasPrefix(d.volume, owner) {
				continue
			}
			if err := c.volumes(n.Name, d.storage).Destroy(d.volume, true); err != nil && !errors.Is(err, volstore.ErrNotFound) {
				t.warnf("could not remove disk '%s:%s', check manually: %v", d.storage, d.volume, err)
			} else {
				t.logf("Removed disk '%s:%s'", d.storage, d.volume)
			}
		}
		if unref {
			all, _ := c.storageConfig()
			for sid, st := range all {
				if !st.OnNode(n.Name) || st.Disabled {
					continue
				}
				vols, _ := c.volumes(n.Name, sid).List()
				for _, v := range vols {
					if strings.HasPrefix(v.Name, owner) {
						if err := c.volumes(n.Name, sid).Destroy(v.Name, true); err == nil {
							t.logf("Removed unreferenced disk '%s:%s'", sid, v.Name)
						}
					}
				}
			}
		}
		if err := os.Remove(c.confPath(n.Name, vmid)); err != nil {
			return err
		}
		t.logf("purging VM %d from related configurations..", vmid)
		return nil
	})
}
