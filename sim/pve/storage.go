package pve

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// StorageCapacity is the size every simulated storage reports.
const StorageCapacity = 100 << 30

func (c *Cluster) storageConfig() (map[string]*pve.Storage, []byte, error) {
	b, err := os.ReadFile(filepath.Join(c.shared, "storage.cfg"))
	if err != nil {
		return nil, nil, err
	}
	cfg, err := pve.ParseStorageConfig(b)
	return cfg, b, err
}

func (c *Cluster) storage(sid string) (*pve.Storage, error) {
	cfg, _, err := c.storageConfig()
	if err != nil {
		return nil, err
	}
	st, ok := cfg[sid]
	if !ok {
		return nil, api.Errorf(http.StatusInternalServerError, "storage '%s' does not exist", sid)
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

// volumeSize is vol's size as the storage lists it.
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

func (c *Cluster) activeStorage(node, sid string) (*pve.Storage, error) {
	st, err := c.storage(sid)
	if err != nil {
		return nil, err
	}
	if !st.OnNode(node) {
		return nil, api.Errorf(http.StatusInternalServerError, "storage '%s' is not available on node '%s'", sid, node)
	}
	if st.Disabled {
		return nil, api.Errorf(http.StatusInternalServerError, "storage '%s' is disabled", sid)
	}
	return st, nil
}

var (
	sizeRe   = regexp.MustCompile(`^(\d+)([MG])?$`)
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

func (c *Cluster) storageRoutes(n *Node) []*api.Route {
	storageParam := api.Param{Name: "storage", Type: api.String, Format: "pve-storage-id", Check: pve.CheckStorageID, Description: "The storage identifier."}
	storageParamOpt := storageParam
	storageParamOpt.Optional = true
	volumeParam := api.Param{Name: "volume", Type: api.String, Description: "Volume identifier"}
	return []*api.Route{
		{Method: "GET", Path: "/storage", Name: "index", Description: "Storage index.",
			Permission: api.Permission{User: "all", Description: "Only list entries where you have 'Datastore.Audit' or 'Datastore.AllocateSpace' permissions on '/storage/<storage>'"},
			Params:     []api.Param{{Name: "type", Type: api.String, Optional: true, Description: "Only list storage of specific type"}},
			Returns:    api.Returns{Type: "array", Properties: map[string]string{"storage": "string"}},
			Handler: func(call *api.Call) (any, error) {
				cfg, raw, err := c.storageConfig()
				if err != nil {
					return nil, err
				}
				var out []map[string]any
				for _, sid := range sortedNames(cfg) {
					st := cfg[sid]
					if t := call.Params.Str("type"); t != "" && st.Type != t {
						continue
					}
					if ok, _ := anyPriv(call, "/storage/"+sid, "Datastore.Audit", "Datastore.AllocateSpace"); !ok {
						continue
					}
					out = append(out, storageObject(st, raw))
				}
				return nonNil(out), nil
			}},
		{Method: "GET", Path: "/storage/{storage}", Name: "read", Description: "Read storage configuration.",
			Permission: api.Permission{Path: "/storage/{storage}", Privs: []string{"Datastore.Allocate"}},
			Params:     []api.Param{storageParam}, Returns: api.Returns{Type: "object"},
			Handler: func(call *api.Call) (any, error) {
				cfg, raw, err := c.storageConfig()
				if err != nil {
					return nil, err
				}
				st, ok := cfg[call.Params.Str("storage")]
				if !ok {
					return nil, api.Errorf(http.StatusInternalServerError, "storage '%s' does not exist", call.Params.Str("storage"))
				}
				return storageObject(st, raw), nil
			}},
		{Method: "GET", Path: "/nodes/{node}/storage", Name: "index", Description: "Get status for all datastores.",
			Permission: api.Permission{User: "all", Description: "Only list entries where you have 'Datastore.Audit' or 'Datastore.AllocateSpace' permissions on '/storage/<storage>'"},
			Params: []api.Param{nodeParam, storageParamOpt,
				{Name: "content", Type: api.String, Optional: true, Description: "Only list stores which support this content type."},
				{Name: "enabled", Type: api.Boolean, Optional: true, Default: false, Description: "Only list stores which are enabled (not disabled in config)."}},
			Returns: api.Returns{Type: "array", Properties: statusProps},
			ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) {
				cfg, _, err := c.storageConfig()
				if err != nil {
					return nil, err
				}
				var out []map[string]any
				for _, sid := range sortedNames(cfg) {
					st := cfg[sid]
					if s := call.Params.Str("storage"); s != "" && s != sid {
						continue
					}
					if ct := call.Params.Str("content"); ct != "" && !st.HasContent(ct) {
						continue
					}
					if call.Params.Bool("enabled") && st.Disabled {
						continue
					}
					if !st.OnNode(n.Name) {
						continue
					}
					if ok, _ := anyPriv(call, "/storage/"+sid, "Datastore.Audit", "Datastore.AllocateSpace"); !ok {
						continue
					}
					s := c.storageStatus(n.Name, st)
					s["storage"] = sid
					out = append(out, s)
				}
				return nonNil(out), nil
			}},
		{Method: "GET", Path: "/nodes/{node}/storage/{storage}/status", Name: "read_status", Description: "Read storage status.",
			Permission: api.Permission{Path: "/storage/{storage}", Privs: []string{"Datastore.Audit", "Datastore.AllocateSpace"}, Any: true},
			Params:     []api.Param{nodeParam, storageParam}, Returns: api.Returns{Type: "object", Properties: statusProps},
			ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) {
				st, err := c.activeStorage(n.Name, call.Params.Str("storage"))
				if err != nil {
					return nil, err
				}
				s := c.storageStatus(n.Name, st)
				delete(s, "used_fraction") // only the node's storage list reports it
				return s, nil
			}},
		{Method: "GET", Path: "/nodes/{node}/storage/{storage}/content", Name: "index", Description: "List storage content.",
			Permission: api.Permission{Path: "/storage/{storage}", Privs: []string{"Datastore.Audit", "Datastore.AllocateSpace"}, Any: true},
			Params: []api.Param{nodeParam, storageParam,
				{Name: "content", Type: api.String, Optional: true, Description: "Only list content of this type."},
				{Name: "vmid", Type: api.Integer, Optional: true, Minimum: api.Min(100), Maximum: api.Max(999999999), Description: "Only list images for this VM"}},
			Returns: api.Returns{Type: "array", Properties: map[string]string{"volid": "string", "format": "string", "size": "integer", "vmid": "integer", "ctime": "integer", "used": "integer", "parent": "string"}},
			ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) { return c.listContent(n, call) }},
		{Method: "POST", Path: "/nodes/{node}/storage/{storage}/content", Name: "create", Description: "Allocate disk images.",
			Permission: api.Permission{Path: "/storage/{storage}", Privs: []string{"Datastore.AllocateSpace"}},
			Params: []api.Param{nodeParam, storageParam,
				{Name: "filename", Type: api.String, Description: "The name of the file to create."},
				{Name: "size", Type: api.String, Pattern: sizeRe, Description: "Size in kilobyte (1024 bytes). Optional suffixes 'M' (megabyte, 1024K) and 'G' (gigabyte, 1024M)"},
				{Name: "vmid", Type: api.Integer, Minimum: api.Min(100), Maximum: api.Max(999999999), Description: "Specify owner VM"},
				{Name: "format", Type: api.String, Optional: true, Enum: []string{"raw", "qcow2", "subvol", "vmdk"}, Description: "Format of the image."}},
			Returns: api.Returns{Type: "string", Description: "Volume identifier"},
			ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) { return c.allocate(n, call) }},
		{Method: "GET", Path: "/nodes/{node}/storage/{storage}/content/{volume}", Name: "info", Description: "Get volume attributes",
			Permission: api.Permission{User: "all", Description: "You need read access for the volume."},
			Params:     []api.Param{nodeParam, storageParamOpt, volumeParam},
			Returns:    api.Returns{Type: "object", Properties: map[string]string{"path": "string", "size": "integer", "used": "integer", "format": "string"}},
			ProxyTo:    "node",
			Handler: func(call *api.Call) (any, error) {
				sid, vol, err := volumeArg(call)
				if err != nil {
					return nil, err
				}
				if err := call.CheckAny("/storage/"+sid, "Datastore.Audit", "Datastore.AllocateSpace"); err != nil {
					return nil, err
				}
				s := c.volumes(n.Name, sid)
				size, ok := volumeSize(s, vol)
				if !ok {
					return nil, api.Errorf(http.StatusInternalServerError, "no such volume '%s:%s'", sid, vol)
				}
				return map[string]any{"path": s.Path(vol), "size": size, "used": size, "format": "raw"}, nil
			}},
		{Method: "POST", Path: "/nodes/{node}/storage/{storage}/content/{volume}", Name: "copy", Description: "Copy a volume. This is experimental code - do not use.",
			Permission: api.Permission{User: "all", Description: "root@pam only: PVE declares no permissions for this call"},
			Params: []api.Param{nodeParam, storageParamOpt, volumeParam,
				{Name: "target", Type: api.String, Description: "Target volume identifier"},
				{Name: "target_node", Type: api.String, Optional: true, Check: pve.CheckNode, Format: "pve-node", Description: "Target node. Default is local node."}},
			Returns: api.Returns{Type: "string"},
			ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) { return c.copyVolume(n, call) }},
		{Method: "DELETE", Path: "/nodes/{node}/storage/{storage}/content/{volume}", Name: "delete", Description: "Delete volume",
			Permission: api.Permission{User: "all", Description: "You need 'Datastore.Allocate' privilege on the storage (or 'Datastore.AllocateSpace' for backup volumes if you have VM.Backup privilege on the VM)."},
			Params: []api.Param{nodeParam, storageParamOpt, volumeParam,
				{Name: "delay", Type: api.Integer, Optional: true, Minimum: api.Min(1), Maximum: api.Max(30), Description: "Time to wait for the task to finish. We return 'null' if the task finish within that time."}},
			Returns: api.Returns{Type: "string"},
			ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) { return c.deleteVolume(n, call) }},
	}
}

