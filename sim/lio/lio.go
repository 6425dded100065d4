// Package lio drives the Linux SCSI target (LIO) through configfs, without targetcli:
// fileio and iblock backstores that report a FlashArray volume's identity, and tcm_loop
// targets whose LUNs appear and disappear on the local SCSI bus like array connections. The
// lab's tests and the FlashArray simulator's LIO data plane use it; it needs root and the
// target modules, so it runs inside the lab guest. It starts no programs: whoever sets the
// machine up loads Modules first (modprobe), the rest is configfs and one mount(2).
package lio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LIO drives the Linux SCSI target through configfs (no targetcli).
type LIO struct {
	Root string // /sys/kernel/config/target
}

// Modules are the kernel modules the LIO helpers and the lab's SCSI tests need loaded: the
// target core with its file and loopback fabrics, sd and sg for the LUNs on the host side, and
// device-mapper with multipath. The target core asks for the backstore and fabric modules it
// lacks itself; loading them up front only makes failures show early.
var Modules = []string{"configfs", "target_core_mod", "target_core_file", "tcm_loop", "sd_mod", "sg", "dm_mod", "dm_multipath"}

// Root is where the target core appears in configfs.
const Root = "/sys/kernel/config/target"

// Open mounts configfs when it is not mounted yet and returns the target core's tree; the
// modules must be loaded (see Modules).
func Open() (*LIO, error) {
	if _, err := os.Stat(Root); err == nil {
		return &LIO{Root: Root}, nil
	}
	if _, err := os.Stat("/sys/kernel/config"); err != nil {
		return nil, fmt.Errorf("no /sys/kernel/config: load the configfs module first (%v)", err)
	}
	if err := unix.Mount("configfs", "/sys/kernel/config", "configfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("mount configfs on /sys/kernel/config: %w", err)
	}
	if _, err := os.Stat(Root); err != nil {
		return nil, fmt.Errorf("%s is missing after mounting configfs: load target_core_mod first (%v)", Root, err)
	}
	return &LIO{Root: Root}, nil
}

func write(p, v string) error {
	if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %q to %s: %w", v, p, err)
	}
	return nil
}

// LUN is a fileio backstore.
type LUN struct {
	Name   string
	File   string
	Size   int64
	Serial string // what VPD 0x80 returns
	NAA    string // what VPD 0x83 returns (hex), derived by LIO from the serial's hex digits
	path   string
}

// PureNAA is the NAA a FlashArray volume with serial s reports.
func PureNAA(serial string) string { return "624a9370" + strings.ToLower(serial) }

// CreateLUN makes a fileio backstore of size bytes backed by file (created sparse). With a
// 24-hex-digit Pure serial, company_id 24a937 and serial "0"+serial make LIO report exactly
// the NAA a FlashArray volume has (624a9370 + serial); VPD 0x80 then reads "0"+serial.
func (l *LIO) CreateLUN(name, file string, size int64, pureSerial string) (*LUN, error) {
	p := filepath.Join(l.Root, "core", "fileio_0", name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		f, err := os.Create(file)
		if err != nil {
			return nil, err
		}
		f.Truncate(size)
		f.Close()
	}
	if err := write(filepath.Join(p, "control"), fmt.Sprintf("fd_dev_name=%s,fd_dev_size=%d,fd_buffered_io=1", file, size)); err != nil {
		return nil, err
	}
	serial := strings.ToUpper(pureSerial)
	if err := write(filepath.Join(p, "wwn", "company_id"), "0x24a937"); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(p, "wwn", "vpd_unit_serial"), "0"+serial); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(p, "enable"), "1"); err != nil {
		return nil, err
	}
	return &LUN{Name: name, File: file, Size: size, Serial: "0" + serial, NAA: PureNAA(serial), path: p}, nil
}

// Target is a tcm_loop target with one I_T nexus: a host-side SCSI host whose LUNs are the
// ones linked into it. Two targets stand for two arrays: LIO's copy manager only finds LUNs
// of the same session, so XCOPY between them fails like a cross-array copy.
type Target struct {
	l    *LIO
	WWN  string
	path string
	luns map[string]int
	Host string // scsi_host name (host3)
}

