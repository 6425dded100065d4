package itest

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

type taskStatus struct {
	Status, Exitstatus, Node, User, Type, ID string
	PID, Starttime                           float64
}

func status(t *testing.T, c *simpve.Client, node, upid string) taskStatus {
	t.Helper()
	d, err := c.Must("GET", "/nodes/"+node+"/tasks/"+upid+"/status", nil)
	must(t, err)
	var s taskStatus
	must(t, json.Unmarshal(d, &s))
	return s
}

func waitStopped(t *testing.T, c *simpve.Client, node, upid string) taskStatus {
	t.Helper()
	for i := 0; i < 200; i++ {
		if s := status(t, c, node, upid); s.Status == "stopped" {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("task %s did not stop", upid)
	return taskStatus{}
}

type logLine struct {
	N int    `json:"n"`
	T string `json:"t"`
}

func taskLog(t *testing.T, c *simpve.Client, node, upid string, start, limit int) ([]logLine, int) {
	t.Helper()
	r, err := c.Do("GET", "/nodes/"+node+"/tasks/"+upid+"/log", url.Values{"start": {itoa(start)}, "limit": {itoa(limit)}})
	must(t, err)
	var l []logLine
	json.Unmarshal(r.Data, &l)
	return l, r.Total
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestTaskThroughPvesnapAndPveproxy: a task started through :8009 is listed, its log tailed
// while it runs, and its final status read through pvesnap and through pveproxy's own task
// endpoints, which read the same files.
func TestTaskThroughPvesnapAndPveproxy(t *testing.T) {
	e := Start(t)
	c := e.Root("pve1")
	direct, _ := simpve.NewClient(e.Sim.URL("pve1"), e.Sim.CAFile())
	must(t, direct.Login("root@pam", "pvesnap"))
	d, err := c.Must("POST", "/nodes/pve1/pvesnap/itest-sleep", url.Values{"steps": {"20"}})
	must(t, err)
	upid := simpve.UPIDOf(d)
	if s := status(t, c, "pve1", upid); s.Status != "running" || s.User != "root@pam" || s.ID != "100" {
		t.Fatalf("through pvesnap: %+v", s)
	}
	if s := status(t, direct, "pve1", upid); s.Status != "running" {
		t.Fatalf("through pveproxy: %+v", s)
	}
	// Listed as running (PVE lists running tasks with source=active).
	r, err := c.Do("GET", "/nodes/pve1/tasks", url.Values{"source": {"active"}})
	must(t, err)
	if !strings.Contains(string(r.Data), upid) || !strings.Contains(string(r.Data), `"status":"RUNNING"`) {
		t.Fatalf("active list: %s", r.Data)
	}
	// Tail the log while it grows.
	var seen, tails int
	for i := 0; i < 100; i++ {
		lines, total := taskLog(t, c, "pve1", upid, seen, 50)
		if total > seen && len(lines) > 0 && lines[0].N == seen+1 {
			seen = total
			tails++
		}
		if total >= 21 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if tails < 3 {
		t.Errorf("log grew in only %d observed steps", tails)
	}
	fin := waitStopped(t, c, "pve1", upid)
	if fin.Exitstatus != "OK" {
		t.Fatalf("final %+v", fin)
	}
	if s := status(t, direct, "pve1", upid); s.Status != "stopped" || s.Exitstatus != "OK" {
		t.Fatalf("pveproxy's view: %+v", s)
	}
	lines, total := taskLog(t, direct, "pve1", upid, 0, 0)
	if total != 21 || lines[20].T != "TASK OK" {
		t.Fatalf("pveproxy's log: %d lines, last %+v", total, lines[len(lines)-1])
	}
	// The archived list through pvesnap contains it (merged with pveproxy's, once).
	r, _ = c.Do("GET", "/nodes/pve1/tasks", url.Values{"typefilter": {"pvesnaptest"}})
	if strings.Count(string(r.Data), upid) != 1 || r.Total < 1 {
		t.Fatalf("archived list: %s (total %d)", r.Data, r.Total)
	}
}

func TestStopThroughPvesnap(t *testing.T) {
	e := Start(t)
	c := e.Root("pve1")
	d, err := c.Must("POST", "/nodes/pve1/pvesnap/itest-sleep", url.Values{"steps": {"300"}})
	must(t, err)
	upid := simpve.UPIDOf(d)
	time.Sleep(300 * time.Millisecond)
	if _, err := c.Must("DELETE", "/nodes/pve1/tasks/"+upid, nil); err != nil {
		t.Fatal(err)
	}
	fin := waitStopped(t, c, "pve1", upid)
	if fin.Exitstatus != "interrupted by stop request" {
		t.Fatalf("%+v", fin)
	}
	lines, _ := taskLog(t, c, "pve1", upid, 0, 0)
	text := ""
	for _, l := range lines {
		text += l.T + "\n"
	}
	if !strings.Contains(text, "stop requested by root@pam") {
		t.Fatalf("log:\n%s", text)
	}
	// A user who does not own the task and lacks Sys.Modify cannot stop it.
	d, _ = c.Must("POST", "/nodes/pve1/pvesnap/itest-sleep", url.Values{"steps": {"50"}})
	other, _ := e.Token("pve1", "viewer@pve", map[string]string{"/": "PVEAuditor"})
	r, err := other.Do("DELETE", "/nodes/pve1/tasks/"+simpve.UPIDOf(d), nil)
	must(t, err)
	if r.Code != 403 || r.Status != "Permission check failed (/nodes/pve1, Sys.Modify)" {
		t.Fatalf("stop by a stranger: %d %q", r.Code, r.Status)
	}
}

// TestDaemonRestartDuringTask: pvesnap stops and starts again while its task runs; the task
// goes on and its status and log stay right.
func TestDaemonRestartDuringTask(t *testing.T) {
	e := Start(t)
	c := e.Root("pve1")
	d, err := c.Must("POST", "/nodes/pve1/pvesnap/itest-sleep", url.Values{"steps": {"25"}})
	must(t, err)
	upid := simpve.UPIDOf(d)
	time.Sleep(300 * time.Millisecond)
	e.StopNode("pve1")
	time.Sleep(300 * time.Millisecond)
	e.StartNode("pve1")
	c = e.Root("pve1")
	if s := status(t, c, "pve1", upid); s.Status != "running" {
		t.Fatalf("after the restart the task must still run: %+v", s)
	}
	fin := waitStopped(t, c, "pve1", upid)
	lines, total := taskLog(t, c, "pve1", upid, 0, 0)
	if fin.Exitstatus != "OK" || total != 26 || lines[24].T != "step 25 of 25" {
		t.Fatalf("%+v, %d lines", fin, total)
	}
}

// TestOtherNodesTasksAreForwarded: a UPID of pve2 asked at pve1's pvesnap is answered by
// pve2's pvesnap.
func TestOtherNodesTasksAreForwarded(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	c2 := e.Root("pve2")
	d, err := c2.Must("POST", "/nodes/pve2/pvesnap/itest-sleep", url.Values{"steps": {"5"}})
	must(t, err)
	upid := simpve.UPIDOf(d)
	if !strings.HasPrefix(upid, "UPID:pve2:") {
		t.Fatalf("upid %s", upid)
	}
	c1 := e.Root("pve1")
	if s := waitStopped(t, c1, "pve2", upid); s.Exitstatus != "OK" || s.Node != "pve2" {
		t.Fatalf("%+v", s)
	}
	// A pvesnap-only route answered by the other node's daemon proves the forwarding.
	sd, err := c1.Must("GET", "/nodes/pve2/pvesnap", nil)
	must(t, err)
	var st struct{ Node string }
	json.Unmarshal(sd, &st)
	if st.Node != "pve2" {
		t.Fatalf("status of pve2 answered by %q", st.Node)
	}
	// A task can be started on pve2 through pve1.
	d, err = c1.Must("POST", "/nodes/pve2/pvesnap/itest-sleep", url.Values{"steps": {"2"}})
	must(t, err)
	if !strings.HasPrefix(simpve.UPIDOf(d), "UPID:pve2:") {
		t.Fatalf("task started through pve1 for pve2 ran on %s", simpve.UPIDOf(d))
	}
}
