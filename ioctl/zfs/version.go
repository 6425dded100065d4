package zfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CheckedSeries are the OpenZFS release series whose ioctl numbers and zfs_cmd_t head this
// package was checked against, on a real module in the lab: 2.3.2 (Debian 12 backports) and
// 2.3.9 (Debian 13). OpenZFS appends new ioctls and keeps zfs_cmd_t's head within a series;
// a module of another series may not, so it is used through the zfs command instead.
var CheckedSeries = []string{"2.3"}

// ModuleVersion reads the loaded module's version ("2.3.9-1") from sysfs (sys is /sys).
func ModuleVersion(sys string) (string, error) {
	b, err := os.ReadFile(filepath.Join(sys, "module", "zfs", "version"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Checked reports whether a module version ("2.3.9-1", "2.3.2-2~bpo12+2") is of a checked
// series, and says why not.
func Checked(version string) (bool, string) {
	for _, s := range CheckedSeries {
		if rest, ok := strings.CutPrefix(version, s+"."); ok && rest != "" && rest[0] >= '0' && rest[0] <= '9' {
			return true, ""
		}
	}
	return false, fmt.Sprintf("OpenZFS module %s: its ioctl layouts were not checked (checked: %s.x)", version, strings.Join(CheckedSeries, ".x, "))
}
