package pure

import (
	"regexp"
	"strings"
)

// How a FlashArray volume's serial shows on a Linux host (research C §4):
//
//	SCSI  VPD 0x83 NAA 6 24a937 0 <serial>  → wwid "naa.624a9370<serial>", by-id wwn-0x624a9370…,
//	      dm-multipath uuid "mpath-3624a9370<serial>"
//	NVMe  NGUID 00 <serial[0:14]> 24a937 <serial[14:24]> → wwid "eui.00…24a937…"
//
// All hex on the host is lower case; serials are upper case on the array.

// PureOUI is Pure Storage's IEEE company id.
const PureOUI = "24a937"

var (
	naaRe   = regexp.MustCompile(`^(?:naa\.|3|0x)?624a9370([0-9a-fA-F]{24})$`)
	nguidRe = regexp.MustCompile(`^(?:eui\.)?00([0-9a-fA-F]{14})24a937([0-9a-fA-F]{10})$`)
)

// NAA is the 16-byte NAA designator (hex) of the volume with serial s.
func NAA(serial string) string { return "624a9370" + strings.ToLower(serial) }

// NGUID is the NVMe namespace GUID (hex) of the volume with serial s.
func NGUID(serial string) string {
	s := strings.ToLower(serial)
	if len(s) != 24 {
		return ""
	}
	return "00" + s[:14] + PureOUI + s[14:]
}

// SerialFromWWID extracts a FlashArray serial from a Linux wwid, NAA, multipath WWID or NGUID
// ("naa.624a9370…", "3624a9370…", "eui.00…24a937…"); ok is false for other devices.
func SerialFromWWID(id string) (serial string, ok bool) {
	id = strings.TrimSpace(id)
	if m := naaRe.FindStringSubmatch(id); m != nil {
		return strings.ToUpper(m[1]), true
	}
	if m := nguidRe.FindStringSubmatch(id); m != nil {
		return strings.ToUpper(m[1] + m[2]), true
	}
	return "", false
}
