package dm

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHeaderGolden(t *testing.T) {
	b, err := encodeHeader(16384, "", Dev{253, 3}, flagStatusT)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != 4 || le.Uint32(b[12:]) != 16384 || le.Uint32(b[16:]) != 312 || le.Uint32(b[28:]) != 0x10 {
		t.Fatalf("version/data_size/data_start/flags: % x", b[:32])
	}
	if le.Uint64(b[40:]) != 0xfd03 {
		t.Fatalf("dev field %#x, want huge_encode_dev(253:3) = 0xfd03", le.Uint64(b[40:]))
	}
	if decodeDev(encodeDev(Dev{259, 70000})) != (Dev{259, 70000}) {
		t.Fatal("device number round trip")
	}
}

// reply builds a DM_TABLE_STATUS answer the way the kernel lays it out.
func reply(name string, targets []Target) []byte {
	b := make([]byte, 4096)
	le := binary.LittleEndian
	le.PutUint32(b[0:], 4)
	le.PutUint32(b[12:], 4096)
	le.PutUint32(b[16:], headerLen)
	le.PutUint32(b[20:], uint32(len(targets)))
	copy(b[48:], name)
	off := headerLen
	for i, t := range targets {
		le.PutUint64(b[off:], t.Start)
		le.PutUint64(b[off+8:], t.Length)
		copy(b[off+24:off+40], t.Type)
		p := t.Params + "\x00"
		for (specLen+len(p))%8 != 0 {
			p += "\x00"
		}
		copy(b[off+specLen:], p)
		next := off + specLen + len(p) - headerLen
		if i == len(targets)-1 {
			next = 0
		}
		le.PutUint32(b[off+20:], uint32(next))
		off += specLen + len(p)
	}
	return b
}

func TestParseReply(t *testing.T) {
	want := []Target{{0, 16384, "linear", "8:0 2048"}, {16384, 8192, "linear", "8:16 34816"}}
	info, got, err := parseReply(reply("pve-vm--100--disk--0", want))
	if err != nil || info.Name != "pve-vm--100--disk--0" || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("%+v %+v %v", info, got, err)
	}
	full := reply("x", want)
	binary.LittleEndian.PutUint32(full[28:], flagBufFull)
	if _, _, err := parseReply(full); !errors.Is(err, errBufferFull) {
		t.Fatal("a full buffer must be reported so the caller retries bigger")
	}
}

