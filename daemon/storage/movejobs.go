package storage

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/ioctl"
	"github.com/pvesnap/pvesnap/ioctl/blk"
	"github.com/pvesnap/pvesnap/ioctl/zfs"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
	"github.com/pvesnap/pvesnap/lvm/stream"
)

const (
	// blockChunk is what a block stream reads and sends at a time: zero ranges are found
	// with this granularity.
	blockChunk = 1 << 20
	// readAhead is how many chunks the sender reads ahead of the network.
	readAhead = 8
	// progressEvery is how often a move logs its progress.
	progressEvery = 5 * time.Second
)

// moveSend is the sending task of a move: it streams the volume to the target node's
// pvesnap and ends when that node has committed it.
func (m *Module) moveSend(ctx context.Context, t *tasks.Task, raw json.RawMessage) error {
	var s MoveSpec
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	t.Logf("moving '%s:%s' to '%s:%s' on node '%s' (receiving task %s)", s.Storage, s.Source, s.TargetStorage, s.Target, s.TargetNode, s.TargetUPID)
	if m.Peers == nil {
		return errors.New("this node's pvesnap has no peer settings")
	}
	var err error
	switch s.Format {
	case formatZFS:
		err = m.sendZFS(ctx, t, s)
	case formatBlock:
		err = m.sendBlock(ctx, t, s)
	default:
		err = fmt.Errorf("unknown stream format %q", s.Format)
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err() // a stop request: the task says so, not what it broke
	}
	return err
}

// counter counts what passes through a reader and logs progress (when t is set). As the
// body of the stream's request it is copied with WriteTo, a MiB at a time: HTTP's own copy
// would take 32 KiB, with a chunk and a system call each.
type counter struct {
	r       io.Reader
	n       atomic.Int64
	eof     atomic.Bool // the reader ended: the whole stream was taken
	t       *tasks.Task
	total   int64
	started time.Time
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		c.eof.Store(true)
	}
	done := c.n.Add(int64(n))
	if c.t != nil {
		c.t.Progress(min(done, c.total-1), c.total, c.started, progressEvery) // 100% only once committed
	}
	return n, err
}

