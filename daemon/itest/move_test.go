package itest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/lvm/stream"
	"github.com/pvesnap/pvesnap/sim/certs"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// presentNodeCert makes c present node's certificate, as that node's pvesnap does.
func (e *Env) presentNodeCert(c *simpve.Client, node string) {
	dir := filepath.Join(e.Sim.Shared(), "nodes", node)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "pve-ssl.pem"), filepath.Join(dir, "pve-ssl.key"))
	must(e.T, err)
	tr := c.HTTP.Transport.(*http.Transport)
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
}

// allocateOnly is a client with a token whose only privilege is Datastore.Allocate on every
// storage: what a move through pvesnap needs, where PVE wants root@pam. The token is made
// once per cluster; every client uses it.
func allocateOnly(t *testing.T, e *Env, node string) *simpve.Client {
	t.Helper()
	if e.moveToken == "" {
		must(t, e.Sim.AddRole("MoveOnly", "Datastore.Allocate"))
		c, _ := e.Token(node, "csi-move@pve", map[string]string{"/storage": "MoveOnly"})
		e.moveToken = c.Token
	}
	c := e.Client(node)
	c.Token, c.JSON = e.moveToken, true
	return c
}

// seedPattern makes vol on node's storage sid: data in its second MiB and its last 100 KiB,
// zeros elsewhere (ranges a block stream skips).
func seedPattern(t *testing.T, e *Env, node, sid, vol string, size int64) []byte {
	t.Helper()
	st := e.Sim.Store(node, sid)
	must(t, st.Create(vol, size, volstore.Meta{Tags: []string{"pve-vm-100"}}))
	b := make([]byte, size)
	copy(b[1<<20:], bytes.Repeat([]byte("pvesnap move "), (1<<20)/13))
	copy(b[size-100<<10:], bytes.Repeat([]byte{0xa5}, 100<<10))
	must(t, os.WriteFile(st.Path(vol), b, 0o644))
	return b
}

// logText is a task's whole log read through pvesnap (as the GUI reads it).
func logText(t *testing.T, c *simpve.Client, upid string) string {
	t.Helper()
	lines, _ := taskLog(t, c, strings.Split(upid, ":")[1], url.PathEscape(upid), 0, 1000)
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.T + "\n")
	}
	return b.String()
}

// receivingTask finds the receiving task on node (the only imgcopy there).
func receivingTask(t *testing.T, e *Env, node string) string {
	t.Helper()
	active, err := e.Tasks[node].Dir.Active()
	must(t, err)
	for _, a := range active {
		if strings.Contains(a.UPID, ":imgcopy::") {
			return a.UPID
		}
	}
	t.Fatalf("no imgcopy task on %s: %+v", node, active)
	return ""
}

// TestMoveThinLVToAnotherNode is pvecsictl migrate: the copy call with target_node and the
// same volume name, by a token that holds Datastore.Allocate and nothing else. PVE refuses
// it to anyone but root@pam; through pvesnap the volume arrives whole on the other node,
// with a task on each node.
func TestMoveThinLVToAnotherNode(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	const size = 8 << 20
	want := seedPattern(t, e, "pve1", "local-lvm", "vm-100-disk-0", size)
	c := allocateOnly(t, e, "pve1")
	d, err := c.Must("POST", "/nodes/pve1/storage/local-lvm/content/vm-100-disk-0",
		url.Values{"node": {"pve1"}, "volume": {"vm-100-disk-0"}, "target": {"vm-100-disk-0"}, "target_node": {"pve2"}})
	must(t, err)
	upid := simpve.UPIDOf(d)
	if !strings.HasPrefix(upid, "UPID:pve1:") || !strings.Contains(upid, ":imgcopy::csi-move@pve!csi:") {
		t.Fatalf("UPID %s: the sending task runs on pve1 for the caller", upid)
	}
	if st, err := c.WaitTask(upid, 30*time.Second); err != nil || st != "OK" {
		t.Fatalf("move: %q %v\n%s", st, err, logText(t, c, upid))
	}
	got, err := os.ReadFile(e.Sim.Store("pve2", "local-lvm").Path("vm-100-disk-0"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the volume on pve2 differs from the source (%v)", err)
	}
	vols, _ := e.Sim.Store("pve2", "local-lvm").List()
	if len(vols) != 1 || vols[0].Size != size || strings.Join(vols[0].Meta.Tags, ",") != "pve-vm-100" {
		t.Fatalf("pve2's local-lvm: %+v (the volume alone, its size and owner tag)", vols)
	}
	if src, _ := e.Sim.Store("pve1", "local-lvm").List(); len(src) != 1 {
		t.Fatalf("pve1's local-lvm: %+v (the source alone: its thin snapshot is gone)", src)
	}
	send := logText(t, c, upid)
	recv := receivingTask(t, e, "pve2")
	rlog := logText(t, c, recv)
	for _, w := range []string{"moving 'local-lvm:vm-100-disk-0' to 'local-lvm:vm-100-disk-0' on node 'pve2'", "progress: ", "sent 2.0 MiB of data (6.0 MiB of zeros skipped)", "TASK OK"} {
		if !strings.Contains(send, w) {
			t.Errorf("sending task's log lacks %q:\n%s", w, send)
		}
	}
	for _, w := range []string{"receiving 'local-lvm:vm-100-disk-0' from node 'pve1'", "progress: ", "is complete", "TASK OK"} {
		if !strings.Contains(rlog, w) {
			t.Errorf("receiving task's log lacks %q:\n%s", w, rlog)
		}
	}
	if !strings.Contains(recv, ":csi-move@pve!csi:") {
		t.Errorf("receiving task %s does not run for the caller", recv)
	}
	// A second move of the same name: the target refuses before any task starts.
	r, err := c.Do("POST", "/nodes/pve1/storage/local-lvm/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-0"}, "target_node": {"pve2"}})
	must(t, err)
	if r.Code != 500 || r.Status != "volume 'local-lvm:vm-100-disk-0' already exists" {
		t.Fatalf("move onto an existing volume: %d %q", r.Code, r.Status)
	}
}

