package zfs

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"syscall"
	"testing"
)

// unhex reads a layout written out by hand: hex digits, with spaces, newlines and
// "// comments" for the reader.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	var digits strings.Builder
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "//")
		digits.WriteString(strings.ReplaceAll(strings.TrimSpace(line), " ", ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The input of ZFS_IOC_SNAPSHOT for one snapshot, laid out from nvpair.c's XDR encoder.
func TestPackSnapshotInput(t *testing.T) {
	want := unhex(t, `
		01 01 00 00                   // header: XDR, little-endian host, reserved
		00000000 00000001             // nvlist: version 0, NV_UNIQUE_NAME
		00000048 00000030             // pair "snaps": encoded 72 bytes, native 24+24
		00000005 736e617073 000000    // name "snaps", padded to 4
		00000013 00000001             // DATA_TYPE_NVLIST, 1 element
		00000000 00000001             //   embedded nvlist: version, flags
		0000001c 00000018             //   pair "tp/a@s1": encoded 28, native 24
		00000007 74702f61407331 00    //   name, padded
		00000001 00000000             //   DATA_TYPE_BOOLEAN, no element
		00000000 00000000             //   end of the embedded list
		00000000 00000000             // end of the list
	`)
	got, err := new(NVList).List("snaps", new(NVList).Boolean("tp/a@s1")).Pack()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("packed\n%x\nwant\n%x", got, want)
	}
}

// The input of ZFS_IOC_CLONE.
func TestPackCloneInput(t *testing.T) {
	want := unhex(t, `
		01 01 00 00
		00000000 00000001
		00000028 00000020             // pair "origin": encoded 40, native align8(16+7) + align8(8)
		00000006 6f726967696e 0000    // name "origin"
		00000009 00000001             // DATA_TYPE_STRING, 1 element
		00000007 74702f61407331 00    // "tp/a@s1"
		00000000 00000000
	`)
	got, err := new(NVList).String("origin", "tp/a@s1").Pack()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("packed\n%x\nwant\n%x", got, want)
	}
}

// The input of ZFS_IOC_SEND_NEW for an incremental stream.
func TestPackSendInput(t *testing.T) {
	want := unhex(t, `
		01 01 00 00
		00000000 00000001
		0000001c 00000020             // pair "fd": encoded 28, native align8(16+3) + align8(4)
		00000002 6664 0000            // name "fd", padded
		00000005 00000001             // DATA_TYPE_INT32, 1 element
		00000007                      // fd 7
		00000028 00000028             // pair "fromsnap": encoded 40, native align8(16+9) + align8(8)
		00000008 66726f6d736e6170     // name "fromsnap"
		00000009 00000001             // DATA_TYPE_STRING, 1 element
		00000007 74702f61407331 00    // "tp/a@s1"
		00000000 00000000
	`)
	got, err := new(NVList).Int32("fd", 7).String("fromsnap", "tp/a@s1").Pack()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("packed\n%x\nwant\n%x", got, want)
	}
}

// The begin record of ZFS_IOC_RECV_NEW travels as a byte array: its length is the element
// count and the bytes follow as they are (xdr_opaque), padded to 4.
func TestPackByteArray(t *testing.T) {
	rec := make([]byte, BeginRecordSize)
	for i := range rec {
		rec[i] = byte(i)
	}
	for _, c := range []struct {
		value       []byte
		enc, native int
	}{
		{rec, 4 + 4 + 4 + 12 + 4 + 4 + 312, 32 + 312}, // "begin_record": 12-byte name
		{[]byte{1, 2, 3, 4, 5}, 4 + 4 + 4 + 12 + 4 + 4 + 8, 32 + 8},
	} {
		got, err := new(NVList).ByteArray("begin_record", c.value).Pack()
		if err != nil {
			t.Fatal(err)
		}
		pair := got[12:]
		if enc, nat := int(binary.BigEndian.Uint32(pair)), int(binary.BigEndian.Uint32(pair[4:])); enc != c.enc || nat != c.native {
			t.Errorf("%d bytes: sizes %d/%d, want %d/%d", len(c.value), enc, nat, c.enc, c.native)
		}
		head := pair[8+4+12:]
		if typ, nelem := binary.BigEndian.Uint32(head), binary.BigEndian.Uint32(head[4:]); typ != typeByteArray || int(nelem) != len(c.value) {
			t.Errorf("type %d nelem %d", typ, nelem)
		}
		val := head[8:]
		if !bytes.Equal(val[:len(c.value)], c.value) || len(val) != align4(len(c.value))+8 {
			t.Errorf("%d bytes: value % x…", len(c.value), val[:min(len(val), 8)])
		}
	}
}

