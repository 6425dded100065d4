// Package dm reads device-mapper tables through the DM ioctls on /dev/mapper/control and
// resolves a device (an LV, a partition, a multipath map) to the byte ranges of the physical
// devices underneath, so copies can be offloaded with physical LBAs. Only identity-preserving
// layers are followed: linear, multipath and partitions; anything else is refused with the
// reason.
package dm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// struct dm_ioctl (linux/dm-ioctl.h) is 312 bytes; offsets below are from the header.
const (
	headerLen   = 312
	specLen     = 40 // struct dm_target_spec
	nameLen     = 128
	uuidLen     = 129
	versionMaj  = 4
	flagStatusT = 0x10  // DM_STATUS_TABLE_FLAG: return the table, not the status
	flagBufFull = 0x100 // DM_BUFFER_FULL_FLAG
)

// Dev is a block device number.
type Dev struct{ Major, Minor uint32 }

func (d Dev) String() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// ParseDev parses "major:minor".
func ParseDev(s string) (Dev, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Dev{}, fmt.Errorf("device number %q is not major:minor", s)
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return Dev{}, fmt.Errorf("device number %q is not major:minor", s)
	}
	return Dev{uint32(ma), uint32(mi)}, nil
}

// encodeDev is the kernel's huge_encode_dev, the format of dm_ioctl.dev.
func encodeDev(d Dev) uint64 {
	return uint64(d.Minor&0xff) | uint64(d.Major&0xfff)<<8 | uint64(d.Minor&^0xff)<<12
}

func decodeDev(v uint64) Dev {
	return Dev{Major: uint32((v >> 8) & 0xfff), Minor: uint32(v&0xff) | uint32((v>>12)&0xfff00)}
}

// encodeHeader builds a request of size bytes (header plus data area) for name or dev.
func encodeHeader(size int, name string, dev Dev, flags uint32) ([]byte, error) {
	if len(name) >= nameLen {
		return nil, fmt.Errorf("device-mapper name %q too long", name)
	}
	b := make([]byte, size)
	le := binary.LittleEndian
	le.PutUint32(b[0:], versionMaj)
	le.PutUint32(b[4:], 0)
	le.PutUint32(b[8:], 0)
	le.PutUint32(b[12:], uint32(size)) // data_size: the whole buffer
	le.PutUint32(b[16:], headerLen)    // data_start
	le.PutUint32(b[28:], flags)
	if name == "" {
		le.PutUint64(b[40:], encodeDev(dev))
	}
	copy(b[48:48+nameLen], name)
	return b, nil
}

// Info is the header of a DM answer.
type Info struct {
	OpenCount  int32
	EventNr    uint32
	Flags      uint32
	Dev        Dev
	Name, UUID string
}

// Target is one line of a device-mapper table.
type Target struct {
	Start  uint64 // sectors (512 bytes) in the mapped device
	Length uint64
	Type   string
	Params string
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// parseReply decodes a DM_TABLE_STATUS (or DM_DEV_STATUS) answer.
func parseReply(b []byte) (Info, []Target, error) {
	if len(b) < headerLen {
		return Info{}, nil, fmt.Errorf("device-mapper reply of %d bytes", len(b))
	}
	le := binary.LittleEndian
	info := Info{OpenCount: int32(le.Uint32(b[24:])), Flags: le.Uint32(b[28:]), EventNr: le.Uint32(b[32:]),
		Dev: decodeDev(le.Uint64(b[40:])), Name: cstr(b[48 : 48+nameLen]), UUID: cstr(b[176 : 176+uuidLen])}
	if info.Flags&flagBufFull != 0 {
		return info, nil, errBufferFull
	}
	dataSize := int(le.Uint32(b[12:]))
	dataStart := int(le.Uint32(b[16:]))
	count := int(le.Uint32(b[20:]))
	if dataSize > len(b) || dataStart > dataSize {
		return info, nil, fmt.Errorf("device-mapper reply: data %d+%d outside %d bytes", dataStart, dataSize, len(b))
	}
	var out []Target
	off := dataStart
	for i := 0; i < count; i++ {
		if off+specLen > dataSize {
			return info, out, fmt.Errorf("device-mapper reply: target %d outside the data", i)
		}
		spec := b[off : off+specLen]
		t := Target{Start: le.Uint64(spec[0:]), Length: le.Uint64(spec[8:]), Type: cstr(spec[24:40])}
		next := int(le.Uint32(spec[20:]))
		end := dataSize
		if next > 0 && dataStart+next <= dataSize {
			end = dataStart + next
		}
		if off+specLen > end {
			return info, out, fmt.Errorf("device-mapper reply: target %d has a bad next offset", i)
		}
		t.Params = cstr(b[off+specLen : end])
		out = append(out, t)
		if next <= 0 {
			break
		}
		// "next" is relative to the start of the data area (libdevmapper's convention).
		off = dataStart + next
	}
	return info, out, nil
}

var errBufferFull = errors.New("device-mapper buffer full")

// ParseLinear reads "<major:minor> <start sector>".
func ParseLinear(params string) (Dev, uint64, error) {
	f := strings.Fields(params)
	if len(f) != 2 {
		return Dev{}, 0, fmt.Errorf("linear target %q: want '<dev> <offset>'", params)
	}
	d, err := ParseDev(f[0])
	if err != nil {
		return Dev{}, 0, err
	}
	off, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return Dev{}, 0, fmt.Errorf("linear target %q: bad offset", params)
	}
	return d, off, nil
}

