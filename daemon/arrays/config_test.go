package arrays

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestAddListUpdateRemove(t *testing.T) {
	c := &Config{PVE: t.TempDir()}
	if all, err := c.List(); err != nil || len(all) != 0 {
		t.Fatalf("empty cluster: %v %v", all, err)
	}
	fa := Array{ID: "fa1", Type: TypeFlashArray, Endpoint: "https://fa1.example.com", Comment: "rack 3, row B: ünïcode"}
	must(t, c.Add(fa, "0a1b2c3d-4e5f-6789"))
	must(t, c.Add(Array{ID: "fa0", Type: TypeFlashArray, Endpoint: "https://10.0.0.9:8443", HostGroup: "pve-cluster"}, "tok-of-fa0"))
	if err := c.Add(fa, "0a1b2c3d-4e5f-6789"); err == nil || !strings.Contains(err.Error(), "already defined") {
		t.Fatalf("duplicate: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(c.PVE, "pvesnap", "arrays.cfg"))
	want := "flasharray: fa0\n\tendpoint https://10.0.0.9:8443\n\thostgroup pve-cluster\n\n" +
		"flasharray: fa1\n\tendpoint https://fa1.example.com\n\tcomment rack 3, row B%3A %C3%BCn%C3%AFcode\n"
	if string(b) != want {
		t.Fatalf("arrays.cfg:\n%s\nwant:\n%s", b, want)
	}
	st, err := os.Stat(c.TokenFile("fa1"))
	must(t, err)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", st.Mode())
	}
	if strings.Contains(string(b), "0a1b2c3d") {
		t.Fatal("token written into arrays.cfg")
	}
	got, err := c.Get("fa1")
	must(t, err)
	if got != fa {
		t.Fatalf("read back %+v", got)
	}
	digest := c.Digest()
	must(t, c.Update("fa1", digest, func(a *Array) { a.HostGroup = "hg1"; a.Disable = true }, "new-token-1"))
	if err := c.Update("fa1", digest, func(a *Array) {}, ""); err == nil || !strings.Contains(err.Error(), "modified configuration") {
		t.Fatalf("stale digest: %v", err)
	}
	if err := c.Update("fa1", "", func(a *Array) { a.Endpoint = "http://plain" }, ""); err == nil {
		t.Fatal("update to an http endpoint accepted")
	}
	got, _ = c.Get("fa1")
	tok, _ := c.Token("fa1")
	if got.HostGroup != "hg1" || !got.Disable || tok != "new-token-1" || got.Endpoint != fa.Endpoint {
		t.Fatalf("after update: %+v token %q", got, tok)
	}
	if _, err := c.Client(got, purOpts()); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("client for a disabled array: %v", err)
	}
	must(t, c.Remove("fa1"))
	if _, err := os.Stat(c.TokenFile("fa1")); !os.IsNotExist(err) {
		t.Fatal("token left behind")
	}
	if _, err := c.Get("fa1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed array: %v", err)
	}
	if err := c.Remove("fa1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
}

