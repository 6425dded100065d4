package pve

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/sim/volstore"
)

// The storage API (pve-storage's API2/Storage/*.pm) as far as the simulator serves it.

// StorageCapacity is the size every simulated storage reports.
const StorageCapacity = 100 << 30

// storageConfig reads storage.cfg; a file PVE would complain about is an error here.
func (c *Cluster) storageConfig() (map[string]*Storage, error) {
	cfg, _, err := c.storageConfigRaw()
	return cfg, err
}

func (c *Cluster) storageConfigRaw() (map[string]*Storage, []byte, error) {
	b, err := os.ReadFile(filepath.Join(c.shared, "storage.cfg"))
	if err != nil {
		return nil, nil, err
	}
	cfg, skipped, err := parseStorageConfig(b, c.stProps)
	if err != nil {
		return nil, nil, httpErr(500, "%s", err.Error())
	}
	for _, s := range skipped {
		c.logger.Warn(s)
	}
	return cfg, b, nil
}

// StorageConfig parses storage.cfg as the stand-in reads it (tests).
func (c *Cluster) StorageConfig() (map[string]*Storage, error) { return c.storageConfig() }

func (c *Cluster) storage(sid string) (*Storage, error) {
	cfg, err := c.storageConfig()
	if err != nil {
		return nil, err
	}
	st, ok := cfg[sid]
	if !ok {
		return nil, httpErr(500, "storage '%s' does not exist", sid)
	}
	return st, nil
}

// StorageDir is where a storage's volumes of node live: one directory for shared storages,
// one per node otherwise.
func (c *Cluster) StorageDir(node, sid string) string {
	st, err := c.storage(sid)
	if err == nil && st.Shared {
		return filepath.Join(c.o.Dir, "storage", sid)
	}
	return filepath.Join(c.nodes[node].Root, "storage", sid)
}

// Store is the volume store of a storage on a node.
func (c *Cluster) Store(node, sid string) volstore.Store {
	return volstore.Store{Dir: c.StorageDir(node, sid)}
}

// Volumes are a storage's volumes as PVE's storage plugin manages them. By default the
// simulator keeps them as files (volstore.Store); the lab plugs in the real zfs and lvm
// commands through Options.Volumes, so that what pvesnap does on a real pool is what the
// simulated pveproxy lists and deletes.
type Volumes interface {
	List() ([]volstore.Vol, error)
	Exists(vol string) bool
	// Create fails with volstore.ErrExists when vol exists.
	Create(vol string, size int64, m volstore.Meta) error
	// Destroy fails with volstore.ErrNotFound when vol does not exist.
	Destroy(vol string, recursive bool) error
	Path(vol string) string
}

// volumes backs storage sid on node: Options.Volumes' answer, else the simulator's files.
func (c *Cluster) volumes(node, sid string) Volumes {
	if c.o.Volumes != nil {
		if st, err := c.storage(sid); err == nil {
			if v := c.o.Volumes(node, st); v != nil {
				return v
			}
		}
	}
	return c.Store(node, sid)
}

func volumeSize(v Volumes, vol string) (int64, bool) {
	l, err := v.List()
	if err != nil {
		return 0, false
	}
	for _, e := range l {
		if e.Name == vol {
			return e.Size, true
		}
	}
	return 0, false
}

func (c *Cluster) activeStorage(node, sid string) (*Storage, error) {
	st, err := c.storage(sid)
	if err != nil {
		return nil, err
	}
	if !st.OnNode(node) {
		return nil, httpErr(500, "storage '%s' is not available on node '%s'", sid, node)
	}
	if st.Disabled {
		return nil, httpErr(500, "storage '%s' is disabled", sid)
	}
	return st, nil
}

var (
	volVMRe  = regexp.MustCompile(`^(?:vm|base|subvol)-(\d+)-`)
	imageExt = regexp.MustCompile(`\.(raw|qcow2|vmdk)$`)
)

func volOwner(name string) int64 {
	if m := volVMRe.FindStringSubmatch(name); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	return 0
}