// words walks the fields of a multipath table or status line.
type words struct {
	f      []string
	pos    int
	what   string // "multipath table", "multipath status"
	params string
}

func newWords(what, params string) *words {
	return &words{f: strings.Fields(params), what: what, params: params}
}

func (w *words) next() (string, error) {
	if w.pos >= len(w.f) {
		return "", fmt.Errorf("%s %q ends early", w.what, w.params)
	}
	w.pos++
	return w.f[w.pos-1], nil
}

// count reads a field that counts others (at most 1024).
func (w *words) count() (int, error) {
	s, err := w.next()
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1024 {
		return 0, fmt.Errorf("%s %q: bad count %q", w.what, w.params, s)
	}
	return n, nil
}

func (w *words) skip(n int) error {
	for i := 0; i < n; i++ {
		if _, err := w.next(); err != nil {
			return err
		}
	}
	return nil
}

// counted skips a count and the fields it counts.
func (w *words) counted() error {
	n, err := w.count()
	if err != nil {
		return err
	}
	return w.skip(n)
}

// head reads what both the table and the status line start with: the features, the
// hardware handler's arguments, the number of path groups and the initial group.
func (w *words) head() (int, error) {
	for i := 0; i < 2; i++ {
		if err := w.counted(); err != nil {
			return 0, err
		}
	}
	groups, err := w.count()
	if err != nil {
		return 0, err
	}
	_, err = w.next() // initial group
	return groups, err
}

// ParseMultipath reads a multipath table's paths, in table order:
// <#features> <features…> <#handler args> <handler…> <#groups> <initial group>
// then per group: <selector> <#selector args> <args…> <#paths> <#path args> and per path
// <dev> <path args…>.
func ParseMultipath(params string) ([]Dev, error) {
	w := newWords("multipath table", params)
	groups, err := w.head()
	if err != nil {
		return nil, err
	}
	var out []Dev
	for g := 0; g < groups; g++ {
		if _, err := w.next(); err != nil { // selector
			return nil, err
		}
		if err := w.counted(); err != nil {
			return nil, err
		}
		paths, err := w.count()
		if err != nil {
			return nil, err
		}
		pargs, err := w.count()
		if err != nil {
			return nil, err
		}
		for p := 0; p < paths; p++ {
			s, err := w.next()
			if err != nil {
				return nil, err
			}
			d, err := ParseDev(s)
			if err != nil {
				return nil, err
			}
			out = append(out, d)
			if err := w.skip(pargs); err != nil {
				return nil, err
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("multipath table %q has no paths", params)
	}
	return out, nil
}

// MultipathFeatures returns the feature arguments at the start of a multipath table
// ("queue_if_no_path", "pg_init_retries", "5", …).
func MultipathFeatures(params string) []string {
	f := strings.Fields(params)
	if len(f) == 0 {
		return nil
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 0 || n > len(f)-1 {
		return nil
	}
	return f[1 : 1+n]
}

// QueueIfNoPath reports the queue_if_no_path feature in a multipath table: with every path
// failed, dm-multipath holds I/O until a path returns (or multipathd gives up after
// no_path_retry and clears the feature with a fail_if_no_path message).
func QueueIfNoPath(params string) bool {
	for _, f := range MultipathFeatures(params) {
		if f == "queue_if_no_path" {
			return true
		}
	}
	return false
}

// PathState is one path of a multipath status line.
type PathState struct {
	Dev       Dev
	Active    bool // A: usable; F: failed
	FailCount int
}

// PathGroup is one priority group of a multipath status line.
type PathGroup struct {
	State byte // 'A' the group in use, 'E' enabled, 'D' disabled (bypassed)
	Paths []PathState
}

// ParseMultipathStatus reads a multipath status line (dm-mpath.c multipath_status, INFO):
// <#features> <features…> <#handler status> <handler status…> <#groups> <initial group>
// then per group: <A|D|E> <#selector status> <status…> <#paths> <#selector path args> and per
// path <dev> <A|F> <fail count> <selector args…>.
func ParseMultipathStatus(params string) ([]PathGroup, error) {
	w := newWords("multipath status", params)
	groups, err := w.head()
	if err != nil {
		return nil, err
	}
	var out []PathGroup
	for g := 0; g < groups; g++ {
		st, err := w.next()
		if err != nil {
			return nil, err
		}
		if len(st) != 1 || !strings.Contains("ADE", st) {
			return nil, fmt.Errorf("multipath status %q: group state %q", params, st)
		}
		if err := w.counted(); err != nil { // path selector status
			return nil, err
		}
		paths, err := w.count()
		if err != nil {
			return nil, err
		}
		pargs, err := w.count()
		if err != nil {
			return nil, err
		}
		grp := PathGroup{State: st[0]}
		for p := 0; p < paths; p++ {
			ds, err := w.next()
			if err != nil {
				return nil, err
			}
			d, err := ParseDev(ds)
			if err != nil {
				return nil, err
			}
			as, err := w.next()
			if err != nil {
				return nil, err
			}
			if as != "A" && as != "F" {
				return nil, fmt.Errorf("multipath status %q: path state %q", params, as)
			}
			fs, err := w.next()
			if err != nil {
				return nil, err
			}
			fc, err := strconv.Atoi(fs)
			if err != nil || fc < 0 {
				return nil, fmt.Errorf("multipath status %q: fail count %q", params, fs)
			}
			grp.Paths = append(grp.Paths, PathState{Dev: d, Active: as == "A", FailCount: fc})
			if err := w.skip(pargs); err != nil {
				return nil, err
			}
		}
		out = append(out, grp)
	}
	return out, nil
}
