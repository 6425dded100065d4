package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/sim/lio"
)

// The LIO helpers live in sim/lio (the FlashArray simulator's lab data plane uses them too).
type (
	LIO    = lio.LIO
	LUN    = lio.LUN
	Target = lio.Target
)

var (
	PureNAA    = lio.PureNAA
	WaitForNAA = lio.WaitForNAA
	FindByNAA  = lio.FindByNAA
)

// SetupLIO loads the target and SCSI modules (lio.Modules) and opens LIO's configfs tree.
func SetupLIO() (*LIO, error) {
	if out, err := Run("modprobe", append([]string{"-a"}, lio.Modules...)...); err != nil {
		return nil, fmt.Errorf("modprobe %s: %v: %s", strings.Join(lio.Modules, " "), err, out)
	}
	return lio.Open()
}

// Partition splits a disk into n equal partitions (sfdisk) and returns their devices. Sizes
// go to sfdisk in MiB: its bare numbers count the disk's own sectors (4096 bytes on a 4Kn
// disk), sysfs's size counts 512-byte ones.
func Partition(disk string, n int) ([]string, error) {
	var script strings.Builder
	script.WriteString("label: gpt\n")
	b, err := os.ReadFile("/sys/block/" + filepath.Base(disk) + "/size")
	if err != nil {
		return nil, err
	}
	var sectors int64
	fmt.Sscan(strings.TrimSpace(string(b)), &sectors)
	each := (sectors/2048 - 2) / int64(n) // MiB; 2 MiB left for the GPT at both ends
	for i := 0; i < n; i++ {
		fmt.Fprintf(&script, "size=%dMiB, type=linux\n", each)
	}
	cmd := execCommand("sfdisk", "-q", disk)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sfdisk: %v: %s", err, out)
	}
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("%s%d", disk, i))
	}
	for _, p := range out {
		for j := 0; j < 100; j++ {
			if _, err := os.Stat(p); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out, nil
}
