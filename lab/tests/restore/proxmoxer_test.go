//go:build lab

package restore_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestProxmoxerOnRealNode drives the restore API with Debian's python3-proxmoxer, an
// independent client, against the real-kernel node: an API token with PVE's roles for the
// job, the VM list, an on-demand snapshot, its restore point, a restore as a new VM followed
// through the task endpoints; the new VM's disks then hold VM 100's data of that moment.
func TestProxmoxerOnRealNode(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("SKIP: no python3 in this guest (lab/setup.sh puts python3-proxmoxer into the root file system)")
	}
	l := newLab(t, 32*mib)
	want := l.hashes(100)
	must(t, l.Sim.AddUser("backup@pve", "pw-backup"))
	for path, role := range map[string]string{"/vms": "PVEVMAdmin", "/storage": "PVEDatastoreAdmin", "/sdn/zones/localnetwork": "PVESDNUser"} {
		must(t, l.Sim.AddACL(path, "backup@pve", role, true))
	}
	_, secret, err := l.Sim.AddToken("backup@pve", "restore", false)
	must(t, err)
	host, port, _ := strings.Cut(strings.TrimPrefix(l.URL, "https://"), ":")
	cmd := exec.Command("/usr/bin/python3", "/mnt/host/bin/pvesnap_client.py", host, port, "restore", "100", "proxmoxer", "200", "OK")
	cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+l.Sim.CAFile(), "PVE_USER=backup@pve", "PVE_TOKEN_NAME=restore", "PVE_TOKEN_VALUE="+secret)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK restore") {
		t.Fatalf("proxmoxer restore: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(string(out)))
	if got := l.hashes(200); got != want {
		t.Fatalf("VM 200 restored by proxmoxer holds %v, VM 100 had %v", got, want)
	}
	l.noLeftovers(false)
}