// Receive refuses a begin record of the wrong size before any ioctl.
func TestReceiveChecksItsArguments(t *testing.T) {
	d := &Dev{}
	if err := d.Receive("tank/a@s", make([]byte, 10), nil); err == nil || !strings.Contains(err.Error(), "begin record of 10 bytes") {
		t.Errorf("short begin record: %v", err)
	}
	if err := d.Receive("tank/a", make([]byte, BeginRecordSize), nil); err == nil {
		t.Error("a dataset without snapshot name was accepted")
	}
	if err := d.Send("tank/a", "", nil); err == nil {
		t.Error("send of a dataset (not a snapshot) was accepted")
	}
}

// The native size the kernel allocates must match NVP_SIZE_CALC exactly, on both sides of
// each 8-byte boundary, or i_validate_nvpair refuses the list.
func TestDecodedSize(t *testing.T) {
	for _, c := range []struct {
		p    nvpair
		want int
	}{
		{nvpair{name: "a", typ: typeBoolean}, 24},        // 16+2 → 24
		{nvpair{name: "1234567", typ: typeBoolean}, 24},  // 16+8 → 24
		{nvpair{name: "12345678", typ: typeBoolean}, 32}, // 16+9 → 32
		{nvpair{name: "o", typ: typeString, str: "1234567"}, 32},
		{nvpair{name: "o", typ: typeString, str: "12345678"}, 40},
		{nvpair{name: "snaps", typ: typeNVList, list: new(NVList)}, 48},
	} {
		if got := c.p.decodedSize(); got != c.want {
			t.Errorf("%q type %d: decoded size %d, want %d", c.p.name, c.p.typ, got, c.want)
		}
	}
}

// encode_size must agree with the bytes actually written for each pair.
func TestEncodedSizeMatchesBytes(t *testing.T) {
	for _, l := range []*NVList{
		new(NVList).Boolean("x"),
		new(NVList).String("origin", "pool/with-a-longer/name@pvesnap-vm-101-disk-0-0a1b2c3d"),
		new(NVList).List("snaps", new(NVList).Boolean("a@b").Boolean("a@cc")).String("s", ""),
	} {
		b, err := l.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(b), 4+l.size(); got != want {
			t.Errorf("%d bytes packed, size() says %d", got, want)
		}
		if first := int(binary.BigEndian.Uint32(b[12:])); first != l.pairs[0].encodedSize() || len(l.pairs) == 1 && first != len(b)-4-16 {
			t.Errorf("first pair's encode_size %d, pairs total %d", first, len(b)-4-16)
		}
	}
}

func TestPackRefuses(t *testing.T) {
	for name, l := range map[string]*NVList{
		"duplicate": new(NVList).Boolean("a").Boolean("a"),
		"empty":     new(NVList).Boolean(""),
		"nul name":  new(NVList).Boolean("a\x00b"),
		"nul value": new(NVList).String("origin", "a@b\x00"),
		"nested":    new(NVList).List("snaps", new(NVList).Boolean("x").Boolean("x")),
		"nil list":  new(NVList).List("snaps", nil),
	} {
		if _, err := l.Pack(); err == nil {
			t.Errorf("%s: packed", name)
		}
	}
}

