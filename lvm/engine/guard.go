package engine

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/lvm"
)

// guard watches the device-mapper layers a copy's physical addresses were taken from. An
// offload command writes to the addresses the tables had when the copy was planned, behind
// device-mapper's back: if an LV moved since (pvmove mirrors and then remaps it, lvconvert,
// any table reload), the command writes where the LV no longer is, or where pvmove already
// copied from. The tables are read again before each offload command and once more after the
// last one; any difference ends offloading, and what was offloaded is copied again through
// the mapping as it is then.
type guard struct {
	tables dm.TableReader
	layers map[dm.Dev]dm.Layer

	mu      sync.Mutex
	changed string // the first change seen
}

// check reads every layer's table again and reports the first change ("" when none).
func (g *guard) check() string {
	if g == nil {
		return ""
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.changed != "" {
		return g.changed
	}
	devs := make([]dm.Dev, 0, len(g.layers))
	for d := range g.layers {
		devs = append(devs, d)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].String() < devs[j].String() })
	for _, d := range devs {
		was := g.layers[d]
		info, ts, err := g.tables.Table(d)
		if err != nil {
			g.changed = fmt.Sprintf("%s: reading its table again failed: %v", was.Info.Name, err)
			break
		}
		if why := was.Changed(dm.Layer{Info: info, Targets: ts}); why != "" {
			g.changed = why
			break
		}
	}
	return g.changed
}

// vgLockWait is how long a copy waits for an LVM command that holds a volume group's lock
// for writing before it copies without offload instead.
const vgLockWait = 30 * time.Second

// lockVGs takes LVM's read lock on every volume group whose LVs the layers include, so that
// no LVM command on this node changes their mappings (pvmove, lvextend, lvconvert) while
// offload commands write to physical addresses. LVM's commands on other nodes of a shared VG
// are not held off by a local lock: the tables are checked as well.
func (c *copier) lockVGs(ctx context.Context, layers map[dm.Dev]dm.Layer) (func(), error) {
	vgs := map[string]bool{}
	for _, l := range layers {
		if !strings.HasPrefix(l.Info.UUID, "LVM-") {
			continue
		}
		if vg, _, ok := lvm.SplitDMName(l.Info.Name); ok {
			vgs[vg] = true
		}
	}
	names := make([]string, 0, len(vgs))
	for vg := range vgs {
		names = append(names, vg)
	}
	sort.Strings(names) // one order everywhere
	var held []*lvm.VGLock
	release := func() {
		for _, l := range held {
			l.Unlock()
		}
	}
	for _, vg := range names {
		l, err := lvm.LockVGShared(ctx, c.o.LVMLockDir, vg, vgLockWait)
		if err != nil {
			release()
			return func() {}, fmt.Errorf("LVM lock of volume group %s: %w", vg, err)
		}
		held = append(held, l)
	}
	if len(names) > 0 {
		c.o.Log("holding LVM's read lock on volume group(s) %s while offloading, so their LVs cannot move", strings.Join(names, ", "))
	}
	return release, nil
}
