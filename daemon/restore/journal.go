// Package restore restores VMs from array snapshots: in place (new LVs swapped in for the
// VM's disks) or as a new VM. Every step is journaled in SQLite with its undo before it runs;
// a failure runs the undos in reverse, and a daemon start finishes the undos of jobs whose
// worker died, so nothing a restore creates outlives it.
package restore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/store"
)

// Action is an undo (or cleanup) that a fresh process can run from its record alone. Every
// action is idempotent and checks, before it destroys anything, that the object is the one
// the job created.
//
// When an action runs depends on how the job ended:
//   - Revert actions undo the restore itself: they run only when the job did not commit.
//   - Committed actions remove what the restore replaced (a VM's original disk): they run only
//     after the job committed, so an original is never removed by a rollback.
//   - The others clean up staging and run on every end (success, failure, recovery).
type Action struct {
	Kind      string            `json:"kind"`
	Args      map[string]string `json:"args,omitempty"`
	Revert    bool              `json:"revert,omitempty"`
	Committed bool              `json:"committed,omitempty"`
	// Chain names the actions that depend on each other: an action of a chain runs only while
	// every later action of the same chain (undone first) succeeded. A failed rename-back of a
	// VM's disk thus holds the VM's unlock and restart, and a device that cannot be removed
	// holds the disconnect and destruction of its array volume. Actions without a chain are
	// independent.
	Chain string `json:"chain,omitempty"`
}

// Chains of a restore's actions.
const (
	// ChainTarget: the VM, its config, lock and disks (what the user has).
	ChainTarget = "target"
	// ChainStaging: the temporary array volume, its connection, devices and imported VG.
	ChainStaging = "staging"
)

// None is a step without undo.
var None = Action{Kind: "none"}

// Job states.
const (
	StateRunning    = store.JobRunning
	StateCommitted  = "committed"   // the restore took effect; only cleanup remains
	StateDone       = "done"        // committed and cleaned up
	StateRolledBack = "rolled-back" // failed and undone
	StateStuck      = store.JobStuck
)

// Entry states.
const (
	entryPending = "pending"
	entryDone    = "done"
	entryFailed  = "failed"
	entryUndone  = "undone"
)

// ErrBusy: another restore holds the target.
var ErrBusy = errors.New("restore in progress")

// Journal is one job's journal.
type Journal struct {
	DB  *store.DB
	Job string
	seq int
	// FaultStep stops the process right after step FaultStep ran, before it is marked done
	// (fault-injection tests; PVESNAP_FAULT_STEP): killed, as by kill -9, or, with FaultMark
	// set (PVESNAP_FAULT_MARK), frozen (SIGSTOP) after creating the file FaultMark, for a lab
	// test to cut the node's power at that instant.
	FaultStep int
	FaultMark string
}

// faultHook reads the fault-injection settings from the environment.
func (j *Journal) faultHook() {
	if n, err := strconv.Atoi(os.Getenv("PVESNAP_FAULT_STEP")); err == nil {
		j.FaultStep = n
		j.FaultMark = os.Getenv("PVESNAP_FAULT_MARK")
	}
}

