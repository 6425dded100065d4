// Package enginetest is a fake node for device identification: a sysfs tree, and SCSI LUs,
// SATA disks and NVMe controllers that answer the commands identification sends with the
// bytes the standards lay out (SPC/SBC pages, NVMe Identify and log pages, ATA IDENTIFY
// DEVICE), written here field by field, so the decoders under test read them as they would
// read a device. It is for tests (as node_exporter's read a fake /sys), not for production.
package enginetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	smart "github.com/anatol/smart.go"

	"github.com/pvesnap/pvesnap/ioctl/ata"
	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

// Node is the fake node: its sysfs and /dev roots and the devices behind them.
type Node struct {
	Sys, Dev string

	mu    sync.Mutex
	luns  map[string]*LU // by /dev path
	atas  map[string]*ATADisk
	ctrls map[string]*Controller
}

// NewNode makes a node whose sysfs and /dev are sys and dev (created when missing).
func NewNode(sys, dev string) *Node {
	os.MkdirAll(sys, 0o755)
	os.MkdirAll(dev, 0o755)
	return &Node{Sys: sys, Dev: dev, luns: map[string]*LU{}, atas: map[string]*ATADisk{}, ctrls: map[string]*Controller{}}
}

// Roots are the node's roots for the engine.
func (n *Node) Roots() engine.Roots { return engine.Roots{Sys: n.Sys, Dev: n.Dev} }

// Openers open the node's fake devices.
func (n *Node) Openers() engine.Openers {
	return engine.Openers{SCSI: n.openSCSI, NVMe: n.openNVMe, ATA: n.openATA}
}

func write(p, v string) {
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, []byte(v+"\n"), 0o644)
}

// block adds a block device: sys/class/block/<name> with dev and size, sys/dev/block and
// sys/block links to it (only for whole disks: parent is "" ), and an empty /dev node.
func (n *Node) block(name, parent string, d dm.Dev, sectors uint64, files map[string]string) string {
	dir := filepath.Join(n.Sys, "class", "block", name)
	if parent != "" {
		dir = filepath.Join(n.Sys, "class", "block", parent, name)
		os.MkdirAll(dir, 0o755)
		os.Symlink(filepath.Join(parent, name), filepath.Join(n.Sys, "class", "block", name))
	}
	write(filepath.Join(dir, "dev"), d.String())
	write(filepath.Join(dir, "size"), fmt.Sprint(sectors))
	for k, v := range files {
		write(filepath.Join(dir, k), v)
	}
	os.MkdirAll(filepath.Join(n.Sys, "dev", "block"), 0o755)
	os.Symlink(filepath.Join("..", "..", "class", "block", name), filepath.Join(n.Sys, "dev", "block", d.String()))
	if parent == "" {
		os.MkdirAll(filepath.Join(n.Sys, "block"), 0o755)
		os.Symlink(filepath.Join("..", "class", "block", name), filepath.Join(n.Sys, "block", name))
	}
	os.WriteFile(filepath.Join(n.Dev, name), nil, 0o644)
	return dir
}

// Partition adds partition name of disk, start sectors in.
func (n *Node) Partition(disk, name string, d dm.Dev, start, sectors uint64) {
	n.block(name, disk, d, sectors, map[string]string{"partition": "1", "start": fmt.Sprint(start)})
}

// Mapped adds a device-mapper device (an LV, a multipath map: uuid "mpath-…") over slaves.
func (n *Node) Mapped(name, dmName, uuid string, d dm.Dev, sectors uint64, slaves ...string) {
	dir := n.block(name, "", d, sectors, map[string]string{"dm/name": dmName, "dm/uuid": uuid})
	for _, s := range slaves {
		os.MkdirAll(filepath.Join(dir, "slaves"), 0o755)
		os.Symlink(filepath.Join("..", "..", s), filepath.Join(dir, "slaves", s))
		holders := filepath.Join(n.Sys, "class", "block", s, "holders")
		os.MkdirAll(holders, 0o755)
		os.Symlink(filepath.Join("..", "..", name), filepath.Join(holders, name))
	}
}

