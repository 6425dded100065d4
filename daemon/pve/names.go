// Package pve reads the Proxmox VE facts pvesnap needs from the cluster filesystem: names and
// their validation, storage.cfg and other section-config files, VM configs, .members.
package pve

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

var (
	nodeRe    = regexp.MustCompile(`^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])$`)
	storageRe = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)
	// diskNameRe is the volume names pvesnap itself operates on: PVE's "vm-<vmid>-…" and
	// "base-<vmid>-…", restricted to characters that are valid in an LVM LV name and in a ZFS
	// dataset name alike, never starting with '-'. Anything else is left to pveproxy. The
	// length is bounded by ZFS's 255; each storage's own limit is checked where it applies.
	diskNameRe = regexp.MustCompile(`^(vm|base)-([1-9][0-9]{2,8})-([A-Za-z0-9][A-Za-z0-9._-]{0,239})$`)
	tokenIDRe  = regexp.MustCompile(`^[^\s!:]+@[A-Za-z][A-Za-z0-9.\-_]+!([A-Za-z][A-Za-z0-9.\-_]+)$`)
	userIDRe   = regexp.MustCompile(`^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$`)
	// pvesnapNameRe names what pvesnap itself creates on arrays and in LVM: never confused with
	// anything else, so cleanup can only ever touch its own objects.
	pvesnapNameRe = regexp.MustCompile(`^pvesnap[-_][a-z0-9][a-z0-9-]{0,40}$`)
)

// CheckNode validates a node name with PVE's message.
func CheckNode(s string) error {
	if len(s) > 253 || !nodeRe.MatchString(s) {
		return fmt.Errorf("value does not look like a valid node name")
	}
	return nil
}

// ValidAddress is PVE's "address" format (a storage's server): an IP address or a DNS name.
func ValidAddress(s string) bool {
	return net.ParseIP(s) != nil || (len(s) <= 253 && nodeRe.MatchString(s))
}

// CheckStorageID validates a storage id with PVE's message.
func CheckStorageID(s string) error {
	if len(s) > 64 || !storageRe.MatchString(s) {
		return fmt.Errorf("storage ID '%s' contains illegal characters", s)
	}
	return nil
}

// CheckVMID validates a VM id (PVE: 100..999999999).
func CheckVMID(n int64) error {
	if n < 100 || n > 999999999 {
		return fmt.Errorf("invalid VMID %d: must be between 100 and 999999999", n)
	}
	return nil
}

// DiskName is a parsed "vm-<vmid>-<rest>" or "base-<vmid>-<rest>" volume name.
type DiskName struct {
	Name string
	Base bool
	VMID int64
	Rest string
}

// ParseDiskName accepts only the volume names pvesnap operates on.
func ParseDiskName(s string) (DiskName, error) {
	m := diskNameRe.FindStringSubmatch(s)
	if m == nil {
		return DiskName{}, fmt.Errorf("volume name '%s' is not of the form vm-<vmid>-<name>", s)
	}
	id, _ := strconv.ParseInt(m[2], 10, 64)
	return DiskName{Name: s, Base: m[1] == "base", VMID: id, Rest: m[3]}, nil
}

// Volid is "<storage>:<volname>".
type Volid struct {
	Storage string
	Volume  string
}

func (v Volid) String() string { return v.Storage + ":" + v.Volume }

// ParseVolid splits a volid; the storage must be valid and the volume non-empty.
func ParseVolid(s string) (Volid, error) {
	sid, vol, ok := strings.Cut(s, ":")
	if !ok || vol == "" {
		return Volid{}, fmt.Errorf("unable to parse volume ID '%s'", s)
	}
	if err := CheckStorageID(sid); err != nil {
		return Volid{}, err
	}
	return Volid{Storage: sid, Volume: vol}, nil
}

// SplitTokenID splits "user@realm!token" into its user and token name.
func SplitTokenID(s string) (user, token string, ok bool) {
	m := tokenIDRe.FindStringSubmatch(s)
	if m == nil {
		return "", "", false
	}
	return s[:len(s)-len(m[1])-1], m[1], true
}

// ValidUserID reports whether s looks like "user@realm".
func ValidUserID(s string) bool { return len(s) <= 64 && userIDRe.MatchString(s) }

// ValidPvesnapName reports whether s is a name pvesnap made (pvesnap-<job>, pvesnap_<job>).
func ValidPvesnapName(s string) bool { return pvesnapNameRe.MatchString(s) }