func TestParseMultipath(t *testing.T) {
	// multipath-tools' table for an ALUA array: queue_if_no_path, alua handler, two groups.
	params := "1 queue_if_no_path 1 alua 2 1 service-time 0 1 2 8:0 1 1 service-time 0 1 2 8:16 1 1"
	got, err := ParseMultipath(params)
	if err != nil || len(got) != 2 || got[0] != (Dev{8, 0}) || got[1] != (Dev{8, 16}) {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := ParseMultipath("0 0 1 1 round-robin 0 2 1 8:0"); err == nil {
		t.Error("truncated table accepted")
	}
}

// fakeTables serves tables by device.
type fakeTables map[Dev][]Target

func (f fakeTables) Table(d Dev) (Info, []Target, error) {
	t, ok := f[d]
	if !ok {
		return Info{}, nil, errors.New("no such device")
	}
	return Info{Name: "dm-" + d.String(), Dev: d}, t, nil
}

// sysTree writes the sysfs entries Resolve reads.
func sysTree(t *testing.T) string {
	root := t.TempDir()
	mk := func(rel string, files map[string]string) {
		dir := filepath.Join(root, "devices", rel)
		os.MkdirAll(dir, 0o755)
		for k, v := range files {
			os.WriteFile(filepath.Join(dir, k), []byte(v+"\n"), 0o644)
		}
	}
	link := func(dev, rel string) {
		os.MkdirAll(filepath.Join(root, "dev", "block"), 0o755)
		os.Symlink(filepath.Join("..", "..", "devices", rel), filepath.Join(root, "dev", "block", dev))
	}
	mk("sda", map[string]string{"dev": "8:0", "size": "2097152"})
	mk("sdb", map[string]string{"dev": "8:16", "size": "2097152"})
	mk("dm-0", map[string]string{"dev": "253:0", "size": "2097152"}) // multipath over sda, sdb
	os.MkdirAll(filepath.Join(root, "devices", "dm-0", "dm"), 0o755)
	mk("dm-1", map[string]string{"dev": "253:1", "size": "2093056"}) // kpartx partition 1 of dm-0
	os.MkdirAll(filepath.Join(root, "devices", "dm-1", "dm"), 0o755)
	mk("dm-2", map[string]string{"dev": "253:2", "size": "24576"}) // the LV, two segments
	os.MkdirAll(filepath.Join(root, "devices", "dm-2", "dm"), 0o755)
	mk("nvme0n1", map[string]string{"dev": "259:0", "size": "4194304"})
	mk("nvme0n1/nvme0n1p1", map[string]string{"dev": "259:1", "size": "4192256", "partition": "1", "start": "2048"})
	link("8:0", "sda")
	link("8:16", "sdb")
	link("253:0", "dm-0")
	link("253:1", "dm-1")
	link("253:2", "dm-2")
	link("259:0", "nvme0n1")
	link("259:1", "nvme0n1/nvme0n1p1")
	return root
}

func TestResolveLVOnPartitionOfMultipath(t *testing.T) {
	r := &Resolver{Sys: sysTree(t), Tables: fakeTables{
		{253, 0}: {{0, 2097152, "multipath", "0 0 1 1 round-robin 0 2 1 8:0 1 8:16 1"}},
		{253, 1}: {{0, 2093056, "linear", "253:0 4096"}},
		{253, 2}: {{0, 16384, "linear", "253:1 2048"}, {16384, 8192, "linear", "253:1 100000"}},
	}}
	got, err := r.ResolveAll(Dev{253, 2})
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{
		{Start: 0, Length: 16384, Dev: Dev{8, 0}, DevStart: 4096 + 2048, Paths: []Dev{{8, 0}, {8, 16}}},
		{Start: 16384, Length: 8192, Dev: Dev{8, 0}, DevStart: 4096 + 100000, Paths: []Dev{{8, 0}, {8, 16}}},
	}
	if len(got) != len(want) {
		t.Fatalf("%+v", got)
	}
	for i := range want {
		if got[i].Start != want[i].Start || got[i].Length != want[i].Length || got[i].Dev != want[i].Dev ||
			got[i].DevStart != want[i].DevStart || len(got[i].Paths) != 2 {
			t.Errorf("extent %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// A sub-range crossing the segment boundary.
	got, err = r.Resolve(Dev{253, 2}, 16000, 1000)
	if err != nil || len(got) != 2 || got[0].Length != 384 || got[0].DevStart != 6144+16000 || got[1].Start != 16384 || got[1].DevStart != 104096 {
		t.Fatalf("sub-range: %+v %v", got, err)
	}
}

func TestResolvePartitionAddsStart(t *testing.T) {
	r := &Resolver{Sys: sysTree(t), Tables: fakeTables{}}
	got, err := r.Resolve(Dev{259, 1}, 100, 50)
	if err != nil || len(got) != 1 || got[0].Dev != (Dev{259, 0}) || got[0].DevStart != 2148 || got[0].Start != 100 {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestResolveRefusesNonIdentityTargets(t *testing.T) {
	for _, typ := range []string{"thin", "crypt", "raid1", "snapshot-origin", "cache", "mirror", "striped"} {
		r := &Resolver{Sys: sysTree(t), Tables: fakeTables{{253, 2}: {{0, 24576, typ, "x"}}}}
		_, err := r.ResolveAll(Dev{253, 2})
		if !errors.Is(err, ErrNotIdentity) || !strings.Contains(err.Error(), "'"+typ+"'") {
			t.Errorf("%s: %v", typ, err)
		}
	}
}

func FuzzParseReply(f *testing.F) {
	f.Add(reply("vg-lv", []Target{{0, 100, "linear", "8:0 2048"}}))
	f.Add([]byte("1 queue_if_no_path 1 alua 1 1 service-time 0 1 2 8:0 1 1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseReply(b)
		ParseMultipath(string(b))
		ParseMultipathStatus(string(b))
		MultipathFeatures(string(b))
		ParseLinear(string(b))
	})
}

func TestMultipathStatusAndFeatures(t *testing.T) {
	// Two groups (ALUA: active/optimized and standby), service-time's per-path args (2).
	st := "2 0 0 0 2 1 A 0 1 2 8:0 A 0 0 1 E 0 2 2 8:16 F 3 0 1 8:32 A 0 0 1"
	groups, err := ParseMultipathStatus(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 2 || groups[0].State != 'A' || len(groups[0].Paths) != 1 || !groups[0].Paths[0].Active ||
		groups[1].State != 'E' || len(groups[1].Paths) != 2 || groups[1].Paths[0].Active || groups[1].Paths[0].FailCount != 3 ||
		groups[1].Paths[1].Dev != (Dev{8, 32}) || !groups[1].Paths[1].Active {
		t.Fatalf("%+v", groups)
	}
	// round-robin has no per-path status args.
	groups, err = ParseMultipathStatus("2 0 0 0 1 1 A 0 2 0 8:0 A 0 8:16 F 1500")
	if err != nil || len(groups[0].Paths) != 2 || groups[0].Paths[1].FailCount != 1500 {
		t.Fatalf("round-robin: %+v %v", groups, err)
	}
	for _, bad := range []string{"2 0 0 0 1 1 X 0 1 0 8:0 A 0", "2 0 0 0 1 1 A 0 1 0 8:0 Q 0", "2 0 0 0 1 1 A 0 2 0 8:0 A 0"} {
		if _, err := ParseMultipathStatus(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if !QueueIfNoPath("1 queue_if_no_path 1 alua 2 1 service-time 0 1 2 8:0 1 1") ||
		QueueIfNoPath("0 1 alua 2 1 service-time 0 1 2 8:0 1 1") ||
		QueueIfNoPath("2 pg_init_retries 5 0 1 1 round-robin 0 1 1 8:0 1") {
		t.Error("queue_if_no_path detection")
	}
}

func TestLayersRecordAndCompare(t *testing.T) {
	tables := fakeTables{
		{253, 0}: {{0, 2097152, "multipath", "0 0 1 1 round-robin 0 2 1 8:0 1 8:16 1"}},
		{253, 1}: {{0, 2093056, "linear", "253:0 4096"}},
		{253, 2}: {{0, 16384, "linear", "253:1 2048"}, {16384, 8192, "linear", "253:1 100000"}},
	}
	r := &Resolver{Sys: sysTree(t), Tables: tables, Layers: map[Dev]Layer{}}
	ext, err := r.ResolveAll(Dev{253, 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Layers) != 3 || !r.Layers[Dev{253, 0}].Multipath() || r.Layers[Dev{253, 2}].Multipath() {
		t.Fatalf("layers %+v", r.Layers)
	}
	if ext[0].Multipath != (Dev{253, 0}) {
		t.Errorf("extent through %v, want the multipath map 253:0", ext[0].Multipath)
	}
	lv := r.Layers[Dev{253, 2}]
	// pvmove: the LV's segment now goes through the pvmove mirror.
	moved := Layer{Info: lv.Info, Targets: []Target{{0, 16384, "linear", "253:5 0"}, lv.Targets[1]}}
	if why := lv.Changed(moved); !strings.Contains(why, `"0 16384 linear 253:5 0"`) {
		t.Errorf("table change: %q", why)
	}
	ev := lv
	ev.Info.EventNr++
	if lv.Changed(ev) == "" || lv.Changed(lv) != "" {
		t.Error("an event must count as a change, the same layer must not")
	}
	// A multipath map whose path failed (an event) or whose paths were reloaded still maps
	// the same LU: not a change. Another LU is.
	mp := r.Layers[Dev{253, 0}]
	mp.Info.UUID = "mpath-3624a9370aa"
	failed := mp
	failed.Info.EventNr += 3
	failed.Targets = []Target{{0, 2097152, "multipath", "0 0 1 1 round-robin 0 1 1 8:16 1"}}
	if why := mp.Changed(failed); why != "" {
		t.Errorf("path event read as a mapping change: %s", why)
	}
	other := failed
	other.Info.UUID = "mpath-3624a9370bb"
	if mp.Changed(other) == "" {
		t.Error("another LU under the map must count")
	}
}
