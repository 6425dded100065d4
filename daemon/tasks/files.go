package tasks

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is a PVE task directory (/var/log/pve/tasks): logs in <hex>/ subdirectories, the
// "active" list guarded by .active.lock, and the "index" archive (rotated to index.1).
type Dir struct {
	Root string
	// Proc is the procfs root used to tell running tasks (default /proc).
	Proc string
	// Running overrides the process check (the simulator's in-process tasks).
	Running func(pid int, pstart uint64) bool
	// Now is the clock (tests).
	Now func() time.Time
}

// indexMaxSize is where PVE rotates index to index.1 ("about 1000 entries").
const indexMaxSize = 50000

// keepRecent is how many finished tasks PVE keeps in "active" besides the running ones.
const keepRecent = 25

func (d *Dir) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// LogPath is where a task's log lives: <root>/<last hex digit of starttime as written>/<UPID>.
func (d *Dir) LogPath(upid string) (string, error) {
	if _, err := ParseUPID(upid); err != nil {
		return "", err
	}
	// UPID:node:pid:pstart:starttime:… — take the digit as written (case included), like PVE.
	f := strings.Split(upid, ":")
	st := f[4]
	return filepath.Join(d.Root, st[len(st)-1:], upid), nil
}

// CreateLog creates a task's log file exclusively, mode 0640, owned by www-data when the
// process may do so (PVE's create_owned_file_fh), and returns it open for appending.
func (d *Dir) CreateLog(upid string) (*os.File, error) {
	p, err := d.LogPath(upid)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("create task log: %w", err)
	}
	if os.Geteuid() == 0 {
		if u, err := user.Lookup("www-data"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			f.Chown(uid, gid)
		}
	}
	return f, nil
}

// Entry is a line of the active list or the index.
type Entry struct {
	UPID    string
	Saved   bool  // archived into index already
	EndTime int64 // 0 while running
	Status  string
	task    UPID
}

// ReadStatus is PVE's upid_read_status: the status from the last line of the log.
func (d *Dir) ReadStatus(upid string) string {
	p, err := d.LogPath(upid)
	if err != nil {
		return "unable to open file - " + err.Error()
	}
	f, err := os.Open(p)
	if err != nil {
		return "unable to open file - " + errText(err)
	}
	defer f.Close()
	const maxlen = 4096
	fi, err := f.Stat()
	if err != nil {
		return "unable to open file - " + errText(err)
	}
	off := max(fi.Size()-maxlen, 0)
	buf := make([]byte, maxlen)
	n, _ := f.ReadAt(buf, off)
	if n == 0 {
		return fmt.Sprintf("unable to read tail (got %d bytes)", n)
	}
	buf = bytes.TrimRight(buf[:n], "\n")
	line := string(buf)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	switch {
	case line == "":
		return "unable to extract last line"
	case line == "TASK OK":
		return "OK"
	case strings.HasPrefix(line, "TASK ERROR: ") && len(line) > len("TASK ERROR: "):
		return strings.TrimPrefix(line, "TASK ERROR: ")
	case strings.HasPrefix(line, "TASK WARNINGS: ") && isDigits(strings.TrimPrefix(line, "TASK WARNINGS: ")):
		return strings.TrimPrefix(line, "TASK ")
	}
	return "unexpected status"
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// IsRunning tells whether the worker of u is alive: its /proc start time equals pstart.
func (d *Dir) IsRunning(u UPID) bool {
	if d.Running != nil {
		return d.Running(u.PID, u.PStart)
	}
	ps, err := ProcStartTime(d.procRoot(), u.PID)
	return err == nil && ps == u.PStart
}

func (d *Dir) procRoot() string {
	if d.Proc != "" {
		return d.Proc
	}
	return "/proc"
}

// ProcStartTime reads field 22 (starttime, clock ticks since boot) of /proc/<pid>/stat.
func ProcStartTime(procRoot string, pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and ')': parse after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); starttime is field 22 → index 19.
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

func parseEntryLine(line string, active bool) (Entry, bool) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return Entry{}, false
	}
	e := Entry{UPID: f[0]}
	u, err := ParseUPID(e.UPID)
	if err != nil {
		return Entry{}, false
	}
	e.task = u
	rest := f[1:]
	if active {
		if len(rest) == 0 || (rest[0] != "0" && rest[0] != "1") {
			return Entry{}, false
		}
		e.Saved = rest[0] == "1"
		rest = rest[1:]
	}
	if len(rest) > 0 {
		if len(rest[0]) != 8 {
			return Entry{}, false
		}
		et, err := strconv.ParseUint(rest[0], 16, 32)
		if err != nil {
			return Entry{}, false
		}
		e.EndTime = int64(et)
		if len(rest) > 1 {
			// The status is the rest of the line, spaces included: skip the fields before it.
			skip := 2 // UPID, endtime
			if active {
				skip = 3 // UPID, saved flag, endtime
			}
			tail := line
			for i := 0; i < skip; i++ {
				tail = strings.TrimLeft(tail, " \t")
				if j := strings.IndexAny(tail, " \t"); j >= 0 {
					tail = tail[j:]
				}
			}
			e.Status = strings.TrimSpace(tail)
		}
	}
	return e, true
}

