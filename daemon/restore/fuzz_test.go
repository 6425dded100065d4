package restore

import (
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// A new VM's config replayed from any remembered config carries no lock, no snapshot and no
// disk other than the restored ones.
func FuzzReplay(f *testing.F) {
	f.Add([]byte(srcConfig))
	f.Add([]byte("scsi0: san1:vm-100-disk-0\nlock: migrate\nnet0: e1000=00:11:22:33:44:55\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		src, err := pve.ParseVMConfig(b)
		if err != nil {
			return
		}
		out, _ := Replay(src, ReplayOptions{Disks: map[string]string{"scsi0": "san1:vm-200-disk-0"}, LinkDown: true, Now: time.Unix(1800000000, 0)})
		cfg, err := pve.ParseVMConfig(out)
		if err != nil {
			t.Fatalf("replayed config does not parse: %v\n%s", err, out)
		}
		if _, ok := cfg.Props["lock"]; ok {
			t.Fatal("lock carried over")
		}
		if len(cfg.Snapshots) > 0 || len(cfg.Pending) > 0 {
			t.Fatal("snapshots or pending changes carried over")
		}
		for _, d := range cfg.Disks() {
			if d.Media != "cdrom" && d.Volid.String() != "san1:vm-200-disk-0" && !strings.HasPrefix(d.Key, "unused") {
				t.Fatalf("disk %s (%s) carried over", d.Key, d.Volid)
			}
		}
	})
}
