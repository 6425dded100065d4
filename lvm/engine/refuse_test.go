package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// A copy whose destination LU reports itself failing is not offloaded: the method line says
// why in the device's words, the host copies every byte, and the log names the health of
// every device the copy used. A read-only source is no reason to refuse; a failing one is.
func TestOffloadRefusedToFailingOrReadOnlyDevice(t *testing.T) {
	n := int64(4 << 20)
	for _, c := range []struct {
		name      string
		src, dst  Health
		offloaded bool
		refusal   string
	}{
		{"healthy", Health{State: HealthOK}, Health{State: HealthOK}, true, ""},
		{"failing destination", Health{State: HealthOK},
			Health{State: HealthFailing, Problems: []string{"failure prediction threshold exceeded (ASC/ASCQ 0x5D/0x00)"}}, false,
			"offload to sdc refused: it reports itself failing (failure prediction threshold exceeded (ASC/ASCQ 0x5D/0x00))"},
		{"read-only destination", Health{State: HealthOK},
			Health{State: HealthWarning, ReadOnly: true, Problems: []string{"the kernel has the device read-only (sysfs ro)"}}, false,
			"offload to sdc refused: it reports itself read-only (the kernel has the device read-only (sysfs ro))"},
		{"read-only source", Health{State: HealthWarning, ReadOnly: true, Problems: []string{"namespace write protected (NSATTR)"}},
			Health{State: HealthOK}, true, ""},
		{"failing source", Health{State: HealthFailing, Problems: []string{"critical warning: available spare below its threshold"}},
			Health{State: HealthOK}, false, "offload from sdb refused: it reports itself failing (critical warning: available spare below its threshold)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, _, dstLU := twoLUs(t, n, lioParams())
			w.ids[sdb].Health, w.ids[sdc].Health = c.src, c.dst
			s, d, data := w.endpoints(dm1, dm2, n, 512)
			var mu sync.Mutex
			var log []string
			cp := w.copier(s, d, Options{})
			cp.o.Log = func(f string, a ...any) {
				mu.Lock()
				defer mu.Unlock()
				log = append(log, fmt.Sprintf(f, a...))
			}
			if err := cp.copy(context.Background(), 0, 0, n); err != nil {
				t.Fatal(err)
			}
			if !c.offloaded { // the fake array moves no byte: only the host's copy shows
				sameBytes(t, c.name, w.dstContent(d), data)
			}
			if got := cp.res.Offloaded == n; got != c.offloaded || (len(dstLU.copies()) > 0) != c.offloaded {
				t.Fatalf("offloaded %d bytes in %d commands (%v)", cp.res.Offloaded, len(dstLU.copies()), cp.res.Methods)
			}
			if c.refusal != "" && !strings.Contains(joined(cp.res.Methods), "host copy ("+c.refusal+")") {
				t.Fatalf("methods %q, want the refusal %q", cp.res.Methods, c.refusal)
			}
			all := joined(log)
			for _, side := range []string{"source device sdb", "destination device sdc"} {
				if !strings.Contains(all, side) || !strings.Contains(all, ": health ") {
					t.Fatalf("the log does not say the health of the %s:\n%s", side, all)
				}
			}
		})
	}
}