// ReadOnly sets the kernel's read-only flag of a device (sysfs ro).
func (n *Node) ReadOnly(name string, ro bool) {
	v := "0"
	if ro {
		v = "1"
	}
	write(filepath.Join(n.Sys, "class", "block", name, "ro"), v)
}

// LU is a SCSI logical unit as INQUIRY, VPD 80h/83h, READ CAPACITY(16), RECEIVE COPY
// OPERATING PARAMETERS and LOG SENSE answer for it.
type LU struct {
	Vendor, Product, Revision string
	Serial                    string // VPD 80h, as long as it likes
	NAA                       string // hex, the LU's NAA designator in VPD 83h
	Blocks                    uint64
	BlockSize                 uint32
	PhysicalExp               uint8 // logical blocks per physical block exponent
	ProtectionType            uint8 // 0: none
	ThirdPartyCopy            bool
	// IE is the Informational Exceptions log page's ASC/ASCQ; nil: the LU has no such page
	// (LOG SENSE is refused, as LIO refuses it).
	IE          *[2]byte
	Temperature byte // °C in the log page (FFh: not reported)

	mu   sync.Mutex
	cdbs [][]byte
}

// Sent lists the CDBs the LU received.
func (l *LU) Sent() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.cdbs...)
}

// SetIE changes what the Informational Exceptions page reports.
func (l *LU) SetIE(asc, ascq byte) { l.mu.Lock(); l.IE = &[2]byte{asc, ascq}; l.mu.Unlock() }

// AddLU adds a path name (sdX) to lu: a second path to the same LU shares its WWID.
func (n *Node) AddLU(name string, d dm.Dev, lu *LU) {
	n.block(name, "", d, lu.Blocks*uint64(lu.BlockSize)/512, map[string]string{
		"device/wwid": "naa." + lu.NAA, "device/vendor": lu.Vendor, "device/model": lu.Product, "device/state": "running",
		"queue/logical_block_size": fmt.Sprint(lu.BlockSize), "queue/physical_block_size": fmt.Sprint(lu.BlockSize << lu.PhysicalExp),
		"ro": "0"})
	n.mu.Lock()
	n.luns[filepath.Join(n.Dev, name)] = lu
	n.mu.Unlock()
}

// LU returns the LU behind path name (sdX), nil when there is none.
func (n *Node) LU(name string) *LU {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.luns[filepath.Join(n.Dev, name)]
}

type luHandle struct {
	lu  *LU
	ata *ATADisk
}

func (n *Node) openSCSI(path string) (engine.SCSIDevice, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if lu, ok := n.luns[path]; ok {
		return &luHandle{lu: lu}, nil
	}
	if a, ok := n.atas[path]; ok {
		return &luHandle{ata: a}, nil
	}
	return nil, &os.PathError{Op: "open", Path: path, Err: os.ErrNotExist}
}

func (h *luHandle) Close() error { return nil }

// checkCondition is CHECK CONDITION with fixed-format sense data.
func checkCondition(key, asc, ascq byte) error {
	b := make([]byte, 18)
	b[0], b[2], b[7], b[12], b[13] = 0x70, key, 10, asc, ascq
	s, err := scsi.ParseSense(b)
	if err != nil {
		return err
	}
	return &scsi.CommandError{Op: "fake command", Status: scsi.StatusCheckCondition, Sense: &s}
}

// reply copies an answer into the buffer and returns the residual count.
func reply(data, answer []byte) (int, error) {
	n := copy(data, answer)
	return len(data) - n, nil
}

