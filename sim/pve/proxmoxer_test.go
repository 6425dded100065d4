package pve_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// proxmoxer runs Debian's python3-proxmoxer against a Proxmox API endpoint.
func proxmoxer(t *testing.T, host, port, mode, vmid string, env ...string) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import proxmoxer").Run(); err != nil {
		t.Skipf("SKIP: python3-proxmoxer is not installed (make test installs it): %v", err)
	}
	cmd := exec.Command(py, "testdata/proxmoxer_client.py", host, port, mode, vmid)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("proxmoxer (%s): %v\n%s", mode, err, out)
	}
	if !strings.HasPrefix(strings.TrimSpace(string(out)), "OK ") {
		t.Fatalf("proxmoxer (%s): %s", mode, out)
	}
	return string(out)
}

func TestProxmoxerAgainstSimulator(t *testing.T) {
	c, _ := startCluster(t, "pve1")
	host, port, _ := strings.Cut(c.Addr("pve1"), ":")
	if err := c.AddUser("csi@pve", "secret-pw"); err != nil {
		t.Fatal(err)
	}
	id, secret, err := c.AddToken("csi@pve", "csi", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, acl := range [][2]string{{"/", "PVEVMAdmin"}, {"/storage", "PVEDatastoreUser"}, {"/nodes", "PVEAuditor"}} {
		if err := c.AddACL(acl[0], "csi@pve", acl[1], true); err != nil {
			t.Fatal(err)
		}
	}
	ca := "REQUESTS_CA_BUNDLE=" + c.CAFile()
	t.Log(proxmoxer(t, host, port, "token", "201", ca, "PVE_USER=csi@pve", "PVE_TOKEN_NAME=csi", "PVE_TOKEN_VALUE="+secret))
	_ = id
	t.Log(proxmoxer(t, host, port, "password", "202", ca, "PVE_USER=csi@pve", "PVE_PASSWORD=secret-pw"))
}
