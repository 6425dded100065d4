package pve

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/pvesnap/pvesnap/daemon/auth"
)

// Administration of the simulated cluster, as an operator would do it with pveum: these write
// user.cfg and priv/token.cfg in PVE's format.

func (c *Cluster) appendUserCfg(line string) error {
	c.access.mu.Lock()
	defer c.access.mu.Unlock()
	p := filepath.Join(c.shared, "user.cfg")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(line + "\n")
	// user.cfg's mtime has one-second granularity on some file systems: force a re-read.
	c.access.cfg = nil
	return err
}

// AddUser creates user (user@realm) with a password.
func (c *Cluster) AddUser(user, password string) error {
	if err := c.appendUserCfg(fmt.Sprintf("user:%s:1:0::::::", user)); err != nil {
		return err
	}
	return c.access.SetPassword(user, password)
}

// DisableUser sets enable=0 for user.
func (c *Cluster) DisableUser(user string) error {
	c.access.mu.Lock()
	defer c.access.mu.Unlock()
	p := filepath.Join(c.shared, "user.cfg")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "user:"+user+":1:") {
			lines[i] = strings.Replace(l, ":1:", ":0:", 1)
		}
	}
	c.access.cfg = nil
	return os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o640)
}

// AddToken creates an API token for user and returns its secret (a UUID, like PVE).
func (c *Cluster) AddToken(user, name string, privsep bool) (tokenID, secret string, err error) {
	tokenID = user + "!" + name
	ps := 0
	if privsep {
		ps = 1
	}
	if err := c.appendUserCfg(fmt.Sprintf("token:%s:0:%d::", tokenID, ps)); err != nil {
		return "", "", err
	}
	secret = uuid.New().String()
	f, err := os.OpenFile(filepath.Join(c.shared, "priv", "token.cfg"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%s %s\n", tokenID, secret)
	return tokenID, secret, err
}

// AddGroup creates a group with members.
func (c *Cluster) AddGroup(name string, members ...string) error {
	return c.appendUserCfg(fmt.Sprintf("group:%s:%s::", name, strings.Join(members, ",")))
}

// AddRole creates a custom role.
func (c *Cluster) AddRole(name string, privs ...string) error {
	return c.appendUserCfg(fmt.Sprintf("role:%s:%s:", name, strings.Join(privs, ",")))
}

// AddACL grants role to ugid (user, @group or token id) on path.
func (c *Cluster) AddACL(path, ugid, role string, propagate bool) error {
	p := 0
	if propagate {
		p = 1
	}
	return c.appendUserCfg(fmt.Sprintf("acl:%d:%s:%s:%s:", p, path, ugid, role))
}

// AddPool creates a pool with VMs and storages as members.
func (c *Cluster) AddPool(name string, vmids []string, storages []string) error {
	return c.appendUserCfg(fmt.Sprintf("pool:%s::%s:%s:", name, strings.Join(vmids, ","), strings.Join(storages, ",")))
}

// Ticket mints a ticket and CSRF token for user as POST /access/ticket would now.
func (c *Cluster) Ticket(user string) (ticket, csrf string, err error) {
	return c.TicketAt(user, time.Now())
}

// TicketAt mints a ticket dated at (for expiry tests).
func (c *Cluster) TicketAt(user string, at time.Time) (ticket, csrf string, err error) {
	ticket, err = c.access.makeTicket(user, at)
	if err != nil {
		return "", "", err
	}
	key, err := os.ReadFile(filepath.Join(c.shared, "pve-www.key"))
	if err != nil {
		return "", "", err
	}
	return ticket, auth.MakeCSRF(key, user, at), nil
}

// SetStorageConfig replaces storage.cfg.
func (c *Cluster) SetStorageConfig(cfg string) error {
	return os.WriteFile(filepath.Join(c.shared, "storage.cfg"), []byte(cfg), 0o640)
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// DefaultStorageConfig is the storage.cfg of a fresh PVE node on ZFS plus LVM-thin, as the
// tests and the demo use it.
const DefaultStorageConfig = `dir: local
	path /var/lib/vz
	content iso,vztmpl,backup

zfspool: local-zfs
	pool rpool/data
	content images,rootdir
	sparse 1

lvmthin: local-lvm
	thinpool data
	vgname pve
	content rootdir,images
`