// stream posts body to node's stream endpoint with c's client certificate and ticket.
func postStream(t *testing.T, e *Env, c *simpve.Client, node, ticket string, body io.Reader) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest("POST", e.URL(node)+"/pvesnap/peer/stream", body)
	must(t, err)
	req.Header.Set("X-Pvesnap-Ticket", ticket)
	resp, err := c.HTTP.Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// prepareAs asks node to receive a block volume, as node from's pvesnap would; extra
// parameters (transport) are added.
func prepareAs(t *testing.T, e *Env, node, from, vol string, size int64, extra ...string) (c *simpve.Client, upid, ticket, address string) {
	t.Helper()
	c = allocateOnly(t, e, node)
	e.presentNodeCert(c, from)
	params := url.Values{"storage": {"local-lvm"}, "volume": {vol},
		"source_node": {from}, "source": {"local-lvm:" + vol}, "format": {"block"}, "size": {fmt.Sprint(size)}}
	for i := 0; i+1 < len(extra); i += 2 {
		params.Set(extra[i], extra[i+1])
	}
	d, err := c.Must("POST", "/nodes/"+node+"/pvesnap/receive", params)
	must(t, err)
	var p struct{ UPID, Ticket, Address string }
	must(t, json.Unmarshal(d, &p))
	return c, p.UPID, p.Ticket, p.Address
}

// blockStream is a whole block stream of data (no zeros) of size bytes.
func blockStream(t *testing.T, size int64) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := stream.NewWriter(&b, size)
	must(t, err)
	chunk := bytes.Repeat([]byte("moved "), (1<<20)/6+1)[:1<<20]
	for off := int64(0); off < size; off += 1 << 20 {
		must(t, w.Data(off, chunk))
	}
	must(t, w.Close())
	return b.Bytes()
}

