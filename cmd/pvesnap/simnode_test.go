package main

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProcess runs this binary as pvesnap with args and stops it (SIGTERM) at the end.
func startProcess(t *testing.T, log string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		f.Close()
	})
	return cmd
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	env := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			env[k] = strings.Trim(v, "'")
		}
	}
	return env
}

// TestSimNode runs `pvesnap sim node` and `pvesnap serve` against it as programs, the way a
// person would: the daemon finds the node's zfs, lvs, … through its configured search path
// (links to this binary), and a client using only the printed environment copies a volume
// instantly through pvesnap. With python3-proxmoxer installed, it drives the same sequence.
func TestSimNode(t *testing.T) {
	dir := t.TempDir()
	pveproxy, pvesnap := freeAddr(t), freeAddr(t)
	startProcess(t, filepath.Join(dir, "node.log"), "sim", "node", "--dir", filepath.Join(dir, "node"), "--listen", pveproxy,
		"--pvesnap-listen", pvesnap, "--auth-fail-delay", "0s", "--user", "ops@pve=secret", "--acl", "/:ops@pve:PVEAdmin")
	envFile := filepath.Join(dir, "node", "env")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(envFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "node.log"))
			t.Fatalf("sim node did not come up:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	env := readEnv(t, envFile)
	for _, tool := range []string{"zfs", "lvs", "qm"} {
		if fi, err := os.Lstat(filepath.Join(env["PVE_SIM_BIN"], tool)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s: %v", tool, err)
		}
	}
	startProcess(t, filepath.Join(dir, "serve.log"), "--config", env["PVESNAP_CONFIG"], "serve")
	c, err := simpve.NewClient(env["PVESNAP_URL"], env["PVE_CA"])
	if err != nil {
		t.Fatal(err)
	}
	c.Token = env["PVE_TOKEN_ID"] + "=" + env["PVE_TOKEN_SECRET"]
	for {
		if r, err := c.Do("GET", "/version", nil); err == nil && r.Code == 200 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
			t.Fatalf("pvesnap serve did not come up:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.Must("POST", "/nodes/pve1/storage/local-zfs/content", url.Values{"vmid": {"100"}, "filename": {"vm-100-disk-0"}, "size": {"4M"}}); err != nil {
		t.Fatal(err)
	}
	d, err := c.Must("POST", "/nodes/pve1/storage/local-zfs/content/vm-100-disk-0", url.Values{"target": {"vm-9999-snap-go"}})
	if err != nil {
		t.Fatal(err)
	}
	upid := simpve.UPIDOf(d)
	if st, err := c.WaitTask(upid, 30*time.Second); err != nil || st != "OK" {
		t.Fatalf("copy task %s: %q %v", upid, st, err)
	}
	r, err := c.Do("GET", "/nodes/pve1/tasks/"+upid+"/log", nil)
	if err != nil || !strings.Contains(string(r.Data), "zfs clone rpool/data/vm-100-disk-0@") {
		t.Fatalf("the copy did not go through the node's zfs: %v %s", err, r.Data)
	}

	t.Run("proxmoxer", func(t *testing.T) {
		if err := exec.Command("/usr/bin/python3", "-c", "import proxmoxer, requests").Run(); err != nil {
			t.Skipf("SKIP: python3-proxmoxer is not installed (make test installs it): %v", err)
		}
		host, port, _ := strings.Cut(strings.TrimPrefix(env["PVESNAP_URL"], "https://"), ":")
		for _, mode := range []struct{ name, user, extra string }{
			{"token-json", env["PVE_TOKEN_USER"], "PVE_TOKEN_VALUE=" + env["PVE_TOKEN_SECRET"]},
			{"password", "ops@pve", "PVE_PASSWORD=secret"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			cmd := exec.CommandContext(ctx, "/usr/bin/python3", "../../daemon/itest/testdata/pvesnap_client.py", host, port, mode.name,
				"local-zfs", "vm-100-disk-0", "vm-9999-snap-"+mode.name)
			cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+env["PVE_CA"], "PVE_USER="+mode.user,
				"PVE_TOKEN_NAME="+env["PVE_TOKEN_NAME"], mode.extra)
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil || !strings.Contains(string(out), "OK ") {
				t.Fatalf("%s: %v\n%s", mode.name, err, out)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		}
	})
}
