package storage

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/ioctl/dm"
)

func devNumber(fi os.FileInfo) (dm.Dev, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&os.ModeDevice == 0 {
		return dm.Dev{}, fmt.Errorf("%s is not a block device", fi.Name())
	}
	return dm.Dev{Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}, nil
}
