package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/pvesnap/pvesnap/ioctl/dm"
)

// LU is a logical unit (or NVMe namespace) with every path the kernel has to it: what the
// libraries and ioctls are asked about, once, through its first path.
type LU struct {
	Key   string   // WWID, or the device number without one
	Dev   dm.Dev   // the path asked
	Paths []dm.Dev // every path (sdb, sdc), Dev first; one for NVMe (the namespace head)
	// Multipath is the dm-multipath map over the paths (zero without one).
	Multipath dm.Dev
}

// Under lists the logical units a block device is built on, through device-mapper slaves and
// partitions as sysfs shows them, whatever the layers do with the bytes (a PV on dm-crypt has
// its disk's health too); multipath paths are gathered under their LU. An NVMe namespace head
// is the LU itself: native multipath keeps its paths to the kernel.
func Under(roots Roots, d dm.Dev) ([]LU, error) {
	if _, err := os.Stat(roots.sys("dev", "block", d.String())); err != nil {
		return nil, fmt.Errorf("device %s not in sysfs: %w", d, err)
	}
	var leaves []dm.Dev
	seen := map[dm.Dev]bool{}
	var walk func(d dm.Dev, depth int)
	walk = func(d dm.Dev, depth int) {
		if depth > 16 || seen[d] {
			return
		}
		seen[d] = true
		below := belowOne(roots, d)
		if len(below) == 0 {
			leaves = append(leaves, d)
		}
		for _, u := range below {
			walk(u, depth+1)
		}
	}
	walk(d, 0)
	return groupLUs(roots, leaves), nil
}

// belowOne lists what one device is built on: its device-mapper slaves, or a partition's disk.
func belowOne(roots Roots, d dm.Dev) []dm.Dev {
	base := roots.sys("dev", "block", d.String())
	var names []string
	if ents, err := os.ReadDir(filepath.Join(base, "slaves")); err == nil {
		for _, e := range ents {
			names = append(names, readTrim(roots.sys("class", "block", e.Name(), "dev")))
		}
	}
	if readTrim(filepath.Join(base, "partition")) != "" {
		if link, err := filepath.EvalSymlinks(base); err == nil {
			names = append(names, readTrim(filepath.Join(filepath.Dir(link), "dev")))
		}
	}
	var out []dm.Dev
	for _, s := range names {
		if u, err := dm.ParseDev(s); err == nil {
			out = append(out, u)
		}
	}
	return out
}

// below lists the devices a device is built on: device-mapper slaves, a partition's disk,
// recursively.
func below(roots Roots, d dm.Dev) map[dm.Dev]bool {
	out := map[dm.Dev]bool{}
	var walk func(d dm.Dev, depth int)
	walk = func(d dm.Dev, depth int) {
		if depth > 16 {
			return
		}
		for _, u := range belowOne(roots, d) {
			if !out[u] {
				out[u] = true
				walk(u, depth+1)
			}
		}
	}
	walk(d, 0)
	return out
}

// groupLUs gathers paths to one LU (same WWID) and finds the multipath map over them.
func groupLUs(roots Roots, devs []dm.Dev) []LU {
	var out []LU
	at := map[string]int{}
	for _, d := range devs {
		key := luKey(roots, d)
		if i, ok := at[key]; ok {
			out[i].Paths = append(out[i].Paths, d)
			continue
		}
		at[key] = len(out)
		out = append(out, LU{Key: key, Dev: d, Paths: []dm.Dev{d}, Multipath: multipathOver(roots, d)})
	}
	return out
}

// multipathOver finds the dm-multipath map holding a path (its dm uuid starts "mpath-").
func multipathOver(roots Roots, d dm.Dev) dm.Dev {
	hs, _ := os.ReadDir(roots.sys("dev", "block", d.String(), "holders"))
	for _, h := range hs {
		if strings.HasPrefix(readTrim(roots.sys("class", "block", h.Name(), "dm", "uuid")), "mpath-") {
			if m, err := dm.ParseDev(readTrim(roots.sys("class", "block", h.Name(), "dev"))); err == nil {
				return m
			}
		}
	}
	return dm.Dev{}
}

// name is a device's kernel name (sdb), or its number when sysfs does not know it.
func (r Roots) name(d dm.Dev) string {
	if link, err := filepath.EvalSymlinks(r.sys("dev", "block", d.String())); err == nil {
		return filepath.Base(link)
	}
	return d.String()
}

// mapName is a device-mapper device's name (mpatha), or its kernel name.
func (r Roots) mapName(d dm.Dev) string {
	if n := readTrim(r.sys("dev", "block", d.String(), "dm", "name")); n != "" {
		return n
	}
	return r.name(d)
}

// Describe identifies an LU through its first path and notes its paths.
func (id *Identifier) Describe(ctx context.Context, l LU) *Device {
	d := id.Identify(ctx, l.Dev)
	for _, p := range l.Paths {
		d.Paths = append(d.Paths, id.Roots.name(p))
	}
	if l.Multipath != (dm.Dev{}) {
		d.Multipath = id.Roots.mapName(l.Multipath)
	}
	return d
}

var nvmePathRe = regexp.MustCompile(`^nvme[0-9]+c[0-9]+n[0-9]+$`)

// List identifies every logical unit of the node once: SCSI and SATA disks (the paths to one
// LU together) and NVMe namespace heads.
func List(ctx context.Context, roots Roots) ([]*Device, error) {
	ents, err := os.ReadDir(roots.sys("block"))
	if err != nil {
		return nil, err
	}
	var devs []dm.Dev
	for _, e := range ents {
		name := e.Name()
		// nvmeXcYnZ is a hidden path of a native-multipath head (sdc is a disk).
		if !(strings.HasPrefix(name, "sd") || strings.HasPrefix(name, "nvme")) || nvmePathRe.MatchString(name) {
			continue
		}
		d, err := dm.ParseDev(readTrim(roots.sys("block", name, "dev")))
		if err != nil {
			continue
		}
		devs = append(devs, d)
	}
	sort.Slice(devs, func(i, j int) bool { return roots.name(devs[i]) < roots.name(devs[j]) })
	id := &Identifier{Roots: roots}
	var out []*Device
	for _, l := range groupLUs(roots, devs) {
		out = append(out, id.Describe(ctx, l))
	}
	return out, nil
}
