package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/store"
)

// UpstreamList fetches pveproxy's task list for the same call (the caller's credential and
// query), returning the items and their total.
type UpstreamList func(ctx context.Context, r *http.Request) ([]ListItem, int, error)

// Service starts pvesnap's tasks and answers the task endpoints for them: status, log and
// stop of a UPID pvesnap started are answered from the task files (as pveproxy would), any
// other UPID goes to pveproxy; the list merges pveproxy's with pvesnap's own.
type Service struct {
	Dir       *Dir
	DB        *store.DB
	Node      string
	Spawner   *Spawner
	Upstream  UpstreamList
	StopGrace time.Duration
	Logger    *slog.Logger
}

// Start runs job in a new worker and indexes its task.
func (s *Service) Start(ctx context.Context, job Job) (*Started, error) {
	st, err := s.Spawner.Start(job)
	if err != nil {
		return nil, err
	}
	u, _ := ParseUPID(st.UPID)
	if err := s.DB.AddTask(ctx, store.TaskRecord{UPID: st.UPID, Node: u.Node, Type: u.Type, ID: u.ID, User: u.User,
		StartTime: u.StartTime, JobID: job.JobID}); err != nil {
		s.Logger.Error("indexing task", "upid", st.UPID, "err", err)
	}
	go func() {
		<-st.Done()
		if err := s.DB.FinishTask(context.Background(), st.UPID, time.Now().Unix(), s.Dir.ReadStatus(st.UPID)); err != nil {
			s.Logger.Warn("recording task end", "upid", st.UPID, "err", err)
		}
	}()
	return st, nil
}

// Wait waits up to d for a started task and returns its exit status ("" when still running).
func (s *Service) Wait(st *Started, d time.Duration) string {
	select {
	case <-st.Done():
		return s.Dir.ReadStatus(st.UPID)
	case <-time.After(d):
		return ""
	}
}

func (s *Service) ours(ctx context.Context, upid string) (bool, error) {
	u, err := ParseUPID(upid)
	if err != nil || u.Node != s.Node {
		return false, nil
	}
	return s.DB.HasTask(ctx, upid)
}

// owner is PVE's rule: the task's user, or the user owning the token that ran it.
func owner(call *api.Call, taskUser string) bool {
	me := call.Auth.Name()
	if taskUser == me {
		return true
	}
	u, _, isTok := strings.Cut(taskUser, "!")
	return isTok && u == me
}

var (
	nodeParam = api.Param{Name: "node", Type: api.String, Format: "pve-node", Check: pve.CheckNode, Description: "The cluster node name."}
	upidParam = api.Param{Name: "upid", Type: api.String, MaxLength: 256, Description: "The task's unique ID."}
)

// Routes are the task endpoints pvesnap answers for its own tasks.
func (s *Service) Routes() []*api.Route {
	mine := func(call *api.Call, priv string) (UPID, error) {
		upid := call.Params.Str("upid")
		ok, err := s.ours(call.Ctx, upid)
		if err != nil {
			return UPID{}, err
		}
		if !ok {
			return UPID{}, api.ErrPassThrough
		}
		u, _ := ParseUPID(upid)
		if !s.Dir.Exists(upid) {
			return u, api.ParamErr("upid", "no such task")
		}
		if !owner(call, u.User) {
			if err := call.Check("/nodes/"+s.Node, priv); err != nil {
				return u, err
			}
		}
		return u, nil
	}
	return []*api.Route{
		{Method: "GET", Path: "/nodes/{node}/tasks/{upid}/status", Name: "read_task_status",
			Description: "Read task status (answered by pvesnap for its own tasks, by pveproxy for the others).",
			Permission:  api.Permission{User: "all", Description: "The user needs 'Sys.Audit' permissions on '/nodes/<node>' if they are not the owner of the task."},
			Params:      []api.Param{nodeParam, upidParam}, ProxyTo: "node", Intercept: true,
			Returns: api.Returns{Type: "object", Properties: map[string]string{"upid": "string", "node": "string", "pid": "integer",
				"pstart": "integer", "starttime": "integer", "type": "string", "id": "string", "user": "string", "status": "string", "exitstatus": "string"}},
			Handler: func(call *api.Call) (any, error) {
				if _, err := mine(call, "Sys.Audit"); err != nil {
					return nil, err
				}
				return s.Dir.Status(call.Params.Str("upid"))
			}},
		{Method: "GET", Path: "/nodes/{node}/tasks/{upid}/log", Name: "read_task_log",
			Description: "Read task log (answered by pvesnap for its own tasks, by pveproxy for the others).",
			Permission:  api.Permission{User: "all", Description: "The user needs 'Sys.Audit' permissions on '/nodes/<node>' if they aren't the owner of the task."},
			Params: []api.Param{nodeParam, upidParam,
				{Name: "start", Type: api.Integer, Optional: true, Minimum: api.Min(0), Default: int64(0), Description: "Start at this line when reading the tasklog"},
				{Name: "limit", Type: api.Integer, Optional: true, Minimum: api.Min(0), Default: int64(50), Description: "The amount of lines to read from the tasklog."},
				{Name: "download", Type: api.Boolean, Optional: true, Description: "Whether the tasklog file should be downloaded."}},
			ProxyTo: "node", Intercept: true,
			Returns: api.Returns{Type: "array", Properties: map[string]string{"n": "integer", "t": "string"}},
			Handler: func(call *api.Call) (any, error) {
				if call.Params.Bool("download") {
					return nil, api.ErrPassThrough // pveproxy streams the file itself
				}
				if _, err := mine(call, "Sys.Audit"); err != nil {
					return nil, err
				}
				lines, total, err := s.Dir.ReadLog(call.Params.Str("upid"), int(call.Params.Int("start")), int(call.Params.Int("limit")))
				if err != nil {
					return nil, err
				}
				return api.Result{Data: lines, Total: total}, nil
			}},
		{Method: "DELETE", Path: "/nodes/{node}/tasks/{upid}", Name: "stop_task",
			Description: "Stop a task: SIGTERM to its worker's process group, SIGKILL after the grace period; the log says so.",
			Permission:  api.Permission{User: "all", Description: "The user needs 'Sys.Modify' permissions on '/nodes/<node>' if they aren't the owner of the task."},
			Params:      []api.Param{nodeParam, upidParam}, ProxyTo: "node", Intercept: true,
			Returns: api.Returns{Type: "null"},
			Handler: func(call *api.Call) (any, error) {
				if _, err := mine(call, "Sys.Modify"); err != nil {
					return nil, err
				}
				_, err := s.Dir.Stop(call.Params.Str("upid"), call.Auth.Name(), s.StopGrace)
				return nil, err
			}},
		{Method: "GET", Path: "/nodes/{node}/tasks", Name: "node_tasks",
			Description: "Read task list for one node: pveproxy's list merged with pvesnap's own tasks (so they show even before pvestatd archives them).",
			Permission:  api.Permission{User: "all", Description: "List task associated with the current user, or all task the user has 'Sys.Audit' permissions on /nodes/<node> (the <node> the task runs on)."},
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
			ProxyTo: "node", Intercept: true,
			Returns: api.Returns{Type: "array", Properties: map[string]string{"upid": "string", "node": "string", "pid": "integer",
				"pstart": "integer", "starttime": "integer", "type": "string", "id": "string", "user": "string", "endtime": "integer", "status": "string"}},
			Handler: s.list},
	}
}

