package restore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/runner"
)

// VMs changes VM configs the way qemu-server does: qm for power and locks, and direct writes
// of /etc/pve/nodes/<node>/qemu-server/<vmid>.conf under the node-local flock that
// PVE::QemuConfig->lock_config takes (/var/lock/qemu-server/lock-<vmid>.conf).
type VMs struct {
	PVE  string // cluster filesystem
	Lock string // /var/lock
	Node string
	Run  runner.Runner
}

func (v VMs) confPath(node string, vmid int64) string {
	return filepath.Join(v.PVE, "nodes", node, "qemu-server", fmt.Sprintf("%d.conf", vmid))
}

// withConfigLock holds lock-<vmid>.conf while fn reads and writes the config.
func (v VMs) withConfigLock(vmid int64, fn func() error) error {
	dir := filepath.Join(v.Lock, "qemu-server")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("lock-%d.conf", vmid)), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("can't lock file '%s' - got timeout", f.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return fn()
}

// Read loads a VM's config from this node.
func (v VMs) Read(vmid int64) (*pve.VMConfig, error) {
	b, err := os.ReadFile(v.confPath(v.Node, vmid))
	if err != nil {
		return nil, fmt.Errorf("VM %d: %w", vmid, err)
	}
	return pve.ParseVMConfig(b)
}

func (v VMs) qm(ctx context.Context, args ...string) (string, error) {
	out, err := v.Run.Run(ctx, append([]string{"qm"}, args...), runner.Timeout(10*time.Minute))
	return string(out), err
}

// Running reports whether the VM runs (qm status).
func (v VMs) Running(ctx context.Context, vmid int64) (bool, error) {
	out, err := v.qm(ctx, "status", strconv.FormatInt(vmid, 10))
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "status: running"), nil
}

// Shutdown shuts the VM down cleanly, stopping it after timeout. The restore holds the VM's
// lock by then, which only root may pass (skiplock).
func (v VMs) Shutdown(ctx context.Context, vmid int64, timeout time.Duration) error {
	_, err := v.qm(ctx, "shutdown", strconv.FormatInt(vmid, 10), "--timeout", strconv.Itoa(int(timeout.Seconds())), "--forceStop", "1", "--skiplock", "1")
	return err
}

// Start starts the VM; skiplock passes the restore's own lock (an undo restarting the VM).
func (v VMs) Start(ctx context.Context, vmid int64, skiplock bool) error {
	args := []string{"start", strconv.FormatInt(vmid, 10)}
	if skiplock {
		args = append(args, "--skiplock", "1")
	}
	_, err := v.qm(ctx, args...)
	return err
}

// SetLock sets the config lock; qm refuses when the VM is locked already.
func (v VMs) SetLock(ctx context.Context, vmid int64, lock string) error {
	_, err := v.qm(ctx, "set", strconv.FormatInt(vmid, 10), "--lock", lock)
	return err
}

// Unlock removes the config lock if it is lock (another lock is left alone).
func (v VMs) Unlock(ctx context.Context, vmid int64, lock string) error {
	cfg, err := v.Read(vmid)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if cfg.Props["lock"] != lock {
		return nil
	}
	_, err = v.qm(ctx, "unlock", strconv.FormatInt(vmid, 10))
	return err
}

// NextID is the lowest free VMID >= 100 in the cluster (every node's qemu-server and lxc
// configs, and .vmlist when pmxcfs provides it).
func (v VMs) NextID() (int64, error) {
	used := map[int64]bool{}
	for _, kind := range []string{"qemu-server", "lxc"} {
		ms, _ := filepath.Glob(filepath.Join(v.PVE, "nodes", "*", kind, "*.conf"))
		for _, m := range ms {
			if id, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(m), ".conf"), 10, 64); err == nil {
				used[id] = true
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(v.PVE, ".vmlist")); err == nil {
		var vl struct {
			IDs map[string]any `json:"ids"`
		}
		if json.Unmarshal(b, &vl) == nil {
			for k := range vl.IDs {
				if id, err := strconv.ParseInt(k, 10, 64); err == nil {
					used[id] = true
				}
			}
		}
	}
	for id := int64(100); id < 1000000; id++ {
		if !used[id] {
			return id, nil
		}
	}
	return 0, errors.New("no free VMID")
}

