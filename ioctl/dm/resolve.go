package dm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/ioctl"
)

// Control talks to /dev/mapper/control.
type Control struct {
	f *os.File
}

// OpenControl opens the device-mapper control node.
func OpenControl(path string) (*Control, error) {
	if path == "" {
		path = "/dev/mapper/control"
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &Control{f: f}, nil
}

// Close closes the control node.
func (c *Control) Close() error { return c.f.Close() }

// Table returns a device's live table (DM_TABLE_STATUS with DM_STATUS_TABLE_FLAG), growing
// the buffer while the kernel reports it full.
func (c *Control) Table(d Dev) (Info, []Target, error) { return c.tableStatus(d, flagStatusT) }

// Status returns a device's status lines (DM_TABLE_STATUS without DM_STATUS_TABLE_FLAG): for
// a multipath map, the state of every path and path group.
func (c *Control) Status(d Dev) (Info, []Target, error) { return c.tableStatus(d, 0) }

func (c *Control) tableStatus(d Dev, flags uint32) (Info, []Target, error) {
	for size := 16 << 10; size <= 4<<20; size *= 4 {
		b, err := encodeHeader(size, "", d, flags)
		if err != nil {
			return Info{}, nil, err
		}
		if _, err := ioctl.Ioctl(c.f.Fd(), unix.DM_TABLE_STATUS, b); err != nil {
			return Info{}, nil, fmt.Errorf("DM_TABLE_STATUS %s: %w", d, err)
		}
		info, ts, err := parseReply(b)
		if errors.Is(err, errBufferFull) {
			continue
		}
		return info, ts, err
	}
	return Info{}, nil, fmt.Errorf("DM_TABLE_STATUS %s: table larger than 4 MiB", d)
}

// TableReader returns device-mapper tables (Control, or a fake in tests).
type TableReader interface {
	Table(d Dev) (Info, []Target, error)
}

// StatusReader returns device-mapper status lines (Control, or a fake in tests).
type StatusReader interface {
	Status(d Dev) (Info, []Target, error)
}

// Extent maps Length sectors at Start of the resolved device to DevStart on Dev, a device
// below all mapping layers (a whole SCSI disk or NVMe namespace).
type Extent struct {
	Start    uint64
	Length   uint64
	Dev      Dev
	DevStart uint64
	// Paths are the other devices reaching the same data (multipath), Dev first.
	Paths []Dev
	// Multipath is the multipath map the extent goes through (zero without one): its status
	// says which of Paths are usable now.
	Multipath Dev
}

// Layer is a device-mapper device a resolution went through, as it was then: a mapping that
// changes afterwards (pvmove, lvconvert, a table reload) makes physical addresses taken from
// it stale.
type Layer struct {
	Info    Info
	Targets []Target
}

// Multipath reports a multipath map: its paths and their states change without changing
// what it maps.
func (l Layer) Multipath() bool { return len(l.Targets) == 1 && l.Targets[0].Type == "multipath" }

// Changed says how now differs from l ("" when it does not): for a multipath map, another
// LU (uuid) or size; for every other layer, its event number or any line of its table.
func (l Layer) Changed(now Layer) string {
	name := l.Info.Name
	if l.Multipath() {
		switch {
		case !now.Multipath():
			return fmt.Sprintf("%s is no longer a multipath map", name)
		case now.Info.UUID != l.Info.UUID:
			return fmt.Sprintf("%s now maps %s instead of %s", name, now.Info.UUID, l.Info.UUID)
		case now.Targets[0].Length != l.Targets[0].Length:
			return fmt.Sprintf("%s changed size from %d to %d sectors", name, l.Targets[0].Length, now.Targets[0].Length)
		}
		return ""
	}
	if now.Info.EventNr != l.Info.EventNr {
		return fmt.Sprintf("%s: device-mapper event %d after %d", name, now.Info.EventNr, l.Info.EventNr)
	}
	if len(now.Targets) != len(l.Targets) {
		return fmt.Sprintf("%s: table has %d lines instead of %d", name, len(now.Targets), len(l.Targets))
	}
	for i := range l.Targets {
		if now.Targets[i] != l.Targets[i] {
			a, b := l.Targets[i], now.Targets[i]
			return fmt.Sprintf("%s: table line %d is now \"%d %d %s %s\" (was \"%d %d %s %s\")", name, i,
				b.Start, b.Length, b.Type, b.Params, a.Start, a.Length, a.Type, a.Params)
		}
	}
	return ""
}

// Resolver walks sysfs and device-mapper tables.
type Resolver struct {
	Tables TableReader
	Sys    string // sysfs root (/sys)
	// Layers, when not nil, receives every device-mapper device the resolutions went
	// through, as they were read.
	Layers map[Dev]Layer
}

// ErrNotIdentity marks a layer that does not map bytes one to one (thin, crypt, raid…).
var ErrNotIdentity = errors.New("not an identity mapping")

// Resolve maps sectors [start, start+length) of d to physical extents.
func (r *Resolver) Resolve(d Dev, start, length uint64) ([]Extent, error) {
	return r.resolve(d, start, length, 0)
}

// ResolveAll maps the whole device.
func (r *Resolver) ResolveAll(d Dev) ([]Extent, error) {
	size, err := r.sizeSectors(d)
	if err != nil {
		return nil, err
	}
	return r.Resolve(d, 0, size)
}

func (r *Resolver) sysDev(d Dev) string { return filepath.Join(r.Sys, "dev", "block", d.String()) }

func (r *Resolver) sizeSectors(d Dev) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(r.sysDev(d), "size"))
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", d, err)
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