// TestMoveEndpointsNeedANodeCertificate: only the pvesnap of another cluster node may prepare
// a move or send its stream, proving which node it is with that node's own certificate; no
// header, host name or CA-signed certificate of another name does.
func TestMoveEndpointsNeedANodeCertificate(t *testing.T) {
	e := Start(t, "pve1", "pve2", "pve3")
	params := url.Values{"storage": {"local-lvm"}, "volume": {"vm-100-disk-5"}, "source_node": {"pve1"},
		"source": {"local-lvm:vm-100-disk-5"}, "format": {"block"}, "size": {"1048576"}}
	c := allocateOnly(t, e, "pve2") // holds Datastore.Allocate
	try := func(name string, c *simpve.Client, want string) {
		t.Helper()
		r, err := c.Do("POST", "/nodes/pve2/pvesnap/receive", params)
		must(t, err)
		if r.Code != 403 || !strings.Contains(r.Status, want) {
			t.Errorf("%s: %d %q, want 403 with %q", name, r.Code, r.Status, want)
		}
	}
	try("no certificate", c, "no client certificate: only another node's pvesnap may start a move here")
	// A certificate the cluster CA signed, with pve1's name, that is not pve1's file.
	ca, key, err := certs.LoadCA(e.Sim.CAFile(), filepath.Join(e.Sim.Shared(), "priv", "pve-root-ca.key"))
	must(t, err)
	dir := t.TempDir()
	must(t, certs.NewLeaf(ca, key, "pve1", "PVE Cluster Node", []string{"pve1", "localhost"}, []net.IP{net.ParseIP("127.0.0.1")},
		filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key")))
	forged, err := tls.LoadX509KeyPair(filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key"))
	must(t, err)
	fc := allocateOnly(t, e, "pve2")
	fc.HTTP.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{forged}
	try("a CA-signed certificate named pve1", fc, "is no node's pve-ssl.pem")
	p3 := allocateOnly(t, e, "pve2")
	e.presentNodeCert(p3, "pve3")
	try("pve3's certificate, saying it is pve1", p3, "presents node 'pve3''s certificate but says it comes from node 'pve1'")
	// The stream endpoint: no certificate, then pve1's with a ticket nobody issued.
	if resp, err := postStream(t, e, c, "pve2", strings.Repeat("0", 64), strings.NewReader("x")); err != nil || resp.StatusCode != 403 {
		t.Errorf("stream without a certificate: %v %v", resp, err)
	}
	p1 := allocateOnly(t, e, "pve2")
	e.presentNodeCert(p1, "pve1")
	if resp, err := postStream(t, e, p1, "pve2", strings.Repeat("0", 64), strings.NewReader("x")); err != nil || resp.StatusCode != 403 ||
		!strings.Contains(resp.Status, "no move on node 'pve2' waits for this stream") {
		t.Errorf("stream with an unknown ticket: %v %v", resp, err)
	}
	// Prepared for pve1, streamed by pve3 with the ticket: the receiving task refuses it.
	_, upid, ticket, _ := prepareAs(t, e, "pve2", "pve1", "vm-100-disk-6", 1<<20)
	resp, err := postStream(t, e, p3, "pve2", ticket, bytes.NewReader(blockStream(t, 1<<20)))
	if err != nil || resp.StatusCode != 500 || !strings.Contains(resp.Status, "a stream came from node 'pve3'; this move is from node 'pve1'") {
		t.Errorf("stream by the wrong node: %v %v", resp, err)
	}
	if st, err := p1.WaitTask(upid, 10*time.Second); err != nil || !strings.Contains(st, "a stream came from node 'pve3'") {
		t.Errorf("receiving task: %q %v", st, err)
	}
	if vols, _ := e.Sim.Store("pve2", "local-lvm").List(); len(vols) != 0 {
		t.Errorf("volumes on pve2 after refused moves: %+v", vols)
	}
}

// cutReader yields data, then fails: a sender that dies halfway. With release set it first
// waits until that is closed: a sender gone silent.
type cutReader struct {
	data    []byte
	release chan struct{}
}

func (b *cutReader) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		if b.release != nil {
			<-b.release
		}
		return 0, errors.New("the sending node died")
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

// pausingReader yields data with one pause halfway: a sender whose zfs send waits on its
// busy pool.
type pausingReader struct {
	data  []byte
	at    int
	pause time.Duration
}

func (p *pausingReader) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, io.EOF
	}
	if p.at == 0 {
		time.Sleep(p.pause)
	}
	n := min(len(b), len(p.data))
	if p.at > 0 {
		n = min(n, p.at)
	}
	copy(b, p.data[:n])
	p.data, p.at = p.data[n:], p.at-n
	return n, nil
}

// TestMoveStreamOutlastsThePause: a stream that brings nothing for longer than the API's
// inactivity limit (pveproxy's 5 s, which the daemon keeps for every other request body) is
// not cut: zfs send pauses that long while its pool is busy.
func TestMoveStreamOutlastsThePause(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	const size = 4 << 20
	c, upid, ticket, _ := prepareAs(t, e, "pve2", "pve1", "vm-100-disk-4", size)
	whole := blockStream(t, size)
	resp, err := postStream(t, e, c, "pve2", ticket, &pausingReader{data: whole, at: len(whole) / 2, pause: 6 * time.Second})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a stream that paused 6 s: %v %v", resp, err)
	}
	if st, err := c.WaitTask(upid, 10*time.Second); err != nil || st != "OK" {
		t.Fatalf("receiving task: %q %v", st, err)
	}
	chunk := bytes.Repeat([]byte("moved "), (1<<20)/6+1)[:1<<20] // what blockStream writes in each MiB
	got, err := os.ReadFile(e.Sim.Store("pve2", "local-lvm").Path("vm-100-disk-4"))
	if err != nil || !bytes.Equal(got, bytes.Repeat(chunk, size>>20)) {
		t.Fatalf("the volume on pve2 (%d bytes, %v) is not the stream's", len(got), err)
	}
}