func (c *Cluster) storageRoutes(n *Node) []*route {
	return []*route{
		{method: "GET", path: "/storage", handler: func(call *call) (any, error) {
			cfg, raw, err := c.storageConfigRaw()
			if err != nil {
				return nil, err
			}
			var out []map[string]any
			for _, sid := range slices.Sorted(maps.Keys(cfg)) {
				st := cfg[sid]
				if t := call.str("type"); t != "" && st.Type != t {
					continue
				}
				if !call.holds("/storage/"+sid, "Datastore.Audit") && !call.holds("/storage/"+sid, "Datastore.AllocateSpace") {
					continue
				}
				out = append(out, storageObject(st, raw))
			}
			return nonNil(out), nil
		}},
		{method: "GET", path: "/storage/{storage}", handler: func(call *call) (any, error) {
			cfg, raw, err := c.storageConfigRaw()
			if err != nil {
				return nil, err
			}
			st, ok := cfg[call.str("storage")]
			if !ok {
				return nil, httpErr(500, "storage '%s' does not exist", call.str("storage"))
			}
			return storageObject(st, raw), nil
		}},
		{method: "GET", path: "/nodes/{node}/storage", handler: func(call *call) (any, error) {
			cfg, err := c.storageConfig()
			if err != nil {
				return nil, err
			}
			var out []map[string]any
			for _, sid := range slices.Sorted(maps.Keys(cfg)) {
				st := cfg[sid]
				if s := call.str("storage"); s != "" && s != sid {
					continue
				}
				if ct := call.str("content"); ct != "" {
					match := false
					for _, want := range strings.Split(ct, ",") {
						match = match || st.HasContent(want)
					}
					if !match {
						continue
					}
				}
				if call.bool("enabled") && st.Disabled {
					continue
				}
				if !st.OnNode(n.Name) {
					continue
				}
				if !call.holds("/storage/"+sid, "Datastore.Audit") && !call.holds("/storage/"+sid, "Datastore.AllocateSpace") {
					continue
				}
				s := c.storageStatus(n.Name, st)
				s["storage"] = sid
				out = append(out, s)
			}
			return nonNil(out), nil
		}},
		{method: "GET", path: "/nodes/{node}/storage/{storage}/status", handler: func(call *call) (any, error) {
			st, err := c.activeStorage(n.Name, call.str("storage"))
			if err != nil {
				return nil, err
			}
			s := c.storageStatus(n.Name, st)
			delete(s, "used_fraction") // only the node's storage list reports it
			return s, nil
		}},
		{method: "GET", path: "/nodes/{node}/storage/{storage}/content", handler: func(call *call) (any, error) { return c.listContent(n, call) }},
		{method: "POST", path: "/nodes/{node}/storage/{storage}/content", handler: func(call *call) (any, error) { return c.allocate(n, call) }},
		{method: "GET", path: "/nodes/{node}/storage/{storage}/content/{volume}", handler: func(call *call) (any, error) {
			sid, vol, err := volumeArg(call)
			if err != nil {
				return nil, err
			}
			if err := call.checkAny("/storage/"+sid, "Datastore.Audit", "Datastore.AllocateSpace"); err != nil {
				return nil, err
			}
			s := c.volumes(n.Name, sid)
			size, ok := volumeSize(s, vol)
			if !ok {
				return nil, httpErr(500, "no such volume '%s:%s'", sid, vol)
			}
			return map[string]any{"path": s.Path(vol), "size": size, "used": size, "format": "raw"}, nil
		}},
		{method: "POST", path: "/nodes/{node}/storage/{storage}/content/{volume}", handler: func(call *call) (any, error) { return c.copyVolume(n, call) }},
		{method: "DELETE", path: "/nodes/{node}/storage/{storage}/content/{volume}", handler: func(call *call) (any, error) { return c.deleteVolume(n, call) }},
	}
}

// storageObject is one entry of GET /storage: the section's properties, digest of the file.
func storageObject(st *Storage, raw []byte) map[string]any {
	h := sha1.Sum(raw)
	o := map[string]any{"storage": st.ID, "type": st.Type, "digest": hex.EncodeToString(h[:])}
	for k, v := range st.Props {
		switch k {
		case "shared", "disable", "sparse":
			o[k] = boolInt(v == "" || perlTrue(v))
		default:
			o[k] = v
		}
	}
	if st.Shared {
		o["shared"] = 1
	}
	o["content"] = strings.Join(st.Content, ",")
	return o
}

func (c *Cluster) storageStatus(node string, st *Storage) map[string]any {
	vols, _ := c.volumes(node, st.ID).List()
	var used int64
	for _, v := range vols {
		used += v.Size
	}
	total := int64(StorageCapacity)
	return map[string]any{"type": st.Type, "content": strings.Join(st.Content, ","), "active": 1, "enabled": boolInt(!st.Disabled),
		"shared": boolInt(st.Shared), "total": total, "used": used, "avail": total - used,
		"used_fraction": float64(used) / float64(total)}
}

