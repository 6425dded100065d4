package engine

import (
	"fmt"
	"strings"
)

// View is a device as `pvesnap devices` and the API show it: identity, paths, copy
// capabilities, block sizes, protection information and health.
type View struct {
	Name        string   `json:"name"` // the path asked (sdb, nvme0n1)
	Path        string   `json:"path"`
	Transport   string   `json:"transport"` // scsi, ata, nvme, other
	Paths       []string `json:"paths,omitempty"`
	Multipath   string   `json:"multipath,omitempty"`   // the dm-multipath map over the paths
	Controllers []string `json:"controllers,omitempty"` // NVMe: the subsystem's controllers
	Vendor      string   `json:"vendor,omitempty"`
	Model       string   `json:"model,omitempty"`
	Serial      string   `json:"serial,omitempty"`
	Firmware    string   `json:"firmware,omitempty"`
	WWID        string   `json:"wwid,omitempty"`
	NSID        uint32   `json:"nsid,omitempty"`
	Subsystem   string   `json:"subsystem,omitempty"` // NVMe subsystem NQN
	NGUID       string   `json:"nguid,omitempty"`
	EUI64       string   `json:"eui64,omitempty"`
	NAA         string   `json:"naa,omitempty"`
	Size        int64    `json:"size"`
	BlockSize   int      `json:"block_size"`
	Physical    int      `json:"physical_block_size,omitempty"`
	// PI is the protection information the device is formatted with ("none", "type 1, 16-bit
	// guard").
	PI     string   `json:"pi"`
	Copy   CopyView `json:"copy"`
	Health Health   `json:"health"`
	Error  string   `json:"error,omitempty"`
}

// CopyView is what the device offers for offloaded copies.
type CopyView struct {
	Offload bool   `json:"offload"`
	Reason  string `json:"reason,omitempty"` // why not
	Summary string `json:"summary"`
	// SCSI EXTENDED COPY (RECEIVE COPY OPERATING PARAMETERS)
	MaxSegmentLength   uint32 `json:"max_segment_length,omitempty"`
	MaxSegments        uint16 `json:"max_segments,omitempty"`
	MaxConcurrent      uint8  `json:"max_concurrent,omitempty"`
	SegmentGranularity int    `json:"segment_granularity,omitempty"`
	// NVMe Copy
	Formats   []int   `json:"formats,omitempty"`
	MSSRL     uint16  `json:"mssrl,omitempty"`
	MCL       uint32  `json:"mcl,omitempty"`
	MSRC      uint8   `json:"msrc,omitempty"` // 0-based, as the namespace reports it
	CDFE      *uint16 `json:"cdfe,omitempty"`
	CDFEState string  `json:"cdfe_state,omitempty"`
}

// View describes the device.
func (d *Device) View() View {
	v := View{Name: d.Name, Path: d.Path, Transport: d.Kind, Paths: d.Paths, Multipath: d.Multipath, Controllers: d.Controllers,
		Vendor: d.Vendor, Model: d.Model, Serial: d.Serial, Firmware: d.Firmware, WWID: d.WWID, NSID: d.NSID, Subsystem: d.SubNQN,
		Size: d.Size, BlockSize: d.BlockSize, Physical: d.PhysicalBlockSize, PI: d.PIText(), Health: d.Health}
	if v.Health.State == "" {
		v.Health.State = HealthUnknown
	}
	if d.Err != nil {
		v.Error = d.Err.Error()
	}
	v.Copy.Offload, v.Copy.Reason = d.Offload()
	v.Copy.Summary = d.Capabilities()
	if d.SCSI != nil {
		if d.SCSI.HasNAA {
			v.NAA = d.SCSI.NAA.NAAHex()
		}
		if p := d.SCSI.Copy; p != nil {
			v.Copy.MaxSegmentLength, v.Copy.MaxSegments = p.MaxSegmentLength, p.MaxSegmentDescriptors
			v.Copy.MaxConcurrent, v.Copy.SegmentGranularity = p.MaxConcurrentCopies, 1<<min(p.DataSegmentGranLog2, 31)
		}
	}
	if d.NS != nil {
		v.NGUID, v.EUI64 = d.NS.NGUIDHex(), d.NS.EUI64Hex()
		v.Copy.MSSRL, v.Copy.MCL, v.Copy.MSRC = d.NS.Mssrl, d.NS.Mcl, d.NS.Msrc
	}
	if d.Ctrl != nil {
		v.Copy.Formats = d.Ctrl.CopyFormats()
		v.Copy.CDFE, v.Copy.CDFEState = d.CDFE, d.CDFEState()
	}
	return v
}

// PIText names the protection information the device is formatted with.
func (d *Device) PIText() string {
	switch {
	case d.SCSI != nil && d.SCSI.Capacity.ProtectionEnabled:
		return fmt.Sprintf("type %d", d.SCSI.Capacity.ProtectionType)
	case d.NS != nil && d.NS.PIType() != 0:
		guard := map[uint8]string{0: "16-bit guard", 1: "32-bit guard", 2: "64-bit guard"}[d.PIF]
		if guard == "" {
			guard = fmt.Sprintf("protection information format %d", d.PIF)
		}
		s := fmt.Sprintf("type %d, %s", d.NS.PIType(), guard)
		if d.STS != 0 {
			s += fmt.Sprintf(", %d-bit storage tag", d.STS)
		}
		return s
	case d.SCSI != nil || d.NS != nil || d.ATA != nil:
		return "none"
	}
	return ""
}

// Identity is vendor, model, serial and firmware in one line.
func (v View) Identity() string {
	s := strings.TrimSpace(v.Vendor + " " + v.Model)
	if v.Serial != "" {
		s += ", serial " + v.Serial
	}
	if v.Firmware != "" {
		s += ", firmware " + v.Firmware
	}
	return strings.TrimPrefix(s, ", ")
}
