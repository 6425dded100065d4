package pve

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Storage is one entry of storage.cfg with the properties pvesnap uses.
type Storage struct {
	ID       string
	Type     string // zfspool, lvmthin, lvm, dir, …
	Pool     string // zfspool: pool/dataset
	VGName   string // lvm, lvmthin
	ThinPool string // lvmthin
	Nodes    []string
	Shared   bool
	Disabled bool
	Content  []string
	Sparse   bool
	Section  *Section
}

// OnNode reports whether the storage is configured for node (no "nodes" list means all).
func (s *Storage) OnNode(node string) bool {
	if len(s.Nodes) == 0 {
		return true
	}
	for _, n := range s.Nodes {
		if n == node {
			return true
		}
	}
	return false
}

// HasContent reports whether the storage holds content type c (images, rootdir…).
func (s *Storage) HasContent(c string) bool {
	for _, x := range s.Content {
		if x == c {
			return true
		}
	}
	return false
}

func splitList(v string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' || r == ' ' }) {
		out = append(out, f)
	}
	return out
}

// ParseStorageConfig parses storage.cfg. PVE always has a 'local' dir storage even when the
// file does not list it.
func ParseStorageConfig(b []byte) (map[string]*Storage, error) {
	secs, err := ParseSectionConfig("storage.cfg", b)
	if err != nil {
		return nil, err
	}
	out := map[string]*Storage{}
	for _, s := range secs {
		if err := CheckStorageID(s.ID); err != nil {
			return nil, fmt.Errorf("storage.cfg:%d: %w", s.Line, err)
		}
		st := &Storage{ID: s.ID, Type: s.Type, Pool: s.Get("pool"), VGName: s.Get("vgname"),
			ThinPool: s.Get("thinpool"), Nodes: splitList(s.Get("nodes")), Shared: s.Bool("shared"),
			Disabled: s.Bool("disable"), Content: splitList(s.Get("content")), Sparse: s.Bool("sparse"), Section: s}
		switch st.Type {
		case "iscsi", "nfs", "cifs", "rbd", "cephfs", "iscsidirect", "zfs", "drbd", "pbs":
			st.Shared = true
		}
		out[s.ID] = st
	}
	if _, ok := out["local"]; !ok {
		out["local"] = &Storage{ID: "local", Type: "dir", Content: []string{"iso", "vztmpl", "backup"}}
	}
	return out, nil
}

// StorageConfig reads storage.cfg on demand and re-reads it when it changes (mtime and size),
// so storage facts are never cached past an edit.
type StorageConfig struct {
	path string
	mu   sync.Mutex
	mod  time.Time
	size int64
	cfg  map[string]*Storage
}

// NewStorageConfig watches <pveRoot>/storage.cfg.
func NewStorageConfig(pveRoot string) *StorageConfig {
	return &StorageConfig{path: filepath.Join(pveRoot, "storage.cfg")}
}

// ErrNoSuchStorage is returned for an unknown storage id.
var ErrNoSuchStorage = errors.New("no such storage")

// Get returns one storage.
func (c *StorageConfig) Get(id string) (*Storage, error) {
	all, err := c.All()
	if err != nil {
		return nil, err
	}
	s, ok := all[id]
	if !ok {
		return nil, fmt.Errorf("storage '%s' does not exist: %w", id, ErrNoSuchStorage)
	}
	return s, nil
}

// All returns every storage.
func (c *StorageConfig) All() (map[string]*Storage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, err := os.Stat(c.path)
	if errors.Is(err, os.ErrNotExist) {
		return ParseStorageConfig(nil)
	}
	if err != nil {
		return nil, err
	}
	if c.cfg != nil && fi.ModTime().Equal(c.mod) && fi.Size() == c.size {
		return c.cfg, nil
	}
	b, err := os.ReadFile(c.path)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseStorageConfig(b)
	if err != nil {
		return nil, err
	}
	c.cfg, c.mod, c.size = cfg, fi.ModTime(), fi.Size()
	return cfg, nil
}