// WriteTo copies the rest of the reader to w.
func (c *counter) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := fill(c, buf)
		if n > 0 {
			wn, werr := w.Write(buf[:n])
			total += int64(wn)
			if werr != nil {
				return total, werr
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// fill reads into buf until it is full or the reader fails (io.EOF included), and returns
// what it read with that error: unlike io.ReadFull, a short read at the end is not an error
// of its own, so a stream that ends and one that breaks off stay apart.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// postStream sends body to the target node's pvesnap and returns its verdict: nil once the
// volume is committed there; errNoAnswer when the whole body went out and the answer was lost.
func (m *Module) postStream(ctx context.Context, s MoveSpec, estimate int64, body *counter) error {
	client, base, err := m.Peers.Client(s.TargetNode, 30*time.Minute) // the answer comes after the target's flush
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+streamPath, body)
	if err != nil {
		return err
	}
	req.Header.Set(ticketHeader, s.Ticket)
	req.Header.Set(sizeHeader, strconv.FormatInt(estimate, 10))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Expect", "100-continue") // refused streams are refused before any byte
	resp, err := client.Do(req)
	if err != nil && body.eof.Load() {
		return fmt.Errorf("stream to node '%s': %w (%v)", s.TargetNode, errNoAnswer, err)
	}
	if err != nil {
		return fmt.Errorf("stream to node '%s': %w", s.TargetNode, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var env struct {
		Message string `json:"message"`
	}
	json.Unmarshal(b, &env)
	msg := strings.TrimSpace(env.Message)
	if msg == "" {
		msg = resp.Status
	}
	return errors.New(msg)
}

// sendZFS sends a new snapshot of the volume, incrementally from the base when the target
// holds it. The new snapshot stays (as the next move's base) only when the move succeeded.
func (m *Module) sendZFS(ctx context.Context, t *tasks.Task, s MoveSpec) error {
	z := m.zfs()
	src := s.Pool + "/" + s.Source
	dev, release, err := m.lockedDevice(ctx, s.Pool, src)
	if err != nil {
		return err
	}
	defer release()
	snap, from := src+"@"+s.Snapshot, ""
	if s.Base != "" {
		from = src + "@" + s.Base
	}
	t.Logf("zfs snapshot %s", snap)
	if err := dev.Snapshot(snap); err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			if err := z.Destroy(context.WithoutCancel(ctx), snap, false); err != nil {
				t.Warnf("could not remove snapshot %s: %v", snap, err)
			}
		}
	}()
	estimate := s.Estimate
	if from != "" {
		t.Logf("zfs send -i %s %s: incremental, node '%s' holds %s", from, snap, s.TargetNode, s.Base)
	} else {
		t.Logf("zfs send %s: a full stream", snap)
	}
	start := time.Now()
	if s.Address != "" {
		t.Logf("plain TCP to %s (datacenter.cfg: migration type=insecure): the stream is not encrypted", s.Address)
		sent, err := sendTCP(ctx, s, func(acked int64) {
			t.Progress(min(acked, max(estimate, 1)-1), max(estimate, 1), start, 0)
		}, func(conn *net.TCPConn) error {
			f, err := conn.File() // blocking: the kernel writes into the socket itself
			if err != nil {
				return err
			}
			defer f.Close()
			if err := dev.Send(snap, from, f); err != nil {
				return fmt.Errorf("sending %s: %w", snap, err)
			}
			return nil
		})
		if err != nil {
			keep = keepUnanswered(t, err, snap, s.TargetNode)
			return err
		}
		keep = true
		m.sentLog(t, s, sent, time.Since(start))
		m.removeEarlier(t, dev, src, s.Earlier)
		return nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	sent := make(chan error, 1)
	go func() {
		err := dev.Send(snap, from, pw)
		pw.Close()
		sent <- err
	}()
	body := &counter{r: pr, t: t, total: max(estimate, 1), started: start}
	perr := m.postStream(ctx, s, estimate, body)
	pr.Close() // stops the kernel (EPIPE) if the stream did not run to its end
	serr := <-sent
	switch {
	case serr != nil && !errors.Is(serr, syscall.EPIPE):
		return fmt.Errorf("sending %s: %w", snap, serr)
	case perr != nil:
		keep = keepUnanswered(t, perr, snap, s.TargetNode)
		return perr
	case serr != nil:
		return fmt.Errorf("sending %s: %w", snap, serr)
	}
	keep = true
	m.sentLog(t, s, body.n.Load(), time.Since(start))
	m.removeEarlier(t, dev, src, s.Earlier)
	return nil
}

// keepUnanswered tells whether a failed move keeps its new snapshot: only when the answer was
// lost after the whole stream (errNoAnswer). The target may then hold it as its newest, and
// without it on the source the next move could find no base and refuse the volume as another.
// The next move that succeeds removes it with the other earlier ones.
func keepUnanswered(t *tasks.Task, err error, snap, node string) bool {
	if !errors.Is(err, errNoAnswer) {
		return false
	}
	t.Warnf("kept snapshot %s: node '%s' may have committed it as its newest, the base of the next move", snap, node)
	return true
}

func (m *Module) sentLog(t *tasks.Task, s MoveSpec, n int64, el time.Duration) {
	t.Logf("sent %s in %s (%s/s); node '%s' committed '%s:%s'", tasks.HumanBytes(n), el.Round(time.Millisecond),
		tasks.HumanBytes(int64(float64(n)/max(el.Seconds(), 0.001))), s.TargetNode, s.TargetStorage, s.Target)
}

// lockedDevice takes the locks a move's change of dataset ds needs (pool's shared, as copies
// take it, deletes exclusively; ds's exclusive) and opens the ZFS device; release undoes it all.
func (m *Module) lockedDevice(ctx context.Context, pool, ds string) (dev *zfs.Dev, release func(), err error) {
	unlockPool, err := m.lock(ctx, "zfs-"+pool, false)
	if err != nil {
		return nil, nil, err
	}
	unlock, err := m.lock(ctx, "zfs-"+ds, true)
	if err != nil {
		unlockPool()
		return nil, nil, err
	}
	if dev, err = m.zfs().kernel(); dev == nil {
		unlock()
		unlockPool()
		if err == nil {
			err = errors.New("not there, or its module's version is not one pvesnap's ioctls were checked against")
		}
		return nil, nil, fmt.Errorf("the ZFS device: %w", err)
	}
	return dev, func() { dev.Close(); unlock(); unlockPool() }, nil
}

// removeEarlier removes earlier move snapshots of ds once a move is done: the new one is the
// next move's base. Through the kernel, no listing: the names were read when the move was
// called. One with clones stays (ZFS refuses).
func (m *Module) removeEarlier(t *tasks.Task, dev *zfs.Dev, ds string, names []string) {
	for _, n := range names {
		if !moveSnapshotRe.MatchString(n) {
			continue
		}
		if err := dev.DestroySnapshot(ds + "@" + n); err != nil && !errors.Is(err, zfs.ErrNotFound) {
			t.Warnf("could not remove the earlier move snapshot %s@%s: %v", ds, n, err)
		} else if err == nil {
			t.Logf("removed the earlier move snapshot %s@%s", ds, n)
		}
	}
}

// tempLV names an LV a move's task makes for a while: pvesnap-<role>-<pid>-<pstart> in hex,
// so that one left by a task that died can be told from one in use (removeStaleLVs).
func tempLV(role string, u tasks.UPID) string {
	return fmt.Sprintf("pvesnap-%s-%08x-%08x", role, u.PID, u.PStart)
}

// tempTag marks the LVs a move's task makes for a while. removeStaleLVs removes only LVs with
// both the name and the tag: an LV someone else named so is not pvesnap's to remove.
const tempTag = "pvesnap-temp"

var tempLVRe = regexp.MustCompile(`^pvesnap-(?:recv|send)-([0-9a-f]{8})-([0-9a-f]{8,9})$`)

// removeStaleLVs removes the temporary LVs of move tasks that died in vg (their process is
// gone): a receive broken off by a kill leaves its half-written LV under such a name, tagged
// tempTag.
func (m *Module) removeStaleLVs(ctx context.Context, t *tasks.Task, l *lvm.LVM, vg string) {
	lvs, err := l.LVs(ctx, vg)
	if err != nil {
		return
	}
	proc := m.Engine.Proc
	if proc == "" {
		proc = "/proc"
	}
	for _, lv := range lvs {
		sm := tempLVRe.FindStringSubmatch(lv.Name)
		if sm == nil || !slices.Contains(lv.Tags, tempTag) {
			continue
		}
		pid, _ := strconv.ParseInt(sm[1], 16, 64)
		pstart, _ := strconv.ParseUint(sm[2], 16, 64)
		if ps, err := tasks.ProcStartTime(proc, int(pid)); err == nil && ps == pstart {
			continue // its task still runs
		}
		if err := l.Remove(ctx, vg, lv.Name); err != nil {
			t.Warnf("could not remove %s/%s, left by a move that died: %v", vg, lv.Name, err)
		} else {
			t.Logf("removed %s/%s, left by a move that died", vg, lv.Name)
		}
	}
}

// sendBlock streams an LV: a thin LV through a thin snapshot of it (the volume as of now,
// whatever writes it), a thick one as it is (it should not be in use: the plugin detaches
// it first).
func (m *Module) sendBlock(ctx context.Context, t *tasks.Task, s MoveSpec) error {
	l := &lvm.LVM{Run: m.Run}
	m.removeStaleLVs(ctx, t, l, s.VG)
	lv, err := l.LV(ctx, s.VG, s.Source)
	if err != nil {
		return err
	}
	name := s.Source
	if lv.Thin() {
		name = tempLV("send", t.UPID)
		t.Logf("lvcreate -s -kn -n %s %s/%s: the move sends the volume as of now", name, s.VG, s.Source)
		if err := l.ThinSnapshot(ctx, s.VG, s.Source, name, tempTag); err != nil {
			return fmt.Errorf("thin snapshot of %s/%s: %w", s.VG, s.Source, err)
		}
		defer func() {
			if err := l.Remove(context.WithoutCancel(ctx), s.VG, name); err != nil {
				t.Warnf("could not remove the snapshot %s/%s: %v", s.VG, name, err)
			}
		}()
		if lv, err = l.LV(ctx, s.VG, name); err != nil {
			return err
		}
	} else if !lv.Active {
		if err := l.Activate(ctx, s.VG, name, true); err != nil {
			return err
		}
		defer l.Activate(context.WithoutCancel(ctx), s.VG, name, false) // as it was; a failure leaves it active, harmless
		if lv, err = l.LV(ctx, s.VG, name); err != nil {
			return err
		}
	}
	f, _, err := engine.Open(lv.Path, false)
	if err != nil {
		return err
	}
	defer f.Close()
	t.Logf("sending %s/%s (%s) as a block stream, zero ranges skipped", s.VG, s.Source, tasks.HumanBytes(lv.Size))
	start := time.Now()
	var sent, zeros atomic.Int64
	encode := func(w io.Writer) error {
		return encodeBlocks(ctx, f, lv.Size, w, func(off, n int64, zero bool) {
			if zero {
				zeros.Add(n)
			} else {
				sent.Add(n)
			}
			t.Progress(min(off+n, lv.Size-1), lv.Size, start, progressEvery)
		})
	}
	if s.Address != "" {
		t.Logf("plain TCP to %s (datacenter.cfg: migration type=insecure): the stream is not encrypted", s.Address)
		_, err = sendTCP(ctx, s, nil, func(conn *net.TCPConn) error {
			bw := bufio.NewWriterSize(conn, blockChunk)
			if err := encode(bw); err != nil {
				return err
			}
			return bw.Flush()
		})
	} else {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(encode(pw)) }()
		err = m.postStream(ctx, s, lv.Size, &counter{r: pr})
		pr.CloseWithError(errors.New("the stream ended")) // stops the encoder if it still runs
	}
	if err != nil {
		return err
	}
	el := time.Since(start)
	t.Logf("sent %s of data (%s of zeros skipped) in %s (%s/s of the volume); node '%s' committed '%s:%s'",
		tasks.HumanBytes(sent.Load()), tasks.HumanBytes(zeros.Load()), el.Round(time.Millisecond),
		tasks.HumanBytes(int64(float64(lv.Size)/max(el.Seconds(), 0.001))), s.TargetNode, s.TargetStorage, s.Target)
	return nil
}

// encodeBlocks writes f's size bytes as a block stream, reading ahead of the writer.
func encodeBlocks(ctx context.Context, f *os.File, size int64, w io.Writer, each func(off, n int64, zero bool)) error {
	sw, err := stream.NewWriter(w, size)
	if err != nil {
		return err
	}
	type chunk struct {
		off int64
		buf *ioctl.Buffer
		n   int
		err error
	}
	free := make(chan *ioctl.Buffer, readAhead)
	full := make(chan chunk, readAhead)
	for i := 0; i < readAhead; i++ {
		b, err := ioctl.NewBuffer(blockChunk) // page-aligned, for O_DIRECT
		if err != nil {
			return err
		}
		defer b.Free()
		free <- b
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(full)
		for off := int64(0); off < size; off += blockChunk {
			var b *ioctl.Buffer
			select {
			case b = <-free:
			case <-rctx.Done():
				return
			}
			n := int(min(blockChunk, size-off))
			_, err := f.ReadAt(b.Bytes()[:n], off)
			full <- chunk{off: off, buf: b, n: n, err: err}
			if err != nil {
				return
			}
		}
	}()
	for c := range full {
		if c.err != nil {
			return fmt.Errorf("reading at %d: %w", c.off, c.err)
		}
		data := c.buf.Bytes()[:c.n]
		zero := engine.AllZero(data)
		if zero {
			err = sw.Zero(c.off, int64(c.n))
		} else {
			err = sw.Data(c.off, data)
		}
		free <- c.buf
		if err != nil {
			return err
		}
		each(c.off, int64(c.n), zero)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return sw.Close()
}

// moveReceive is the receiving task of a move: it waits for the stream and commits the
// volume, or leaves nothing.
func (m *Module) moveReceive(ctx context.Context, t *tasks.Task, raw json.RawMessage) error {
	var s ReceiveSpec
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	t.Logf("receiving '%s' from node '%s' as '%s:%s'", s.Source, s.SourceNode, s.Storage, s.Target)
	var in *incoming
	var err error
	if s.Listen != "" {
		t.Logf("plain TCP on %s (datacenter.cfg: migration type=insecure): the stream is not encrypted", s.Listen)
		in, err = acceptTCP(ctx, s.Listen, s.TicketHash, s.SourceNode, s.Socket+".addr", m.streamWait())
	} else {
		in, err = acceptStream(ctx, s.Socket, s.SourceNode, m.streamWait())
	}
	if err != nil {
		return err
	}
	defer in.Close()
	switch s.Format {
	case formatZFS:
		err = m.receiveZFS(ctx, t, s, in)
	case formatBlock:
		err = m.receiveBlock(ctx, t, s, in)
	default:
		err = fmt.Errorf("unknown stream format %q", s.Format)
	}
	if err != nil && ctx.Err() != nil {
		err = ctx.Err() // a stop request: the task says so, not what it broke
	} else if err != nil {
		err = in.failure(err)
	}
	in.Finish(err)
	return err
}

// progress logs a receive's progress from the daemon's count until done is closed.
func progress(t *tasks.Task, in *incoming, done <-chan struct{}) {
	start := time.Now()
	every(progressEvery, done, func() {
		t.Progress(min(in.relayed.Load(), max(in.Estimate, 1)-1), max(in.Estimate, 1), start, 0)
	})
}

// every calls f every d until done is closed.
func every(d time.Duration, done <-chan struct{}, f func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			f()
		}
	}
}

