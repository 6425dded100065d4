package ioctl

import "testing"

// The numbers are the values of the kernel's uapi macros compiled on amd64.
func TestIOCNumbers(t *testing.T) {
	cases := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"NVME_IOCTL_ID", IO('N', 0x40), 0x4E40},
		{"NVME_IOCTL_ADMIN_CMD", IOWR('N', 0x41, 72), 0xC0484E41},
		{"NVME_IOCTL_IO_CMD", IOWR('N', 0x43, 72), 0xC0484E43},
		{"NVME_IOCTL_ADMIN64_CMD", IOWR('N', 0x47, 80), 0xC0504E47},
		{"NVME_IOCTL_IO64_CMD", IOWR('N', 0x48, 80), 0xC0504E48},
		{"NVME_IOCTL_SUBMIT_IO", IOW('N', 0x42, 48), 0x40304E42},
		{"BLKGETSIZE64", IOR(0x12, 114, 8), 0x80081272},
		{"DM_TABLE_STATUS", IOWR(0xfd, 12, 312), 0xc138fd0c},
		{"DM_DEV_STATUS", IOWR(0xfd, 7, 312), 0xc138fd07},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestBufferIsPageAligned(t *testing.T) {
	b, err := NewBuffer(100)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	if b.Addr()%4096 != 0 || len(b.Bytes()) != 100 {
		t.Fatalf("addr %#x len %d", b.Addr(), len(b.Bytes()))
	}
	b.Bytes()[99] = 1
}
