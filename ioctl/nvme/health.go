package nvme

import (
	"errors"
	"fmt"

	smart "github.com/anatol/smart.go"
)

// HealthLog is the SMART / Health Information log page (02h) as github.com/anatol/smart.go
// reads and lays it out: controller-wide (NSID FFFFFFFFh), 512 bytes.
type HealthLog = smart.NvmeSMARTLog

// Critical warning bits (byte 0 of the log; the Endurance Group Critical Warning Summary,
// byte 6, uses bits 0, 2 and 3 the same way).
const (
	WarnSpare       = 1 << 0 // available spare below its threshold
	WarnTemperature = 1 << 1 // a temperature above an over- or below an under-temperature threshold
	WarnReliability = 1 << 2 // reliability degraded by media errors or an internal error
	WarnReadOnly    = 1 << 3 // media placed in read-only mode
	WarnBackup      = 1 << 4 // the volatile memory backup device failed
	WarnPMRReadOnly = 1 << 5 // the persistent memory region became read-only or unreliable
)

var warningNames = []struct {
	bit  uint8
	text string
}{
	{WarnSpare, "available spare below its threshold"},
	{WarnTemperature, "temperature outside its thresholds"},
	{WarnReliability, "reliability degraded (media or internal errors)"},
	{WarnReadOnly, "media placed in read-only mode"},
	{WarnBackup, "volatile memory backup device failed"},
	{WarnPMRReadOnly, "persistent memory region read-only or unreliable"},
}

// CriticalWarnings names the bits set in a critical warning byte, in the specification's
// words.
func CriticalWarnings(cw uint8) []string {
	var out []string
	for _, w := range warningNames {
		if cw&w.bit != 0 {
			out = append(out, w.text)
		}
	}
	if rest := cw &^ 0x3f; rest != 0 {
		out = append(out, fmt.Sprintf("reserved bits %#02x set", rest))
	}
	return out
}

// ErrEmptyHealthLog: the log read back as zeros. The library does not look at the status
// the passthrough ioctl returns (a positive value), so a controller that fails Get Log Page
// leaves the page as it was: zero, which would read as a healthy device. The composite
// temperature is mandatory and never 0 K in a log the controller filled.
var ErrEmptyHealthLog = errors.New("the health log came back empty (the controller did not fill it)")

// ReadHealthLog reads the health log through the library from a controller node (/dev/nvmeX)
// or a namespace node; it opens it read-only.
func ReadHealthLog(path string) (*HealthLog, error) {
	d, err := smart.OpenNVMe(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	l, err := d.ReadSMART()
	if err != nil {
		return nil, fmt.Errorf("SMART / Health Information log of %s: %w", path, err)
	}
	if l.Temperature == 0 {
		return nil, fmt.Errorf("SMART / Health Information log of %s: %w", path, ErrEmptyHealthLog)
	}
	return l, nil
}

// Celsius converts a log temperature (kelvin) to °C.
func Celsius(k uint16) int { return int(k) - 273 }
