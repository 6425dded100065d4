package storage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/proxy"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
)

// A copy with target_node (proxmox-csi-plugin's cross-zone clones, pvecsictl migrate) is a
// move between nodes. PVE makes it with ssh as root, which is why it allows it to root@pam
// alone. pvesnap makes it between its own daemons:
//
//  1. The source node's daemon checks the call (Datastore.Allocate on the storages, the names,
//     the source volume) and asks the target node's daemon to prepare, over TLS with both
//     nodes' certificates and with the caller's own credential: the target checks
//     Datastore.Allocate again with its own pveproxy, that the storage is available there and
//     the name free, starts its receiving task and answers with a one-time ticket.
//  2. The source starts its sending task, which streams the volume to the target daemon
//     (POST /pvesnap/peer/stream, node certificate and ticket): ZFS as a send stream
//     (incremental when both sides hold a snapshot of an earlier move), LVM as a block stream
//     that skips zeros. The target daemon hands the stream to its receiving task through a
//     pipe and answers once that task has committed the volume, or failed.
//
// The receiving side makes nothing visible until the volume is complete: ZFS removes a
// receive that fails or breaks off, and an LV is written under a temporary name and renamed
// only once it is whole and flushed.

// Job kinds of a move.
const (
	KindMoveSend    = "storage-move-send"
	KindMoveReceive = "storage-move-receive"
)

// Transports of a move's stream.
const (
	transportTLS = "tls" // through the daemons, TLS with the nodes' certificates
	transportTCP = "tcp" // plain, straight between the tasks (migration type=insecure)
)

// Stream formats.
const (
	formatZFS   = "zfs"   // a ZFS send stream
	formatBlock = "block" // lvm/stream
)

const (
	// moveSnapshotPrefix names the snapshot a move sends, kept on both sides as the source
	// of the next move's incremental stream: pvesnap-move-<8 hex time>-<8 hex random>.
	moveSnapshotPrefix = SnapshotPrefix + "move-"
	moveSnapshotLen    = len(moveSnapshotPrefix) + 8 + 1 + 8
	// peerPrefix is the non-API path of the streams between daemons.
	peerPrefix   = "/pvesnap/peer/"
	streamPath   = peerPrefix + "stream"
	ticketHeader = "X-Pvesnap-Ticket"
	sizeHeader   = "X-Pvesnap-Stream-Size" // the sender's estimate, for the receiver's progress
)