// receiveZFS gives the stream to the kernel: the dataset exists only once it is whole.
func (m *Module) receiveZFS(ctx context.Context, t *tasks.Task, s ReceiveSpec, in *incoming) error {
	ds := s.Pool + "/" + s.Target
	dev, release, err := m.lockedDevice(ctx, s.Pool, ds)
	if err != nil {
		return err
	}
	defer release()
	begin := make([]byte, zfs.BeginRecordSize)
	if _, err := io.ReadFull(in.Data, begin); err != nil {
		return fmt.Errorf("reading the stream's first record: %w", err)
	}
	snap := ds + "@" + s.Snapshot
	if s.Base != "" {
		t.Logf("zfs receive %s: incremental from %s@%s", snap, ds, s.Base)
	} else {
		t.Logf("zfs receive %s", snap)
	}
	done := make(chan struct{})
	go progress(t, in, done)
	start := time.Now()
	err = dev.Receive(snap, begin, in.Data)
	close(done)
	if err != nil {
		return fmt.Errorf("receiving %s: %w", ds, err)
	}
	in.Finish(nil) // committed: the sender need not wait for what follows
	if in.recount != nil {
		in.recount()
	}
	n := in.relayed.Load()
	if tot := in.total.Load(); tot > 0 {
		n = tot
	}
	el := time.Since(start)
	t.Logf("received %s in %s (%s/s): '%s:%s' is complete", tasks.HumanBytes(n), el.Round(time.Millisecond),
		tasks.HumanBytes(int64(float64(n)/max(el.Seconds(), 0.001))), s.Storage, s.Target)
	m.removeEarlier(t, dev, ds, s.Earlier)
	return nil
}