func (h *luHandle) Exec(ctx context.Context, cdb []byte, dir scsi.Direction, data []byte) (int, error) {
	if h.ata != nil {
		return h.ata.exec(cdb)
	}
	l := h.lu
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cdbs = append(l.cdbs, append([]byte(nil), cdb...))
	invalid := checkCondition(scsi.KeyIllegalRequest, 0x24, 0x00)
	switch {
	case cdb[0] == 0x12 && cdb[1]&1 == 0: // standard INQUIRY (SPC-4 6.6.2)
		b := make([]byte, 36)
		b[2], b[3], b[4] = 0x06, 0x02, 31
		if l.ThirdPartyCopy {
			b[5] = 0x08
		}
		if l.ProtectionType != 0 {
			b[5] |= 0x01
		}
		copy(b[8:16], fmt.Sprintf("%-8s", l.Vendor))
		copy(b[16:32], fmt.Sprintf("%-16s", l.Product))
		copy(b[32:36], fmt.Sprintf("%-4s", l.Revision))
		return reply(data, b)
	case cdb[0] == 0x12: // VPD
		var page []byte
		switch cdb[2] {
		case 0x00:
			page = []byte{0x00, 0x80, 0x83}
		case 0x80:
			page = []byte(l.Serial)
		case 0x83:
			v, _ := hex.DecodeString(l.NAA)
			page = append([]byte{0x01, 0x03, 0x00, byte(len(v))}, v...) // binary, LU, NAA
		default:
			return 0, invalid
		}
		b := append([]byte{0, cdb[2], byte(len(page) >> 8), byte(len(page))}, page...)
		return reply(data, b)
	case cdb[0] == 0x9E && cdb[1]&0x1f == 0x10: // READ CAPACITY(16) (SBC-3 5.16)
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b, l.Blocks-1)
		binary.BigEndian.PutUint32(b[8:], l.BlockSize)
		if l.ProtectionType != 0 {
			b[12] = (l.ProtectionType-1)<<1 | 1
		}
		b[13] = l.PhysicalExp
		return reply(data, b)
	case cdb[0] == 0x84 && cdb[1]&0x1f == 0x03 && l.ThirdPartyCopy: // RECEIVE COPY OPERATING PARAMETERS (SPC-4 6.18.5)
		b := make([]byte, 46)
		binary.BigEndian.PutUint32(b, 42)
		b[4] = 1                                    // SNLID
		binary.BigEndian.PutUint16(b[8:], 2)        // CSCD descriptors
		binary.BigEndian.PutUint16(b[10:], 1)       // segment descriptors
		binary.BigEndian.PutUint32(b[12:], 1024)    // descriptor list length
		binary.BigEndian.PutUint32(b[16:], 256<<20) // segment length
		binary.BigEndian.PutUint16(b[34:], 1)       // total concurrent copies
		b[36], b[37], b[43], b[44], b[45] = 1, 9, 2, 0x02, 0xE4
		return reply(data, b)
	case cdb[0] == 0x4D && cdb[2]&0x3f == 0x2F && l.IE != nil: // LOG SENSE, Informational Exceptions (SPC-4 7.3.8)
		b := []byte{0x2F, 0, 0, 8, 0, 0, 0x03, 4, l.IE[0], l.IE[1], l.Temperature, 0}
		return reply(data, b)
	case cdb[0] == 0x4D:
		return 0, invalid
	}
	return 0, checkCondition(scsi.KeyIllegalRequest, 0x20, 0x00)
}

// ATADisk is a SATA disk as IDENTIFY DEVICE, SMART READ DATA / THRESHOLDS (through the
// library's types) and SMART RETURN STATUS (through SG_IO) answer for it.
type ATADisk struct {
	Model, Serial, Firmware string
	Sectors                 uint64
	SMARTDisabled           bool
	Attributes              []ata.Attribute
	ThresholdExceeded       bool // SMART RETURN STATUS answers F4h/2Ch
}

// AddATA adds a SATA disk (libata: vendor "ATA").
func (n *Node) AddATA(name string, d dm.Dev, a *ATADisk) {
	n.block(name, "", d, a.Sectors, map[string]string{"device/vendor": "ATA", "device/model": a.Model,
		"device/wwid": "t10.ATA     " + a.Model + " " + a.Serial, "queue/logical_block_size": "512", "queue/physical_block_size": "4096", "ro": "0"})
	n.mu.Lock()
	n.atas[filepath.Join(n.Dev, name)] = a
	n.mu.Unlock()
}

