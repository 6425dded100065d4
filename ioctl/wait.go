package ioctl

import (
	"context"
	"math"
	"time"
)

// Timeout is what a passthrough command's timeout field gets (sg_io_hdr.timeout,
// nvme_passthru_cmd.timeout_ms), in milliseconds: the command's own time, shortened to what is
// left of the context's deadline, never longer. Both fields are 32-bit millisecond counts: a
// far deadline (a task allowed to run for weeks) converted as it is wraps every 49.7 days, to
// anything down to a few milliseconds. 0 would mean the driver's default.
func Timeout(ctx context.Context, own time.Duration) (uint32, error) {
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return 0, context.DeadlineExceeded
		}
		own = min(own, left)
	}
	return uint32(min(max(own.Milliseconds(), 1), math.MaxUint32)), nil
}

// Sleep waits d, or less when ctx ends first (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