var (
	moveSnapshotRe = regexp.MustCompile(`^pvesnap-move-[0-9a-f]{8}-[0-9a-f]{8}$`)
	ticketRe       = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// MoveSpec is the sending side of a move.
type MoveSpec struct {
	Storage       string `json:"storage"`
	Source        string `json:"source"`
	TargetStorage string `json:"target_storage"`
	Target        string `json:"target"`
	TargetNode    string `json:"target_node"`
	Format        string `json:"format"`
	Pool          string `json:"pool,omitempty"`     // zfs
	Snapshot      string `json:"snapshot,omitempty"` // zfs: the snapshot sent
	Base          string `json:"base,omitempty"`     // zfs: the source of an incremental stream
	VG            string `json:"vg,omitempty"`       // lvm
	Ticket        string `json:"ticket"`
	TargetUPID    string `json:"target_upid"`
	Address       string `json:"address,omitempty"` // plain TCP: where the receiving task listens
	// Estimate is the stream's size as far as known (the volume's logical size), for progress.
	Estimate int64 `json:"estimate,omitempty"`
	// Earlier are the source's move snapshots when the move was called: removed once it is
	// done, as the new one takes over as the next move's base.
	Earlier []string `json:"earlier,omitempty"`
}

// ReceiveSpec is the receiving side of a move.
type ReceiveSpec struct {
	Storage    string `json:"storage"`
	Target     string `json:"target"`
	Source     string `json:"source"` // the source volid, for the log
	SourceNode string `json:"source_node"`
	Format     string `json:"format"`
	Pool       string `json:"pool,omitempty"`
	Snapshot   string `json:"snapshot,omitempty"`
	Base       string `json:"base,omitempty"` // zfs: the target's snapshot the stream starts from
	VG         string `json:"vg,omitempty"`
	ThinPool   string `json:"thinpool,omitempty"`
	Size       int64  `json:"size,omitempty"` // block: the LV to allocate
	Socket     string `json:"socket"`
	// Plain TCP (migration type=insecure): the address to listen on and the ticket's hash
	// (the task writes where it listens to Socket + ".addr").
	Listen     string `json:"listen,omitempty"`
	TicketHash string `json:"ticket_hash,omitempty"`
	// Earlier are the target's move snapshots, removed once the incremental stream is in.
	Earlier []string `json:"earlier,omitempty"`
}

// streamFormat is how a storage's volumes travel between nodes ("" when pvesnap cannot).
func streamFormat(st *pve.Storage) string {
	switch st.Type {
	case "zfspool":
		return formatZFS
	case "lvm", "lvmthin":
		return formatBlock
	}
	return ""
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newMoveSnapshot(now time.Time) string {
	return fmt.Sprintf("%s%08x-%s", moveSnapshotPrefix, uint32(now.Unix()), randomHex(4))
}

// socketPath is where the receiving task of a ticket waits for its stream: named after the
// ticket's hash, so the path does not give the ticket away, in a directory only root enters.
// 64 bits of the hash keep the path short (a socket's path has at most 107 bytes).
func (m *Module) socketPath(ticket string) string {
	h := sha256.Sum256([]byte(ticket))
	return filepath.Join(m.RunDir, "streams", hex.EncodeToString(h[:8])+".sock")
}

// streamWait is how long a receiving task waits for its stream, and the daemon for the task.
func (m *Module) streamWait() time.Duration {
	if m.StreamWait > 0 {
		return m.StreamWait
	}
	return time.Minute
}

// hasZFSDevice reports whether the kernel's ZFS interface is there and of a module series
// whose ioctl layouts were checked (zfs.CheckedSeries): moves send and receive through it,
// never through the zfs command, so a node without it leaves moves to PVE.
func (m *Module) hasZFSDevice() bool {
	d, err := m.zfs().kernel()
	if d != nil {
		d.Close()
	}
	return d != nil && err == nil
}

// move is the source side of a copy to another node: the target prepares, then the sending
// task starts. Moves pvesnap cannot make (another storage type, a node without pvesnap, no
// ZFS device) go to pveproxy unchanged.
func (m *Module) move(call *api.Call, st, tst *pve.Storage, vol, target, tnode string) (any, error) {
	format := streamFormat(st)
	if m.Peers == nil || format != streamFormat(tst) || (format == formatZFS && !m.hasZFSDevice()) {
		return nil, api.ErrPassThrough
	}
	if _, err := m.Peers.Address(tnode); err != nil {
		return nil, api.ErrPassThrough // not a cluster node: PVE's own answer
	}
	if !tst.OnNode(tnode) || tst.Disabled {
		return nil, api.Errorf(http.StatusInternalServerError, "storage '%s' is not available on node '%s'", tst.ID, tnode)
	}
	spec := MoveSpec{Storage: st.ID, Source: vol, TargetStorage: tst.ID, Target: target, TargetNode: tnode, Format: format}
	params := url.Values{"storage": {tst.ID}, "volume": {target}, "source_node": {m.Node}, "source": {st.ID + ":" + vol}, "format": {format}}
	mig, err := pve.ReadMigration(m.Peers.PVE)
	if err != nil {
		return nil, err
	}
	if mig.Insecure {
		params.Set("transport", transportTCP)
	}
	switch format {
	case formatZFS:
		spec.Pool = st.Pool
		src := st.Pool + "/" + vol
		snaps, logical, err := m.zfs().MoveFacts(call.Ctx, src)
		if errors.Is(err, ErrNoDataset) {
			return nil, api.Errorf(http.StatusInternalServerError, "no such volume '%s:%s'", st.ID, vol)
		}
		if err != nil {
			return nil, err
		}
		spec.Snapshot, spec.Estimate = newMoveSnapshot(time.Now()), logical
		var have []string
		for _, s := range snaps {
			have = append(have, s.Name+"="+s.GUID)
			if moveSnapshotRe.MatchString(s.Name) {
				spec.Earlier = append(spec.Earlier, s.Name)
			}
		}
		params.Set("snapshot", spec.Snapshot)
		params.Set("snapshots", strings.Join(have, ","))
	case formatBlock:
		spec.VG = st.VGName
		lv, err := (&lvm.LVM{Run: m.Run}).LV(call.Ctx, st.VGName, vol)
		if errors.Is(err, lvm.ErrNotFound) {
			return nil, api.Errorf(http.StatusInternalServerError, "no such volume '%s:%s'", st.ID, vol)
		}
		if err != nil {
			return nil, err
		}
		params.Set("size", fmt.Sprint(lv.Size))
	}
	var prep struct {
		UPID    string `json:"upid"`
		Ticket  string `json:"ticket"`
		Base    string `json:"base"`
		Address string `json:"address"`
	}
	if err := m.callPeer(call, tnode, "/nodes/"+tnode+"/pvesnap/receive", params, &prep); err != nil {
		if errors.Is(err, api.ErrUpstream) {
			m.Logger.Warn("move left to pveproxy: no pvesnap to receive it", "node", tnode, "err", err)
			return nil, api.ErrPassThrough
		}
		return nil, err
	}
	if !ticketRe.MatchString(prep.Ticket) || (prep.Base != "" && !moveSnapshotRe.MatchString(prep.Base)) {
		return nil, api.Errorf(http.StatusBadGateway, "node '%s' answered the move with a malformed ticket or base", tnode)
	}
	if mig.Insecure {
		host, port, err := net.SplitHostPort(prep.Address)
		if p, _ := strconv.Atoi(port); err != nil || net.ParseIP(host) == nil || p < tcpPortFirst || p > tcpPortLast {
			return nil, api.Errorf(http.StatusBadGateway, "node '%s' answered the move with a malformed address %q", tnode, prep.Address)
		}
	}
	spec.Ticket, spec.TargetUPID, spec.Base, spec.Address = prep.Ticket, prep.UPID, prep.Base, prep.Address
	b, _ := json.Marshal(spec)
	started, err := m.Tasks.Start(call.Ctx, tasks.Job{Type: "imgcopy", ID: "", User: call.Auth.Name(), Kind: KindMoveSend, Spec: b})
	if err != nil {
		return nil, err // the receiving task gives up when no stream comes
	}
	return started.UPID, nil
}

// callPeer POSTs an API call to another node's pvesnap with the caller's own credential, and
// decodes the data of a 200 answer into out. Any other answer comes back as an *api.Error
// with the peer's status and message; an unreachable peer, or one without the route, is
// api.ErrUpstream.
func (m *Module) callPeer(call *api.Call, node, path string, params url.Values, out any) error {
	client, base, err := m.Peers.Client(node, 60*time.Second)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(call.Ctx, http.MethodPost, base+"/api2/json"+path, strings.NewReader(params.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, h := range []string{"Authorization", "Cookie", "CSRFPreventionToken"} {
		if v := call.R.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("pvesnap on node '%s' unreachable: %v: %w", node, err, api.ErrUpstream)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading node '%s''s answer: %v: %w", node, err, api.ErrUpstream)
	}
	var env struct {
		Data    json.RawMessage   `json:"data"`
		Message string            `json:"message"`
		Errors  map[string]string `json:"errors"`
	}
	json.Unmarshal(body, &env) // an empty body (401) leaves only the status line
	switch {
	case resp.StatusCode == http.StatusNotImplemented:
		return fmt.Errorf("node '%s' runs a pvesnap that cannot receive moves: %w", node, api.ErrUpstream)
	case resp.StatusCode != http.StatusOK:
		msg := strings.TrimSpace(env.Message)
		if msg == "" {
			msg = proxy.ReasonOf(resp)
		}
		return &api.Error{Code: resp.StatusCode, Message: msg, Errors: env.Errors}
	}
	return json.Unmarshal(env.Data, out)
}

// receiveRoute is the target side's preparation of a move.
func (m *Module) receiveRoute() *api.Route {
	return &api.Route{Method: "POST", Path: "/nodes/{node}/pvesnap/receive", Name: "receive",
		Description: "Prepare this node to receive a volume that another node's pvesnap moves here (a copy with target_node): check the storage, the name and that the volume is not there yet, start the receiving task and return it with a one-time ticket for the stream. Only another cluster node's pvesnap calls it, on behalf of the caller of the copy, on this node directly: a call forwarded by a third node carries no node certificate and is refused.",
		Permission: api.Permission{Path: "/storage/{storage}", Privs: []string{"Datastore.Allocate"},
			Description: "for the caller of the copy, whose credential the sending node passes on; the TLS client certificate must be a cluster node's (nodes/<node>/pve-ssl.pem)"},
		Params: []api.Param{nodeParam,
			{Name: "storage", Type: api.String, Format: "pve-storage-id", Check: pve.CheckStorageID, Description: "The storage to receive into."},
			{Name: "volume", Type: api.String, Description: "The volume to create."},
			{Name: "source_node", Type: api.String, Format: "pve-node", Check: pve.CheckNode, Description: "The node sending it (the one whose certificate the call presents)."},
			{Name: "source", Type: api.String, MaxLength: 512, Description: "The volume sent, as a volid (for the task log)."},
			{Name: "format", Type: api.String, Enum: []string{formatZFS, formatBlock}, Description: "zfs: a ZFS send stream; block: an LV as a block stream that skips zeros."},
			{Name: "size", Type: api.Integer, Optional: true, Minimum: api.Min(1), Description: "block: the size of the LV to allocate, in bytes."},
			{Name: "snapshot", Type: api.String, Optional: true, Pattern: moveSnapshotRe, Description: "zfs: the snapshot the stream brings."},
			{Name: "snapshots", Type: api.String, Optional: true, MaxLength: 65536, Description: "zfs: the source volume's snapshots as name=guid, comma-separated, to find one the target holds too."},
			{Name: "transport", Type: api.String, Optional: true, Enum: []string{transportTLS, transportTCP}, Default: transportTLS,
				Description: "tls: the stream comes through the daemons over TLS; tcp: over plain TCP straight to the receiving task, only when datacenter.cfg sets migration type=insecure."}},
		Returns:   api.Returns{Type: "object", Properties: map[string]string{"upid": "string", "ticket": "string", "base": "string", "address": "string"}},
		ProxyTo:   "node",
		Protected: true,
		Handler:   m.receive}
}

// receive prepares the target side of a move.
func (m *Module) receive(call *api.Call) (any, error) {
	if m.Peers == nil {
		return nil, api.Errorf(http.StatusNotImplemented, "this pvesnap does not receive moves")
	}
	from, err := m.Peers.NodeOf(call.R.TLS)
	if err != nil {
		return nil, api.Errorf(http.StatusForbidden, "%v: only another node's pvesnap may start a move here", err)
	}
	if sn := call.Params.Str("source_node"); sn != from || from == m.Node {
		return nil, api.Errorf(http.StatusForbidden, "the call presents node '%s''s certificate but says it comes from node '%s'", from, sn)
	}
	sid, vol, format := call.Params.Str("storage"), call.Params.Str("volume"), call.Params.Str("format")
	st, err := m.Storage.Get(sid)
	if err != nil {
		return nil, api.Errorf(http.StatusInternalServerError, "storage '%s' does not exist", sid)
	}
	if !st.OnNode(m.Node) || st.Disabled {
		return nil, api.Errorf(http.StatusInternalServerError, "storage '%s' is not available on node '%s'", sid, m.Node)
	}
	if !served(st) || streamFormat(st) != format || st.Shared {
		return nil, api.ParamErr("format", fmt.Sprintf("storage '%s' (%s) cannot receive a %s stream", sid, st.Type, format))
	}
	if err := checkTargetName(st, "", vol, opMove); err != nil {
		return nil, api.ParamErr("volume", err.Error())
	}
	if _, err := pve.ParseDiskName(vol); err != nil {
		return nil, api.ParamErr("volume", err.Error())
	}
	ticket := randomHex(32)
	spec := ReceiveSpec{Storage: sid, Target: vol, Source: call.Params.Str("source"), SourceNode: from, Format: format, Socket: m.socketPath(ticket)}
	exists := api.Errorf(http.StatusInternalServerError, "volume '%s:%s' already exists", sid, vol)
	answer := map[string]string{"ticket": ticket, "base": ""}
	switch format {
	case formatZFS:
		if !m.hasZFSDevice() {
			return nil, api.Errorf(http.StatusNotImplemented, "node '%s' has no ZFS device to receive with", m.Node)
		}
		spec.Pool, spec.Snapshot = st.Pool, call.Params.Str("snapshot")
		if spec.Snapshot == "" {
			return nil, api.ParamErr("snapshot", "property is missing and it is not optional")
		}
		base, err := m.zfsBase(call.Ctx, st.Pool+"/"+vol, call.Params.Str("snapshots"))
		if err != nil {
			return nil, err
		}
		if base == nil {
			break
		}
		if base.Name == "" {
			return nil, exists
		}
		spec.Base, spec.Earlier, answer["base"] = base.Name, base.Earlier, base.Source
	case formatBlock:
		spec.VG, spec.Size = st.VGName, call.Params.Int("size")
		if st.Type == "lvmthin" {
			spec.ThinPool = st.ThinPool
		}
		if spec.Size <= 0 {
			return nil, api.ParamErr("size", "property is missing and it is not optional")
		}
		if _, err := (&lvm.LVM{Run: m.Run}).LV(call.Ctx, st.VGName, vol); err == nil {
			return nil, exists
		} else if !errors.Is(err, lvm.ErrNotFound) {
			return nil, err
		}
	}
	if call.Params.Str("transport") == transportTCP {
		mig, err := pve.ReadMigration(m.Peers.PVE)
		if err != nil {
			return nil, err
		}
		if !mig.Insecure {
			return nil, api.ParamErr("transport", "this cluster's migration type is secure (datacenter.cfg): no plain stream")
		}
		if spec.Listen, err = m.listenIP(mig); err != nil {
			return nil, err
		}
		spec.TicketHash = ticketHash(ticket)
	}
	if err := os.MkdirAll(filepath.Dir(spec.Socket), 0o700); err != nil {
		return nil, err
	}
	removeStaleSockets(filepath.Dir(spec.Socket), time.Now().Add(-time.Hour))
	b, _ := json.Marshal(spec)
	started, err := m.Tasks.Start(call.Ctx, tasks.Job{Type: "imgcopy", ID: "", User: call.Auth.Name(), Kind: KindMoveReceive, Spec: b})
	if err != nil {
		return nil, err
	}
	answer["upid"] = started.UPID
	if spec.Listen != "" {
		if answer["address"], err = waitAddress(call.Ctx, spec.Socket+".addr", m.streamWait()); err != nil {
			return nil, err // the task gives up by itself
		}
	}
	return answer, nil
}

// zfsBase decides how a ZFS volume is received: nil when ds does not exist (a full
// stream); else the snapshot an incremental stream can start from, which must be ds's most
// recent and one the source holds too (by GUID), with the source's name for it. An empty
// Name means there is none: ds is another volume of the same name.
func (m *Module) zfsBase(ctx context.Context, ds, sourceSnaps string) (*zfsBase, error) {
	found, err := m.zfs().Existing(ctx, ds)
	if err != nil || !found[ds] {
		return nil, err
	}
	snaps, _, err := m.zfs().MoveFacts(ctx, ds)
	if err != nil || len(snaps) == 0 {
		return &zfsBase{}, err
	}
	newest := snaps[len(snaps)-1]
	for _, s := range strings.Split(sourceSnaps, ",") {
		if name, guid, ok := strings.Cut(s, "="); ok && guid == newest.GUID && moveSnapshotRe.MatchString(name) {
			b := &zfsBase{Name: newest.Name, Source: name}
			for _, sn := range snaps {
				if moveSnapshotRe.MatchString(sn.Name) {
					b.Earlier = append(b.Earlier, sn.Name)
				}
			}
			return b, nil
		}
	}
	return &zfsBase{}, nil
}

type zfsBase struct {
	Name    string   // on the target
	Source  string   // the same snapshot's name on the source
	Earlier []string // the target's move snapshots (the base among them)
}

// removeStaleSockets removes the sockets of receiving tasks that died before their stream
// came (a task waits a minute at most, then removes its own).
func removeStaleSockets(dir string, before time.Time) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".sock") && fi.ModTime().Before(before) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
