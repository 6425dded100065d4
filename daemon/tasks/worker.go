package tasks

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pvesnap/pvesnap/daemon/runner"
)

// Job is what a worker process runs: the UPID's type, id and user, and the handler (Kind) with
// its parameters.
type Job struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	User  string          `json:"user"`
	Kind  string          `json:"kind"`
	JobID string          `json:"job_id,omitempty"`
	Spec  json.RawMessage `json:"spec,omitempty"`
}

// Handler runs a job inside its worker. ctx ends when the task is stopped.
type Handler func(ctx context.Context, t *Task, spec json.RawMessage) error

// Task is a running task as its handler sees it.
type Task struct {
	UPID     UPID
	ID       string // the UPID string
	Job      Job
	mu       sync.Mutex
	log      io.Writer
	warnings int
	lastProg time.Time
}

// NewTask wraps a log writer (tests and in-process tasks of the simulator).
func NewTask(u UPID, job Job, log io.Writer) *Task {
	return &Task{UPID: u, ID: u.String(), Job: job, log: log}
}

// Logf appends a line to the task log.
func (t *Task) Logf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	for _, l := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		fmt.Fprintln(t.log, l)
	}
}

// Warnf logs a warning; the task then ends with "TASK WARNINGS: n" instead of OK.
func (t *Task) Warnf(format string, args ...any) {
	t.mu.Lock()
	t.warnings++
	t.mu.Unlock()
	t.Logf("WARN: "+format, args...)
}

// Warnings is the number of warnings so far.
func (t *Task) Warnings() int { t.mu.Lock(); defer t.mu.Unlock(); return t.warnings }

// Progress logs copy progress at most every interval (and always at the end).
func (t *Task) Progress(done, total int64, started time.Time, interval time.Duration) {
	now := time.Now()
	if done < total && now.Sub(t.lastProg) < interval {
		return
	}
	t.lastProg = now
	el := now.Sub(started).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(done) / el
	}
	eta := "-"
	if rate > 0 && done < total {
		eta = (time.Duration(float64(total-done)/rate) * time.Second).Round(time.Second).String()
	}
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	t.Logf("progress: %s of %s (%.1f%%), %s/s, ETA %s", HumanBytes(done), HumanBytes(total), pct, HumanBytes(int64(rate)), eta)
}

// HumanBytes renders a size in binary units ("1.5 GiB").
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Finish writes the closing line PVE reads the exit status from.
func (t *Task) Finish(err error) {
	switch {
	case err != nil:
		msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
		t.Logf("TASK ERROR: %s", msg)
	case t.Warnings() > 0:
		t.Logf("TASK WARNINGS: %d", t.Warnings())
	default:
		t.Logf("TASK OK")
	}
}

// Spawner starts worker processes: the pvesnap binary re-executed in its own session, so a
// task survives a restart of the daemon, and a Stop signals only the task.
type Spawner struct {
	Exe  string
	Args []string // arguments that make the binary run RunWorker
	Env  []string
	Dir  *Dir
	// OnExit runs after a worker exits (archive into index, broadcast the task list).
	OnExit func(upid string)
	Logger *slog.Logger

	mu      sync.Mutex
	keep    bool      // KeepSpare is in effect
	spare   *launched // a worker started and set up, waiting for its job; nil when none
	filling bool      // a spare is being started
}

// launched is a worker process that has not been given its job yet: RunWorker reads the job
// from stdin, then answers on the handshake pipe (fd 3) with the UPID or an error.
type launched struct {
	d     *runner.Detached
	job   *os.File // write end of the worker's stdin
	reply *os.File // read end of its fd 3
}

// Started is a worker that has registered its task.
type Started struct {
	UPID string
	PID  int
	done <-chan struct{}
}

// Done is closed when the worker has exited and its task is archived.
func (s *Started) Done() <-chan struct{} { return s.done }

// errNotTaken is a worker that exited without a word, before registering a task: nothing
// of the job ran.
var errNotTaken = errors.New("worker exited before registering its task")

// Start runs job in a worker and returns once the task is registered (its UPID is valid for
// status, log and stop from then on). With KeepSpare in effect the waiting spare takes the
// job, so the task starts without a process start, and a new spare is started behind it.
func (s *Spawner) Start(job Job) (*Started, error) {
	b, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	w, keep := s.spare, s.keep
	s.spare = nil
	s.mu.Unlock()
	st, err := s.start(w, b)
	if keep {
		// The next spare starts once this task's worker is done, or after a second for a long
		// task: its start-up would otherwise take CPU from an instant task on a small host.
		go func() {
			if st != nil {
				select {
				case <-st.done:
				case <-time.After(time.Second):
				}
			}
			s.refill()
		}()
	}
	return st, err
}

// start gives job to the spare w, or to a fresh worker when there is none or it is gone.
func (s *Spawner) start(w *launched, job []byte) (*Started, error) {
	if w != nil {
		st, err := s.hand(w, job)
		if !errors.Is(err, errNotTaken) {
			return st, err
		}
		// The spare died while waiting (killed, or its daemon's binary replaced and removed):
		// nothing ran, so a fresh worker takes the job.
		s.warn("spare task worker was gone; starting a new one", "pid", w.d.PID)
	}
	w, err := s.launch()
	if err != nil {
		return nil, err
	}
	st, err := s.hand(w, job)
	if errors.Is(err, errNotTaken) {
		return nil, fmt.Errorf("task worker: %w", err)
	}
	return st, err
}

// KeepSpare keeps one worker started and set up ahead of need until ctx ends (the daemon
// stops), when the spare is told to exit. It costs an idle process; it saves each task the
// start of one, which is most of an instant copy's time on a slow host.
func (s *Spawner) KeepSpare(ctx context.Context) {
	s.mu.Lock()
	s.keep = true
	s.mu.Unlock()
	go s.refill()
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		w := s.spare
		s.keep, s.spare = false, nil
		s.mu.Unlock()
		if w != nil {
			w.dismiss()
		}
	}()
}

