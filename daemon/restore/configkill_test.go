package restore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A config writer killed with SIGKILL at any moment leaves the VM's config whole (the old
// version or the new one, never a mix or a truncation) and its config lock free, because
// writes go to a temporary file renamed into place under a flock the kernel releases; the
// next write removes the temporary file a killed writer left.
func TestConfigWriteSIGKILL(t *testing.T) {
	if os.Getenv("PVESNAP_CONFIG_WRITER") != "" {
		configWriter(os.Getenv("PVESNAP_CONFIG_WRITER"))
		return
	}
	root := t.TempDir()
	v := VMs{PVE: filepath.Join(root, "pve"), Lock: filepath.Join(root, "lock"), Node: "pve1"}
	must(t, os.MkdirAll(filepath.Join(v.PVE, "nodes", "pve1", "qemu-server"), 0o755))
	must(t, v.Write(100, configVersion("a")))
	rounds, changed := 40, 0
	for i := 0; i < rounds; i++ {
		before, err := os.ReadFile(v.confPath("pve1", 100))
		must(t, err)
		cmd := exec.Command(os.Args[0], "-test.run=^TestConfigWriteSIGKILL$")
		cmd.Env = append(os.Environ(), "PVESNAP_CONFIG_WRITER="+root)
		must(t, cmd.Start())
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		b, err := os.ReadFile(v.confPath("pve1", 100))
		must(t, err)
		if string(b) != string(configVersion("a")) && string(b) != string(configVersion("b")) {
			t.Fatalf("round %d: the config is neither version (%d bytes):\n%.300s", i, len(b), b)
		}
		if string(b) != string(before) {
			changed++
		}
		// The lock is free at once: this would wait 10 s and fail if the dead writer held it.
		start := time.Now()
		must(t, v.withConfigLock(100, func() error { return nil }))
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("round %d: the config lock was held for %v after the writer died", i, d)
		}
	}
	left, _ := filepath.Glob(v.confPath("pve1", 100) + ".pvesnap-tmp.*")
	// The next write removes what killed writers left.
	must(t, v.Write(100, configVersion("a")))
	tmps, _ := filepath.Glob(v.confPath("pve1", 100) + ".*tmp*")
	t.Logf("%d kills, the config changed across %d of them; %d temporary files left by killed writers, %d after the next write", rounds, changed, len(left), len(tmps))
	if len(tmps) != 0 {
		t.Errorf("temporary files remain after a write: %v", tmps)
	}
	if changed == 0 {
		t.Errorf("the writer never got a write done before it was killed: the test proved nothing")
	}
}

// configVersion is a config large enough that a write takes more than one system call.
func configVersion(name string) []byte {
	return []byte(fmt.Sprintf("#%s\nboot: order=scsi0\nmemory: 2048\nname: %s\nscsi0: san1:vm-100-disk-0,size=32G\n",
		strings.Repeat(name, 256*1024), name))
}

// configWriter flips VM 100's config between two versions until it is killed.
func configWriter(root string) {
	v := VMs{PVE: filepath.Join(root, "pve"), Lock: filepath.Join(root, "lock"), Node: "pve1"}
	for i := 0; ; i++ {
		name := "a"
		if i%2 == 0 {
			name = "b"
		}
		if err := v.Write(100, configVersion(name)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