func (r *Resolver) resolve(d Dev, start, length uint64, depth int) ([]Extent, error) {
	if depth > 16 {
		return nil, fmt.Errorf("device %s: mapping more than 16 layers deep", d)
	}
	base := r.sysDev(d)
	if _, err := os.Stat(filepath.Join(base, "dm")); err == nil {
		return r.resolveDM(d, start, length, depth)
	}
	if b, err := os.ReadFile(filepath.Join(base, "partition")); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		// A partition: SG_IO and NVMe passthrough address the whole disk, so add its start.
		sb, err := os.ReadFile(filepath.Join(base, "start"))
		if err != nil {
			return nil, fmt.Errorf("partition %s: %w", d, err)
		}
		pstart, err := strconv.ParseUint(strings.TrimSpace(string(sb)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("partition %s: bad start %q", d, sb)
		}
		parent, err := r.parentOf(d)
		if err != nil {
			return nil, err
		}
		sub, err := r.resolve(parent, pstart+start, length, depth+1)
		for i := range sub {
			sub[i].Start -= pstart // back to the partition's own sector numbers
		}
		return sub, err
	}
	if _, err := os.Stat(base); err != nil {
		return nil, fmt.Errorf("device %s not found in sysfs: %w", d, err)
	}
	return []Extent{{Start: start, Length: length, Dev: d, DevStart: start, Paths: []Dev{d}}}, nil
}

func (r *Resolver) parentOf(d Dev) (Dev, error) {
	link, err := filepath.EvalSymlinks(r.sysDev(d))
	if err != nil {
		return Dev{}, fmt.Errorf("partition %s: %w", d, err)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(link), "dev"))
	if err != nil {
		return Dev{}, fmt.Errorf("partition %s: parent device: %w", d, err)
	}
	return ParseDev(string(b))
}

func (r *Resolver) resolveDM(d Dev, start, length uint64, depth int) ([]Extent, error) {
	info, targets, err := r.Tables.Table(d)
	if err != nil {
		return nil, err
	}
	if r.Layers != nil {
		r.Layers[d] = Layer{Info: info, Targets: targets}
	}
	name := info.Name
	if name == "" {
		name = d.String()
	}
	var out []Extent
	end := start + length
	for _, t := range targets {
		tEnd := t.Start + t.Length
		if tEnd <= start || t.Start >= end {
			continue
		}
		s := max(start, t.Start)
		e := min(end, tEnd)
		switch t.Type {
		case "linear":
			under, off, err := ParseLinear(t.Params)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			sub, err := r.resolve(under, off+(s-t.Start), e-s, depth+1)
			if err != nil {
				return nil, err
			}
			for _, x := range sub {
				x.Start = s + (x.Start - (off + (s - t.Start)))
				out = append(out, x)
			}
		case "multipath":
			paths, err := ParseMultipath(t.Params)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			// Every path is the same LU, mapped one to one: resolve through the first and
			// remember the others.
			sub, err := r.resolve(paths[0], s-t.Start, e-s, depth+1)
			if err != nil {
				return nil, err
			}
			for _, x := range sub {
				x.Start = s + (x.Start - (s - t.Start))
				x.Paths = append([]Dev(nil), paths...)
				x.Multipath = d
				out = append(out, x)
			}
		default:
			return nil, fmt.Errorf("%s uses device-mapper target '%s' at sectors %d+%d: only linear, multipath and partitions map blocks one to one, so the copy cannot be offloaded: %w",
				name, t.Type, t.Start, t.Length, ErrNotIdentity)
		}
	}
	var covered uint64
	for _, x := range out {
		covered += x.Length
	}
	if covered != length {
		return nil, fmt.Errorf("%s: table covers %d of %d requested sectors", name, covered, length)
	}
	return out, nil
}