// refill starts a spare when one is wanted and there is none.
func (s *Spawner) refill() {
	s.mu.Lock()
	if !s.keep || s.spare != nil || s.filling {
		s.mu.Unlock()
		return
	}
	s.filling = true
	s.mu.Unlock()
	w, err := s.launch()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filling = false
	if err != nil {
		s.warn("starting a spare task worker", "err", err)
		return
	}
	if !s.keep || s.spare != nil { // the daemon stopped meanwhile
		w.dismiss()
		return
	}
	s.spare = w
	go func() {
		// A spare that exits while waiting is forgotten; the next Start launches afresh.
		<-w.d.Done()
		s.mu.Lock()
		if s.spare == w {
			s.spare = nil
		}
		s.mu.Unlock()
	}()
}

// dismiss closes a spare's stdin: it reads no job and exits without a task.
func (w *launched) dismiss() {
	w.job.Close()
	w.reply.Close()
}

func (s *Spawner) warn(msg string, args ...any) {
	if s.Logger != nil {
		s.Logger.Warn(msg, args...)
	}
}

// launch starts a worker process that waits for its job.
func (s *Spawner) launch() (*launched, error) {
	jobR, jobW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	replyR, replyW, err := os.Pipe()
	if err != nil {
		jobR.Close()
		jobW.Close()
		return nil, err
	}
	d, err := runner.StartDetached(s.Exe, s.Args, s.Env, jobR, []*os.File{replyW})
	jobR.Close()
	replyW.Close()
	if err != nil {
		jobW.Close()
		replyR.Close()
		return nil, fmt.Errorf("start task worker: %w", err)
	}
	return &launched{d: d, job: jobW, reply: replyR}, nil
}

// hand gives a launched worker its job and waits for its UPID.
func (s *Spawner) hand(w *launched, job []byte) (*Started, error) {
	defer w.reply.Close()
	_, werr := w.job.Write(job) // a dead worker: EPIPE here, or EOF on the reply below
	w.job.Close()
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(w.reply).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	var got string
	select {
	case got = <-line:
	case <-time.After(15 * time.Second):
		syscall.Kill(-w.d.PID, syscall.SIGKILL)
		return nil, fmt.Errorf("task worker %d did not register within 15 s", w.d.PID)
	}
	if !strings.HasPrefix(got, "UPID:") {
		w.d.Wait()
		if got == "" {
			if werr != nil {
				return nil, fmt.Errorf("%w (%v)", errNotTaken, werr)
			}
			return nil, errNotTaken
		}
		return nil, fmt.Errorf("task worker: %s", strings.TrimPrefix(got, "ERROR: "))
	}
	done := make(chan struct{})
	go func() {
		w.d.Wait()
		if _, err := s.Dir.ActiveWorkers(""); err != nil {
			s.warn("archiving finished task", "upid", got, "err", err)
		}
		if s.OnExit != nil {
			s.OnExit(got)
		}
		close(done)
	}()
	return &Started{UPID: got, PID: w.d.PID, done: done}, nil
}

// WorkerEnv is what a worker process needs from its daemon.
type WorkerEnv struct {
	Dir      *Dir
	Node     string
	Handlers map[string]Handler
	Stdin    io.Reader
	// Handshake is fd 3, where the worker reports its UPID (or an error) to the daemon.
	Handshake io.WriteCloser
	Proc      string
}

// RunWorker is the worker process: it registers the task, reports the UPID, runs the handler
// under a context that ends on SIGTERM/SIGINT, writes the closing line and returns the exit
// status.
func RunWorker(env WorkerEnv) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(env.Handshake, "ERROR: "+format+"\n", args...)
		env.Handshake.Close()
		return 2
	}
	var job Job
	if err := json.NewDecoder(env.Stdin).Decode(&job); err != nil {
		return fail("reading job: %v", err)
	}
	h, ok := env.Handlers[job.Kind]
	if !ok {
		return fail("unknown job kind %q", job.Kind)
	}
	proc := env.Proc
	if proc == "" {
		proc = "/proc"
	}
	pid := os.Getpid()
	pstart, err := ProcStartTime(proc, pid)
	if err != nil {
		return fail("reading own start time: %v", err)
	}
	u := UPID{Node: env.Node, PID: pid, PStart: pstart, StartTime: time.Now().Unix(), Type: job.Type, ID: job.ID, User: job.User}
	if err := u.Validate(); err != nil {
		return fail("%v", err)
	}
	f, err := env.Dir.CreateLog(u.String())
	if err != nil {
		return fail("%v", err)
	}
	defer f.Close()
	if _, err := env.Dir.ActiveWorkers(u.String()); err != nil {
		return fail("registering task: %v", err)
	}
	fmt.Fprintln(env.Handshake, u.String())
	env.Handshake.Close()

	t := &Task{UPID: u, ID: u.String(), Job: job, log: f}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	var stopped sync.Once
	go func() {
		for range sigs {
			stopped.Do(func() {
				t.Logf("received interrupt")
				cancel()
			})
		}
	}()
	// SIGPIPE must not kill a worker whose daemon went away.
	signal.Ignore(syscall.SIGPIPE)
	err = runHandler(ctx, h, t, job.Spec)
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		err = errors.New("interrupted by stop request")
	}
	t.Finish(err)
	f.Sync()
	if err != nil {
		return 1
	}
	return 0
}

func runHandler(ctx context.Context, h Handler, t *Task, spec json.RawMessage) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("internal error: %v", p)
		}
	}()
	return h(ctx, t, spec)
}
