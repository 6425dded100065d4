package engine

import (
	"fmt"

	"github.com/pvesnap/pvesnap/ioctl/dm"
)

// ErrOverlap is returned when source and destination share blocks: the copy would overwrite
// the source while reading it (`pvesnap copy /dev/mapper/mpatha vg/lv-on-mpatha`).
var ErrOverlap = fmt.Errorf("source and destination overlap")

// checkOverlap refuses a copy whose source and destination reach the same blocks of one LU,
// through whatever layers and paths: by the physical extents when both resolve, else by the
// device stacks (one device built on the other).
func (c *copier) checkOverlap(sx []dm.Extent, errS error, dx []dm.Extent, errD error, srcOff, dstOff, length int64) error {
	if c.s.dev == c.d.dev {
		if srcOff < dstOff+length && dstOff < srcOff+length {
			return fmt.Errorf("%s: bytes %d..%d and %d..%d of one device: %w", c.d.path, srcOff, srcOff+length, dstOff, dstOff+length, ErrOverlap)
		}
		return nil
	}
	if errS == nil && errD == nil {
		keys := map[dm.Dev]string{}
		key := func(d dm.Dev) string {
			if k, ok := keys[d]; ok {
				return k
			}
			keys[d] = luKey(c.o.Roots, d)
			return keys[d]
		}
		for _, a := range sx {
			for _, b := range dx {
				if key(a.Dev) != key(b.Dev) || a.DevStart >= b.DevStart+b.Length || b.DevStart >= a.DevStart+a.Length {
					continue
				}
				lo, hi := max(a.DevStart, b.DevStart), min(a.DevStart+a.Length, b.DevStart+b.Length)
				return fmt.Errorf("%s and %s both map sectors %d..%d of %s: %w, the copy would overwrite the source as it reads it",
					c.s.path, c.d.path, lo, hi, c.devName(a.Dev), ErrOverlap)
			}
		}
		return nil
	}
	// A layer that does not map one to one (thin, crypt, raid…): compare the stacks.
	if below(c.o.Roots, c.d.dev)[c.s.dev] {
		return fmt.Errorf("%s is built on %s: %w", c.d.path, c.s.path, ErrOverlap)
	}
	if below(c.o.Roots, c.s.dev)[c.d.dev] {
		return fmt.Errorf("%s is built on %s: %w", c.s.path, c.d.path, ErrOverlap)
	}
	return nil
}