// Begin records a new job; a job in progress (running, committed or whose cleanup failed)
// on the same target refuses it.
func Begin(ctx context.Context, db *store.DB, id, kind, target string, spec any) (*Journal, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var other, upid string
	err = tx.QueryRowContext(ctx, `SELECT id, COALESCE(upid, '') FROM jobs WHERE target = ? AND state IN (?, ?, ?) LIMIT 1`,
		target, StateRunning, StateCommitted, StateStuck).Scan(&other, &upid)
	if err == nil {
		return nil, fmt.Errorf("%w: %s is being restored by job %s (task %s)", ErrBusy, target, other, upid)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	now := time.Now().Unix()
	if _, err := tx.ExecContext(ctx, `INSERT INTO jobs (id, kind, state, spec, target, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		id, kind, StateRunning, string(b), target, now, now); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return &Journal{DB: db, Job: id}, nil
}

// SetUPID ties the job to its task.
func (j *Journal) SetUPID(ctx context.Context, upid string) error {
	_, err := j.DB.ExecContext(ctx, `UPDATE jobs SET upid = ?, updated = ? WHERE id = ?`, upid, time.Now().Unix(), j.Job)
	return err
}

// Step records name with its undo, runs it and marks it done. The record comes first, so a
// crash during the step leaves the undo to run (undos are idempotent).
func (j *Journal) Step(ctx context.Context, name string, undo Action, run func() error) error {
	j.seq++
	u, _ := json.Marshal(undo)
	if _, err := j.DB.ExecContext(ctx, `INSERT INTO journal (job_id, seq, step, undo, state, updated) VALUES (?, ?, ?, ?, ?, ?)`,
		j.Job, j.seq, name, string(u), entryPending, time.Now().Unix()); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	err := run()
	if j.FaultStep == j.seq {
		if j.FaultMark != "" {
			os.WriteFile(j.FaultMark, []byte(strconv.Itoa(j.seq)), 0o644)
			syscall.Kill(os.Getpid(), syscall.SIGSTOP) // the power-loss test cuts power now
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL) // the fault test's kill -9, mid-step
		select {}
	}
	state, detail := entryDone, ""
	if err != nil {
		state, detail = entryFailed, err.Error()
	}
	if _, jerr := j.DB.ExecContext(ctx, `UPDATE journal SET state = ?, detail = ?, updated = ? WHERE job_id = ? AND seq = ?`,
		state, detail, time.Now().Unix(), j.Job, j.seq); jerr != nil && err == nil {
		return fmt.Errorf("journal: %w", jerr)
	}
	return err
}

// Steps is how many steps were journaled so far.
func (j *Journal) Steps() int { return j.seq }

// Commit marks the point after which the restore is kept: revert undos no longer run.
func (j *Journal) Commit(ctx context.Context) error {
	return setState(ctx, j.DB, j.Job, StateCommitted, "")
}

func setState(ctx context.Context, db *store.DB, job, state, errMsg string) error {
	_, err := db.ExecContext(ctx, `UPDATE jobs SET state = ?, error = ?, updated = ? WHERE id = ?`, state, errMsg, time.Now().Unix(), job)
	return err
}

// Executor runs an action.
type Executor func(ctx context.Context, a Action) error

type logKey struct{}

// logf is the log of the unwind an action runs in (its task's log), for what an action has
// to say besides success or failure; a no-op outside one.
func logf(ctx context.Context) func(string, ...any) {
	if l, ok := ctx.Value(logKey{}).(func(string, ...any)); ok && l != nil {
		return l
	}
	return func(string, ...any) {}
}

// Unwind runs the job's pending undos in reverse order: the reverts and cleanups when the job
// did not commit, the cleanups and the removal of what it replaced when it did. An action
// that fails holds every earlier action of its chain (they depend on it); failed and held
// actions stay pending for the next attempt (recovery, or 'pvesnap restore --resume') and
// the job is left in state cleanup-failed; log receives one line per action.
func Unwind(ctx context.Context, db *store.DB, job string, exec Executor, log func(string, ...any)) error {
	var state string
	if err := db.QueryRowContext(ctx, `SELECT state FROM jobs WHERE id = ?`, job).Scan(&state); err != nil {
		return fmt.Errorf("job %s: %w", job, err)
	}
	committed := state == StateCommitted || state == StateDone
	if state == StateStuck {
		var n int
		db.QueryRowContext(ctx, `SELECT COUNT(*) FROM journal WHERE job_id = ? AND step = 'commit' AND state IN (?, ?)`, job, entryDone, entryUndone).Scan(&n)
		committed = n > 0
	}
	rows, err := db.QueryContext(ctx, `SELECT seq, step, undo FROM journal WHERE job_id = ? AND state != ? ORDER BY seq DESC`, job, entryUndone)
	if err != nil {
		return err
	}
	type entry struct {
		seq  int
		step string
		undo Action
	}
	var todo []entry
	for rows.Next() {
		var e entry
		var u string
		if err := rows.Scan(&e.seq, &e.step, &u); err != nil {
			rows.Close()
			return err
		}
		if err := json.Unmarshal([]byte(u), &e.undo); err != nil {
			rows.Close()
			return fmt.Errorf("job %s step %d: unreadable undo: %w", job, e.seq, err)
		}
		todo = append(todo, e)
	}
	rows.Close()
	ctx = context.WithValue(ctx, logKey{}, func(f string, a ...any) { log("  "+f, a...) })
	var failed []error
	held := map[string]int{} // chain -> the step whose undo failed
	nheld := 0
	for _, e := range todo {
		if e.undo.Kind == "none" || (committed && e.undo.Revert) || (!committed && e.undo.Committed) {
			db.ExecContext(ctx, `UPDATE journal SET state = ?, updated = ? WHERE job_id = ? AND seq = ?`, entryUndone, time.Now().Unix(), job, e.seq)
			continue
		}
		if by, ok := held[e.undo.Chain]; ok && e.undo.Chain != "" {
			log("held: step %d (%s): %s %v waits for step %d", e.seq, e.step, e.undo.Kind, e.undo.Args, by)
			nheld++
			continue
		}
		what := "clean up"
		switch {
		case e.undo.Revert:
			what = "undo"
		case e.undo.Committed:
			what = "remove replaced"
		}
		log("%s step %d (%s): %s %v", what, e.seq, e.step, e.undo.Kind, e.undo.Args)
		if err := exec(ctx, e.undo); err != nil {
			log("  failed: %v", err)
			db.ExecContext(ctx, `UPDATE journal SET undo_error = ?, updated = ? WHERE job_id = ? AND seq = ?`, oneLine(err), time.Now().Unix(), job, e.seq)
			failed = append(failed, fmt.Errorf("step %d (%s): %s: %w", e.seq, e.step, e.undo.Kind, err))
			if e.undo.Chain != "" {
				held[e.undo.Chain] = e.seq
			}
			continue
		}
		db.ExecContext(ctx, `UPDATE journal SET state = ?, undo_error = '', updated = ? WHERE job_id = ? AND seq = ?`, entryUndone, time.Now().Unix(), job, e.seq)
	}
	if nheld > 0 {
		failed = append(failed, fmt.Errorf("%d earlier step(s) held until the failed ones succeed (see 'pvesnap restore --status')", nheld))
	}
	final := StateRolledBack
	if committed {
		final = StateDone
	}
	if len(failed) > 0 {
		final = StateStuck
	}
	ferr := errors.Join(failed...)
	msg := ""
	if ferr != nil {
		msg = ferr.Error()
	}
	if err := setState(ctx, db, job, final, msg); err != nil && ferr == nil {
		return err
	}
	return ferr
}

// lockJob serialises the unwinds of one job between processes (the daemon's recovery and
// 'pvesnap restore --resume'): wait 0 tries once.
func (r *Restorer) lockJob(job string, wait time.Duration) (func(), error) {
	dir := filepath.Join(r.VMs.Lock, "pvesnap")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "restore-"+job+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			return func() { f.Close() }, nil
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("restore job %s is being unwound by another process", job)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Unfinished lists jobs that are not done: running or committed ones whose worker may have
// died, and those whose cleanup failed.
func Unfinished(ctx context.Context, db *store.DB) ([]JobRecord, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, kind, state, COALESCE(upid, ''), target, spec, created FROM jobs WHERE state IN (?, ?, ?) ORDER BY created`,
		StateRunning, StateCommitted, StateStuck)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []JobRecord
	for rows.Next() {
		var r JobRecord
		var created int64
		if err := rows.Scan(&r.ID, &r.Kind, &r.State, &r.UPID, &r.Target, &r.Spec, &created); err != nil {
			return nil, err
		}
		r.created = time.Unix(created, 0)
		out = append(out, r)
	}
	return out, rows.Err()
}

// JobRecord is a job's row.
type JobRecord struct {
	ID, Kind, State, UPID, Target, Spec string
	created                             time.Time
}