// volumeArg resolves {volume} (a name, or a full volid as PVE also accepts) and {storage}.
func volumeArg(call *call) (sid, vol string, err error) {
	vol = call.str("volume")
	sid = call.str("storage")
	if s, v, ok := strings.Cut(vol, ":"); ok {
		if sid != "" && s != sid {
			return "", "", httpErr(500, "storage ID mismatch ('%s' != '%s')", s, sid)
		}
		sid, vol = s, v
	}
	if sid == "" {
		return "", "", paramErr(map[string]string{"storage": "property is missing and it is not optional"})
	}
	if vol == "" || strings.Contains(vol, "..") || strings.HasPrefix(vol, "/") {
		return "", "", httpErr(500, "unable to parse volume ID '%s'", call.str("volume"))
	}
	return sid, vol, nil
}

func (c *Cluster) listContent(n *Node, call *call) (any, error) {
	sid := call.str("storage")
	st, err := c.activeStorage(n.Name, sid)
	if err != nil {
		return nil, err
	}
	if ct := call.str("content"); ct != "" && ct != "images" && ct != "rootdir" {
		return []any{}, nil
	}
	vols, err := c.volumes(n.Name, sid).List()
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, v := range vols {
		owner := volOwner(v.Name)
		if owner == 0 || (call.has("vmid") && owner != call.int("vmid")) {
			continue
		}
		e := map[string]any{"volid": sid + ":" + v.Name, "format": "raw", "size": v.Size, "used": v.Size,
			"vmid": owner, "ctime": v.Meta.Created}
		if st.Type == "dir" {
			if m := imageExt.FindStringSubmatch(v.Name); m != nil {
				e["format"] = m[1]
			}
		}
		out = append(out, e)
	}
	return nonNil(out), nil
}

// allocate is Content.pm's create: the size in KiB (or M, G), the name vm-<vmid>-…, then
// the plugin's alloc_image.
func (c *Cluster) allocate(n *Node, call *call) (any, error) {
	sid := call.str("storage")
	st, err := c.activeStorage(n.Name, sid)
	if err != nil {
		return nil, err
	}
	name := call.str("filename")
	vmid := call.int("vmid")
	sizeStr := call.str("size")
	var kib int64
	if m := regexp.MustCompile(`^(\d+)([MG])?$`).FindStringSubmatch(sizeStr); m != nil {
		kib, _ = strconv.ParseInt(m[1], 10, 64)
		switch m[2] {
		case "M":
			kib *= 1024
		case "G":
			kib *= 1024 * 1024
		}
	} else {
		return nil, paramErr(map[string]string{"size": fmt.Sprintf("unable to parse size '%s'", sizeStr)})
	}
	if m := imageExt.FindStringSubmatch(name); m != nil && call.has("format") && call.str("format") != m[1] {
		return nil, paramErr(map[string]string{"format": fmt.Sprintf("different storage formats (%s != %s)", call.str("format"), m[1])})
	}
	if owner := volOwner(name); owner != vmid {
		return nil, httpErr(500, "illegal name '%s' - should be 'vm-%d-*'", name, vmid)
	}
	size := kib * 1024
	switch st.Type {
	case "zfspool":
		size = (size + (1<<20 - 1)) &^ (1<<20 - 1) // zfs rounds to 1 MiB
	case "lvm", "lvmthin":
		size = (size + (4<<20 - 1)) &^ (4<<20 - 1) // LVM extents of 4 MiB
	}
	if err := c.volumes(n.Name, sid).Create(name, size, volstore.Meta{Tags: []string{fmt.Sprintf("pve-vm-%d", vmid)}}); err != nil {
		if errors.Is(err, volstore.ErrExists) {
			switch st.Type {
			case "lvm", "lvmthin":
				return nil, httpErr(500, "lvcreate '%s/%s' error:   Logical Volume \"%s\" already exists in volume group \"%s\"", st.VGName, name, name, st.VGName)
			case "zfspool":
				return nil, httpErr(500, "zfs error: cannot create '%s/%s': dataset already exists", st.Pool, name)
			}
			return nil, httpErr(500, "volume '%s:%s' already exists", sid, name)
		}
		return nil, err
	}
	return sid + ":" + name, nil
}

