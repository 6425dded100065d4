package pve

import (
	"os"
	"path/filepath"
	"testing"
)

const sampleUserCfg = `user:root@pam:1:0:::root@example.com:::
user:alice@pve:1:1900000000:Alice::::
user:bob@pve:0:0::::::
token:alice@pve!ci:1800000000:1::
group:ops:alice@pve,bob@pve::
acl:1:/vms:@ops:PVEAuditor:
acl:0:/vms/300/:alice@pve:NoAccess:
acl:1://storage//san1:alice@pve!ci:PVEDatastoreUser:
acl:1:/bad path:alice@pve:PVEAuditor:
pool:prod::100,0200,100:san1,local-zfs:
pool:other::100,300::
`

func TestParseUserConfig(t *testing.T) {
	u := ParseUserConfig([]byte(sampleUserCfg))
	if !u.ACLPaths["/vms"] || !u.ACLPaths["/vms/300"] || !u.ACLPaths["/storage/san1"] || len(u.ACLPaths) != 3 {
		t.Errorf("ACL paths %v", u.ACLPaths)
	}
	for _, p := range []string{"/vms/100", "/vms/200", "/vms/300", "/storage/san1", "/storage/local-zfs"} {
		if !u.PoolMembers[p] {
			t.Errorf("pool member %s missing: %v", p, u.PoolMembers)
		}
	}
	if u.Users["alice@pve"] != 1900000000 || !u.Disabled["bob@pve"] || u.Disabled["alice@pve"] || u.Tokens["alice@pve!ci"] != 1800000000 {
		t.Errorf("accounts %v %v %v", u.Users, u.Disabled, u.Tokens)
	}
	for path, want := range map[string]bool{
		"/": true, "/vms": true, "/vms/100": true, "/vms/300": true, "/vms/301": false, "/storage": true,
		"/storage/san1": true, "/storage/other": false, "/nodes/pve1": false, "/mapping": false, "/pool": true,
	} {
		if got := u.Listed(path); got != want {
			t.Errorf("Listed(%s) = %v, want %v", path, got, want)
		}
	}
	// A path on the way to a deeper ACL entry is a node of PVE's ACL tree: listed.
	deep := ParseUserConfig([]byte("acl:1:/pool/a/b:alice@pve:PVEAuditor:\n"))
	if !deep.Listed("/pool/a") || deep.Listed("/pool/c") {
		t.Error("ACL tree nodes")
	}
}

func TestAccessStamp(t *testing.T) {
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "priv"), 0o700)
	write := func(name, text string) { os.WriteFile(filepath.Join(d, name), []byte(text), 0o640) }
	write("user.cfg", "user:root@pam:1:0::::::\n")
	s1, err := AccessStamp(d)
	if err != nil {
		t.Fatal(err)
	}
	write("user.cfg", "user:root@pam:0:0::::::\n") // same size, same second
	s2, _ := AccessStamp(d)
	write("priv/token.cfg", "root@pam!x 1234\n")
	s3, _ := AccessStamp(d)
	if s1 == s2 || s2 == s3 {
		t.Errorf("stamps %s %s %s: a change went unnoticed", s1, s2, s3)
	}
	// On pmxcfs: the versions it keeps.
	write(".version", `{"starttime": 1700000000, "clinfo": 5, "vmlist": 9, "user.cfg": 4, "domains.cfg": 1, "priv/token.cfg": 2, "kvstore": {}}`)
	p1, err := AccessStamp(d)
	if err != nil {
		t.Fatal(err)
	}
	write(".version", `{"starttime": 1700000000, "clinfo": 6, "vmlist": 10, "user.cfg": 4, "domains.cfg": 1, "priv/token.cfg": 2, "kvstore": {}}`)
	p2, _ := AccessStamp(d)
	write(".version", `{"starttime": 1700000000, "clinfo": 6, "vmlist": 10, "user.cfg": 5, "domains.cfg": 1, "priv/token.cfg": 2, "kvstore": {}}`)
	p3, _ := AccessStamp(d)
	if p1 != p2 || p2 == p3 {
		t.Errorf("pmxcfs stamps %s %s %s: only the access files' versions count", p1, p2, p3)
	}
}