// TestMoveBrokenOffLeavesNothing: a stream that breaks off halfway leaves no volume (and no
// half-written LV under any name) on the target, and the receiving task says what happened.
func TestMoveBrokenOffLeavesNothing(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	const size = 8 << 20
	c, upid, ticket, _ := prepareAs(t, e, "pve2", "pve1", "vm-100-disk-7", size)
	whole := blockStream(t, size)
	if resp, err := postStream(t, e, c, "pve2", ticket, &cutReader{data: whole[:len(whole)/2]}); err == nil && resp.StatusCode == 200 {
		t.Fatal("a broken stream was answered OK")
	}
	st, err := c.WaitTask(upid, 10*time.Second)
	must(t, err)
	t.Logf("receiving task: %s", st)
	if !strings.Contains(st, "the stream from node 'pve1' broke off after") || !strings.Contains(st, "truncated") {
		t.Fatalf("receiving task ended %q", st)
	}
	if vols, _ := e.Sim.Store("pve2", "local-lvm").List(); len(vols) != 0 {
		t.Fatalf("left on pve2 after a broken move: %+v", vols)
	}
	if l := logText(t, c, upid); !strings.Contains(l, "nothing of the failed move is left") {
		t.Errorf("receiving task's log:\n%s", l)
	}
}

// TestMoveKilledReceiverIsCleanedUp: a receiving task killed halfway (SIGKILL, nothing runs on
// its way out) leaves its LV under a temporary name that PVE lists as no volume; the next move
// into that volume group removes it, and only it: an LV someone else named like one (no
// pvesnap-temp tag) stays.
func TestMoveKilledReceiverIsCleanedUp(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	const size = 8 << 20
	c, upid, ticket, _ := prepareAs(t, e, "pve2", "pve1", "vm-100-disk-8", size)
	whole := blockStream(t, size)
	body := &cutReader{data: whole[:len(whole)/2], release: make(chan struct{})}
	done := make(chan struct{})
	go func() { postStream(t, e, c, "pve2", ticket, body); close(done) }()
	st := e.Sim.Store("pve2", "local-lvm")
	temp := ""
	for i := 0; i < 100 && temp == ""; i++ {
		vols, _ := st.List()
		for _, v := range vols {
			if strings.HasPrefix(v.Name, "pvesnap-recv-") {
				temp = v.Name
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if temp == "" {
		t.Fatal("the receiving task made no temporary LV")
	}
	pid, _ := strconv.ParseInt(strings.Split(upid, ":")[2], 16, 64)
	must(t, syscall.Kill(int(pid), syscall.SIGKILL))
	close(body.release)
	<-done
	time.Sleep(200 * time.Millisecond)
	if !st.Exists(temp) || st.Exists("vm-100-disk-8") {
		t.Fatalf("after the kill: temporary LV %v, volume %v", st.Exists(temp), st.Exists("vm-100-disk-8"))
	}
	foreign := "pvesnap-recv-7ffffff0-00000001" // the name of a dead task's LV, without the tag
	must(t, st.Create(foreign, 4<<20, volstore.Meta{Active: true}))
	// A move into the same volume group.
	seedPattern(t, e, "pve1", "local-lvm", "vm-100-disk-0", 4<<20)
	mc := allocateOnly(t, e, "pve1")
	d, err := mc.Must("POST", "/nodes/pve1/storage/local-lvm/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-0"}, "target_node": {"pve2"}})
	must(t, err)
	if s, err := mc.WaitTask(simpve.UPIDOf(d), 20*time.Second); err != nil || s != "OK" {
		t.Fatalf("move: %q %v", s, err)
	}
	if st.Exists(temp) {
		t.Fatalf("%s, left by the killed task, is still there", temp)
	}
	if !st.Exists(foreign) {
		t.Fatalf("%s, which pvesnap did not make (no pvesnap-temp tag), was removed", foreign)
	}
	must(t, st.Destroy(foreign, false))
	if m, _ := st.Meta("vm-100-disk-0"); slices.Contains(m.Tags, "pvesnap-temp") {
		t.Fatalf("the moved volume kept the temporary tag: %v", m.Tags)
	}
	vols, _ := st.List()
	if len(vols) != 1 || vols[0].Name != "vm-100-disk-0" {
		t.Fatalf("pve2's local-lvm: %+v", vols)
	}
}

// TestMoveToNodeWithoutTheStorage: the storage must be available on the target node; the
// move is refused with PVE's words before any task starts, on either node.
func TestMoveToNodeWithoutTheStorage(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	must(t, e.Sim.SetStorageConfig(strings.Replace(simpve.DefaultStorageConfig, "lvmthin: local-lvm\n", "lvmthin: local-lvm\n\tnodes pve1\n", 1)))
	seedPattern(t, e, "pve1", "local-lvm", "vm-100-disk-0", 1<<20)
	c := allocateOnly(t, e, "pve1")
	r, err := c.Do("POST", "/nodes/pve1/storage/local-lvm/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-0"}, "target_node": {"pve2"}})
	must(t, err)
	if r.Code != 500 || r.Status != "storage 'local-lvm' is not available on node 'pve2'" {
		t.Fatalf("%d %q", r.Code, r.Status)
	}
	for _, n := range []string{"pve1", "pve2"} {
		if active, _ := e.Tasks[n].Dir.Active(); len(active) != 0 {
			t.Errorf("tasks on %s: %+v", n, active)
		}
	}
}

