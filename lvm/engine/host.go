package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pvesnap/pvesnap/ioctl"
	"github.com/pvesnap/pvesnap/ioctl/dm"
)

// hostWorker copies chunks through the host with its own aligned buffer.
type hostWorker struct {
	c   *copier
	buf *ioctl.Buffer
}

func newHostWorker(c *copier) (*hostWorker, error) {
	b, err := ioctl.NewBuffer(int(c.o.HostChunk)) // page-aligned: O_DIRECT needs it
	if err != nil {
		return nil, err
	}
	return &hostWorker{c: c, buf: b}, nil
}

func (h *hostWorker) close() { h.buf.Free() }

var zeroPage = make([]byte, 64<<10)

// AllZero reports whether b holds only zero bytes (a range the copy need not carry).
func AllZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// copy reads the chunk and writes it, in buffer-sized pieces; all-zero pieces become
// BLKZEROOUT where the destination zeroes without data (copier.zeroOut).
func (h *hostWorker) copy(ctx context.Context, ch chunk) error {
	c := h.c
	if ch.lu != nil && ch.rec == nil {
		ch.rec = ch.lu.start(ch) // a deferred error reported from now on covers it
	}
	for done := int64(0); done < ch.length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(h.buf.Bytes())), ch.length-done)
		b := h.buf.Bytes()[:n]
		if _, err := io.ReadFull(io.NewSectionReader(c.s.f, ch.srcOff+done, n), b); err != nil {
			return fmt.Errorf("reading %s at %d: %w", c.s.path, ch.srcOff+done, err)
		}
		zeroed := false
		if c.zeroOut.Load() && AllZero(b) {
			if err := c.io.zeroOut(c.d.f, ch.dstOff+done, n); err == nil {
				zeroed = true
			} else if c.zeroOut.CompareAndSwap(true, false) {
				c.o.Log("zeroing on %s failed (%v): zero ranges are written as data from here on", c.d.path, err)
			}
		}
		if !zeroed {
			if _, err := c.d.f.WriteAt(b, ch.dstOff+done); err != nil {
				return fmt.Errorf("writing %s at %d: %w", c.d.path, ch.dstOff+done, err)
			}
		}
		c.mu.Lock()
		if zeroed {
			c.res.Zeroed += n
		} else {
			c.res.HostCopied += n
		}
		c.mu.Unlock()
		if !ch.redo {
			c.addDone(n)
		}
		done += n
	}
	return nil
}

// verify compares the ranges byte for byte, reading both sides from the devices (the caches
// were dropped after the copy).
func (c *copier) verify(ctx context.Context, srcOff, dstOff, length int64) error {
	a, err := ioctl.NewBuffer(int(c.o.HostChunk))
	if err != nil {
		return err
	}
	defer a.Free()
	b, err := ioctl.NewBuffer(int(c.o.HostChunk))
	if err != nil {
		return err
	}
	defer b.Free()
	for done := int64(0); done < length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(a.Bytes())), length-done)
		if _, err := io.ReadFull(io.NewSectionReader(c.s.f, srcOff+done, n), a.Bytes()[:n]); err != nil {
			return fmt.Errorf("verify: reading %s: %w", c.s.path, err)
		}
		if _, err := io.ReadFull(io.NewSectionReader(c.d.f, dstOff+done, n), b.Bytes()[:n]); err != nil {
			return fmt.Errorf("verify: reading %s: %w", c.d.path, err)
		}
		if !bytes.Equal(a.Bytes()[:n], b.Bytes()[:n]) {
			for i := int64(0); i < n; i++ {
				if a.Bytes()[i] != b.Bytes()[i] {
					return fmt.Errorf("verify: %s differs from %s at byte %d of the copy", c.d.path, c.s.path, done+i)
				}
			}
		}
		done += n
	}
	return nil
}

// checkDestination refuses a device that is mounted, has holders (a device-mapper device or
// partition mapping on top) or is open by any process (a running VM's QEMU keeps its disks
// open): overwriting it would corrupt what is using it.
func checkDestination(roots Roots, proc, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	dev, err := statDev(fi)
	if err != nil {
		return err
	}
	sysDev := filepath.Join(roots.Sys, "dev", "block", dev.String())
	if hs, _ := os.ReadDir(filepath.Join(sysDev, "holders")); len(hs) > 0 {
		var names []string
		for _, h := range hs {
			names = append(names, h.Name())
		}
		return fmt.Errorf("%s is held by %s (a mapping or volume group is active on it): %w", path, strings.Join(names, ", "), ErrBusy)
	}
	if mi, err := os.ReadFile(filepath.Join(proc, "self", "mountinfo")); err == nil {
		for _, l := range strings.Split(string(mi), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && f[2] == dev.String() {
				return fmt.Errorf("%s is mounted on %s: %w", path, f[4], ErrBusy)
			}
		}
	}
	if pid, comm, ok := openedBy(proc, dev); ok {
		return fmt.Errorf("%s is open by process %d (%s), e.g. a running VM: %w", path, pid, comm, ErrBusy)
	}
	return nil
}

// openedBy scans /proc/*/fd for another process holding the device open.
func openedBy(proc string, dev dm.Dev) (int, string, bool) {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return 0, "", false
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		fdDir := filepath.Join(proc, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			fi, err := os.Stat(filepath.Join(fdDir, fd.Name()))
			if err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
				continue
			}
			if d, err := statDev(fi); err == nil && d == dev {
				comm, _ := os.ReadFile(filepath.Join(proc, e.Name(), "comm"))
				return pid, strings.TrimSpace(string(comm)), true
			}
		}
	}
	return 0, "", false
}