func (d *Dir) readActive() ([]Entry, error) {
	b, err := os.ReadFile(filepath.Join(d.Root, "active"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, l := range strings.Split(string(b), "\n") {
		if e, ok := parseEntryLine(l, true); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

func formatActive(list []Entry) []byte {
	var b bytes.Buffer
	for _, e := range list {
		saved := 0
		if e.Saved {
			saved = 1
		}
		switch {
		case e.EndTime != 0 && e.Status != "":
			fmt.Fprintf(&b, "%s %d %08X %s\n", e.UPID, saved, e.EndTime, e.Status)
		case e.EndTime != 0:
			fmt.Fprintf(&b, "%s %d %08X\n", e.UPID, saved, e.EndTime)
		default:
			fmt.Fprintf(&b, "%s %d\n", e.UPID, saved)
		}
	}
	return b.Bytes()
}

// withActiveLock runs fn holding the exclusive flock on .active.lock, waiting up to 10 s like
// PVE's lock_file.
func (d *Dir) withActiveLock(fn func() error) error {
	if err := os.MkdirAll(d.Root, 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(d.Root, ".active.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return fmt.Errorf("can't lock file '%s' - got timeout", lf.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)
	return fn()
}

// ActiveWorkers is PVE's active_workers: it registers newUPID (if given) as running, archives
// finished tasks into index (rotating it above 50 000 bytes), keeps running tasks plus the 25
// most recent finished ones in active, and returns that list. Entries written by others (PVE's
// own tasks) are preserved.
func (d *Dir) ActiveWorkers(newUPID string) ([]Entry, error) {
	var result []Entry
	err := d.withActiveLock(func() error {
		list, err := d.readActive()
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		var running, finished []Entry
		check := func(e Entry, isNew bool) {
			if isNew || (e.EndTime == 0 && d.IsRunning(e.task)) {
				running = append(running, e)
			} else {
				finished = append(finished, e)
			}
		}
		for _, e := range list {
			if seen[e.UPID] {
				continue
			}
			seen[e.UPID] = true
			check(e, false)
		}
		save := false
		if newUPID != "" && !seen[newUPID] {
			u, err := ParseUPID(newUPID)
			if err != nil {
				return err
			}
			check(Entry{UPID: newUPID, task: u}, true)
			save = true
		}
		sort.SliceStable(finished, func(i, j int) bool { return finished[i].task.StartTime > finished[j].task.StartTime })
		now := d.now().Unix()
		for i := range finished {
			if finished[i].EndTime == 0 {
				finished[i].EndTime = now
				finished[i].Status = d.ReadStatus(finished[i].UPID)
				save = true
			}
		}
		var archive bytes.Buffer
		var archived []int
		for i := range finished {
			if !finished[i].Saved {
				fmt.Fprintf(&archive, "%s %08X %s\n", finished[i].UPID, finished[i].EndTime, finished[i].Status)
				archived = append(archived, i)
				finished[i].Saved = true
				save = true
			}
		}
		if archive.Len() > 0 {
			if err := d.appendIndex(archive.Bytes()); err != nil {
				for _, i := range archived {
					finished[i].Saved = false
				}
			}
		}
		result = append(result, running...)
		for i := 0; i < len(finished) && i < keepRecent-len(running); i++ {
			result = append(result, finished[i])
		}
		if save {
			return writeAtomic(filepath.Join(d.Root, "active"), formatActive(result))
		}
		return nil
	})
	return result, err
}

func (d *Dir) appendIndex(lines []byte) error {
	p := filepath.Join(d.Root, "index")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(lines); err != nil {
		f.Close()
		return err
	}
	fi, err := f.Stat()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if fi.Size() > indexMaxSize {
		return os.Rename(p, p+".1")
	}
	return nil
}

// writeAtomic writes through a temporary file and rename, as PVE's file_set_contents does.
func writeAtomic(p string, b []byte) error {
	tmp := fmt.Sprintf("%s.tmp.%d", p, os.Getpid())
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, p)
}

// Active returns the active list without changing it.
func (d *Dir) Active() ([]Entry, error) {
	var out []Entry
	err := d.withActiveLock(func() (err error) { out, err = d.readActive(); return err })
	return out, err
}

// Archive reads index then index.1, newest first, calling fn until it returns false.
func (d *Dir) Archive(fn func(Entry) bool) error {
	for _, name := range []string{"index", "index.1"} {
		b, err := os.ReadFile(filepath.Join(d.Root, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if e, ok := parseEntryLine(lines[i], false); ok {
				if !fn(e) {
					return nil
				}
			}
		}
	}
	return nil
}

// Task returns the decoded UPID of an entry.
func (e Entry) Task() UPID { return e.task }

// LogLine is one line of a task log as the log endpoint returns it.
type LogLine struct {
	N int    `json:"n"`
	T string `json:"t"`
}

// ReadLog is PVE's dump_logfile: lines from start (0-based) up to limit (0 = all), numbered
// from 1, and the total number of lines; an empty log reads as one "no content" line.
func (d *Dir) ReadLog(upid string, start, limit int) ([]LogLine, int, error) {
	p, err := d.LogPath(upid)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if err != nil {
		return []LogLine{{N: 1, T: "unable to open file - " + errText(err)}}, 1, nil
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var out []LogLine
	count := 0
	all := limit == 0
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			count++
			if count > start && (all || limit > 0) {
				if !all {
					limit--
				}
				out = append(out, LogLine{N: count, T: strings.TrimRight(line, "\n")})
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, err
		}
	}
	if count == 0 {
		return []LogLine{{N: 1, T: "no content"}}, 1, nil
	}
	return out, count, nil
}