// receiveBlock writes the stream into a new LV under a temporary name, flushes it and only
// then gives it the volume's name; any failure removes it.
func (m *Module) receiveBlock(ctx context.Context, t *tasks.Task, s ReceiveSpec, in *incoming) error {
	l := &lvm.LVM{Run: m.Run}
	m.removeStaleLVs(ctx, t, l, s.VG)
	r, err := stream.NewReader(in.Data)
	if err != nil {
		return err
	}
	if r.Size > s.Size {
		return fmt.Errorf("the stream holds %s, more than the %s prepared", tasks.HumanBytes(r.Size), tasks.HumanBytes(s.Size))
	}
	tmp := tempLV("recv", t.UPID)
	tags := []string{tempTag}
	if owner := ownerTag(s.Target); owner != "" {
		tags = append(tags, owner)
	}
	t.Logf("allocating %s/%s (%s) to receive into", s.VG, tmp, tasks.HumanBytes(s.Size))
	if err := l.Create(ctx, s.VG, tmp, s.Size, lvm.CreateOptions{ThinPool: s.ThinPool, Tags: tags}); err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			if err := l.Remove(context.WithoutCancel(ctx), s.VG, tmp); err != nil {
				t.Warnf("could not remove %s/%s after the failed move: %v", s.VG, tmp, err)
			} else {
				t.Logf("removed %s/%s: nothing of the failed move is left", s.VG, tmp)
			}
		}
	}()
	lv, err := l.LV(ctx, s.VG, tmp)
	if err != nil {
		return err
	}
	f, size, err := engine.Open(lv.Path, true)
	if err != nil {
		return err
	}
	defer f.Close()
	// A new thin LV reads as zeros: zero ranges need nothing. A thick one holds whatever was
	// on its extents: they are zeroed.
	thin := s.ThinPool != ""
	buf, err := ioctl.NewBuffer(stream.MaxData)
	if err != nil {
		return err
	}
	defer buf.Free()
	start := time.Now()
	var data, zeros int64
	for {
		fr, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		switch fr.Kind {
		case stream.Data:
			b := buf.Bytes()[:fr.Length]
			if err := r.ReadData(b); err != nil {
				return err
			}
			if _, err := f.WriteAt(b, fr.Offset); err != nil {
				return fmt.Errorf("writing %s at %d: %w", lv.Path, fr.Offset, err)
			}
			data += fr.Length
		case stream.Zero:
			if !thin {
				if err := zeroRange(f, fr.Offset, fr.Length); err != nil {
					return fmt.Errorf("zeroing %s at %d: %w", lv.Path, fr.Offset, err)
				}
			}
			zeros += fr.Length
		}
		t.Progress(min(fr.Offset+fr.Length, r.Size-1), r.Size, start, progressEvery)
	}
	if !thin && size > r.Size {
		if err := zeroRange(f, r.Size, size-r.Size); err != nil { // the LV's extents beyond the source's end
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("flushing %s: %w", lv.Path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := l.Rename(ctx, s.VG, tmp, s.Target); err != nil {
		return fmt.Errorf("naming %s/%s '%s' (does the volume exist by now?): %w", s.VG, tmp, s.Target, err)
	}
	committed = true
	if err := l.DelTag(context.WithoutCancel(ctx), s.VG, s.Target, tempTag); err != nil { // committed: a stop request changes nothing now
		// The volume is whole. A tag left on it is harmless: removeStaleLVs wants the name too.
		t.Warnf("could not remove the tag %s from %s/%s: %v", tempTag, s.VG, s.Target, err)
	}
	el := time.Since(start)
	t.Logf("received %s of data and %s of zeros in %s (%s/s of the volume): '%s:%s' is complete",
		tasks.HumanBytes(data), tasks.HumanBytes(zeros), el.Round(time.Millisecond),
		tasks.HumanBytes(int64(float64(r.Size)/max(el.Seconds(), 0.001))), s.Storage, s.Target)
	return nil
}

// zeroRange zeroes a range of a device without sending data where it can (BLKZEROOUT), and
// by writing zeros where it cannot (a file in the tests, a device without the support).
func zeroRange(f *os.File, off, n int64) error {
	if err := blk.ZeroOut(f, off, n); err == nil {
		return nil
	}
	z, err := ioctl.NewBuffer(int(min(n, blockChunk)))
	if err != nil {
		return err
	}
	defer z.Free()
	for done := int64(0); done < n; {
		c := min(int64(len(z.Bytes())), n-done)
		if _, err := f.WriteAt(z.Bytes()[:c], off+done); err != nil {
			return err
		}
		done += c
	}
	return nil
}
