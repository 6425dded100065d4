package nvme

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

// The library's SMART / Health log structure reads each field where NVMe base 2.0 figure 207
// puts it (values written at their offsets by hand).
func TestHealthLogLayout(t *testing.T) {
	b := make([]byte, 512)
	b[0] = 0x0c                                  // critical warning
	binary.LittleEndian.PutUint16(b[1:], 318)    // composite temperature, K
	b[3], b[4], b[5], b[6] = 7, 10, 101, 0x04    // spare, threshold, percentage used, endurance group warning
	binary.LittleEndian.PutUint64(b[128:], 5000) // power on hours
	binary.LittleEndian.PutUint64(b[144:], 3)    // unsafe shutdowns
	binary.LittleEndian.PutUint64(b[160:], 12)   // media and data integrity errors
	if binary.Size(HealthLog{}) != 512 {
		t.Fatalf("HealthLog is %d bytes", binary.Size(HealthLog{}))
	}
	var l HealthLog
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, &l); err != nil {
		t.Fatal(err)
	}
	if l.CritWarning != 0x0c || Celsius(l.Temperature) != 45 || l.AvailSpare != 7 || l.SpareThresh != 10 || l.PercentUsed != 101 ||
		l.EnduranceCritWarning != 4 || l.PowerOnHours.Val[0] != 5000 || l.UnsafeShutdowns.Val[0] != 3 || l.MediaErrors.Val[0] != 12 {
		t.Fatalf("%+v", l)
	}
	if binary.Size(Controller{}.NvmeIdentController) != IdentifyLen || binary.Size(Namespace{}.NvmeIdentNamespace) != IdentifyLen {
		t.Fatal("Identify structures are not 4096 bytes")
	}
}

func TestCriticalWarnings(t *testing.T) {
	got := CriticalWarnings(0x0c | 0x40)
	want := []string{"reliability degraded (media or internal errors)", "media placed in read-only mode", "reserved bits 0x40 set"}
	if !slices.Equal(got, want) {
		t.Fatalf("%q", got)
	}
	if CriticalWarnings(0) != nil {
		t.Error("warnings without a bit set")
	}
}