// The head of zfs_cmd_t: name at 0, then four little-endian 64-bit words from MAXPATHLEN.
func TestPutCmd(t *testing.T) {
	cmd := make([]byte, cmdSize)
	if err := putCmd(cmd, "tank", 0x1122334455667788, 72, 0xaabbccdd00000000, outSize); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, cmdSize)
	copy(want, "tank")
	copy(want[4096:], unhex(t, `
		8877665544332211 4800000000000000   // zc_nvlist_src, zc_nvlist_src_size
		00000000ddccbbaa 0000020000000000   // zc_nvlist_dst, zc_nvlist_dst_size (128 KiB)
	`))
	if !bytes.Equal(cmd, want) {
		t.Fatalf("zfs_cmd head % x", cmd[4090:4130])
	}
	if err := putCmd(make([]byte, 100), "tank", 0, 0, 0, 0); err == nil {
		t.Error("a short buffer was accepted")
	}
	if err := putCmd(cmd, strings.Repeat("a", 256), 0, 0, 0, 0); err == nil {
		t.Error("a 256-byte name was accepted")
	}
}

func TestSnapshotPool(t *testing.T) {
	for in, want := range map[string]string{"rpool/data/vm-1-disk-0@s": "rpool", "tank@s": "tank"} {
		if got, err := snapshotPool(in); err != nil || got != want {
			t.Errorf("%s: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"tank", "tank@", "@s", "a@b@c"} {
		if _, err := snapshotPool(bad); err == nil {
			t.Errorf("%s accepted as a snapshot name", bad)
		}
	}
}

func TestErrors(t *testing.T) {
	for _, c := range []struct {
		errno            syscall.Errno
		text             string
		notFound, exists bool
		unsupported      bool
	}{
		{syscall.ENOENT, "zfs clone tank/b: dataset does not exist (ENOENT)", true, false, false},
		{syscall.EEXIST, "zfs clone tank/b: dataset already exists (EEXIST)", false, true, false},
		{syscall.ENOTTY, "zfs clone tank/b: the ZFS kernel module does not support this ioctl", false, false, true},
		{1029, "zfs clone tank/b: the ZFS kernel module does not support this ioctl", false, false, true},
		{1033, "zfs clone tank/b: parent is not a filesystem", false, false, false},
		{1060, "zfs clone tank/b: ZFS error 1060", false, false, false},
		{1040, "zfs clone tank/b: the stream ended early (truncated)", false, false, false},
		{syscall.EIO, "zfs clone tank/b: input/output error", false, false, false},
	} {
		e := &Error{Op: "clone", Dataset: "tank/b", Errno: c.errno}
		if e.Error() != c.text {
			t.Errorf("%d: %q, want %q", c.errno, e.Error(), c.text)
		}
		if errors.Is(e, ErrNotFound) != c.notFound || errors.Is(e, ErrExists) != c.exists || errors.Is(e, ErrUnsupported) != c.unsupported {
			t.Errorf("%d: classified wrongly", c.errno)
		}
		if !errors.Is(e, c.errno) {
			t.Errorf("%d: errno not unwrapped", c.errno)
		}
	}
	// The same errno means something else for a receive or a destroy.
	for errno, want := range map[syscall.Errno]string{
		syscall.ETXTBSY: "zfs receive tank/a@m: destination has been modified since its most recent snapshot (ETXTBSY)",
		syscall.ENODEV:  "zfs receive tank/a@m: the destination's most recent snapshot does not match the incremental source (ENODEV)",
		syscall.EBADE:   "zfs receive tank/a@m: invalid stream (checksum mismatch) (ECKSUM)",
	} {
		if e := (&Error{Op: "receive", Dataset: "tank/a@m", Errno: errno}); e.Error() != want {
			t.Errorf("%q, want %q", e.Error(), want)
		}
	}
	e := &Error{Op: "destroy", Dataset: "tank/a@s", Errno: syscall.EEXIST}
	if want := "zfs destroy tank/a@s: snapshot has dependent clones (EEXIST)"; e.Error() != want {
		t.Errorf("%q, want %q", e.Error(), want)
	}
}

// Only module versions of a checked series take the ioctl path.
func TestCheckedVersions(t *testing.T) {
	for v, want := range map[string]bool{"2.3.2-2~bpo12+2": true, "2.3.9-1": true, "2.3.4": true,
		"2.4.0-1": false, "2.2.7-pve2": false, "2.30.1": false, "": false, "2.3": false} {
		if got, why := Checked(v); got != want || (!got && !strings.Contains(why, "were not checked")) {
			t.Errorf("%q: %v %q, want %v", v, got, why, want)
		}
	}
}
