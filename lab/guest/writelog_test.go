package guest

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// writeLog lays entries out as QEMU's blklogwrites does (superblock at sector 0, updated on
// flush; each entry in its own 512-byte sector followed by its data).
func writeLog(t *testing.T, entries []LogEntry, counted int) string {
	p := filepath.Join(t.TempDir(), "x.log")
	var b []byte
	sec := make([]byte, 512)
	le := binary.LittleEndian
	le.PutUint64(sec[0:], 0x6a736677736872)
	le.PutUint64(sec[8:], 1)
	le.PutUint64(sec[16:], uint64(counted))
	le.PutUint32(sec[24:], 512)
	b = append(b, sec...)
	for _, e := range entries {
		h := make([]byte, 512)
		le.PutUint64(h[0:], e.Sector)
		le.PutUint64(h[8:], e.Sectors)
		le.PutUint64(h[16:], e.Flags)
		b = append(b, h...)
		if e.Flags&LogDiscard == 0 {
			b = append(b, make([]byte, 512*e.Sectors)...)
		}
	}
	b = append(b, make([]byte, 4096)...) // the sparse rest of the file
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWriteLog(t *testing.T) {
	flushed := []LogEntry{{0, 8, 0}, {100, 16, 0}, {0, 0, LogFlush}, {300, 8, LogDiscard}, {200, 8, 0}, {0, 0, LogFlush}}
	got, err := ReadWriteLog(writeLog(t, flushed, 6))
	if err != nil || len(got) != 6 || got[4] != (LogEntry{200, 8, 0}) {
		t.Fatalf("%+v %v", got, err)
	}
	if err := FlushAfterLastWrite(got, 3); err != nil {
		t.Errorf("flushed log: %v", err)
	}
	// Writes after the last flush: the superblock counts 3 entries, the log holds 5.
	unflushed := []LogEntry{{0, 8, 0}, {0, 0, LogFlush}, {64, 8, 0}, {72, 8, 0}}
	got, err = ReadWriteLog(writeLog(t, unflushed, 2))
	if err != nil || len(got) != 4 {
		t.Fatalf("%+v %v", got, err)
	}
	if err := FlushAfterLastWrite(got, 2); err == nil {
		t.Error("writes without a flush after them passed")
	}
	if err := FlushAfterLastWrite(got[:2], 2); err == nil {
		t.Error("no write at all passed")
	}
}