func (n *Node) openATA(path string) (ata.Disk, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a, ok := n.atas[path]; ok {
		return ataHandle{a}, nil
	}
	return nil, errors.New("not a SATA device")
}

type ataHandle struct{ a *ATADisk }

func (h ataHandle) Close() error { return nil }

// ataString lays an ATA string out: space padded, each pair of bytes swapped (ACS-3 3.4.9).
func ataString(s string, n int) []byte {
	b := []byte(fmt.Sprintf("%-*s", n, s))[:n]
	for i := 0; i+1 < n; i += 2 {
		b[i], b[i+1] = b[i+1], b[i]
	}
	return b
}

// Identify answers IDENTIFY DEVICE (ACS-3 7.12.7), words at their offsets.
func (h ataHandle) Identify() (*smart.AtaIdentifyDevice, error) {
	w := make([]byte, 512)
	copy(w[20:40], ataString(h.a.Serial, 20))     // words 10-19
	copy(w[46:54], ataString(h.a.Firmware, 8))    // words 23-26
	copy(w[54:94], ataString(h.a.Model, 40))      // words 27-46
	binary.LittleEndian.PutUint16(w[98:], 0x0200) // word 49: LBA supported
	binary.LittleEndian.PutUint32(w[120:], uint32(min(h.a.Sectors, 0x0fffffff)))
	binary.LittleEndian.PutUint16(w[164:], 0x0001) // word 82: SMART supported
	binary.LittleEndian.PutUint16(w[166:], 0x4400) // word 83: 48-bit addresses
	binary.LittleEndian.PutUint16(w[168:], 0x4000) // word 84
	if !h.a.SMARTDisabled {
		binary.LittleEndian.PutUint16(w[170:], 0x0001) // word 85: SMART enabled
	}
	binary.LittleEndian.PutUint64(w[200:], h.a.Sectors) // words 100-103
	binary.LittleEndian.PutUint16(w[212:], 0x6003)      // word 106: 8 logical per physical
	binary.LittleEndian.PutUint16(w[434:], 1)           // word 217: solid state
	var id smart.AtaIdentifyDevice
	if err := binary.Read(bytes.NewReader(w), binary.LittleEndian, &id); err != nil {
		return nil, err
	}
	return &id, nil
}

func (h ataHandle) ReadSMARTData() (*smart.AtaSmartPage, error) {
	p := &smart.AtaSmartPage{Version: 16, Attrs: map[uint8]smart.AtaSmartAttr{}}
	for _, a := range h.a.Attributes {
		var flags uint16
		if a.PreFail {
			flags = smart.AtaAttributeFlagPrefailure
		}
		p.Attrs[a.ID] = smart.AtaSmartAttr{Id: a.ID, Flags: flags, Current: a.Value, Worst: a.Worst, Name: a.Name, ValueRaw: a.Raw}
	}
	return p, nil
}

func (h ataHandle) ReadSMARTThresholds() (*smart.AtaSmartThresholdsPage, error) {
	p := &smart.AtaSmartThresholdsPage{Revnumber: 16, Thresholds: map[uint8]uint8{}}
	for _, a := range h.a.Attributes {
		p.Thresholds[a.ID] = a.Threshold
	}
	return p, nil
}

// exec answers SMART RETURN STATUS (ATA PASS-THROUGH(16), SMART B0h feature DAh) as libata
// does: CHECK CONDITION, RECOVERED ERROR, ATA PASS-THROUGH INFORMATION AVAILABLE, the
// registers in an ATA Status Return descriptor (SAT-4 12.2.2.7).
func (a *ATADisk) exec(cdb []byte) (int, error) {
	if cdb[0] != 0x85 || cdb[14] != 0xB0 || cdb[4] != 0xDA {
		return 0, checkCondition(scsi.KeyIllegalRequest, 0x20, 0x00)
	}
	mid, high, status := byte(0x4F), byte(0xC2), byte(0x50)
	if a.ThresholdExceeded {
		mid, high = 0xF4, 0x2C
	}
	if a.SMARTDisabled {
		status = 0x51 // ERR: aborted
	}
	b := []byte{0x72, scsi.KeyRecovered, 0x00, 0x1D, 0, 0, 0, 14,
		0x09, 12, 0, 0x04, 0, 0, 0, 0, 0, mid, 0, high, 0xA0, status}
	s, err := scsi.ParseSense(b)
	if err != nil {
		return 0, err
	}
	return 0, &scsi.CommandError{Op: "ATA PASS-THROUGH(16)", Status: scsi.StatusCheckCondition, Sense: &s}
}

