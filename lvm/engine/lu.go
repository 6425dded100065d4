package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/ioctl/dm"
)

// lu is one destination logical unit (or NVMe namespace) as the copy sees it, shared by every
// pair that writes to it: how many copy commands it takes at once, the list identifiers in
// use, the paths that reach it, and what was sent to it (to redo after a deferred error).
type lu struct {
	key   string  // WWID, or the device number when there is none
	dev   *Device // the device the resolution went through (the first path)
	paths []dm.Dev
	mpath dm.Dev // the multipath map over paths; zero without one

	slots chan struct{} // one token per command the LU takes at once

	mu        sync.Mutex
	ids       [256]bool // EXTENDED COPY list identifiers in use
	nextID    int
	failed    map[dm.Dev]time.Time // paths that failed one of our commands, and when
	waiting   bool                 // a wait for a path has been logged
	records   []*record            // chunks sent to the LU, in the order they started
	offloaded bool                 // written by offload commands: flush its cache afterwards
	deferred  int                  // deferred errors seen
}

// record is one chunk sent to an LU: what a deferred error may ask to redo.
type record struct {
	ch        chunk
	offloaded bool // completed by an offload command (counted in Result.Offloaded)
	suspect   bool // started before a deferred error was reported: copy it again
}

// luKey identifies the LU behind a device across its paths: its WWID (sd's device/wwid,
// NVMe's wwid), or the device number when sysfs has none.
func luKey(roots Roots, d dm.Dev) string {
	base := roots.sys("dev", "block", d.String())
	for _, p := range []string{filepath.Join(base, "device", "wwid"), filepath.Join(base, "wwid")} {
		if w := readTrim(p); w != "" {
			return w
		}
	}
	return "dev " + d.String()
}

func (c *copier) luFor(ctx context.Context, x dm.Extent) *lu {
	key := luKey(c.o.Roots, x.Dev)
	if l, ok := c.lus[key]; ok {
		return l
	}
	paths := x.Paths
	if len(paths) == 0 {
		paths = []dm.Dev{x.Dev}
	}
	l := &lu{key: key, dev: c.device(ctx, x.Dev), paths: paths, mpath: x.Multipath, failed: map[dm.Dev]time.Time{},
		nextID: 1 + rand.IntN(255)}
	c.lus[key] = l
	return l
}

// limit sets how many copy commands the LU takes at once (the smallest any pair asks).
func (l *lu) limit(n int) {
	if l.slots == nil || n < cap(l.slots) {
		l.slots = make(chan struct{}, max(n, 1))
	}
}

func (l *lu) acquire(ctx context.Context) error {
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *lu) release() { <-l.slots }

// listID reserves an EXTENDED COPY list identifier no other command in flight to this LU
// uses (SPC: a duplicate of an active one is an error). It starts at a random place so that
// two copies in different processes rarely pick the same.
func (l *lu) listID() (byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; i < 256; i++ {
		id := (l.nextID + i) % 256
		if !l.ids[id] {
			l.ids[id] = true
			l.nextID = id + 1
			return byte(id), nil
		}
	}
	return 0, errors.New("all 256 list identifiers in use")
}

func (l *lu) freeID(id byte) {
	l.mu.Lock()
	l.ids[id] = false
	l.mu.Unlock()
}

func (l *lu) start(ch chunk) *record {
	r := &record{ch: ch}
	l.mu.Lock()
	l.records = append(l.records, r)
	l.mu.Unlock()
	return r
}

// deferredError marks every chunk started on the LU so far for a second copy: a deferred
// error reports that an earlier command the LU had completed failed afterwards, and the
// report does not say which (it may even be one the kernel sent for the host copy over the
// same nexus). It returns how many were marked and how many deferred errors the LU has
// reported.
func (l *lu) deferredError() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deferred++
	n := 0
	for _, r := range l.records {
		if !r.suspect {
			r.suspect = true
			n++
		}
	}
	return n, l.deferred
}

// pathRetryAfter is how long a path that failed one of our commands is passed over while
// another is usable.
const pathRetryAfter = 10 * time.Second

// pathFailed notes that a command failed on path d.
func (l *lu) pathFailed(d dm.Dev) {
	l.mu.Lock()
	l.failed[d] = time.Now()
	l.mu.Unlock()
}

// path picks the path for the next command to the LU: one that dm-multipath reports active,
// from the group it uses first, that the SCSI layer reports running and that has not failed
// one of our commands lately. With none, it waits as dm-multipath would: while the map
// queues I/O without a path (queue_if_no_path, until multipathd's no_path_retry clears it),
// for a path to come back; otherwise the LU is unreachable now.
func (c *copier) path(ctx context.Context, l *lu) (dm.Dev, error) {
	if l.mpath == (dm.Dev{}) || len(l.paths) == 1 {
		return l.paths[0], nil
	}
	for {
		cands, queueing, why := c.usablePaths(l)
		if len(cands) > 0 {
			l.mu.Lock()
			l.waiting = false
			l.mu.Unlock()
			return cands[0], nil
		}
		if !queueing {
			return dm.Dev{}, fmt.Errorf("no usable path to %s (%s), and the multipath map does not queue I/O without one", l.key, why)
		}
		l.mu.Lock()
		first := !l.waiting
		l.waiting = true
		l.mu.Unlock()
		if first {
			c.o.Log("no usable path to %s (%s): waiting for one as dm-multipath does (queue_if_no_path)", l.key, why)
		}
		if err := c.io.pause(ctx, time.Second); err != nil {
			return dm.Dev{}, err
		}
	}
}

// usablePaths lists the paths worth a command, best first, and whether the map queues I/O
// while it has none.
func (c *copier) usablePaths(l *lu) ([]dm.Dev, bool, string) {
	var groups []dm.PathGroup
	queueing := false
	if st, ok := c.tables.(dm.StatusReader); ok {
		if _, ts, err := st.Status(l.mpath); err == nil && len(ts) == 1 {
			groups, _ = dm.ParseMultipathStatus(ts[0].Params)
		}
	}
	if _, ts, err := c.tables.Table(l.mpath); err == nil && len(ts) == 1 {
		queueing = dm.QueueIfNoPath(ts[0].Params)
	}
	if groups == nil { // no status: every path of the table, in table order
		groups = []dm.PathGroup{{State: 'A'}}
		for _, p := range l.paths {
			groups[0].Paths = append(groups[0].Paths, dm.PathState{Dev: p, Active: true})
		}
	}
	var best, rest []dm.Dev
	var why []string
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range groups {
		for _, p := range g.Paths {
			name := c.devName(p.Dev)
			switch state := readTrim(c.o.Roots.sys("dev", "block", p.Dev.String(), "device", "state")); {
			case !p.Active:
				why = append(why, name+" failed in the multipath map")
			case state != "" && state != "running":
				why = append(why, name+" "+state)
			case time.Since(l.failed[p.Dev]) < pathRetryAfter:
				why = append(why, name+" failed a command of ours")
			case g.State == 'A':
				best = append(best, p.Dev)
			case g.State == 'E':
				rest = append(rest, p.Dev)
			default:
				why = append(why, name+" in a disabled path group")
			}
		}
	}
	return append(best, rest...), queueing, strings.Join(why, ", ")
}

// devName is a device's kernel name (sdb), or its number when sysfs does not know it.
func (c *copier) devName(d dm.Dev) string { return c.o.Roots.name(d) }

func (c *copier) devPath(d dm.Dev) string { return filepath.Join(c.o.Roots.Dev, c.devName(d)) }
