package flasharray

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// DataPlane holds the bytes of volumes and snapshots, keyed by serial, and makes connections
// visible to hosts. Metadata (names, sizes, connections) stays in the Array.
type DataPlane interface {
	// Create makes an empty (zero) volume.
	Create(serial string, size int64) error
	// Clone makes dst hold src's bytes at size (creating or replacing dst): snapshots,
	// copies and overwrites.
	Clone(dst, src string, size int64) error
	// Resize grows or shrinks a volume.
	Resize(serial string, size int64) error
	// Remove drops the bytes of an eradicated object.
	Remove(serial string) error
	// Connect exposes a volume to host as LUN (or namespace) n; Disconnect withdraws it.
	Connect(serial, host string, n int, size int64) error
	Disconnect(serial, host string, n int) error
}

// Discard keeps no bytes (for tests of the REST surface only).
type Discard struct{}

func (Discard) Create(string, int64) error               { return nil }
func (Discard) Clone(string, string, int64) error        { return nil }
func (Discard) Resize(string, int64) error               { return nil }
func (Discard) Remove(string) error                      { return nil }
func (Discard) Connect(string, string, int, int64) error { return nil }
func (Discard) Disconnect(string, string, int) error     { return nil }

// Files keeps every volume and snapshot in a sparse file Dir/<serial>; clones are reflinks
// where the filesystem has them, else sparse copies. Connections are only recorded.
type Files struct {
	Dir string

	mu    sync.Mutex
	conns map[string]map[string]int // serial -> host -> n
}

// Path is the file holding serial's bytes.
func (f *Files) Path(serial string) string { return filepath.Join(f.Dir, serial) }

func (f *Files) Create(serial string, size int64) error {
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return err
	}
	fh, err := os.OpenFile(f.Path(serial), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer fh.Close()
	return fh.Truncate(size)
}

// Clone writes into dst in place (same inode), so a LUN serving dst sees the new bytes.
func (f *Files) Clone(dst, src string, size int64) error {
	in, err := os.Open(f.Path(src))
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(f.Path(dst), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := CopySparse(out, in, size); err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	return out.Sync()
}

// CopySparse makes out a copy of in's first size bytes: a reflink when the filesystem can,
// else only in's data extents are copied and holes stay holes.
func CopySparse(out, in *os.File, size int64) error {
	if st, err := in.Stat(); err == nil && st.Size() == size {
		if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
			return nil
		}
	}
	if err := out.Truncate(0); err != nil {
		return err
	}
	if err := out.Truncate(size); err != nil {
		return err
	}
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil || data >= size {
			break // ENXIO: no data after off
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, size)
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(out, in, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

func (f *Files) Resize(serial string, size int64) error { return os.Truncate(f.Path(serial), size) }

func (f *Files) Remove(serial string) error {
	err := os.Remove(f.Path(serial))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (f *Files) Connect(serial, host string, n int, _ int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		f.conns = map[string]map[string]int{}
	}
	if f.conns[serial] == nil {
		f.conns[serial] = map[string]int{}
	}
	f.conns[serial][host] = n
	return nil
}

func (f *Files) Disconnect(serial, host string, _ int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns[serial], host)
	return nil
}

// Connected lists the hosts serial is connected to, with their LUN, as "host:n".
func (f *Files) Connected(serial string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for h, n := range f.conns[serial] {
		out = append(out, fmt.Sprintf("%s:%d", h, n))
	}
	sort.Strings(out)
	return out
}

// copyBetween makes dst of data plane to hold the bytes of src of data plane from (one data
// plane: a clone; two keeping files: a sparse copy; otherwise an empty volume of the size).
func copyBetween(to DataPlane, dst string, from DataPlane, src string, size int64) error {
	if to == from {
		return to.Clone(dst, src, size)
	}
	type paths interface{ Path(string) string }
	tp, ok1 := to.(paths)
	fp, ok2 := from.(paths)
	if !ok1 || !ok2 {
		return to.Create(dst, size)
	}
	if err := to.Create(dst, size); err != nil {
		return err
	}
	in, err := os.Open(fp.Path(src))
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(tp.Path(dst), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := CopySparse(out, in, size); err != nil {
		return err
	}
	return out.Sync()
}