// TestSharedThickLVMCopyWithTargetNode: a shared storage is the same on every node, so a copy
// with target_node there is made by pvesnap (offloaded on a capable array) on the node
// called, where PVE's own copy returns OK having copied nothing.
func TestSharedThickLVMCopyWithTargetNode(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	e.Offloadable = func(context.Context, string) (bool, string) { return true, "" }
	e.StopNode("pve1")
	e.StartNode("pve1")
	want := seedPattern(t, e, "pve1", "san1", "vm-100-disk-0", 4<<20)
	c := allocateOnly(t, e, "pve1")
	d, err := c.Must("POST", "/nodes/pve1/storage/san1/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-1"}, "target_node": {"pve2"}})
	must(t, err)
	upid := simpve.UPIDOf(d)
	if s, err := c.WaitTask(upid, 20*time.Second); err != nil || s != "OK" || !strings.HasPrefix(upid, "UPID:pve1:") {
		t.Fatalf("copy on san1 with target_node: %s %q %v", upid, s, err)
	}
	got, err := os.ReadFile(e.Sim.Store("pve2", "san1").Path("vm-100-disk-1"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("pve2 does not see the copy on the shared storage (%v)", err)
	}
	if active, _ := e.Tasks["pve2"].Dir.Active(); len(active) != 0 {
		t.Errorf("a shared storage needs no receiving task: %+v", active)
	}
	// "Moving" a shared volume to itself on another node has nothing to do: PVE's answer.
	r, err := c.Do("POST", "/nodes/pve1/storage/san1/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-0"}, "target_node": {"pve2"}})
	must(t, err)
	if r.Code != 403 || r.Status != "Permission check failed (user != root@pam)" {
		t.Errorf("a shared volume onto itself: %d %q, want pveproxy's answer", r.Code, r.Status)
	}
}

// TestMoveStoppedReceiverLeavesNothing: the receiving task stopped from the GUI (DELETE of its
// UPID) halfway through the stream says so and removes what it wrote; the sender's stream is
// refused.
func TestMoveStoppedReceiverLeavesNothing(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	const size = 8 << 20
	c, upid, ticket, _ := prepareAs(t, e, "pve2", "pve1", "vm-100-disk-9", size)
	whole := blockStream(t, size)
	body := &cutReader{data: whole[:len(whole)/2], release: make(chan struct{})}
	defer close(body.release)
	answered := make(chan *http.Response, 1)
	go func() { resp, _ := postStream(t, e, c, "pve2", ticket, body); answered <- resp }()
	st := e.Sim.Store("pve2", "local-lvm")
	for i := 0; i < 100; i++ {
		if vols, _ := st.List(); len(vols) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err := c.Must("DELETE", "/nodes/pve2/tasks/"+url.PathEscape(upid), nil)
	must(t, err)
	if s, err := c.WaitTask(upid, 10*time.Second); err != nil || s != "interrupted by stop request" {
		t.Fatalf("stopped receiving task: %q %v", s, err)
	}
	select {
	case resp := <-answered:
		if resp == nil || resp.StatusCode != 500 || !strings.Contains(resp.Status, "interrupted by stop request") {
			t.Errorf("the sender was answered %v", resp)
		}
	case <-time.After(10 * time.Second):
		t.Error("the sender got no answer after the receiver stopped")
	}
	if vols, _ := st.List(); len(vols) != 0 {
		t.Fatalf("left on pve2 after a stopped receive: %+v", vols)
	}
}

// insecure sets the cluster's migration type to insecure, as datacenter.cfg does.
func insecure(t *testing.T, e *Env) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(e.Sim.Shared(), "datacenter.cfg"), []byte("keyboard: en-us\nmigration: type=insecure\n"), 0o640))
}

