package zfs

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// NVList is a name-value list as the ZFS ioctls take them, packed in libnvpair's XDR
// encoding (NV_ENCODE_XDR). libzfs_core packs natively, but the kernel unpacks either
// (nvlist_unpack reads the encoding from the header) and XDR, unlike the native form, does
// not depend on C struct padding. Only the types pvesnap's calls need are here.
//
// Packed layout (module/nvpair/nvpair.c, all integers 4-byte big-endian XDR units):
//
//	header   encoding=1 (XDR), endian=1 (little: the host's; XDR ignores it), 0, 0
//	nvlist   version=0, nvflag=1 (NV_UNIQUE_NAME), pairs…, 0, 0
//	pair     encode_size, decode_size, name (length + bytes padded to 4), type, nelem, value
//
// decode_size is the size the kernel allocates for the unpacked pair and must equal the
// native NVP_SIZE_CALC(name length + 1, value size) exactly (i_validate_nvpair refuses the
// list otherwise). An embedded nvlist value is an nvlist as above, without the header.
type NVList struct {
	pairs []nvpair
}

type nvpair struct {
	name  string
	typ   int32
	str   string
	list  *NVList
	i32   int32
	bytes []byte
}

// Data types (enum data_type_t in sys/nvpair.h).
const (
	typeBoolean   = 1  // DATA_TYPE_BOOLEAN: the name alone, no value
	typeInt32     = 5  // DATA_TYPE_INT32
	typeString    = 9  // DATA_TYPE_STRING
	typeByteArray = 10 // DATA_TYPE_BYTE_ARRAY
	typeNVList    = 19 // DATA_TYPE_NVLIST
)

const (
	encodeXDR    = 1
	hostEndian   = 1   // little-endian
	nvVersion    = 0   // NV_VERSION
	nvUniqueName = 0x1 // NV_UNIQUE_NAME
	nvpairSize   = 16  // sizeof(nvpair_t): size, name_sz, reserve, value_elem, type
	nvlistSize   = 24  // sizeof(nvlist_t): the native value of an embedded nvlist
	maxNameLen   = 4095
)

// Boolean adds a name with no value (how the ioctls take sets, e.g. "snaps").
func (l *NVList) Boolean(name string) *NVList {
	l.pairs = append(l.pairs, nvpair{name: name, typ: typeBoolean})
	return l
}

// String adds a string value.
func (l *NVList) String(name, value string) *NVList {
	l.pairs = append(l.pairs, nvpair{name: name, typ: typeString, str: value})
	return l
}

// Int32 adds a 32-bit integer (file descriptors: "fd", "input_fd").
func (l *NVList) Int32(name string, value int32) *NVList {
	l.pairs = append(l.pairs, nvpair{name: name, typ: typeInt32, i32: value})
	return l
}

// ByteArray adds bytes (a receive's "begin_record").
func (l *NVList) ByteArray(name string, value []byte) *NVList {
	l.pairs = append(l.pairs, nvpair{name: name, typ: typeByteArray, bytes: value})
	return l
}

// List adds an embedded nvlist.
func (l *NVList) List(name string, value *NVList) *NVList {
	l.pairs = append(l.pairs, nvpair{name: name, typ: typeNVList, list: value})
	return l
}

// Pack encodes the list. It refuses what the kernel would: duplicate names in one list
// (NV_UNIQUE_NAME), empty names, and names or strings with a NUL byte.
func (l *NVList) Pack() ([]byte, error) {
	if err := l.check(0); err != nil {
		return nil, err
	}
	b := []byte{encodeXDR, hostEndian, 0, 0}
	return l.appendXDR(b), nil
}

func (l *NVList) check(depth int) error {
	if depth > 20 { // nvpair_max_recursion
		return fmt.Errorf("nvlist nested more than 20 deep")
	}
	seen := map[string]bool{}
	for _, p := range l.pairs {
		if p.name == "" || len(p.name) > maxNameLen || strings.IndexByte(p.name, 0) >= 0 {
			return fmt.Errorf("invalid nvpair name %q", p.name)
		}
		if seen[p.name] {
			return fmt.Errorf("duplicate nvpair name %q", p.name)
		}
		seen[p.name] = true
		switch p.typ {
		case typeString:
			if strings.IndexByte(p.str, 0) >= 0 {
				return fmt.Errorf("nvpair %q: string with a NUL byte", p.name)
			}
		case typeNVList:
			if p.list == nil {
				return fmt.Errorf("nvpair %q: nil nvlist", p.name)
			}
			if err := p.list.check(depth + 1); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *NVList) appendXDR(b []byte) []byte {
	b = xdrInt(b, nvVersion)
	b = xdrInt(b, nvUniqueName)
	for _, p := range l.pairs {
		b = xdrInt(b, int32(p.encodedSize()))
		b = xdrInt(b, int32(p.decodedSize()))
		b = xdrString(b, p.name)
		b = xdrInt(b, p.typ)
		switch p.typ {
		case typeBoolean:
			b = xdrInt(b, 0) // nelem 0: no value follows
		case typeInt32:
			b = xdrInt(b, 1)
			b = xdrInt(b, p.i32)
		case typeString:
			b = xdrInt(b, 1)
			b = xdrString(b, p.str)
		case typeByteArray:
			// xdr_opaque: the bytes padded to 4; their count is nelem.
			b = xdrInt(b, int32(len(p.bytes)))
			b = append(b, p.bytes...)
			for i := len(p.bytes); i%4 != 0; i++ {
				b = append(b, 0)
			}
		case typeNVList:
			b = xdrInt(b, 1)
			b = p.list.appendXDR(b)
		}
	}
	return xdrInt(xdrInt(b, 0), 0) // end of list: encode_size 0, decode_size 0
}

// size is the list's XDR size without the 4-byte header (nvs_xdr_nvlist's GETSIZE:
// version, nvflag and the 8-byte terminator, plus the pairs).
func (l *NVList) size() int {
	n := 2*4 + 8
	for _, p := range l.pairs {
		n += p.encodedSize()
	}
	return n
}

// encodedSize is nvs_xdr_nvp_size: both sizes, the name, type and nelem, then the value.
func (p nvpair) encodedSize() int {
	n := 4 + 4 + 4 + align4(len(p.name)) + 4 + 4
	switch p.typ {
	case typeInt32:
		n += 4 // the minimum XDR unit
	case typeString:
		n += 4 + align4(len(p.str))
	case typeByteArray:
		n += align4(len(p.bytes))
	case typeNVList:
		n += p.list.size()
	}
	return n
}

// decodedSize is the native nvpair's size, NVP_SIZE_CALC(name_sz, value_sz).
func (p nvpair) decodedSize() int {
	value := 0
	switch p.typ {
	case typeInt32:
		value = 4
	case typeString:
		value = len(p.str) + 1
	case typeByteArray:
		value = len(p.bytes)
	case typeNVList:
		value = nvlistSize
	}
	return align8(nvpairSize+len(p.name)+1) + align8(value)
}

func align4(n int) int { return (n + 3) &^ 3 }
func align8(n int) int { return (n + 7) &^ 7 }

func xdrInt(b []byte, v int32) []byte { return binary.BigEndian.AppendUint32(b, uint32(v)) }

func xdrString(b []byte, s string) []byte {
	b = xdrInt(b, int32(len(s)))
	b = append(b, s...)
	for i := len(s); i%4 != 0; i++ {
		b = append(b, 0)
	}
	return b
}