// Exists reports whether any node has a VM or container with vmid.
func (v VMs) Exists(vmid int64) bool {
	for _, kind := range []string{"qemu-server", "lxc"} {
		if ms, _ := filepath.Glob(filepath.Join(v.PVE, "nodes", "*", kind, fmt.Sprintf("%d.conf", vmid))); len(ms) > 0 {
			return true
		}
	}
	return false
}

// Reserve creates the new VM's config on this node, locked (lock: create) and carrying marker
// in its description, so that only this job ever removes it.
func (v VMs) Reserve(vmid int64, marker string) error {
	if v.Exists(vmid) {
		return fmt.Errorf("VM %d already exists", vmid)
	}
	return v.withConfigLock(vmid, func() error {
		if err := os.MkdirAll(filepath.Dir(v.confPath(v.Node, vmid)), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(v.confPath(v.Node, vmid), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("VM %d already exists", vmid)
			}
			return err
		}
		defer f.Close()
		_, err = fmt.Fprintf(f, "#%s\nlock: create\n", marker)
		return err
	})
}

// Unreserve removes a config Reserve made, only while it still carries marker.
func (v VMs) Unreserve(vmid int64, marker string) error {
	return v.withConfigLock(vmid, func() error {
		b, err := os.ReadFile(v.confPath(v.Node, vmid))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "#"+marker+"\n") {
			return nil // no longer ours: the restore committed, or someone else owns it
		}
		return os.Remove(v.confPath(v.Node, vmid))
	})
}

// Write replaces a VM's config atomically (temporary file and rename, as pmxcfs expects).
func (v VMs) Write(vmid int64, b []byte) error {
	return v.withConfigLock(vmid, func() error { return v.replace(vmid, b) })
}

// replace writes a config through a temporary file renamed into place, so a reader (or a
// crash) sees the old config or the new one, never part of one. The caller holds the
// config lock; a temporary file of ours still there is from a writer that died (every writer
// of ours holds the same lock), so it is removed. PVE's own ".tmp.<pid>" files are left alone.
func (v VMs) replace(vmid int64, b []byte) error {
	p := v.confPath(v.Node, vmid)
	stale, _ := filepath.Glob(p + ".pvesnap-tmp.*")
	for _, f := range stale {
		os.Remove(f)
	}
	tmp := p + ".pvesnap-tmp." + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, p)
}

// Update rewrites the VM's config with change applied (under the config lock).
func (v VMs) Update(vmid int64, change func(*pve.VMConfig)) error {
	return v.withConfigLock(vmid, func() error {
		cfg, err := v.Read(vmid)
		if err != nil {
			return err
		}
		change(cfg)
		return v.replace(vmid, cfg.Format())
	})
}

// ReplayOptions shape the config of a VM restored as a new one.
type ReplayOptions struct {
	Name         string
	Disks        map[string]string // disk key -> new volid; other disks are dropped
	CloudInit    string            // the new VM's own cloud-init volume ("" when the source has none)
	PreserveMACs bool
	LinkDown     bool
	MACPrefix    string // datacenter mac_prefix (default BC:24:11)
	Now          time.Time
}

var macRe = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)

// cloudInitRe matches a cloud-init drive's volume as qemu-server's drive_is_cloudinit does.
var cloudInitRe = regexp.MustCompile(`[:/](?:vm-\d+-)?cloudinit(?:\.(?:raw|qcow2|vmdk))?$`)

// IsCloudInit reports whether a drive value ("san1:vm-100-cloudinit,media=cdrom") is a
// cloud-init drive.
func IsCloudInit(val string) bool {
	return cloudInitRe.MatchString(pve.ParsePropertyString(val, "file")["file"])
}

