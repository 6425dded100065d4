package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pvesnap/pvesnap/ioctl/ata"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// Health states, from best to worst.
const (
	HealthOK      = "ok"
	HealthUnknown = "unknown" // the device reports nothing, or could not be asked
	HealthWarning = "warning"
	HealthFailing = "failing"
)

var healthRank = map[string]int{"": -1, HealthOK: 0, HealthUnknown: 1, HealthWarning: 2, HealthFailing: 3}

// Health is what a device says about its own condition, and what the kernel says of it.
type Health struct {
	State string `json:"state"`
	// Source is what was asked: the NVMe SMART / Health log, ATA SMART, the SCSI
	// Informational Exceptions log page.
	Source string `json:"source,omitempty"`
	// Problems are the conditions reported, in the specifications' words.
	Problems []string `json:"problems,omitempty"`
	// ReadOnly: the device reports itself read-only (media in read-only mode, a write
	// protected namespace) or the kernel has it read-only.
	ReadOnly bool `json:"read_only,omitempty"`
	// Note says what could not be read, and why.
	Note string `json:"note,omitempty"`

	Temperature     *int            `json:"temperature,omitempty"` // °C
	PercentUsed     *int            `json:"percent_used,omitempty"`
	AvailableSpare  *int            `json:"available_spare,omitempty"` // %
	SpareThreshold  *int            `json:"spare_threshold,omitempty"`
	MediaErrors     *uint64         `json:"media_errors,omitempty"`
	UnsafeShutdowns *uint64         `json:"unsafe_shutdowns,omitempty"`
	PowerOnHours    *uint64         `json:"power_on_hours,omitempty"`
	CriticalWarning *uint8          `json:"critical_warning,omitempty"`
	Attributes      []ata.Attribute `json:"attributes,omitempty"`
}

// raise makes the state at least state and records the problem.
func (h *Health) raise(state, problem string) {
	if healthRank[state] > healthRank[h.State] {
		h.State = state
	}
	if problem != "" {
		h.Problems = append(h.Problems, problem)
	}
}

// unknown records why the device could not tell.
func (h *Health) unknown(note string) {
	h.raise(HealthUnknown, "")
	if h.Note != "" {
		note = h.Note + "; " + note
	}
	h.Note = note
}

// Critical reports a condition worth a warning wherever the device is shown.
func (h Health) Critical() bool {
	return h.State == HealthWarning || h.State == HealthFailing || h.ReadOnly
}

// Summary is the state with what makes it so, in one line.
func (h Health) Summary() string {
	s := h.State
	if s == "" {
		s = HealthUnknown
	}
	switch {
	case len(h.Problems) > 0:
		s += ": " + strings.Join(h.Problems, "; ")
	case h.Note != "":
		s += ": " + h.Note
	}
	return s
}

// OffloadRefusal says why an offloaded copy must not involve the device ("" when it may): a
// destination (write) that reports itself read-only, or either end that reports itself
// failing. The array would carry the copy out on media the device itself has given up on,
// where no I/O error reaches the host before the data is needed.
func (h Health) OffloadRefusal(write bool) string {
	switch {
	case write && h.ReadOnly:
		return "it reports itself read-only (" + strings.Join(h.Problems, "; ") + ")"
	case h.State == HealthFailing:
		return "it reports itself failing (" + strings.Join(h.Problems, "; ") + ")"
	}
	return ""
}

