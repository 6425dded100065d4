package scsi

import (
	"testing"
	"unsafe"
)

// TestSgIoHdrLayout pins struct sg_io_hdr's size and offsets (compiled from <scsi/sg.h> on amd64).
func TestSgIoHdrLayout(t *testing.T) {
	var h sgIoHdr
	if s := unsafe.Sizeof(h); s != 88 {
		t.Fatalf("sizeof(sg_io_hdr) = %d, want 88", s)
	}
	for name, got := range map[string]uintptr{
		"dxfer_len": unsafe.Offsetof(h.DxferLen), "dxferp": unsafe.Offsetof(h.Dxferp), "cmdp": unsafe.Offsetof(h.Cmdp),
		"sbp": unsafe.Offsetof(h.Sbp), "timeout": unsafe.Offsetof(h.Timeout), "usr_ptr": unsafe.Offsetof(h.UsrPtr),
		"status": unsafe.Offsetof(h.Status), "sb_len_wr": unsafe.Offsetof(h.SbLenWr), "host_status": unsafe.Offsetof(h.HostStatus),
		"driver_status": unsafe.Offsetof(h.DriverStatus), "resid": unsafe.Offsetof(h.Resid), "info": unsafe.Offsetof(h.Info),
	} {
		want := map[string]uintptr{"dxfer_len": 12, "dxferp": 16, "cmdp": 24, "sbp": 32, "timeout": 40, "usr_ptr": 56,
			"status": 64, "sb_len_wr": 67, "host_status": 68, "driver_status": 70, "resid": 72, "info": 80}[name]
		if got != want {
			t.Errorf("offsetof(%s) = %d, want %d", name, got, want)
		}
	}
}
