package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// DiskBySerial returns /dev/vdX of the virtio disk whose serial is serial (labrun's -disk
// name).
func DiskBySerial(serial string) (string, error) {
	ms, _ := filepath.Glob("/sys/block/vd*/serial")
	for _, m := range ms {
		if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == serial {
			return "/dev/" + filepath.Base(filepath.Dir(m)), nil
		}
	}
	return "", fmt.Errorf("no virtio disk with serial %q (labrun -disk name=%s)", serial, serial)
}

// Flags of a dm-log-writes entry (drivers/md/dm-log-writes.c; QEMU's blklogwrites writes the
// same format).
const (
	LogFlush   = 1 << 0
	LogFUA     = 1 << 1
	LogDiscard = 1 << 2
	LogMark    = 1 << 3
)

// LogEntry is one entry of a dm-log-writes log: a write of Sectors at Sector, or a flush
// (Flags&LogFlush, no sectors).
type LogEntry struct {
	Sector, Sectors, Flags uint64
}

// Write reports an entry that wrote data (a flush with FUA data counts too).
func (e LogEntry) Write() bool { return e.Sectors > 0 && e.Flags&LogDiscard == 0 }

// ReadWriteLog reads every entry of a dm-log-writes log. The superblock (sector 0: magic,
// version, entry count, sector size) counts only the entries up to the last flush, so the
// entries are followed one by one from sector 1 until an empty one: each is a 32-byte
// header in its own sector followed by its data, except for discards.
func ReadWriteLog(path string) ([]LogEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const magic = 0x6a736677736872
	le := binary.LittleEndian
	sb := make([]byte, 32)
	sector := uint64(512)
	if _, err := f.ReadAt(sb, 0); err == nil && le.Uint64(sb) == magic {
		if s := le.Uint32(sb[24:]); s >= 512 && s&(s-1) == 0 {
			sector = uint64(s)
		}
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var out []LogEntry
	hdr := make([]byte, 32)
	for cur := uint64(1); ; {
		n, err := f.ReadAt(hdr, int64(cur*sector))
		if n < len(hdr) {
			if err == nil || errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		e := LogEntry{Sector: le.Uint64(hdr[0:]), Sectors: le.Uint64(hdr[8:]), Flags: le.Uint64(hdr[16:])}
		if e == (LogEntry{}) {
			return out, nil // past the last entry
		}
		if e.Flags&^uint64(LogFlush|LogFUA|LogDiscard|LogMark) != 0 {
			return out, fmt.Errorf("%s: entry %d at sector %d has flags %#x: not a write log", path, len(out), cur, e.Flags)
		}
		out = append(out, e)
		cur++
		if e.Flags&LogDiscard == 0 {
			cur += e.Sectors
		}
	}
}

// FlushAfterLastWrite checks the entries logged after the first from: some wrote, and a
// flush came after the last of them (the device's cache was flushed after the copy's last
// write reached it).
func FlushAfterLastWrite(entries []LogEntry, from int) error {
	lastWrite, lastFlush, writes := -1, -1, 0
	for i := from; i < len(entries); i++ {
		e := entries[i]
		if e.Write() {
			lastWrite = i
			writes++
		}
		if e.Flags&LogFlush != 0 {
			lastFlush = i
		}
	}
	switch {
	case writes == 0:
		return fmt.Errorf("no write logged after entry %d", from)
	case lastFlush < lastWrite:
		return fmt.Errorf("%d writes logged; the last (entry %d, sectors %d+%d) is not followed by a flush (last flush: entry %d)",
			writes, lastWrite, entries[lastWrite].Sector, entries[lastWrite].Sectors, lastFlush)
	}
	return nil
}
