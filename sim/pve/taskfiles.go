package pve

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tasks as pve-common keeps them (PVE/UPID.pm, RESTEnvironment.pm active_workers,
// INotify.pm read/write_active_workers, Tools.pm dump_logfile) and pve-manager lists them
// (API2/Tasks.pm, API2/Cluster.pm tasks).

// upid is a decoded task identifier.
type upid struct {
	Node      string
	PID       int64
	PStart    int64
	StartTime int64
	Type, ID  string
	User      string
	dir       string // the last hex digit of the starttime field as written
}

// encodeUPID is PVE::UPID::encode.
func encodeUPID(u upid) string {
	return fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", u.Node, u.PID, u.PStart, u.StartTime, u.Type, u.ID, u.User)
}

var upidRe = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$`)

// decodeUPID is PVE::UPID::decode.
func decodeUPID(s string) (upid, bool) {
	m := upidRe.FindStringSubmatch(s)
	if m == nil {
		return upid{}, false
	}
	hex := func(x string) int64 { n, _ := strconv.ParseInt(x, 16, 64); return n }
	return upid{Node: m[1], PID: hex(m[3]), PStart: hex(m[4]), StartTime: hex(m[5]), Type: m[6], ID: m[7], User: m[8],
		dir: m[5][7:8]}, true
}

// taskDir is a node's /var/log/pve/tasks.
type taskDir struct {
	root    string
	running func(pid, pstart int64) bool
}

func (d *taskDir) logPath(id string) (string, bool) {
	u, ok := decodeUPID(id)
	if !ok {
		return "", false
	}
	return filepath.Join(d.root, u.dir, id), true
}

// readStatus is PVE::UPID::read_status: the status from the log's last line.
func (d *taskDir) readStatus(id string) string {
	p, _ := d.logPath(id)
	line, err := lastLine(p)
	if err != nil {
		return "unable to get last line from task log - " + err.Error()
	}
	switch {
	case line == "TASK OK":
		return "OK"
	case strings.HasPrefix(line, "TASK ERROR: ") && len(line) > len("TASK ERROR: "):
		return strings.TrimPrefix(line, "TASK ERROR: ")
	case regexp.MustCompile(`^TASK WARNINGS: \d+$`).MatchString(line):
		return strings.TrimPrefix(line, "TASK ")
	}
	return "unexpected status"
}

// lastLine is PVE::File::file_read_last_line: a missing file reads as nothing, one final
// newline is skipped.
func lastLine(p string) (string, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("file '%s' exists but open for reading failed - %v", p, err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:], nil
	}
	return s, nil
}

// normalizeStatus is upid_normalize_status_type.
func normalizeStatus(s string) string {
	switch {
	case s == "":
		return "unknown"
	case s == "OK":
		return "ok"
	case regexp.MustCompile(`^WARNINGS: \d+$`).MatchString(s):
		return "warning"
	case s == "unexpected status":
		return "unknown"
	}
	return "error"
}

// activeEntry is one line of the active file.
type activeEntry struct {
	upid    string
	u       upid
	saved   bool
	endtime int64
	status  string
}

var activeLineRe = regexp.MustCompile(`^(\S+)\s(0|1)(\s([0-9A-Za-z]{8})(\s(\s*\S.*))?)?$`)

// readActive is read_active_workers.
func (d *taskDir) readActive() []activeEntry {
	b, err := os.ReadFile(filepath.Join(d.root, "active"))
	if err != nil {
		return nil
	}
	var out []activeEntry
	for _, line := range strings.Split(string(b), "\n") {
		m := activeLineRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		u, ok := decodeUPID(m[1])
		if !ok {
			continue
		}
		e := activeEntry{upid: m[1], u: u, saved: m[2] == "1", status: m[6]}
		if m[4] != "" {
			e.endtime, _ = strconv.ParseInt(m[4], 16, 64)
		}
		out = append(out, e)
	}
	return out
}

// writeActive is write_active_workers, through a temporary file.
func (d *taskDir) writeActive(list []activeEntry) error {
	var b bytes.Buffer
	for _, e := range list {
		saved := 0
		if e.saved {
			saved = 1
		}
		switch {
		case e.endtime != 0 && e.status != "":
			fmt.Fprintf(&b, "%s %d %08X %s\n", e.upid, saved, e.endtime, e.status)
		case e.endtime != 0:
			fmt.Fprintf(&b, "%s %d %08X\n", e.upid, saved, e.endtime)
		default:
			fmt.Fprintf(&b, "%s %d\n", e.upid, saved)
		}
	}
	p := filepath.Join(d.root, "active")
	tmp := fmt.Sprintf("%s.tmp.%d", p, os.Getpid())
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// lockActive is lock_file on /var/log/pve/tasks/.active.lock: a blocking exclusive flock
// given up after 10 s with "can't lock file '…' - got timeout" (PVE arms an alarm for it).
func (d *taskDir) lockActive(fn func() error) error {
	if err := os.MkdirAll(d.root, 0o755); err != nil {
		return err
	}
	name := filepath.Join(d.root, ".active.lock")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	locked := make(chan error, 1)
	go func() { locked <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-locked:
		if err != nil {
			f.Close()
			return fmt.Errorf("can't lock file '%s' - %v", name, err)
		}
	case <-time.After(10 * time.Second):
		go func() { <-locked; f.Close() }() // closing drops the lock once it is granted
		return fmt.Errorf("can't lock file '%s' - got timeout", name)
	}
	defer f.Close() // closing the last descriptor releases the flock
	return fn()
}

// activeWorkers is active_workers: register newUPID as running, archive finished tasks into
// index (rotated to index.1 past 50000 bytes), keep the running ones and the 25 most recent
// in active, and return that list.
func (d *taskDir) activeWorkers(newUPID string) ([]activeEntry, error) {
	var result []activeEntry
	err := d.lockActive(func() error {
		seen := map[string]bool{}
		var running, finished []activeEntry
		check := func(e activeEntry, isRunning bool) {
			if isRunning || d.running(e.u.PID, e.u.PStart) {
				running = append(running, e)
			} else {
				finished = append(finished, e)
			}
		}
		for _, e := range d.readActive() {
			if seen[e.upid] {
				continue
			}
			seen[e.upid] = true
			check(e, false)
		}
		save := newUPID != ""
		if newUPID != "" && !seen[newUPID] {
			u, ok := decodeUPID(newUPID)
			if !ok {
				return fmt.Errorf("unable to parse worker upid '%s'", newUPID)
			}
			check(activeEntry{upid: newUPID, u: u}, true)
		}
		sort.SliceStable(finished, func(i, j int) bool { return finished[i].u.StartTime > finished[j].u.StartTime })
		now := time.Now().Unix()
		for i := range finished {
			if finished[i].endtime == 0 {
				finished[i].endtime = now
				finished[i].status = d.readStatus(finished[i].upid)
				save = true
			}
		}
		var archive bytes.Buffer
		for i := range finished {
			if !finished[i].saved {
				fmt.Fprintf(&archive, "%s %08X %s\n", finished[i].upid, finished[i].endtime, finished[i].status)
				finished[i].saved = true
				save = true
			}
		}
		if archive.Len() > 0 {
			p := filepath.Join(d.root, "index")
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err == nil {
				f.Write(archive.Bytes())
				fi, _ := f.Stat()
				f.Close()
				if fi != nil && fi.Size() > 50000 {
					os.Rename(p, p+".1")
				}
			}
		}
		result = append(result, running...)
		for i := 0; i < len(finished) && len(result) < 25; i++ {
			result = append(result, finished[i])
		}
		if save {
			return d.writeActive(result)
		}
		return nil
	})
	return result, err
}

// taskEntry is a task as the list endpoints return it.
type taskEntry struct {
	upid    string
	u       upid
	user    string // the user, with a token split off into tokenid
	tokenid string
	endtime int64
	status  string
}

func (e taskEntry) object() map[string]any {
	o := map[string]any{"upid": e.upid, "node": e.u.Node, "pid": e.u.PID, "pstart": e.u.PStart, "starttime": e.u.StartTime,
		"type": e.u.Type, "id": e.u.ID, "user": e.user}
	if e.tokenid != "" {
		o["tokenid"] = e.tokenid
	}
	if e.endtime != 0 {
		o["endtime"] = e.endtime
	}
	if e.status != "" {
		o["status"] = e.status
	}
	return o
}

// splitTaskUser is Tasks.pm's $convert_token_task.
func splitTaskUser(u string) (user, token string) {
	if usr, tok, ok := splitTokenID(u); ok {
		return usr, tok
	}
	return u, ""
}

var indexLineRe = regexp.MustCompile(`^(\S+)(\s([0-9A-Za-z]{8})(\s(\S.*))?)?$`)

// readIndex reads index and index.1, each newest line first (File::ReadBackwards).
func (d *taskDir) readIndex(fn func(taskEntry)) {
	for _, name := range []string{"index", "index.1"} {
		f, err := os.Open(filepath.Join(d.root, name))
		if err != nil {
			continue
		}
		var lines []string
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		f.Close()
		for i := len(lines) - 1; i >= 0; i-- {
			m := indexLineRe.FindStringSubmatch(lines[i])
			if m == nil {
				continue
			}
			u, ok := decodeUPID(m[1])
			if !ok {
				continue
			}
			e := taskEntry{upid: m[1], u: u, status: m[5]}
			e.user, e.tokenid = splitTaskUser(u.User)
			if m[3] != "" {
				e.endtime, _ = strconv.ParseInt(m[3], 16, 64)
			}
			fn(e)
		}
	}
}

// logLine is one line of a task log as read_task_log returns it.
type logLine struct {
	N int    `json:"n"`
	T string `json:"t"`
}

// dumpLog is dump_logfile: lines from start (0-based) up to limit (0: all), numbered from 1,
// and the number of lines; an empty log reads as one "no content" line.
func (d *taskDir) dumpLog(id string, start, limit int) ([]logLine, int) {
	p, _ := d.logPath(id)
	f, err := os.Open(p)
	if err != nil {
		var pe *os.PathError
		msg := err.Error()
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		return []logLine{{N: 1, T: "unable to open file - " + strings.ToUpper(msg[:1]) + msg[1:]}}, 1
	}
	defer f.Close()
	all := limit == 0
	var out []logLine
	count := 0
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			count++
			if count > start && (all || limit > 0) {
				if !all {
					limit--
				}
				out = append(out, logLine{N: count, T: strings.TrimSuffix(line, "\n")})
			}
		}
		if err == io.EOF || err != nil {
			break
		}
	}
	if count == 0 {
		return []logLine{{N: 1, T: "no content"}}, 1
	}
	return out, count
}

// procStartTime reads field 22 of /proc/<pid>/stat (read_proc_starttime).
func procStartTime(pid int64) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(f[19], 10, 64)
	return n, err == nil
}