func TestValidation(t *testing.T) {
	ok := Array{ID: "fa1", Type: TypeFlashArray, Endpoint: "https://fa1"}
	for name, mod := range map[string]func(*Array){
		"id with slash":    func(a *Array) { a.ID = "../etc" },
		"id upper case":    func(a *Array) { a.ID = "FA1" },
		"one-letter id":    func(a *Array) { a.ID = "f" },
		"type":             func(a *Array) { a.Type = "powerstore" },
		"http":             func(a *Array) { a.Endpoint = "http://fa1" },
		"credentials":      func(a *Array) { a.Endpoint = "https://user:pw@fa1" },
		"path":             func(a *Array) { a.Endpoint = "https://fa1/api" },
		"relative ca":      func(a *Array) { a.CA = "ca.pem" },
		"ca not a cert":    func(a *Array) { a.CA = "/etc/shadow" },
		"ca traversal":     func(a *Array) { a.CA = "/etc/pve/../shadow.pem" },
		"ca in /proc":      func(a *Array) { a.CA = "/proc/self/environ.pem" },
		"host group name":  func(a *Array) { a.HostGroup = "bad name" },
		"two-line comment": func(a *Array) { a.Comment = "a\nb" },
		// The endpoint's host is an address in PVE's sense (IP or DNS name), as a storage's
		// server is: no markup and no quotes reach anything that renders it.
		"markup in host":  func(a *Array) { a.Endpoint = "https://fa<b>1" },
		"quote in host":   func(a *Array) { a.Endpoint = `https://fa1"onmouseover=alert(1)` },
		"port 0":          func(a *Array) { a.Endpoint = "https://fa1:0" },
		"port not number": func(a *Array) { a.Endpoint = "https://fa1:x" },
	} {
		a := ok
		mod(&a)
		if a.Validate() == nil {
			t.Errorf("%s: accepted %+v", name, a)
		}
	}
	if ok.Validate() != nil {
		t.Fatal("valid array refused")
	}
	for _, ep := range []string{"https://fa1.example.com:8443", "https://10.0.0.9", "https://[fd00::9]:443", "https://fa1/"} {
		a := ok
		a.Endpoint = ep
		if err := a.Validate(); err != nil {
			t.Errorf("endpoint %s refused: %v", ep, err)
		}
	}
	// PVE keeps any one-line comment (SectionConfig refuses only line breaks); the GUI encodes.
	a := ok
	a.Comment = `<img src=x onerror="alert(1)">`
	if err := a.Validate(); err != nil {
		t.Errorf("a comment PVE accepts refused: %v", err)
	}
	for _, bad := range []string{"", "short", "has space in it", strings.Repeat("x", 257), "tab\there-xx"} {
		if CheckToken(bad) == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
	if err := CheckToken("secret with space"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("the message echoes the token: %v", err)
	}
}

// A held lock makes writers wait and then give up; one left behind by a dead holder (older
// than pmxcfs's 120 s) is taken over.
func TestClusterLock(t *testing.T) {
	c := &Config{PVE: t.TempDir(), LockTimeout: 200 * time.Millisecond}
	lock := filepath.Join(c.PVE, "priv", "lock", "file-pvesnap_arrays_cfg")
	must(t, os.MkdirAll(lock, 0o700))
	err := c.Add(Array{ID: "fa1", Type: TypeFlashArray, Endpoint: "https://fa1"}, "token-123")
	if err == nil || !strings.Contains(err.Error(), "got timeout") {
		t.Fatalf("held lock: %v", err)
	}
	old := time.Now().Add(-5 * time.Minute)
	os.Chtimes(lock, old, old)
	must(t, c.Add(Array{ID: "fa1", Type: TypeFlashArray, Endpoint: "https://fa1"}, "token-123"))
	if _, err := os.Stat(lock); !os.IsNotExist(err) {
		t.Fatal("lock not released")
	}
}

func TestInitiators(t *testing.T) {
	root := t.TempDir()
	p := NodePaths{ISCSI: filepath.Join(root, "iscsi"), NVMe: filepath.Join(root, "nvme"), Sys: filepath.Join(root, "sys")}
	if in := p.Initiators(); in.IQN != "" || in.NQN != "" || len(in.WWPNs) != 0 {
		t.Fatalf("nothing configured: %+v", in)
	}
	os.MkdirAll(p.ISCSI, 0o755)
	os.MkdirAll(p.NVMe, 0o755)
	os.MkdirAll(filepath.Join(p.Sys, "class", "fc_host", "host3"), 0o755)
	os.WriteFile(filepath.Join(p.ISCSI, "initiatorname.iscsi"), []byte("## DO NOT EDIT\nInitiatorName=iqn.1993-08.org.debian:01:abc\n"), 0o644)
	os.WriteFile(filepath.Join(p.NVMe, "hostnqn"), []byte("nqn.2014-08.org.nvmexpress:uuid:1234\n"), 0o644)
	os.WriteFile(filepath.Join(p.Sys, "class", "fc_host", "host3", "port_name"), []byte("0x21000024ff4c9a01\n"), 0o644)
	in := p.Initiators()
	if in.IQN != "iqn.1993-08.org.debian:01:abc" || in.NQN != "nqn.2014-08.org.nvmexpress:uuid:1234" || len(in.WWPNs) != 1 || in.WWPNs[0] != "21000024ff4c9a01" {
		t.Fatalf("%+v", in)
	}
}

func purOpts() pure.Options { return pure.Options{} }
