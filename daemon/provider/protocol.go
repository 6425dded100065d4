// Package provider is the daemon's side of pvesnap's Proxmox VE storage plugin (perl/): the
// plugin lists restore points as backup archives and PVE's qmrestore restores them through
// the backup provider API, by calls to this package over a root-only Unix socket.
//
// The socket offers only what PVE calls once it has checked the caller's permissions itself
// (content listing, archive config, and the restore's staging of a point's disks): nothing
// here writes a VM config, allocates or deletes a PVE volume, or takes a snapshot. The peer
// must be root (SO_PEERCRED), as PVE's daemons and workers are.
//
// The protocol is one JSON request line and one JSON response line per connection:
//
//	{"version":1,"method":"list","params":{"storage":"snaps"}}
//	{"version":1,"result":{…},"log":["…"]}   or   {"version":1,"error":"…"}
//
// A request of another version is answered with an error naming the versions spoken, so a
// plugin and a daemon of different releases fail with a message, never by misreading.
package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// Version is the protocol version this daemon speaks.
const Version = 1

// MaxRequest bounds a request line.
const MaxRequest = 64 << 10

// Request is one call.
type Request struct {
	Version int             `json:"version"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

// Response is the answer: Result or Error, and the log lines of the work done (the plugin
// passes them to the PVE task log).
type Response struct {
	Version int      `json:"version"`
	Result  any      `json:"result,omitempty"`
	Error   string   `json:"error,omitempty"`
	Log     []string `json:"log,omitempty"`
}

// Field documents a parameter or result field.
type Field struct {
	Name        string
	Type        string
	Optional    bool
	Description string
}

// Method is one call of the protocol.
type Method struct {
	Name        string
	Description string
	Params      []Field
	Result      []Field
	run         func(ctx context.Context, c *call) (any, error)
}

// call is one request being answered.
type call struct {
	pid    int // the peer process (SO_PEERCRED)
	params json.RawMessage
	log    []string
}

func (c *call) logf(format string, args ...any) { c.log = append(c.log, fmt.Sprintf(format, args...)) }

// decode reads the params strictly: an unknown field is an error, not ignored.
func (c *call) decode(v any) error {
	if len(c.params) == 0 {
		c.params = []byte("{}")
	}
	d := json.NewDecoder(strings.NewReader(string(c.params)))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("bad params: %v", err)
	}
	return nil
}

var (
	storageField = Field{Name: "storage", Type: "string", Description: "The pvesnap storage (its storage.cfg section holds the filters)."}
	volnameField = Field{Name: "volname", Type: "string", Description: "The archive: `backup/pvesnap-qemu-<vmid>-<vm ctime>-<array>:<point>`."}
	sessionField = Field{Name: "session", Type: "string", Description: "Restore session id chosen by the plugin before restore-init (6-16 lower-case letters and digits), so it can clean up even when the reply of restore-init never reached it."}
	deviceField  = Field{Name: "device", Type: "string", Description: "Device name from restore-init (`drive-<disk key>`)."}
	archiveItem  = "`volname`, `vmid`, `ctime` (the point's time, s), `size` (bytes of the disks it restores), `notes` (what the point holds and cannot restore), `subtype` (qemu), `vm_ctime` (the VM incarnation), `point` (`<array>:<point>`)"
)

// Methods are the protocol's calls (the docs are generated from them).
func (p *Provider) Methods() []Method {
	return []Method{
		{Name: "version", Description: "The protocol versions and the daemon's release; the plugin's connection check.",
			Result: []Field{{Name: "versions", Type: "array of integers", Description: "Protocol versions spoken."}, {Name: "daemon", Type: "string", Description: "pvesnap's release."}},
			run: func(ctx context.Context, c *call) (any, error) {
				return map[string]any{"versions": []int{Version}, "daemon": p.DaemonVersion}, nil
			}},
		{Name: "list", Description: "The storage's archives: one per VM incarnation (deleted VMs included) and restore point holding at least one of its disks; the notes say what a point cannot restore.",
			Params: []Field{storageField, {Name: "vmid", Type: "integer", Optional: true, Description: "Only this VM's archives."}},
			Result: []Field{{Name: "archives", Type: "array of objects", Description: archiveItem}},
			run:    p.list},
		{Name: "info", Description: "One archive, as list returns it.",
			Params: []Field{storageField, volnameField},
			Result: []Field{{Name: "archive", Type: "object", Description: archiveItem}},
			run:    p.info},
		{Name: "config", Description: "The guest config of the archive, as vzdump writes it into a backup: the VM's config without pending changes, snapshots, unused disks or lock; a `#qmdump#map:<disk>:drive-<disk>:<storage>:raw:` line for every disk the point restores; `backup=0` on every other disk, so PVE's restore comments it out instead of pointing the new VM at the original's disk.",
			Params: []Field{storageField, volnameField},
			Result: []Field{{Name: "config", Type: "string", Description: "The config file's text."}},
			run:    p.config},
		{Name: "restore-init", Description: "Stages the point's disks on this node with pvesnap's own restore staging (the snapshot copied to a temporary array volume, connected, its device found, its VG imported under a name of the session), each step journaled with its undo. The session belongs to the calling process: if it ends without restore-cleanup, the daemon cleans up. On failure everything staged so far is undone before the answer.",
			Params: []Field{storageField, volnameField, sessionField},
			Result: []Field{{Name: "devices", Type: "object", Description: "Device name (`drive-<disk key>`) → `{size}`: bytes of the staged disk, the size of the volume PVE allocates for it."}},
			run:    p.restoreInit},
		{Name: "volume-init", Description: "Activates one staged disk and returns its block device, the source of PVE's `qemu-img convert`. A daemon restarted since restore-init finds the session again (its journal, its staged VG), for the process that began it only.",
			Params: []Field{sessionField, deviceField},
			Result: []Field{{Name: "path", Type: "string", Description: "The staged LV's block device (`/dev/<session VG>/<LV>`)."}},
			run:    p.volumeInit},
		{Name: "volume-cleanup", Description: "Deactivates one staged disk.",
			Params: []Field{sessionField, deviceField},
			run:    p.volumeCleanup},
		{Name: "restore-cleanup", Description: "Undoes the session's staging through its journal: VG deactivated, devices removed, volume disconnected and destroyed. Idempotent; a session that failed or never started is nothing to clean.",
			Params: []Field{sessionField},
			run:    p.restoreCleanup},
	}
}
