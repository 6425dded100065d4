package engine

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/ioctl/dm"
)

func statDev(fi os.FileInfo) (dm.Dev, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return dm.Dev{}, fmt.Errorf("%s: no device number", fi.Name())
	}
	return dm.Dev{Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}, nil
}