// TestMovePlainTCPWhenMigrationIsInsecure: with datacenter.cfg's "migration: type=insecure"
// (PVE's switch for a private migration network) the stream goes over plain TCP, straight
// from task to task on a port of PVE's migration range; the volume arrives whole.
func TestMovePlainTCPWhenMigrationIsInsecure(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	insecure(t, e)
	want := seedPattern(t, e, "pve1", "local-lvm", "vm-100-disk-0", 8<<20)
	c := allocateOnly(t, e, "pve1")
	d, err := c.Must("POST", "/nodes/pve1/storage/local-lvm/content/vm-100-disk-0", url.Values{"target": {"vm-100-disk-0"}, "target_node": {"pve2"}})
	must(t, err)
	upid := simpve.UPIDOf(d)
	if s, err := c.WaitTask(upid, 30*time.Second); err != nil || s != "OK" {
		t.Fatalf("move: %q %v\n%s", s, err, logText(t, c, upid))
	}
	got, err := os.ReadFile(e.Sim.Store("pve2", "local-lvm").Path("vm-100-disk-0"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the volume on pve2 differs from the source (%v)", err)
	}
	send, recv := logText(t, c, upid), logText(t, c, receivingTask(t, e, "pve2"))
	if !strings.Contains(send, "plain TCP to 127.0.0.2:600") || !strings.Contains(recv, "plain TCP on 127.0.0.2 (datacenter.cfg: migration type=insecure)") {
		t.Fatalf("the logs do not say the stream went over plain TCP:\n%s\n%s", send, recv)
	}
}

// TestPlainTCPRefusals: a node whose cluster wants secure migrations refuses a plain stream;
// on an insecure one, a connection without the ticket is turned away (the sender still gets
// in after it), and a plain stream that breaks off leaves nothing.
func TestPlainTCPRefusals(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	c := allocateOnly(t, e, "pve2")
	e.presentNodeCert(c, "pve1")
	r, err := c.Do("POST", "/nodes/pve2/pvesnap/receive", url.Values{"storage": {"local-lvm"}, "volume": {"vm-100-disk-3"}, "source_node": {"pve1"},
		"source": {"local-lvm:vm-100-disk-3"}, "format": {"block"}, "size": {"1048576"}, "transport": {"tcp"}})
	must(t, err)
	if r.Code != 400 || !strings.Contains(r.Errors["transport"], "this cluster's migration type is secure") {
		t.Errorf("plain stream on a secure cluster: %d %q %v", r.Code, r.Status, r.Errors)
	}
	insecure(t, e)
	const size = 8 << 20
	c, upid, ticket, addr := prepareAs(t, e, "pve2", "pve1", "vm-100-disk-4", size, "transport", "tcp")
	if !strings.HasPrefix(addr, "127.0.0.2:600") {
		t.Fatalf("receiving task listens on %q", addr)
	}
	stranger, err := net.Dial("tcp", addr)
	must(t, err)
	stranger.Write([]byte(strings.Repeat("f", 64)))
	answer, _ := io.ReadAll(stranger)
	stranger.Close()
	if string(answer) != "ERROR no move waits for this ticket\n" {
		t.Errorf("a connection without the ticket was answered %q", answer)
	}
	sender, err := net.Dial("tcp", addr)
	must(t, err)
	whole := blockStream(t, size)
	sender.Write([]byte(ticket))
	sender.Write(whole[:len(whole)/2])
	sender.Close() // breaks off
	st, err := c.WaitTask(upid, 10*time.Second)
	must(t, err)
	if !strings.Contains(st, "the stream from node 'pve1' broke off after") || !strings.Contains(st, "the connection ended early") {
		t.Fatalf("receiving task ended %q", st)
	}
	if vols, _ := e.Sim.Store("pve2", "local-lvm").List(); len(vols) != 0 {
		t.Fatalf("left on pve2 after a broken plain stream: %+v", vols)
	}
}