// Controller is an NVMe controller as Identify Controller, Identify Namespace (CNS 00h and
// 05h), Get Features (Host Behavior Support) and the SMART / Health log answer for it.
type Controller struct {
	Serial, Model, Firmware, SubNQN string
	ONCS, OCFS                      uint16
	CDFE                            uint16
	CritWarning                     uint8
	TemperatureK                    uint16
	PercentUsed, AvailSpare, Thresh uint8
	MediaErrors, UnsafeShutdowns    uint64
	Namespaces                      map[uint32]*Namespace

	mu          sync.Mutex
	nsIdentifys []uint32 // the NSIDs Identify Namespace was sent for
	ctrlIdents  int
}

// Namespace is one namespace of a controller.
type Namespace struct {
	Blocks         uint64
	LBADS          uint8 // log2 of the block size
	MS             uint16
	DPS            uint8
	MSSRL          uint16
	MCL            uint32
	MSRC           uint8
	NGUID          string // hex
	WriteProtected bool
}

// Identified lists the namespaces Identify Namespace was sent for, and how many times
// Identify Controller was.
func (c *Controller) Identified() ([]uint32, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint32(nil), c.nsIdentifys...), c.ctrlIdents
}

// AddNVMe adds controller ctrl (nvmeX) with a namespace node (nvmeXnY) for each nsid given.
func (n *Node) AddNVMe(ctrl string, c *Controller, first dm.Dev, nsids ...uint32) {
	dir := filepath.Join(n.Sys, "class", "nvme", ctrl)
	write(filepath.Join(dir, "subsysnqn"), c.SubNQN)
	os.WriteFile(filepath.Join(n.Dev, ctrl), nil, 0o644)
	n.mu.Lock()
	n.ctrls[filepath.Join(n.Dev, ctrl)] = c
	n.mu.Unlock()
	for i, id := range nsids {
		ns := c.Namespaces[id]
		name := fmt.Sprintf("%sn%d", ctrl, id)
		d := dm.Dev{Major: first.Major, Minor: first.Minor + uint32(i)}
		nsDir := filepath.Join(dir, name)
		write(filepath.Join(nsDir, "dev"), d.String())
		write(filepath.Join(nsDir, "size"), fmt.Sprint(ns.Blocks<<ns.LBADS/512))
		write(filepath.Join(nsDir, "nsid"), fmt.Sprint(id))
		write(filepath.Join(nsDir, "wwid"), "eui."+ns.NGUID)
		write(filepath.Join(nsDir, "queue", "logical_block_size"), fmt.Sprint(1<<ns.LBADS))
		write(filepath.Join(nsDir, "queue", "physical_block_size"), fmt.Sprint(1<<ns.LBADS))
		write(filepath.Join(nsDir, "ro"), "0")
		for _, l := range []string{filepath.Join(n.Sys, "class", "block", name), filepath.Join(n.Sys, "block", name)} {
			os.MkdirAll(filepath.Dir(l), 0o755)
			rel, _ := filepath.Rel(filepath.Dir(l), nsDir)
			os.Symlink(rel, l)
		}
		os.MkdirAll(filepath.Join(n.Sys, "dev", "block"), 0o755)
		rel, _ := filepath.Rel(filepath.Join(n.Sys, "dev", "block"), nsDir)
		os.Symlink(rel, filepath.Join(n.Sys, "dev", "block", d.String()))
		os.WriteFile(filepath.Join(n.Dev, name), nil, 0o644)
	}
}

