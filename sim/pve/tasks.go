package pve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/tasks"
)

// simTask is a task the simulator runs in process. Its UPID carries the simulator's pid and a
// pstart of its own, so the task-status logic tells it apart from real worker processes.
type simTask struct {
	upid   string
	done   chan struct{}
	cancel context.CancelFunc
}

// taskRunning answers "is this worker alive" for the task directory: in-process tasks from
// the simulator's table, real processes (pvesnap workers) from /proc like pveproxy.
func (c *Cluster) taskRunning(pid int, pstart uint64) bool {
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
	ps, err := tasks.ProcStartTime("/proc", pid)
	return err == nil && ps == pstart
}

// runTask starts fn as a task of node n and returns its UPID at once, like fork_worker.
func (n *Node) runTask(typ, id, user string, fn func(t *tasks.Task) error) string {
	c := n.c
	c.mu.Lock()
	c.ptick++
	pstart := c.pstart + c.ptick
	c.mu.Unlock()
	u := tasks.UPID{Node: n.Name, PID: c.pid, PStart: pstart, StartTime: time.Now().Unix(), Type: typ, ID: id, User: user}
	upid := u.String()
	ctx, cancel := context.WithCancel(context.Background())
	st := &simTask{upid: upid, done: make(chan struct{}), cancel: cancel}
	c.mu.Lock()
	c.simTask[pstart] = st
	c.mu.Unlock()
	f, err := n.tasks.CreateLog(upid)
	if err != nil {
		close(st.done)
		c.logger.Error("sim task log", "err", err)
		return upid
	}
	n.tasks.ActiveWorkers(upid)
	t := tasks.NewTask(u, tasks.Job{Type: typ, ID: id, User: user}, f)
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
			t.Logf("received interrupt")
			err = errors.New("received interrupt")
		}
		t.Finish(err)
		close(st.done)
		n.tasks.ActiveWorkers("")
	}()
	return upid
}

