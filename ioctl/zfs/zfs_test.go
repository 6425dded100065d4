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
		{1040, "zfs clone tank/b: ZFS error 1040", false, false, false},
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
	// The same errno means something else for a destroy.
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