var statusProps = map[string]string{"type": "string", "content": "string", "active": "boolean", "enabled": "boolean",
	"shared": "boolean", "total": "integer", "used": "integer", "avail": "integer", "used_fraction": "number", "storage": "string"}

func nonNil[T any](l []T) []T {
	if l == nil {
		return []T{}
	}
	return l
}

func anyPriv(call *api.Call, path string, privs ...string) (bool, error) {
	for _, p := range privs {
		if ok, err := call.Has(path, p); err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func storageObject(st *pve.Storage, raw []byte) map[string]any {
	h := sha1.Sum(raw)
	o := map[string]any{"storage": st.ID, "type": st.Type, "digest": hex.EncodeToString(h[:])}
	if st.Section != nil {
		for k, v := range st.Section.Props {
			switch k {
			case "shared", "disable", "sparse":
				o[k] = boolInt(v == "" || v == "1")
			default:
				o[k] = v
			}
		}
	}
	if st.Shared {
		o["shared"] = 1
	}
	if _, ok := o["content"]; !ok {
		o["content"] = strings.Join(st.Content, ",")
	}
	return o
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (c *Cluster) storageStatus(node string, st *pve.Storage) map[string]any {
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
func volumeArg(call *api.Call) (sid, vol string, err error) {
	vol = call.Params.Str("volume")
	sid = call.Params.Str("storage")
	if s, v, ok := strings.Cut(vol, ":"); ok {
		if sid != "" && s != sid {
			return "", "", api.Errorf(http.StatusInternalServerError, "storage ID mismatch ('%s' != '%s')", s, sid)
		}
		sid, vol = s, v
	}
	if sid == "" {
		return "", "", api.ParamErr("storage", "property is missing and it is not optional")
	}
	if vol == "" || strings.Contains(vol, "..") || strings.HasPrefix(vol, "/") {
		return "", "", api.Errorf(http.StatusInternalServerError, "unable to parse volume ID '%s'", call.Params.Str("volume"))
	}
	return sid, vol, nil
}

func (c *Cluster) listContent(n *Node, call *api.Call) (any, error) {
	sid := call.Params.Str("storage")
	st, err := c.activeStorage(n.Name, sid)
	if err != nil {
		return nil, err
	}
	if ct := call.Params.Str("content"); ct != "" && ct != "images" && ct != "rootdir" {
		return []any{}, nil
	}
	vols, err := c.volumes(n.Name, sid).List()
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, v := range vols {
		owner := volOwner(v.Name)
		if owner == 0 || (call.Params.Has("vmid") && owner != call.Params.Int("vmid")) {
			continue
		}
		e := map[string]any{"volid": sid + ":" + v.Name, "format": "raw", "size": v.Size, "used": v.Size,
			"vmid": owner, "ctime": v.Meta.Created}
		if st.Type == "dir" {
			if m := imageExt.FindStringSubmatch(v.Name); m != nil {
				e["format"] = m[1]
			}
		}
		if v.Meta.Origin != "" && st.Type != "zfspool" {
			e["parent"] = v.Meta.Origin
		}
		out = append(out, e)
	}
	return nonNil(out), nil
}

// parseSizeKiB turns PVE's size parameter (KiB, or M/G) into bytes.
func parseSizeKiB(s string) (int64, error) {
	m := sizeRe.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("unable to parse size '%s'", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	switch m[2] {
	case "M":
		n *= 1024
	case "G":
		n *= 1024 * 1024
	}
	return n * 1024, nil
}

func (c *Cluster) allocate(n *Node, call *api.Call) (any, error) {
	sid := call.Params.Str("storage")
	st, err := c.activeStorage(n.Name, sid)
	if err != nil {
		return nil, err
	}
	name := call.Params.Str("filename")
	vmid := call.Params.Int("vmid")
	if owner := volOwner(name); owner != vmid {
		return nil, api.Errorf(http.StatusInternalServerError, "illegal name '%s' - should be 'vm-%d-*'", name, vmid)
	}
	if err := pve.CheckVMID(vmid); err != nil {
		return nil, api.ParamErr("vmid", err.Error())
	}
	if _, err := pve.ParseDiskName(strings.TrimSuffix(strings.TrimSuffix(name, ".raw"), ".qcow2")); err != nil && !strings.HasPrefix(name, "vm-") {
		return nil, api.Errorf(http.StatusInternalServerError, "illegal name '%s'", name)
	}
	size, err := parseSizeKiB(call.Params.Str("size"))
	if err != nil {
		return nil, api.ParamErr("size", err.Error())
	}
	if size <= 0 {
		return nil, api.ParamErr("size", "size must be positive")
	}
	if st.Type == "zfspool" {
		size = (size + (1<<20 - 1)) &^ (1<<20 - 1) // zfs rounds to 1 MiB
	}
	if st.Type == "lvm" || st.Type == "lvmthin" {
		size = (size + (4<<20 - 1)) &^ (4<<20 - 1) // LVM extents of 4 MiB
	}
	if err := c.volumes(n.Name, sid).Create(name, size, volstore.Meta{Tags: []string{fmt.Sprintf("pve-vm-%d", vmid)}}); err != nil {
		if errors.Is(err, volstore.ErrExists) {
			switch st.Type {
			case "lvm", "lvmthin":
				return nil, api.Errorf(http.StatusInternalServerError, "lvcreate '%s/%s' error:   Logical Volume \"%s\" already exists in volume group \"%s\"", st.VGName, name, name, st.VGName)
			case "zfspool":
				return nil, api.Errorf(http.StatusInternalServerError, "zfs error: cannot create '%s/%s': dataset already exists", st.Pool, name)
			}
			return nil, api.Errorf(http.StatusInternalServerError, "volume '%s:%s' already exists", sid, name)
		}
		return nil, err
	}
	return sid + ":" + name, nil
}

func (c *Cluster) copyVolume(n *Node, call *api.Call) (any, error) {
	if call.Auth.UserID != "root@pam" || call.Auth.TokenID != "" {
		return nil, api.Errorf(http.StatusForbidden, "Permission check failed (user != root@pam)")
	}
	sid, vol, err := volumeArg(call)
	if err != nil {
		return nil, err
	}
	if _, err := c.activeStorage(n.Name, sid); err != nil {
		return nil, err
	}
	target := call.Params.Str("target")
	tsid, tvol := sid, target
	if s, v, ok := strings.Cut(target, ":"); ok {
		tsid, tvol = s, v
	}
	tnode := call.Params.Str("target_node")
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
		return nil, api.Errorf(http.StatusInternalServerError, "no such volume '%s:%s'", sid, vol)
	}
	dst := c.Store(tnode, tsid)
	user := call.Auth.Name()
	return n.runTask("imgcopy", "", user, func(t *tasks.Task) error {
		// storage_migrate: a full copy through a pipe (zfs send | recv, or dd), never instant.
		// It copies the simulator's files only, not volumes a real pool holds (Options.Volumes).
		t.Logf("copy volume '%s:%s' to '%s:%s' on node '%s'", sid, vol, tsid, tvol, tnode)
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
		t.Logf("transferred %s in %s", tasks.HumanBytes(fi.Size()), time.Since(start).Round(time.Millisecond))
		return nil
	}), nil
}

func (c *Cluster) deleteVolume(n *Node, call *api.Call) (any, error) {
	sid, vol, err := volumeArg(call)
	if err != nil {
		return nil, err
	}
	if err := call.Check("/storage/"+sid, "Datastore.Allocate"); err != nil {
		return nil, err
	}
	st, err := c.activeStorage(n.Name, sid)
	if err != nil {
		return nil, err
	}
	s := c.volumes(n.Name, sid)
	if !s.Exists(vol) {
		return nil, api.Errorf(http.StatusInternalServerError, "no such volume '%s:%s'", sid, vol)
	}
	id := fmt.Sprintf("%d@%s", volOwner(vol), sid)
	upid := n.runTask("imgdel", id, call.Auth.Name(), func(t *tasks.Task) error {
		err := s.Destroy(vol, true)
		if files, ok := s.(volstore.Store); ok && errors.Is(err, volstore.ErrBusy) && st.Type == "zfspool" {
			deps, _ := files.Dependents(vol)
			return fmt.Errorf("zfs error: cannot destroy '%s/%s': volume has dependent clones\nuse '-R' to destroy the following datasets:\n%s", st.Pool, vol, strings.Join(deps, "\n"))
		}
		if err != nil {
			return err
		}
		t.Logf("Removed volume '%s:%s'", sid, vol)
		return nil
	})
	if d := call.Params.Int("delay"); d > 0 {
		if n.waitTask(upid, time.Duration(d)*time.Second) == "OK" {
			return nil, nil
		}
	}
	return upid, nil
}
