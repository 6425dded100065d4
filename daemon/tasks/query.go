package tasks

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// ErrNoSuchTask is PVE's "no such task": the UPID decodes but its log does not exist.
var ErrNoSuchTask = errors.New("no such task")

// Status is the answer of GET /nodes/{node}/tasks/{upid}/status; numbers are JSON numbers.
type Status struct {
	UPID       string `json:"upid"`
	Node       string `json:"node"`
	PID        int    `json:"pid"`
	PStart     uint64 `json:"pstart"`
	StartTime  int64  `json:"starttime"`
	Type       string `json:"type"`
	ID         string `json:"id"`
	User       string `json:"user"`
	TokenID    string `json:"tokenid,omitempty"`
	Status     string `json:"status"`
	ExitStatus string `json:"exitstatus,omitempty"`
}

// splitTaskUser splits a token id into user and token name, as the status endpoint does.
func splitTaskUser(u string) (user, token string) {
	if i := strings.IndexByte(u, '!'); i > 0 {
		return u[:i], u[i+1:]
	}
	return u, ""
}

// Status reads a task's state the way pveproxy does: running while the worker's start time
// matches, else stopped with the status from the log's last line.
func (d *Dir) Status(upid string) (*Status, error) {
	u, err := ParseUPID(upid)
	if err != nil {
		return nil, err
	}
	p, _ := d.LogPath(upid)
	if _, err := os.Stat(p); err != nil {
		return nil, ErrNoSuchTask
	}
	user, token := splitTaskUser(u.User)
	s := &Status{UPID: upid, Node: u.Node, PID: u.PID, PStart: u.PStart, StartTime: u.StartTime,
		Type: u.Type, ID: u.ID, User: user, TokenID: token, Status: "stopped"}
	if d.IsRunning(u) {
		s.Status = "running"
	} else {
		s.ExitStatus = d.ReadStatus(upid)
	}
	return s, nil
}

// Exists reports whether the task's log exists.
func (d *Dir) Exists(upid string) bool {
	p, err := d.LogPath(upid)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// ListQuery are the filters of GET /nodes/{node}/tasks.
type ListQuery struct {
	Start, Limit int
	UserFilter   string
	TypeFilter   string
	VMID         string
	Errors       bool
	Source       string // archive (default), active, all
	Since, Until int64  // 0 = unset
	// StatusFilter limits to ok, warning, error, unknown (empty = all).
	StatusFilter []string
	// Auditor sees every user's tasks (Sys.Audit on /nodes/<node>); others only their own.
	Auditor bool
	Caller  string
}

// ListItem is one task of the list.
type ListItem struct {
	UPID      string `json:"upid"`
	Node      string `json:"node"`
	PID       int    `json:"pid"`
	PStart    uint64 `json:"pstart"`
	StartTime int64  `json:"starttime"`
	Type      string `json:"type"`
	ID        string `json:"id"`
	User      string `json:"user"`
	EndTime   int64  `json:"endtime,omitempty"`
	Status    string `json:"status,omitempty"`
}

var warningsRe = regexp.MustCompile(`^WARNINGS: \d+$`)

// NormalizeStatus is PVE's upid_normalize_status_type.
func NormalizeStatus(s string) string {
	switch {
	case s == "" || s == "RUNNING":
		return "running"
	case s == "OK":
		return "ok"
	case warningsRe.MatchString(s):
		return "warning"
	case s == "unexpected status" || strings.HasPrefix(s, "unable to"):
		return "unknown"
	}
	return "error"
}

func (q ListQuery) statuses() map[string]bool {
	if len(q.StatusFilter) == 0 {
		return map[string]bool{"ok": true, "warning": true, "error": true, "unknown": true, "running": true}
	}
	m := map[string]bool{"running": true}
	for _, s := range q.StatusFilter {
		m[s] = true
	}
	return m
}

// accept applies the filters of PVE's task list (everything but paging) to one entry.
func (q ListQuery) accept(e Entry, statusOK map[string]bool) bool {
	u := e.task
	switch {
	case q.UserFilter != "" && !strings.Contains(strings.ToLower(u.User), strings.ToLower(q.UserFilter)),
		!q.Auditor && u.User != q.Caller,
		q.TypeFilter != "" && u.Type != q.TypeFilter,
		q.Errors && e.Status == "OK",
		q.VMID != "" && u.ID != q.VMID,
		q.Since != 0 && u.StartTime < q.Since,
		q.Until != 0 && u.StartTime > q.Until,
		!statusOK[NormalizeStatus(e.Status)]:
		return false
	}
	return true
}

func (e Entry) item() ListItem {
	u := e.task
	return ListItem{UPID: e.UPID, Node: u.Node, PID: u.PID, PStart: u.PStart, StartTime: u.StartTime,
		Type: u.Type, ID: u.ID, User: u.User, EndTime: e.EndTime, Status: e.Status}
}

// List is PVE's task list: with source active|all, the unarchived entries of "active" first
// (running ones with status RUNNING); unless source is active, index then index.1 newest
// first. It returns the page and the total number of matches.
func (d *Dir) List(q ListQuery) ([]ListItem, int, error) {
	if q.Limit == 0 {
		q.Limit = 50
	}
	if q.Source == "" {
		q.Source = "archive"
	}
	statusOK := q.statuses()
	var out []ListItem
	count := 0
	limit := q.Limit
	keep := func(e Entry) {
		if !q.accept(e, statusOK) {
			return
		}
		count++
		if count <= q.Start || limit <= 0 {
			return
		}
		limit--
		out = append(out, e.item())
	}
	if q.Source == "active" || q.Source == "all" {
		list, err := d.Active()
		if err != nil {
			return nil, 0, err
		}
		for _, e := range list {
			if e.Saved {
				continue
			}
			if e.EndTime == 0 {
				e.Status = "RUNNING"
			}
			keep(e)
		}
	}
	if q.Source != "active" {
		if err := d.Archive(func(e Entry) bool { keep(e); return true }); err != nil {
			return nil, 0, err
		}
	}
	return out, count, nil
}

// Stop ends a running task: SIGTERM to the worker's process group, then SIGKILL when it is
// still alive after grace; the log records who stopped it and a kill. It reports whether the
// task was running.
func (d *Dir) Stop(upid, by string, grace time.Duration) (bool, error) {
	u, err := ParseUPID(upid)
	if err != nil {
		return false, err
	}
	if !d.Exists(upid) {
		return false, ErrNoSuchTask
	}
	if !d.IsRunning(u) {
		return false, nil
	}
	d.appendLog(upid, fmt.Sprintf("stop requested by %s", by))
	if err := syscall.Kill(-u.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return true, fmt.Errorf("signal task %s: %w", upid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !d.IsRunning(u) {
			return true, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d.IsRunning(u) {
		syscall.Kill(-u.PID, syscall.SIGKILL)
		d.appendLog(upid, fmt.Sprintf("worker did not stop within %s: sent SIGKILL", grace))
		d.appendLog(upid, "TASK ERROR: killed after stop request")
	}
	return true, nil
}

// AppendLog opens a task's log for appending (recovery notes on the task of a dead worker).
func (d *Dir) AppendLog(upid string) io.WriteCloser {
	p, err := d.LogPath(upid)
	if err != nil {
		return nil
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil
	}
	return f
}

func (d *Dir) appendLog(upid, line string) {
	p, err := d.LogPath(upid)
	if err != nil {
		return
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(line + "\n")
}