// Replay builds a new VM's config from a source config the way qmrestore builds it from a
// vzdump backup, which holds only the current section: snapshots, pending changes and
// special sections are left out (and said so), as are the lock, the snapshot parent and the
// VM state. The restored disks get their new volids, unusedN disks only when they were
// restored, the cloud-init drive the new VM's own volume (regenerated at its start, as a
// clone's is); NICs get fresh MACs (unless preserved) and optionally link_down, the VM a new
// creation time, vmgenid and SMBIOS UUID. It returns the config and what it left out, for the
// task log.
func Replay(src *pve.VMConfig, o ReplayOptions) ([]byte, []string) {
	props := map[string]string{}
	var notes []string
	for k, val := range src.Props {
		switch {
		case k == "lock" || k == "parent" || k == "vmstate" || k == "digest" || k == "runningmachine" || k == "runningcpu":
			continue
		case pve.IsDiskKey(k):
			opts := pve.ParsePropertyString(val, "file")
			if IsCloudInit(val) {
				if o.CloudInit == "" {
					notes = append(notes, "cloud-init drive "+k+" ("+opts["file"]+") left out: no volume was made for it")
					continue
				}
				props[k] = replaceFirst(val, opts["file"], o.CloudInit)
				continue
			}
			if opts["media"] == "cdrom" || opts["file"] == "none" {
				props[k] = val
				continue
			}
			nv, ok := o.Disks[k]
			if !ok {
				if !strings.HasPrefix(k, "unused") {
					notes = append(notes, "disk "+k+" ("+opts["file"]+") is not restored (not on the restored array volumes)")
				}
				continue
			}
			props[k] = replaceFirst(val, opts["file"], nv)
		case pve.IsNetKey(k):
			props[k] = replayNet(val, o)
		default:
			props[k] = val
		}
	}
	// vzdump's words for what a backup does not include.
	if len(src.Snapshots) > 0 {
		notes = append(notes, "snapshots found (not included into the restored VM)")
	}
	if len(src.Pending) > 0 {
		notes = append(notes, "pending configuration changes found (not included into the restored VM)")
	}
	if len(src.Special) > 0 {
		notes = append(notes, "special config section found (not included into the restored VM)")
	}
	if o.Name != "" {
		props["name"] = o.Name
	}
	meta := pve.ParsePropertyString(src.Props["meta"], "")
	cq := meta["creation-qemu"]
	props["meta"] = fmt.Sprintf("ctime=%d", o.Now.Unix())
	if cq != "" {
		props["meta"] = "creation-qemu=" + cq + "," + props["meta"]
	}
	if _, ok := src.Props["vmgenid"]; ok {
		props["vmgenid"] = newUUID()
	}
	if smb, ok := src.Props["smbios1"]; ok {
		props["smbios1"] = replaceUUID(smb)
	}
	order := append([]string(nil), src.Order...)
	sort.Strings(notes)
	return pve.FormatVMConfig(src.Description, order, props), notes
}

func replaceFirst(s, old, new string) string {
	if i := strings.Index(s, old); i >= 0 {
		return s[:i] + new + s[i+len(old):]
	}
	return s
}

// replayNet sets a NIC's MAC and link state: "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0".
func replayNet(val string, o ReplayOptions) string {
	parts := strings.Split(val, ",")
	hasLink := false
	for i, p := range parts {
		k, v, _ := strings.Cut(p, "=")
		switch {
		case k == "link_down":
			hasLink = true
			if o.LinkDown {
				parts[i] = "link_down=1"
			}
		case (k == "macaddr" || macRe.MatchString(v)) && !o.PreserveMACs:
			parts[i] = k + "=" + randomMAC(o.MACPrefix)
		}
	}
	if o.LinkDown && !hasLink {
		parts = append(parts, "link_down=1")
	}
	return strings.Join(parts, ",")
}

// SetLinkDown marks every NIC of a config link_down=1 (for an in-place restore).
func SetLinkDown(cfg *pve.VMConfig) {
	for k, v := range cfg.Props {
		if pve.IsNetKey(k) {
			cfg.Props[k] = replayNet(v, ReplayOptions{PreserveMACs: true, LinkDown: true})
		}
	}
}

// randomMAC makes a locally random MAC under prefix, like PVE's add_random_macs.
func randomMAC(prefix string) string {
	if prefix == "" {
		prefix = "BC:24:11"
	}
	b := make([]byte, 6)
	rand.Read(b)
	parts := strings.Split(strings.ToUpper(prefix), ":")
	out := make([]string, 6)
	for i := range out {
		if i < len(parts) && len(parts[i]) == 2 {
			out[i] = parts[i]
		} else {
			out[i] = fmt.Sprintf("%02X", b[i])
		}
	}
	return strings.Join(out, ":")
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

var uuidKeyRe = regexp.MustCompile(`uuid=[0-9a-fA-F-]{36}`)

func replaceUUID(smbios string) string { return uuidKeyRe.ReplaceAllString(smbios, "uuid="+newUUID()) }

// MACPrefix reads the datacenter's mac_prefix ("" when unset or unreadable: PVE's own
// prefix is then used).
func MACPrefix(pveRoot string) string {
	dc, _ := pve.ReadDatacenter(pveRoot)
	return dc["mac_prefix"]
}
