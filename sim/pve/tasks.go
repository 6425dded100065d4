package pve

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// simTask is a task the simulator runs in process. Its UPID carries the simulator's pid and a
// pstart of its own, so nothing mistakes it for a real worker process.
type simTask struct {
	done   chan struct{}
	cancel context.CancelFunc
}

// taskRunning answers check_process_running for a node's tasks: in-process tasks from the
// simulator's table, real processes (pvesnap's workers) from /proc.
func (c *Cluster) taskRunning(pid, pstart int64) bool {
	if pid == c.pid {
		c.mu.Lock()
		t, ok := c.simTask[pstart]
		c.mu.Unlock()
		if !ok {
			return false
		}
		select {
		case <-t.done:
			return false
		default:
			return true
		}
	}
	ps, ok := procStartTime(pid)
	return ok && ps == pstart
}

// task is a running task's log, written as a forked PVE worker writes it.
type task struct {
	f        *os.File
	warnings int
}

func (t *task) logf(format string, args ...any) { fmt.Fprintf(t.f, format+"\n", args...) }

// warnf is RESTEnvironment's warn: a "WARN:" line that makes the task end with warnings.
func (t *task) warnf(format string, args ...any) {
	t.warnings++
	t.logf("WARN: "+format, args...)
}

// finish writes fork_worker's last line.
func (t *task) finish(err error) {
	switch {
	case err != nil:
		msg := strings.ReplaceAll(strings.TrimRight(err.Error(), "\n"), "\n", " ")
		t.logf("TASK ERROR: %s", msg)
	case t.warnings > 0:
		t.logf("TASK WARNINGS: %d", t.warnings)
	default:
		t.logf("TASK OK")
	}
}

// runTask starts fn as a task of node n and returns its UPID at once, like fork_worker.
func (n *Node) runTask(typ, id, user string, fn func(t *task) error) (string, error) {
	c := n.c
	c.mu.Lock()
	c.ptick++
	pstart := c.pstart + c.ptick
	c.mu.Unlock()
	upid := encodeUPID(upid{Node: n.Name, PID: c.pid, PStart: pstart, StartTime: time.Now().Unix(), Type: typ, ID: id, User: user})
	p, _ := n.tasks.logPath(upid)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return "", fmt.Errorf("unable to create output file '%s' - %v", p, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &simTask{done: make(chan struct{}), cancel: cancel}
	c.mu.Lock()
	c.simTask[pstart] = st
	c.mu.Unlock()
	list, err := n.tasks.activeWorkers(upid)
	if err == nil {
		c.broadcastTasklist(n.Name, list)
	}
	t := &task{f: f}
	go func() {
		defer f.Close()
		errc := make(chan error, 1)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					errc <- fmt.Errorf("internal error: %v", p)
				}
			}()
			errc <- fn(t)
		}()
		var err error
		select {
		case err = <-errc:
		case <-ctx.Done():
			err = fmt.Errorf("received interrupt")
		}
		t.finish(err)
		close(st.done)
	}()
	return upid, nil
}

