package pve

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Administration of the simulated cluster, as an operator would do it with pveum: these write
// user.cfg and priv/token.cfg in PVE's formats. Passwords are the simulator's own business
// (priv/shadow.cfg, "user:sha256hex:"): PVE keeps them in /etc/shadow or priv/shadow.cfg with
// crypt(3) hashes, which nothing outside the realm's plugin reads.

func (c *Cluster) editUserCfg(fn func(lines []string) []string) error {
	c.access.mu.Lock()
	defer func() {
		c.access.cfg = nil // mtimes are coarse on some file systems: read again
		c.access.mu.Unlock()
	}()
	p := filepath.Join(c.shared, "user.cfg")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	lines = fn(lines)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func (c *Cluster) appendUserCfg(line string) error {
	return c.editUserCfg(func(l []string) []string { return append(l, line) })
}

// ensureRoot adds root@pam to user.cfg (as PVE's installer does) and sets its password.
func (c *Cluster) ensureRoot(password string) error {
	b, err := os.ReadFile(filepath.Join(c.shared, "user.cfg"))
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte("user:root@pam:")) {
		if err := c.editUserCfg(func(l []string) []string {
			return append([]string{"user:root@pam:1:0:::root@pam.invalid:::"}, l...)
		}); err != nil {
			return err
		}
	}
	return c.access.setPassword("root@pam", password)
}

// AddUser creates user (user@realm) with a password.
func (c *Cluster) AddUser(user, password string) error {
	if err := verifyUsername(user); err != nil {
		return err
	}
	if err := c.appendUserCfg(fmt.Sprintf("user:%s:1:0::::::", user)); err != nil {
		return err
	}
	return c.access.setPassword(user, password)
}

// setUserField rewrites field i (1: enable, 2: expire) of user's line.
func (c *Cluster) setUserField(user string, i int, v string) error {
	found := false
	err := c.editUserCfg(func(lines []string) []string {
		for j, l := range lines {
			f := strings.Split(l, ":")
			if len(f) > i+1 && f[0] == "user" && f[1] == user {
				f[i+1] = v
				lines[j] = strings.Join(f, ":")
				found = true
			}
		}
		return lines
	})
	if err == nil && !found {
		err = fmt.Errorf("no such user ('%s')", user)
	}
	return err
}

// DisableUser sets enable=0 for user.
func (c *Cluster) DisableUser(user string) error { return c.setUserField(user, 1, "0") }

// ExpireUser sets user's expiry (PVE's "expire", epoch seconds; zero time: never).
func (c *Cluster) ExpireUser(user string, at time.Time) error {
	v := "0"
	if !at.IsZero() {
		v = fmt.Sprint(at.Unix())
	}
	return c.setUserField(user, 2, v)
}

// AddToken creates an API token for user and returns its secret (a UUID, like PVE).
func (c *Cluster) AddToken(user, name string, privsep bool) (tokenID, secret string, err error) {
	return c.AddTokenExpiring(user, name, privsep, time.Time{})
}

// AddTokenExpiring is AddToken with an expiry (zero: never).
func (c *Cluster) AddTokenExpiring(user, name string, privsep bool, expire time.Time) (tokenID, secret string, err error) {
	tokenID = user + "!" + name
	if _, _, ok := splitTokenID(tokenID); !ok {
		return "", "", fmt.Errorf("value '%s' does not look like a valid token ID", tokenID)
	}
	exp := int64(0)
	if !expire.IsZero() {
		exp = expire.Unix()
	}
	if err := c.appendUserCfg(fmt.Sprintf("token:%s:%d:%d::", tokenID, exp, boolInt(privsep))); err != nil {
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
	return c.appendUserCfg(fmt.Sprintf("acl:%d:%s:%s:%s:", boolInt(propagate), path, ugid, role))
}

// AddPool creates a pool with VMs and storages as members.
func (c *Cluster) AddPool(name string, vmids []string, storages []string) error {
	return c.appendUserCfg(fmt.Sprintf("pool:%s::%s:%s:", name, strings.Join(vmids, ","), strings.Join(storages, ",")))
}

// Ticket mints a ticket and CSRF token for user as POST /access/ticket would now.
func (c *Cluster) Ticket(user string) (ticket, csrf string, err error) {
	return c.TicketAt(user, time.Now())
}

// TicketAt mints a ticket and CSRF token dated at (for expiry tests).
func (c *Cluster) TicketAt(user string, at time.Time) (ticket, csrf string, err error) {
	if ticket, err = c.access.keys.makeTicket(user, at); err != nil {
		return "", "", err
	}
	csrf, err = c.access.keys.makeCSRF(user, at)
	return ticket, csrf, err
}

// SetStorageConfig replaces storage.cfg.
func (c *Cluster) SetStorageConfig(cfg string) error {
	return os.WriteFile(filepath.Join(c.shared, "storage.cfg"), []byte(cfg), 0o640)
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

func hashPassword(user, pw string) string {
	h := sha256.Sum256([]byte(user + "\x00" + pw))
	return hex.EncodeToString(h[:])
}

func (a *accessStore) setPassword(user, pw string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := filepath.Join(a.dir, "priv", "shadow.cfg")
	b, _ := os.ReadFile(p)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, user+":") {
			out = append(out, l)
		}
	}
	out = append(out, user+":"+hashPassword(user, pw)+":")
	return os.WriteFile(p, []byte(strings.Join(out, "\n")+"\n"), 0o600)
}

func (a *accessStore) checkPassword(user, pw string) bool {
	b, err := os.ReadFile(filepath.Join(a.dir, "priv", "shadow.cfg"))
	if err != nil {
		return false
	}
	want := hashPassword(user, pw)
	for _, l := range strings.Split(string(b), "\n") {
		if u, rest, ok := strings.Cut(l, ":"); ok && u == user {
			return subtle.ConstantTimeCompare([]byte(strings.TrimSuffix(rest, ":")), []byte(want)) == 1
		}
	}
	return false
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