// nvmeHealth reads the controller's SMART / Health log (through the library) and the
// namespace's write protection.
func nvmeHealth(h *Health, log *nvme.HealthLog, err error, ns *nvme.Namespace) {
	h.Source = "NVMe SMART / Health Information log"
	if ns != nil && ns.WriteProtected() {
		h.ReadOnly = true
		h.raise(HealthWarning, "namespace write protected (NSATTR)")
	}
	if err != nil {
		h.unknown(err.Error())
		return
	}
	h.raise(HealthOK, "")
	cw := log.CritWarning
	t, used, spare, thr := nvme.Celsius(log.Temperature), int(log.PercentUsed), int(log.AvailSpare), int(log.SpareThresh)
	media, unsafe, hours := log.MediaErrors.Val[0], log.UnsafeShutdowns.Val[0], log.PowerOnHours.Val[0]
	h.CriticalWarning, h.Temperature, h.PercentUsed, h.AvailableSpare, h.SpareThreshold = &cw, &t, &used, &spare, &thr
	h.MediaErrors, h.UnsafeShutdowns, h.PowerOnHours = &media, &unsafe, &hours
	for _, w := range warningBits(cw) {
		h.raise(w.state, "critical warning: "+w.text)
	}
	for _, w := range warningBits(log.EnduranceCritWarning & (nvme.WarnSpare | nvme.WarnReliability | nvme.WarnReadOnly)) {
		h.raise(w.state, "endurance group critical warning: "+w.text)
	}
	if cw&nvme.WarnReadOnly != 0 || log.EnduranceCritWarning&nvme.WarnReadOnly != 0 {
		h.ReadOnly = true
	}
	if used >= 100 {
		h.raise(HealthWarning, fmt.Sprintf("percentage used %d%%: the rated endurance is used up", used))
	}
}

type warning struct{ state, text string }

// warningBits grades each critical warning bit: the device failing (spare exhausted,
// reliability degraded, media read-only, its cache's backup failed: a power loss may take
// acknowledged writes) or a warning (temperature, the persistent memory region).
func warningBits(cw uint8) []warning {
	var out []warning
	for bit := uint8(1); bit != 0; bit <<= 1 {
		if cw&bit == 0 {
			continue
		}
		state := HealthFailing
		if bit == nvme.WarnTemperature || bit == nvme.WarnPMRReadOnly || bit > nvme.WarnPMRReadOnly {
			state = HealthWarning
		}
		for _, text := range nvme.CriticalWarnings(bit) {
			out = append(out, warning{state, text})
		}
	}
	return out
}

// ataHealth reads SATA SMART: the attributes and thresholds through the library, the drive's
// own verdict through SMART RETURN STATUS.
func ataHealth(ctx context.Context, h *Health, id ata.Identity, disk ata.Disk, x scsi.Executor) {
	h.Source = "ATA SMART"
	if !id.SMARTSupported {
		h.unknown("the drive does not implement SMART")
		return
	}
	if !id.SMARTEnabled {
		h.unknown("SMART is disabled on the drive")
		return
	}
	failed, err := ata.ReturnStatus(ctx, x)
	switch {
	case err != nil:
		h.unknown(err.Error())
	case failed:
		h.raise(HealthFailing, "SMART RETURN STATUS: the drive reports a threshold exceeded (it predicts its own failure)")
	default:
		h.raise(HealthOK, "")
	}
	page, err := disk.ReadSMARTData()
	if err != nil {
		h.unknown("SMART READ DATA: " + err.Error())
		return
	}
	th, err := disk.ReadSMARTThresholds()
	if err != nil {
		h.unknown("SMART READ THRESHOLDS: " + err.Error())
	}
	h.Attributes = ata.Attributes(page, th)
	if t, ok := ata.Temperature(page); ok {
		h.Temperature = &t
	}
	for _, a := range h.Attributes {
		switch {
		case !a.FailingNow():
		case a.PreFail:
			h.raise(HealthFailing, "SMART attribute "+a.String()+": failing now")
		default:
			h.raise(HealthWarning, "SMART attribute "+a.String()+": past its threshold")
		}
	}
}

// scsiHealth reads the Informational Exceptions log page.
func scsiHealth(ctx context.Context, h *Health, x scsi.Executor) {
	h.Source = "SCSI Informational Exceptions log page"
	ie, err := scsi.ReadInformationalExceptions(ctx, x)
	switch {
	case errors.Is(err, scsi.ErrNotSupported):
		h.unknown("the LU does not report informational exceptions (LOG SENSE page 2Fh not supported)")
		return
	case err != nil:
		h.unknown(err.Error())
		return
	}
	if ie.Temperature >= 0 {
		t := ie.Temperature
		h.Temperature = &t
	}
	switch {
	case ie.Failing():
		h.raise(HealthFailing, ie.Condition())
	case ie.Warning() || ie.Condition() != "":
		h.raise(HealthWarning, ie.Condition())
	default:
		h.raise(HealthOK, "")
	}
}