// list merges pveproxy's answer with pvesnap's index: a task of ours missing upstream (not yet
// archived, or pveproxy unreachable) is added with its state read from the files.
func (s *Service) list(call *api.Call) (any, error) {
	var up []ListItem
	total := 0
	var upErr error
	if s.Upstream != nil {
		up, total, upErr = s.Upstream(call.Ctx, call.R)
		var ae *api.Error
		if errors.As(upErr, &ae) && ae.Code != http.StatusServiceUnavailable && ae.Code < 500 {
			return nil, upErr // pveproxy refused the call itself (e.g. 403): same answer
		}
		if upErr != nil {
			s.Logger.Warn("task list: pveproxy unavailable, listing pvesnap's own tasks only", "err", upErr)
		}
	}
	auditor, err := call.Has("/nodes/"+s.Node, "Sys.Audit")
	if err != nil {
		return nil, err
	}
	q := ListQuery{Start: int(call.Params.Int("start")), Limit: int(call.Params.Int("limit")), UserFilter: call.Params.Str("userfilter"),
		TypeFilter: call.Params.Str("typefilter"), Errors: call.Params.Bool("errors"), Source: call.Params.Str("source"),
		Since: call.Params.Int("since"), Until: call.Params.Int("until"), Auditor: auditor, Caller: call.Auth.Name()}
	if call.Params.Has("vmid") {
		q.VMID = fmt.Sprint(call.Params.Int("vmid"))
	}
	if sf := call.Params.Str("statusfilter"); sf != "" {
		q.StatusFilter = strings.Split(sf, ",")
	}
	seen := map[string]bool{}
	for _, it := range up {
		seen[it.UPID] = true
	}
	recs, err := s.DB.Tasks(call.Ctx, 1000)
	if err != nil {
		return nil, err
	}
	var extra []ListItem
	for _, r := range recs {
		if seen[r.UPID] || r.Node != s.Node {
			continue
		}
		u, err := ParseUPID(r.UPID)
		if err != nil {
			continue
		}
		e := Entry{UPID: r.UPID, task: u}
		running := s.Dir.IsRunning(u)
		if running && q.Source == "archive" {
			continue // PVE lists running tasks only with source=active|all
		}
		if !running {
			e.EndTime = r.EndTime
			if e.EndTime == 0 {
				e.EndTime = time.Now().Unix()
			}
			e.Status = s.Dir.ReadStatus(r.UPID)
		} else {
			e.Status = "RUNNING"
		}
		if it, ok := q.match(e); ok {
			extra = append(extra, it)
		}
	}
	if len(extra) == 0 && upErr == nil {
		return api.Result{Data: nonNilItems(up), Total: total}, nil
	}
	all := append(append([]ListItem(nil), up...), extra...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].StartTime > all[j].StartTime })
	if upErr != nil {
		total = 0
	}
	total += len(extra)
	if lim := q.Limit; lim > 0 && len(all) > lim {
		all = all[:lim]
	}
	return api.Result{Data: nonNilItems(all), Total: total}, nil
}

// match applies the list filters to one entry (the same rules as List).
func (q ListQuery) match(e Entry) (ListItem, bool) {
	if !q.accept(e, q.statuses()) {
		return ListItem{}, false
	}
	return e.item(), true
}

func nonNilItems(l []ListItem) []ListItem {
	if l == nil {
		return []ListItem{}
	}
	return l
}