// waitTask waits up to d for a task and returns its exit status ("" when still running).
func (n *Node) waitTask(id string, d time.Duration) string {
	u, ok := decodeUPID(id)
	if !ok {
		return ""
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !n.c.taskRunning(u.PID, u.PStart) {
			return n.tasks.readStatus(id)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ""
}

// WaitTask waits for a task of node to end and returns its exit status.
func (c *Cluster) WaitTask(node, upid string, d time.Duration) string {
	return c.nodes[node].waitTask(upid, d)
}

// broadcastTasklist is PVE::Cluster::broadcast_tasklist: the node's active list, as
// /cluster/tasks serves it until the next broadcast.
func (c *Cluster) broadcastTasklist(node string, list []activeEntry) {
	var out []map[string]any
	for _, e := range list {
		o := map[string]any{"upid": e.upid, "node": e.u.Node, "starttime": e.u.StartTime, "type": e.u.Type,
			"id": e.u.ID, "user": e.u.User, "saved": boolInt(e.saved)}
		if e.endtime != 0 {
			o["endtime"] = e.endtime
			if e.status != "" {
				o["status"] = e.status
			}
		} else {
			o["pid"] = e.u.PID
		}
		out = append(out, o)
	}
	c.mu.Lock()
	c.tasklist[node] = out
	c.mu.Unlock()
}

// taskOwner is Tasks.pm's $check_task_user: a token sees its own tasks, a user its own and
// those of its tokens.
func taskOwner(caller, taskUser, taskToken string) bool {
	if taskToken != "" {
		return caller == taskUser+"!"+taskToken || caller == taskUser
	}
	return caller == taskUser
}

// stopWorker is RESTEnvironment's check_worker($upid, 1): SIGTERM to the worker's process
// group, then SIGKILL when it is still there 5 seconds later. In-process tasks are cancelled.
func (c *Cluster) stopWorker(u upid) {
	if u.PID == c.pid {
		c.mu.Lock()
		st := c.simTask[u.PStart]
		c.mu.Unlock()
		if st != nil {
			st.cancel()
		}
		return
	}
	if !c.taskRunning(u.PID, u.PStart) {
		return
	}
	syscall.Kill(-int(u.PID), syscall.SIGTERM)
	for i := 0; i < 50; i++ {
		if !c.taskRunning(u.PID, u.PStart) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(-int(u.PID), syscall.SIGKILL)
}

func (c *Cluster) taskRoutes(n *Node) []*route {
	decode := func(call *call, mustExist bool) (upid, error) {
		u, ok := decodeUPID(call.str("upid"))
		if !ok {
			return u, paramErr(map[string]string{"upid": "unable to parse worker upid"})
		}
		if p, _ := n.tasks.logPath(call.str("upid")); mustExist {
			if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
				return u, paramErr(map[string]string{"upid": "no such task"})
			}
		}
		return u, nil
	}
	return []*route{
		{method: "GET", path: "/nodes/{node}/tasks", handler: func(call *call) (any, error) { return n.listTasks(call) }},
		{method: "GET", path: "/nodes/{node}/tasks/{upid}", handler: func(call *call) (any, error) {
			return []map[string]string{{"name": "log"}, {"name": "status"}}, nil
		}},
		{method: "GET", path: "/nodes/{node}/tasks/{upid}/status", handler: func(call *call) (any, error) {
			u, err := decode(call, true)
			if err != nil {
				return nil, err
			}
			user, token := splitTaskUser(u.User)
			if !taskOwner(call.user, user, token) {
				if err := call.check("/nodes/"+call.str("node"), "Sys.Audit"); err != nil {
					return nil, err
				}
			}
			res := map[string]any{"upid": call.str("upid"), "node": u.Node, "pid": u.PID, "pstart": u.PStart,
				"starttime": u.StartTime, "type": u.Type, "id": u.ID, "user": user, "status": "stopped"}
			if token != "" {
				res["tokenid"] = token
			}
			if c.taskRunning(u.PID, u.PStart) {
				res["status"] = "running"
			} else {
				res["exitstatus"] = n.tasks.readStatus(call.str("upid"))
			}
			return res, nil
		}},
		{method: "GET", path: "/nodes/{node}/tasks/{upid}/log", handler: func(call *call) (any, error) {
			u, err := decode(call, false)
			if err != nil {
				return nil, err
			}
			user, token := splitTaskUser(u.User)
			if !taskOwner(call.user, user, token) {
				if err := call.check("/nodes/"+call.str("node"), "Sys.Audit"); err != nil {
					return nil, err
				}
			}
			if call.bool("download") {
				return nil, httpErr(501, "the stand-in does not stream task log downloads")
			}
			start, limit := 0, 50
			if call.has("start") {
				start = int(call.int("start"))
			}
			if call.has("limit") {
				limit = int(call.int("limit"))
			}
			lines, total := n.tasks.dumpLog(call.str("upid"), start, limit)
			call.total = total
			return lines, nil
		}},
		{method: "DELETE", path: "/nodes/{node}/tasks/{upid}", handler: func(call *call) (any, error) {
			u, err := decode(call, true)
			if err != nil {
				return nil, err
			}
			user, token := splitTaskUser(u.User)
			if !taskOwner(call.user, user, token) {
				if err := call.check("/nodes/"+call.str("node"), "Sys.Modify"); err != nil {
					return nil, err
				}
			}
			c.stopWorker(u)
			return nil, nil
		}},
	}
}

// listTasks is node_tasks: with source active|all the unarchived entries of active first
// (running ones RUNNING), unless source is active then index and index.1 newest first;
// total counts every match.
func (n *Node) listTasks(call *call) (any, error) {
	start, limit := int64(0), int64(50)
	if call.has("start") {
		start = call.int("start")
	}
	if call.has("limit") {
		limit = call.int("limit")
	}
	source := "archive"
	if call.has("source") {
		source = call.str("source")
	}
	errorsOnly := call.bool("errors")
	statusOK := map[string]bool{"ok": true, "warning": true, "error": true, "unknown": true}
	if call.has("statusfilter") && !errorsOnly {
		statusOK = map[string]bool{}
		for _, s := range splitListLower(call.str("statusfilter")) {
			statusOK[s] = true
		}
	} else if errorsOnly {
		statusOK["ok"] = false
	}
	auditor := call.holds("/nodes/"+call.str("node"), "Sys.Audit")
	var count int64
	var out []map[string]any
	filtered := func(e taskEntry) bool {
		if uf := call.str("userfilter"); uf != "" && !strings.Contains(strings.ToLower(e.user), strings.ToLower(uf)) {
			return true
		}
		if !(auditor || taskOwner(call.user, e.user, e.tokenid)) {
			return true
		}
		if tf := call.str("typefilter"); tf != "" && e.u.Type != tf {
			return true
		}
		if call.has("vmid") && e.u.ID != call.str("vmid") {
			return true
		}
		if call.has("since") && e.u.StartTime < call.int("since") {
			return true
		}
		if call.has("until") && e.u.StartTime > call.int("until") {
			return true
		}
		if !statusOK[normalizeStatus(e.status)] {
			return true
		}
		count++
		if count <= start {
			return true
		}
		return limit <= 0
	}
	if source == "active" || source == "all" {
		for _, a := range n.tasks.readActive() {
			if a.saved {
				continue
			}
			// Active entries keep the token in user, as PVE does not convert them.
			e := taskEntry{upid: a.upid, u: a.u, user: a.u.User, endtime: a.endtime, status: a.status}
			if !filtered(e) {
				if e.status == "" {
					e.status = "RUNNING"
				}
				out = append(out, e.object())
				limit--
			}
		}
	}
	if source != "active" {
		n.tasks.readIndex(func(e taskEntry) {
			if !filtered(e) {
				out = append(out, e.object())
				limit--
			}
		})
	}
	call.total = int(count)
	return nonNil(out), nil
}

func splitListLower(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' }) {
		out = append(out, strings.ToLower(f))
	}
	return out
}

// clusterTasks is GET /cluster/tasks: the broadcast task lists of every node, all of them for
// Sys.Audit on /, else the caller's own (a token's are its user's).
func (c *Cluster) clusterTasks(call *call) (any, error) {
	all := call.holds("/", "Sys.Audit")
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []map[string]any{}
	for _, name := range c.names {
		for _, t := range c.tasklist[name] {
			e := map[string]any{}
			for k, v := range t {
				e[k] = v
			}
			user, token := splitTaskUser(fmt.Sprint(e["user"]))
			e["user"] = user
			if token != "" {
				e["tokenid"] = token
			}
			if all || user == call.user {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

func nonNil[T any](l []T) []T {
	if l == nil {
		return []T{}
	}
	return l
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