func (n *Node) openNVMe(path string) (engine.NVMeController, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.ctrls[path]; ok {
		return ctrlHandle{c}, nil
	}
	return nil, &os.PathError{Op: "open", Path: path, Err: os.ErrNotExist}
}

type ctrlHandle struct{ c *Controller }

func (h ctrlHandle) Close() error { return nil }

// IdentifyController answers CNS 01h (NVMe base 2.0, figure 275).
func (h ctrlHandle) IdentifyController(ctx context.Context) (*nvme.Controller, error) {
	c := h.c
	c.mu.Lock()
	c.ctrlIdents++
	c.mu.Unlock()
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint16(b[0:], 0x1b36)
	copy(b[4:24], fmt.Sprintf("%-20s", c.Serial))
	copy(b[24:64], fmt.Sprintf("%-40s", c.Model))
	copy(b[64:72], fmt.Sprintf("%-8s", c.Firmware))
	b[77] = 9
	binary.LittleEndian.PutUint32(b[516:], 256) // NN: QEMU's
	binary.LittleEndian.PutUint16(b[520:], c.ONCS)
	b[525] = 0x07
	binary.LittleEndian.PutUint16(b[534:], c.OCFS)
	copy(b[768:], c.SubNQN)
	return nvme.ParseController(b)
}

// IdentifyNamespace answers CNS 00h (NVM command set 1.0, figure 97).
func (h ctrlHandle) IdentifyNamespace(ctx context.Context, nsid uint32) (*nvme.Namespace, error) {
	c := h.c
	c.mu.Lock()
	c.nsIdentifys = append(c.nsIdentifys, nsid)
	c.mu.Unlock()
	b := make([]byte, 4096)
	if ns, ok := c.Namespaces[nsid]; ok {
		binary.LittleEndian.PutUint64(b[0:], ns.Blocks)
		binary.LittleEndian.PutUint64(b[8:], ns.Blocks)
		b[25], b[26], b[29] = 0, 0, ns.DPS
		binary.LittleEndian.PutUint16(b[74:], ns.MSSRL)
		binary.LittleEndian.PutUint32(b[76:], ns.MCL)
		b[80] = ns.MSRC
		if ns.WriteProtected {
			b[99] = 1
		}
		g, _ := hex.DecodeString(ns.NGUID)
		copy(b[104:120], g)
		binary.LittleEndian.PutUint16(b[128:], ns.MS)
		b[130] = ns.LBADS
	}
	return nvme.ParseNamespace(b)
}

// IdentifyNVMNamespace answers CNS 05h: 16-bit guard formats only.
func (h ctrlHandle) IdentifyNVMNamespace(ctx context.Context, nsid uint32) (nvme.NVMNamespace, error) {
	return nvme.ParseNVMNamespace(make([]byte, 4096))
}

// HostBehavior answers Get Features 16h: CDFE at bytes 4-5.
func (h ctrlHandle) HostBehavior(ctx context.Context) (nvme.HostBehavior, error) {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint16(b[4:], h.c.CDFE)
	return nvme.ParseHostBehavior(b)
}

// HealthLog answers Get Log Page 02h (NVMe base 2.0, figure 207), decoded into the library's
// structure as the library decodes it.
func (h ctrlHandle) HealthLog() (*nvme.HealthLog, error) {
	c := h.c
	b := make([]byte, 512)
	b[0] = c.CritWarning
	binary.LittleEndian.PutUint16(b[1:], c.TemperatureK)
	b[3], b[4], b[5] = c.AvailSpare, c.Thresh, c.PercentUsed
	binary.LittleEndian.PutUint64(b[144:], c.UnsafeShutdowns)
	binary.LittleEndian.PutUint64(b[160:], c.MediaErrors)
	var l nvme.HealthLog
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, &l); err != nil {
		return nil, err
	}
	if l.Temperature == 0 {
		return nil, nvme.ErrEmptyHealthLog
	}
	return &l, nil
}
