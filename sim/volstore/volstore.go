// Package volstore keeps simulated block volumes as sparse files in a directory, with the
// metadata a storage backend reports about them (creation time, origin snapshot, LV UUID,
// tags). The simulated PVE storages and the zfs/lvm command emulators share it, so bytes
// written through one are read through the other.
package volstore

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Store is one directory of volumes.
type Store struct {
	Dir string
}

// Meta is what is known about a volume or snapshot besides its bytes.
type Meta struct {
	Created int64  `json:"created"`
	Origin  string `json:"origin,omitempty"` // "<vol>@<snap>" for a ZFS clone: it depends on it
	// ThinOrigin names the volume an LVM thin snapshot was taken of. Unlike a ZFS clone's
	// origin it is no dependency: both share blocks in the pool, and either can be removed
	// first (lvs then reports no origin).
	ThinOrigin string            `json:"thin_origin,omitempty"`
	UUID       string            `json:"uuid,omitempty"`
	Tags       []string          `json:"tags,omitempty"`
	Props      map[string]string `json:"props,omitempty"`
	Active     bool              `json:"active,omitempty"`
}

// Vol is a volume with its size.
type Vol struct {
	Name string
	Size int64
	Meta Meta
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+:-]*$`)

// ErrNotFound and ErrExists classify failures.
var (
	ErrNotFound = errors.New("does not exist")
	ErrExists   = errors.New("already exists")
	ErrBusy     = errors.New("has dependent clones")
)

var locks sync.Map // dir -> *sync.Mutex, serialising metadata updates

func (s Store) lock() func() {
	m, _ := locks.LoadOrStore(s.Dir, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

func checkName(n string) error {
	if !nameRe.MatchString(n) || strings.Contains(n, "@") || strings.Contains(n, "..") {
		return fmt.Errorf("invalid volume name %q", n)
	}
	return nil
}

// Path is the file holding a volume's bytes.
func (s Store) Path(vol string) string { return filepath.Join(s.Dir, vol) }

func (s Store) snapPath(vol, snap string) string {
	return filepath.Join(s.Dir, ".snap", vol+"@"+snap)
}

func (s Store) metaPath(name string) string { return filepath.Join(s.Dir, ".meta", name+".json") }

// Meta reads the metadata of a volume or "vol@snap".
func (s Store) Meta(name string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(s.metaPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

// SetMeta writes metadata.
func (s Store) SetMeta(name string, m Meta) error {
	if err := os.MkdirAll(filepath.Join(s.Dir, ".meta"), 0o755); err != nil {
		return err
	}
	b, _ := json.Marshal(m)
	tmp := s.metaPath(name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.metaPath(name))
}

// Exists reports whether a volume exists.
func (s Store) Exists(vol string) bool {
	fi, err := os.Stat(s.Path(vol))
	return err == nil && fi.Mode().IsRegular()
}

// Create makes an empty (sparse) volume of size bytes.
func (s Store) Create(vol string, size int64, m Meta) error {
	if err := checkName(vol); err != nil {
		return err
	}
	defer s.lock()()
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(s.Path(vol), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("volume '%s' %w", vol, ErrExists)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	if m.Created == 0 {
		m.Created = time.Now().Unix()
	}
	if m.UUID == "" {
		m.UUID = NewUUID()
	}
	return s.SetMeta(vol, m)
}

// NewUUID returns an LVM-style UUID (6-4-4-4-4-4-6 characters of [A-Za-z0-9]).
func NewUUID() string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 32)
	rand.Read(b)
	out := make([]byte, 0, 38)
	for i, c := range b {
		if i == 6 || i == 10 || i == 14 || i == 18 || i == 22 || i == 26 {
			out = append(out, '-')
		}
		out = append(out, chars[int(c)%len(chars)])
	}
	return string(out)
}

// List returns the volumes (not snapshots), sorted by name.
func (s Store) List() ([]Vol, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Vol
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		m, _ := s.Meta(e.Name())
		if m.Created == 0 {
			m.Created = fi.ModTime().Unix()
		}
		out = append(out, Vol{Name: e.Name(), Size: fi.Size(), Meta: m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Snapshots returns the snapshots of vol ("" = all), as "vol@snap" names.
func (s Store) Snapshots(vol string) ([]Vol, error) {
	ents, err := os.ReadDir(filepath.Join(s.Dir, ".snap"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Vol
	for _, e := range ents {
		if vol != "" && !strings.HasPrefix(e.Name(), vol+"@") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		m, _ := s.Meta(e.Name())
		out = append(out, Vol{Name: e.Name(), Size: fi.Size(), Meta: m})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Meta.Created < out[j].Meta.Created || (out[i].Meta.Created == out[j].Meta.Created && out[i].Name < out[j].Name)
	})
	return out, nil
}

// Snapshot freezes vol's current bytes as vol@snap.
func (s Store) Snapshot(vol, snap string) error {
	if err := checkName(snap); err != nil {
		return err
	}
	defer s.lock()()
	if !s.Exists(vol) {
		return fmt.Errorf("dataset '%s' %w", vol, ErrNotFound)
	}
	dst := s.snapPath(vol, snap)
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("snapshot '%s@%s' %w", vol, snap, ErrExists)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := CopySparse(s.Path(vol), dst); err != nil {
		return err
	}
	return s.SetMeta(vol+"@"+snap, Meta{Created: time.Now().Unix()})
}

// Clone makes newVol from vol@snap, recording the origin.
func (s Store) Clone(origin, newVol string, m Meta) error {
	vol, snap, ok := strings.Cut(origin, "@")
	if !ok {
		return fmt.Errorf("clone origin %q is not a snapshot", origin)
	}
	if err := checkName(newVol); err != nil {
		return err
	}
	defer s.lock()()
	src := s.snapPath(vol, snap)
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("snapshot '%s' %w", origin, ErrNotFound)
	}
	if s.Exists(newVol) {
		return fmt.Errorf("volume '%s' %w", newVol, ErrExists)
	}
	if err := CopySparse(src, s.Path(newVol)); err != nil {
		return err
	}
	m.Origin = origin
	if m.Created == 0 {
		m.Created = time.Now().Unix()
	}
	if m.UUID == "" {
		m.UUID = NewUUID()
	}
	return s.SetMeta(newVol, m)
}

// Dependents lists volumes cloned from a snapshot of vol (or from the snapshot itself when
// name is "vol@snap").
func (s Store) Dependents(name string) ([]string, error) {
	vols, err := s.List()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, v := range vols {
		o := v.Meta.Origin
		if o == "" {
			continue
		}
		if o == name || (!strings.Contains(name, "@") && strings.HasPrefix(o, name+"@")) {
			out = append(out, v.Name)
		}
	}
	return out, nil
}

// Destroy removes a volume (with its snapshots when recursive) or one snapshot; it refuses
// while clones depend on it.
func (s Store) Destroy(name string, recursive bool) error {
	deps, err := s.Dependents(name)
	if err != nil {
		return err
	}
	if len(deps) > 0 {
		return fmt.Errorf("'%s' %w: %s", name, ErrBusy, strings.Join(deps, ", "))
	}
	defer s.lock()()
	if vol, snap, ok := strings.Cut(name, "@"); ok {
		if err := os.Remove(s.snapPath(vol, snap)); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("snapshot '%s' %w", name, ErrNotFound)
			}
			return err
		}
		os.Remove(s.metaPath(name))
		return nil
	}
	if !s.Exists(name) {
		return fmt.Errorf("volume '%s' %w", name, ErrNotFound)
	}
	snaps, _ := filepath.Glob(filepath.Join(s.Dir, ".snap", name+"@*"))
	if len(snaps) > 0 && !recursive {
		return fmt.Errorf("volume '%s' has children (snapshots)", name)
	}
	for _, p := range snaps {
		os.Remove(p)
		os.Remove(s.metaPath(filepath.Base(p)))
	}
	os.Remove(s.metaPath(name))
	return os.Remove(s.Path(name))
}

// Rename renames a volume and its snapshots, rewriting origins that point at them.
func (s Store) Rename(from, to string) error {
	if err := checkName(to); err != nil {
		return err
	}
	defer s.lock()()
	if s.Exists(to) {
		return fmt.Errorf("volume '%s' %w", to, ErrExists)
	}
	if err := os.Rename(s.Path(from), s.Path(to)); err != nil {
		return err
	}
	os.Rename(s.metaPath(from), s.metaPath(to))
	snaps, _ := filepath.Glob(filepath.Join(s.Dir, ".snap", from+"@*"))
	for _, p := range snaps {
		snap := strings.TrimPrefix(filepath.Base(p), from+"@")
		os.Rename(p, s.snapPath(to, snap))
		os.Rename(s.metaPath(from+"@"+snap), s.metaPath(to+"@"+snap))
	}
	return nil
}

// CopySparse copies src to dst, skipping all-zero blocks so the copy stays sparse.
func CopySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(fi.Size()); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := in.ReadAt(buf, off)
		if n > 0 && !allZero(buf[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return out.Sync()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Promote makes clone independent of its origin the way `zfs promote` does: the origin's
// snapshots up to and including the clone's origin snapshot move to the clone, the former
// origin becomes a clone of the moved snapshot, and every other clone of a moved snapshot now
// names it under the promoted dataset.
func (s Store) Promote(clone string) error {
	m, err := s.Meta(clone)
	if err != nil {
		return err
	}
	if m.Origin == "" {
		return fmt.Errorf("'%s' is not a cloned filesystem", clone)
	}
	parent, originSnap, _ := strings.Cut(m.Origin, "@")
	snaps, err := s.Snapshots(parent)
	if err != nil {
		return err
	}
	defer s.lock()()
	pm, _ := s.Meta(parent)
	var moved []string
	for _, sn := range snaps { // ordered by creation
		name := strings.TrimPrefix(sn.Name, parent+"@")
		moved = append(moved, name)
		if name == originSnap {
			break
		}
	}
	for _, name := range moved {
		if _, err := os.Stat(s.snapPath(clone, name)); err == nil {
			return fmt.Errorf("cannot promote '%s': a snapshot '%s' exists on both datasets", clone, name)
		}
	}
	for _, name := range moved {
		os.Rename(s.snapPath(parent, name), s.snapPath(clone, name))
		os.Rename(s.metaPath(parent+"@"+name), s.metaPath(clone+"@"+name))
	}
	vols, _ := os.ReadDir(s.Dir)
	for _, e := range vols {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") || e.Name() == clone {
			continue
		}
		vm, err := s.Meta(e.Name())
		if err != nil || vm.Origin == "" {
			continue
		}
		if p, sn, _ := strings.Cut(vm.Origin, "@"); p == parent && slices.Contains(moved, sn) {
			vm.Origin = clone + "@" + sn
			s.SetMeta(e.Name(), vm)
		}
	}
	cloneOrigin := pm.Origin // the clone takes over the parent's own origin
	pm.Origin = clone + "@" + originSnap
	if err := s.SetMeta(parent, pm); err != nil {
		return err
	}
	m.Origin = cloneOrigin
	return s.SetMeta(clone, m)
}