// waitTask waits up to d for a task and returns its exit status ("" when still running).
func (n *Node) waitTask(upid string, d time.Duration) string {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		s, err := n.tasks.Status(upid)
		if err == nil && s.Status == "stopped" {
			return s.ExitStatus
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ""
}

// WaitTask waits for a task of node to end and returns its exit status.
func (c *Cluster) WaitTask(node, upid string, d time.Duration) string {
	return c.nodes[node].waitTask(upid, d)
}

var upidParam = api.Param{Name: "upid", Type: api.String, MaxLength: 256, Description: "The task's unique ID."}

// taskOwner reports whether the caller owns the task (the same user or token, or the user
// owning the token).
func taskOwner(call *api.Call, taskUser string) bool {
	me := call.Auth.Name()
	if taskUser == me {
		return true
	}
	u, _, isTok := strings.Cut(taskUser, "!")
	return isTok && u == me
}

func (c *Cluster) taskRoutes(n *Node) []*api.Route {
	decode := func(call *api.Call) (tasks.UPID, error) {
		u, err := tasks.ParseUPID(call.Params.Str("upid"))
		if err != nil {
			return u, api.ParamErr("upid", "unable to parse worker upid")
		}
		if !n.tasks.Exists(call.Params.Str("upid")) {
			return u, api.ParamErr("upid", "no such task")
		}
		return u, nil
	}
	return []*api.Route{
		{Method: "GET", Path: "/nodes/{node}/tasks", Name: "node_tasks", Description: "Read task list for one node (finished tasks).",
			Permission: api.Permission{User: "all", Description: "List task associated with the current user, or all task the user has 'Sys.Audit' permissions on /nodes/<node> (the <node> the task runs on)."},
			Params: []api.Param{nodeParam,
				{Name: "start", Type: api.Integer, Optional: true, Minimum: api.Min(0), Default: int64(0), Description: "List tasks beginning from this offset."},
				{Name: "limit", Type: api.Integer, Optional: true, Minimum: api.Min(0), Default: int64(50), Description: "Only list this amount of tasks."},
				{Name: "userfilter", Type: api.String, Optional: true, Description: "Only list tasks from this user."},
				{Name: "typefilter", Type: api.String, Optional: true, Description: "Only list tasks of this type (e.g., vzstart, vzdump)."},
				{Name: "vmid", Type: api.Integer, Optional: true, Minimum: api.Min(100), Maximum: api.Max(999999999), Description: "Only list tasks for this VM."},
				{Name: "errors", Type: api.Boolean, Optional: true, Default: false, Description: "Only list tasks with a status of ERROR."},
				{Name: "source", Type: api.String, Optional: true, Enum: []string{"archive", "active", "all"}, Default: "archive", Description: "List archived, active or all tasks."},
				{Name: "since", Type: api.Integer, Optional: true, Description: "Only list tasks since this UNIX epoch."},
				{Name: "until", Type: api.Integer, Optional: true, Description: "Only list tasks until this UNIX epoch."},
				{Name: "statusfilter", Type: api.String, Optional: true, Description: "List of Task States that should be returned."}},
			Returns: api.Returns{Type: "array", Properties: map[string]string{"upid": "string", "node": "string", "pid": "integer", "pstart": "integer",
				"starttime": "integer", "type": "string", "id": "string", "user": "string", "endtime": "integer", "status": "string"}},
			ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) {
				auditor, err := call.Has("/nodes/"+n.Name, "Sys.Audit")
				if err != nil {
					return nil, err
				}
				q := tasks.ListQuery{Start: int(call.Params.Int("start")), Limit: int(call.Params.Int("limit")),
					UserFilter: call.Params.Str("userfilter"), TypeFilter: call.Params.Str("typefilter"),
					Errors: call.Params.Bool("errors"), Source: call.Params.Str("source"), Since: call.Params.Int("since"),
					Until: call.Params.Int("until"), Auditor: auditor, Caller: call.Auth.Name()}
				if call.Params.Has("vmid") {
					q.VMID = fmt.Sprint(call.Params.Int("vmid"))
				}
				if sf := call.Params.Str("statusfilter"); sf != "" {
					q.StatusFilter = splitComma(sf)
				}
				items, total, err := n.tasks.List(q)
				if err != nil {
					return nil, err
				}
				return api.Result{Data: nonNil(items), Total: total}, nil
			}},
		{Method: "GET", Path: "/nodes/{node}/tasks/{upid}", Name: "upid_index", Description: "Task index.",
			Permission: api.Permission{User: "all", Description: "any authenticated user"},
			Params:     []api.Param{nodeParam, upidParam}, Returns: api.Returns{Type: "array"},
			Handler: func(call *api.Call) (any, error) {
				return []map[string]string{{"name": "log"}, {"name": "status"}}, nil
			}},
		{Method: "GET", Path: "/nodes/{node}/tasks/{upid}/status", Name: "read_task_status", Description: "Read task status.",
			Permission: api.Permission{User: "all", Description: "The user needs 'Sys.Audit' permissions on '/nodes/<node>' if they are not the owner of the task."},
			Params:     []api.Param{nodeParam, upidParam},
			Returns: api.Returns{Type: "object", Properties: map[string]string{"pid": "integer", "status": "string", "exitstatus": "string",
				"upid": "string", "node": "string", "pstart": "integer", "starttime": "integer", "type": "string", "id": "string", "user": "string", "tokenid": "string"}},
			ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) {
				u, err := decode(call)
				if err != nil {
					return nil, err
				}
				if !taskOwner(call, u.User) {
					if err := call.Check("/nodes/"+n.Name, "Sys.Audit"); err != nil {
						return nil, err
					}
				}
				return n.tasks.Status(call.Params.Str("upid"))
			}},
		{Method: "GET", Path: "/nodes/{node}/tasks/{upid}/log", Name: "read_task_log", Description: "Read task log.",
			Permission: api.Permission{User: "all", Description: "The user needs 'Sys.Audit' permissions on '/nodes/<node>' if they aren't the owner of the task."},
			Params: []api.Param{nodeParam, upidParam,
				{Name: "start", Type: api.Integer, Optional: true, Minimum: api.Min(0), Default: int64(0), Description: "Start at this line when reading the tasklog"},
				{Name: "limit", Type: api.Integer, Optional: true, Minimum: api.Min(0), Default: int64(50), Description: "The amount of lines to read from the tasklog."},
				{Name: "download", Type: api.Boolean, Optional: true, Description: "Whether the tasklog file should be downloaded."}},
			Returns: api.Returns{Type: "array", Properties: map[string]string{"n": "integer", "t": "string"}},
			ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) {
				u, err := decode(call)
				if err != nil {
					return nil, err
				}
				if !taskOwner(call, u.User) {
					if err := call.Check("/nodes/"+n.Name, "Sys.Audit"); err != nil {
						return nil, err
					}
				}
				lines, total, err := n.tasks.ReadLog(call.Params.Str("upid"), int(call.Params.Int("start")), int(call.Params.Int("limit")))
				if err != nil {
					return nil, err
				}
				return api.Result{Data: lines, Total: total}, nil
			}},
		{Method: "DELETE", Path: "/nodes/{node}/tasks/{upid}", Name: "stop_task", Description: "Stop a task.",
			Permission: api.Permission{User: "all", Description: "The user needs 'Sys.Modify' permissions on '/nodes/<node>' if they aren't the owner of the task."},
			Params:     []api.Param{nodeParam, upidParam}, Returns: api.Returns{Type: "null"}, ProxyTo: "node",
			Handler: func(call *api.Call) (any, error) {
				u, err := decode(call)
				if err != nil {
					return nil, err
				}
				if !taskOwner(call, u.User) {
					if err := call.Check("/nodes/"+n.Name, "Sys.Modify"); err != nil {
						return nil, err
					}
				}
				if u.PID == c.pid { // in-process task: cancel it, never signal our own process group
					c.mu.Lock()
					st := c.simTask[u.PStart]
					c.mu.Unlock()
					if st != nil {
						st.cancel()
					}
					return nil, nil
				}
				_, err = n.tasks.Stop(call.Params.Str("upid"), call.Auth.Name(), 5*time.Second)
				return nil, err
			}},
	}
}

var nodeParam = api.Param{Name: "node", Type: api.String, Format: "pve-node", Check: pve.CheckNode, Description: "The cluster node name."}

var vmidParam = api.Param{Name: "vmid", Type: api.Integer, Format: "pve-vmid", Minimum: api.Min(100), Maximum: api.Max(999999999), Description: "The (unique) ID of the VM."}

// httpStatus is a helper for handlers returning PVE's 500 with a message.
func httpStatus(format string, args ...any) error {
	return api.Errorf(http.StatusInternalServerError, format, args...)
}