// copyVolume is Content.pm's copy: PVE declares no permissions, so only root@pam gets here;
// storage_migrate copies the whole volume through a pipe, never instantly.
func (c *Cluster) copyVolume(n *Node, call *call) (any, error) {
	sid, vol, err := volumeArg(call)
	if err != nil {
		return nil, err
	}
	if _, err := c.activeStorage(n.Name, sid); err != nil {
		return nil, err
	}
	target := call.str("target")
	tsid, tvol := sid, target
	if s, v, ok := strings.Cut(target, ":"); ok {
		tsid, tvol = s, v
	}
	tnode := call.str("target_node")
	if tnode == "" {
		tnode = n.Name
	}
	if _, err := c.nodeOf(tnode); err != nil {
		return nil, err
	}
	if _, err := c.activeStorage(tnode, tsid); err != nil {
		return nil, err
	}
	src := c.Store(n.Name, sid)
	if !src.Exists(vol) {
		return nil, httpErr(500, "no such volume '%s:%s'", sid, vol)
	}
	dst := c.Store(tnode, tsid)
	return n.runTask("imgcopy", "", call.user, func(t *task) error {
		// It copies the simulator's files only, not volumes a real pool holds (Options.Volumes).
		t.logf("copy volume '%s:%s' to '%s:%s' on node '%s'", sid, vol, tsid, tvol, tnode)
		if dst.Exists(tvol) {
			return fmt.Errorf("volume '%s:%s' already exists", tsid, tvol)
		}
		fi, err := os.Stat(src.Path(vol))
		if err != nil {
			return err
		}
		if err := dst.Create(tvol, fi.Size(), volstore.Meta{}); err != nil {
			return err
		}
		start := time.Now()
		if err := volstore.CopySparse(src.Path(vol), dst.Path(tvol)); err != nil {
			dst.Destroy(tvol, true)
			return err
		}
		t.logf("transferred %d bytes in %s", fi.Size(), time.Since(start).Round(time.Millisecond))
		return nil
	})
}

// deleteVolume is Content.pm's delete: Datastore.Allocate on the storage (the backup rule
// does not apply to images), then the plugin's free_image in a task.
func (c *Cluster) deleteVolume(n *Node, call *call) (any, error) {
	sid, vol, err := volumeArg(call)
	if err != nil {
		return nil, err
	}
	if err := call.check("/storage/"+sid, "Datastore.Allocate"); err != nil {
		return nil, err
	}
	st, err := c.activeStorage(n.Name, sid)
	if err != nil {
		return nil, err
	}
	s := c.volumes(n.Name, sid)
	if !s.Exists(vol) {
		return nil, httpErr(500, "no such volume '%s:%s'", sid, vol)
	}
	id := fmt.Sprintf("%d@%s", volOwner(vol), sid)
	upid, err := n.runTask("imgdel", id, call.user, func(t *task) error {
		err := s.Destroy(vol, true)
		if files, ok := s.(volstore.Store); ok && errors.Is(err, volstore.ErrBusy) && st.Type == "zfspool" {
			deps, _ := files.Dependents(vol)
			return fmt.Errorf("zfs error: cannot destroy '%s/%s': volume has dependent clones\nuse '-R' to destroy the following datasets:\n%s", st.Pool, vol, strings.Join(deps, "\n"))
		}
		if err != nil {
			return err
		}
		t.logf("Removed volume '%s:%s'", sid, vol)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if d := call.int("delay"); d > 0 {
		if n.waitTask(upid, time.Duration(d)*time.Second) == "OK" {
			return nil, nil
		}
	}
	return upid, nil
}

// AddStorage adds a storage to storage.cfg, or replaces the one with its ID, writing the
// file as PVE's SectionConfig does (pvesm add).
func (c *Cluster) AddStorage(st *Storage) error {
	cfg, err := c.storageConfig()
	if err != nil {
		return err
	}
	cfg[st.ID] = st
	var list []*Storage
	for _, sid := range slices.Sorted(maps.Keys(cfg)) {
		s := cfg[sid]
		if s.Props == nil {
			s.Props = map[string]string{}
		}
		if len(s.Content) > 0 && s.Props["content"] == "" {
			s.Props["content"] = strings.Join(s.Content, ",")
		}
		list = append(list, s)
	}
	return os.WriteFile(filepath.Join(c.shared, "storage.cfg"), formatStorageConfig(list, c.stProps), 0o640)
}
