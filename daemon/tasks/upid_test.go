package tasks

import (
	"strings"
	"testing"
)

func TestUPIDGolden(t *testing.T) {
	cases := []struct {
		s    string
		want UPID
	}{
		// written by PVE's upid_encode
		{"UPID:pve1:00001234:0001ABCD:6B024A11:qmstart:100:root@pam:", UPID{Node: "pve1", PID: 0x1234, PStart: 0x1abcd, StartTime: 0x6b024a11, Type: "qmstart", ID: "100", User: "root@pam"}},
		// empty id (imgcopy), token user
		{"UPID:node-a:000F4240:000F4240:6B024A11:imgcopy::csi@pve!csi:", UPID{Node: "node-a", PID: 1000000, PStart: 1000000, StartTime: 0x6b024a11, Type: "imgcopy", ID: "", User: "csi@pve!csi"}},
		// pstart past 32 bits (hosts up for more than ~497 days), id with '@' (imgdel)
		{"UPID:n:00000001:1FFFFFFFF:6B024A11:imgdel:100@local-lvm:root@pam:", UPID{Node: "n", PID: 1, PStart: 0x1ffffffff, StartTime: 0x6b024a11, Type: "imgdel", ID: "100@local-lvm", User: "root@pam"}},
	}
	for _, c := range cases {
		got, err := ParseUPID(c.s)
		if err != nil || got != c.want {
			t.Errorf("ParseUPID(%q) = %+v, %v", c.s, got, err)
		}
		if got.String() != c.s {
			t.Errorf("encode %+v = %q, want %q", got, got.String(), c.s)
		}
	}
	for _, bad := range []string{
		"UPID:pve1:00001234:0001ABCD:6B024A11:qmstart:100:root@pam",   // no trailing colon
		"UPID:pve1:1234:0001ABCD:6B024A11:qmstart:100:root@pam:",      // pid not 8 digits
		"UPID:pve1:00001234:1ABCD:6B024A11:qmstart:100:root@pam:",     // pstart too short
		"UPID:pve1:00001234:0001ABCD:6B024A11::100:root@pam:",         // empty type
		"UPID:pve1:00001234:0001ABCD:6B024A11:qmstart:100::",          // empty user
		"UPID:-pve:00001234:0001ABCD:6B024A11:qmstart:100:root@pam:",  // bad node
		"UPID:pve1:00001234:0001ABCD:6B024A11:qm/start:100:root@pam:", // slash in a field
	} {
		if _, err := ParseUPID(bad); err == nil {
			t.Errorf("ParseUPID(%q) accepted", bad)
		}
	}
}

func TestLogPathUsesDigitAsWritten(t *testing.T) {
	d := &Dir{Root: "/r"}
	p, err := d.LogPath("UPID:pve1:00001234:0001abcd:6b024a1f:qmstart:100:root@pam:")
	if err != nil || p != "/r/f/UPID:pve1:00001234:0001abcd:6b024a1f:qmstart:100:root@pam:" {
		t.Fatalf("%s %v", p, err)
	}
}

func TestEntryLines(t *testing.T) {
	u := "UPID:pve1:00001234:0001ABCD:6B024A11:qmstart:100:root@pam:"
	for line, want := range map[string]Entry{
		u + " 0":                              {UPID: u},
		u + " 1 6B024A11 OK":                  {UPID: u, Saved: true, EndTime: 0x6b024a11, Status: "OK"},
		u + " 0 6B024A12 disk full: no space": {UPID: u, EndTime: 0x6b024a12, Status: "disk full: no space"},
	} {
		e, ok := parseEntryLine(line, true)
		e.task = UPID{}
		if !ok || e != want {
			t.Errorf("%q: %+v %v", line, e, ok)
		}
	}
	e, ok := parseEntryLine(u+" 6B024A11 WARNINGS: 2", false)
	if !ok || e.Status != "WARNINGS: 2" || e.EndTime != 0x6b024a11 {
		t.Errorf("index line: %+v", e)
	}
}

func FuzzUPID(f *testing.F) {
	f.Add("UPID:pve1:00001234:0001ABCD:6B024A11:qmstart:100:root@pam:")
	f.Add("UPID:n:00000001:1FFFFFFFF:6B024A11:imgdel:100@local-lvm:root@pam!t:")
	f.Add("UPID:a:00000000:00000000:00000000:x::u:")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUPID(s)
		if err != nil {
			return
		}
		again, err := ParseUPID(u.String())
		if err != nil || again != u {
			t.Fatalf("%q decodes to %+v, which encodes to %q, which decodes to %+v (%v)", s, u, u.String(), again, err)
		}
		if !strings.HasSuffix(u.String(), ":") {
			t.Fatal("encoded UPID lacks the trailing colon")
		}
	})
}

func FuzzEntryLine(f *testing.F) {
	f.Add("UPID:pve1:00001234:0001ABCD:6B024A11:qmstart:100:root@pam: 1 6B024A11 OK", true)
	f.Add("UPID:pve1:00001234:0001ABCD:6B024A11:qmstart:100:root@pam: 6B024A11 some error", false)
	f.Fuzz(func(t *testing.T, line string, active bool) {
		e, ok := parseEntryLine(line, active)
		if ok && !strings.HasPrefix(line, e.UPID) && !strings.HasPrefix(strings.TrimLeft(line, " \t"), e.UPID) {
			t.Fatalf("entry %+v from %q", e, line)
		}
	})
}