// CreateTarget makes a loopback target (naa.5001405<9 hex digits>) with its nexus.
func (l *LIO) CreateTarget(id int) (*Target, error) {
	wwn := fmt.Sprintf("naa.5001405%09x", id)
	p := filepath.Join(l.Root, "loopback", wwn, "tpgt_1")
	// tcm_loop adds the SCSI host when the WWN's directory is made: list the hosts before.
	before := hosts()
	if _, err := os.Stat(p); err == nil {
		return nil, fmt.Errorf("loopback target %d (%s) exists already: another test's, still configured", id, wwn)
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(p, "nexus"), fmt.Sprintf("naa.5001405%09x", id+0x800000)); err != nil {
		return nil, err
	}
	t := &Target{l: l, WWN: wwn, path: p, luns: map[string]int{}}
	for i := 0; i < 250 && t.Host == ""; i++ {
		for _, h := range hosts() {
			if !slices.Contains(before, h) {
				t.Host = h
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return t, nil
}

func hosts() []string {
	ents, _ := os.ReadDir("/sys/class/scsi_host")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// Map exports lun as LUN number n; the kernel adds the sd device at once (tcm_loop scans on
// link). It returns the block device once it shows up: the one behind this target's SCSI
// host, so that a LUN mapped through two targets gives its two paths.
func (t *Target) Map(lun *LUN, n int) (string, error) {
	d := filepath.Join(t.path, "lun", fmt.Sprintf("lun_%d", n))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	if err := os.Symlink(lun.path, filepath.Join(d, "port")); err != nil {
		return "", err
	}
	t.luns[lun.Name] = n
	if t.Host == "" {
		return WaitForNAA(lun.NAA, 10*time.Second)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if d := findByNAAOn(lun.NAA, t.Host); d != "" {
			return d, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no device with NAA %s on %s after 10s", lun.NAA, t.Host)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// findByNAAOn returns /dev/sdX with wwid naa.<naa> behind SCSI host host (host3), or "".
func findByNAAOn(naa, host string) string {
	ms, _ := filepath.Glob("/sys/block/sd*/device/wwid")
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err != nil || strings.TrimSpace(string(b)) != "naa."+naa {
			continue
		}
		if real, err := filepath.EvalSymlinks(filepath.Dir(m)); err == nil && strings.Contains(real, "/"+host+"/") {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(m)))
		}
	}
	return ""
}

// Unmap removes the export: the sd device disappears, as when a host connection is deleted.
func (t *Target) Unmap(lun *LUN) error {
	n, ok := t.luns[lun.Name]
	if !ok {
		return fmt.Errorf("LUN %s not mapped to %s", lun.Name, t.WWN)
	}
	d := filepath.Join(t.path, "lun", fmt.Sprintf("lun_%d", n))
	if err := os.Remove(filepath.Join(d, "port")); err != nil {
		return err
	}
	delete(t.luns, lun.Name)
	return os.Remove(d)
}

// Delete removes the target: its remaining LUN mappings, its portal group (which drops the
// nexus and the SCSI host) and the target itself.
func (t *Target) Delete() error {
	luns, _ := filepath.Glob(filepath.Join(t.path, "lun", "lun_*"))
	for _, d := range luns {
		os.Remove(filepath.Join(d, "port"))
		if err := os.Remove(d); err != nil {
			return err
		}
	}
	if err := os.Remove(t.path); err != nil {
		return fmt.Errorf("removing %s: %w", t.path, err)
	}
	return os.Remove(filepath.Dir(t.path))
}

// Delete removes the backstore (it must be unmapped everywhere).
func (l *LIO) Delete(lun *LUN) error { return os.Remove(lun.path) }

// WaitForNAA polls sysfs for the sd device whose wwid is naa.<naa>.
func WaitForNAA(naa string, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for {
		if d := FindByNAA(naa); d != "" {
			return d, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no device with NAA %s after %s", naa, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FindByNAA returns /dev/sdX with wwid naa.<naa>, or "".
func FindByNAA(naa string) string {
	ms, _ := filepath.Glob("/sys/block/sd*/device/wwid")
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err == nil && strings.TrimSpace(string(b)) == "naa."+naa {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(m)))
		}
	}
	return ""
}

// CreateBlockLUN makes an iblock backstore on a block device (faster than fileio under TCG).
func (l *LIO) CreateBlockLUN(name, dev string, pureSerial string) (*LUN, error) {
	p := filepath.Join(l.Root, "core", "iblock_0", name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(p, "control"), "udev_path="+dev); err != nil {
		return nil, err
	}
	serial := strings.ToUpper(pureSerial)
	if err := write(filepath.Join(p, "wwn", "company_id"), "0x24a937"); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(p, "wwn", "vpd_unit_serial"), "0"+serial); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(p, "enable"), "1"); err != nil {
		return nil, err
	}
	return &LUN{Name: name, File: dev, Serial: "0" + serial, NAA: PureNAA(serial), path: p}, nil
}

// ISCSITarget is an iSCSI target of LIO with one portal group (TPG 1) listening on one or more
// portals. Initiators see, each through its ACL, only the LUNs mapped to it, under the LUN
// numbers of those mappings; as on a real array, an initiator finds a new mapping only when
// it rescans, and keeps its devices of a removed one until it deletes them.
type ISCSITarget struct {
	l    *LIO
	IQN  string
	path string         // …/iscsi/<iqn>/tpgt_1
	luns map[string]int // backstore name -> TPG LUN index
	next int
}

// ISCSIModules are the modules of LIO's iSCSI target (the initiator's are open-iscsi's).
var ISCSIModules = []string{"iscsi_target_mod"}

// CreateISCSITarget makes target iqn listening on portals ("10.200.0.1:3260"), with access
// controlled by ACLs (no demo mode, no authentication).
func (l *LIO) CreateISCSITarget(iqn string, portals ...string) (*ISCSITarget, error) {
	p := filepath.Join(l.Root, "iscsi", iqn, "tpgt_1")
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, err
	}
	t := &ISCSITarget{l: l, IQN: iqn, path: p, luns: map[string]int{}}
	for _, np := range portals {
		if err := os.Mkdir(filepath.Join(p, "np", np), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			t.Delete()
			return nil, fmt.Errorf("iSCSI portal %s: %w", np, err)
		}
	}
	for k, v := range map[string]string{"authentication": "0", "generate_node_acls": "0", "demo_mode_write_protect": "0"} {
		if err := write(filepath.Join(p, "attrib", k), v); err != nil {
			t.Delete()
			return nil, err
		}
	}
	if err := write(filepath.Join(p, "enable"), "1"); err != nil {
		t.Delete()
		return nil, err
	}
	return t, nil
}

// ACL lets initiator log in; the LUNs mapped to it are what it sees.
func (t *ISCSITarget) ACL(initiator string) (*ACL, error) {
	if err := os.MkdirAll(filepath.Join(t.path, "acls", initiator), 0o755); err != nil {
		return nil, err
	}
	return &ACL{t: t, Initiator: initiator}, nil
}

// ACL is one initiator's view of an iSCSI target.
type ACL struct {
	t         *ISCSITarget
	Initiator string
}

// Map exports lun to the initiator as LUN n (nothing appears on the initiator until it
// rescans).
func (a *ACL) Map(lun *LUN, n int) error {
	t := a.t
	idx, ok := t.luns[lun.Name]
	if !ok {
		idx = t.next
		d := filepath.Join(t.path, "lun", fmt.Sprintf("lun_%d", idx))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Symlink(lun.path, filepath.Join(d, "port")); err != nil {
			os.Remove(d)
			return err
		}
		t.luns[lun.Name] = idx
		t.next++
	}
	m := filepath.Join(t.path, "acls", a.Initiator, fmt.Sprintf("lun_%d", n))
	if err := os.MkdirAll(m, 0o755); err != nil {
		return err
	}
	if err := os.Symlink(filepath.Join(t.path, "lun", fmt.Sprintf("lun_%d", idx)), filepath.Join(m, "lun")); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// Unmap withdraws lun from the initiator; the TPG's LUN goes when no ACL maps it any more.
// The initiator's devices of it stay until the initiator deletes them.
func (a *ACL) Unmap(lun *LUN) error {
	t := a.t
	idx, ok := t.luns[lun.Name]
	if !ok {
		return fmt.Errorf("LUN %s not exported by %s", lun.Name, t.IQN)
	}
	target := filepath.Join(t.path, "lun", fmt.Sprintf("lun_%d", idx))
	mapped, _ := filepath.Glob(filepath.Join(t.path, "acls", "*", "lun_*", "lun"))
	left := 0
	want, err := os.Stat(target)
	if err != nil {
		return err
	}
	for _, m := range mapped {
		// The link's target, followed (configfs writes link paths its own way).
		if got, err := os.Stat(m); err != nil || !os.SameFile(got, want) {
			continue
		}
		if filepath.Base(filepath.Dir(filepath.Dir(m))) != a.Initiator {
			left++
			continue
		}
		if err := os.Remove(m); err != nil {
			return err
		}
		if err := os.Remove(filepath.Dir(m)); err != nil {
			return err
		}
	}
	if left > 0 {
		return nil
	}
	os.Remove(filepath.Join(target, "port"))
	delete(t.luns, lun.Name)
	return os.Remove(target)
}

// MappedLUNs lists the LUN numbers mapped to the initiator.
func (a *ACL) MappedLUNs() []string {
	ms, _ := filepath.Glob(filepath.Join(a.t.path, "acls", a.Initiator, "lun_*"))
	var out []string
	for _, m := range ms {
		out = append(out, strings.TrimPrefix(filepath.Base(m), "lun_"))
	}
	return out
}

// Delete removes the target: mapped LUNs, ACLs, LUNs, portals, the portal group, itself.
func (t *ISCSITarget) Delete() error {
	write(filepath.Join(t.path, "enable"), "0")
	mapped, _ := filepath.Glob(filepath.Join(t.path, "acls", "*", "lun_*"))
	for _, m := range mapped {
		os.Remove(filepath.Join(m, "lun"))
		os.Remove(m)
	}
	acls, _ := filepath.Glob(filepath.Join(t.path, "acls", "*"))
	for _, a := range acls {
		os.Remove(a)
	}
	luns, _ := filepath.Glob(filepath.Join(t.path, "lun", "lun_*"))
	for _, d := range luns {
		os.Remove(filepath.Join(d, "port"))
		os.Remove(d)
	}
	nps, _ := filepath.Glob(filepath.Join(t.path, "np", "*"))
	for _, np := range nps {
		os.Remove(np)
	}
	if err := os.Remove(t.path); err != nil {
		return fmt.Errorf("removing %s: %w", t.path, err)
	}
	return os.Remove(filepath.Dir(t.path))
}
