package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/store"
)

// JobStatus is a job with its journal, for 'pvesnap restore --status': what the restore did,
// what is undone, what failed to undo and why, and what waits for it.
type JobStatus struct {
	JobRecord
	Error   string
	Updated time.Time
	Steps   []StepStatus
}

// StepStatus is one journaled step.
type StepStatus struct {
	Seq       int
	Step      string
	State     string // pending, done, failed (the step itself), undone
	Detail    string // why the step failed
	Undo      Action
	UndoError string // why its undo failed
	HeldBy    int    // the step whose failed undo holds this one's (0: not held)
}

// JobStatusOf reads one job's status.
func JobStatusOf(ctx context.Context, db *store.DB, job string) (*JobStatus, error) {
	st := &JobStatus{}
	var created, updated int64
	var errMsg *string
	if err := db.QueryRowContext(ctx, `SELECT id, kind, state, COALESCE(upid, ''), target, spec, error, created, updated FROM jobs WHERE id = ?`, job).
		Scan(&st.ID, &st.Kind, &st.State, &st.UPID, &st.Target, &st.Spec, &errMsg, &created, &updated); err != nil {
		return nil, fmt.Errorf("restore job %s: %w", job, err)
	}
	if errMsg != nil {
		st.Error = *errMsg
	}
	st.created, st.Updated = time.Unix(created, 0), time.Unix(updated, 0)
	rows, err := db.QueryContext(ctx, `SELECT seq, step, state, detail, undo, undo_error FROM journal WHERE job_id = ? ORDER BY seq DESC`, job)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	failedIn := map[string]int{} // chain -> the latest step whose undo failed
	for rows.Next() {
		var s StepStatus
		var undo string
		if err := rows.Scan(&s.Seq, &s.Step, &s.State, &s.Detail, &undo, &s.UndoError); err != nil {
			return nil, err
		}
		json.Unmarshal([]byte(undo), &s.Undo)
		if s.State != entryUndone && s.Undo.Chain != "" {
			if by, ok := failedIn[s.Undo.Chain]; ok && s.UndoError == "" {
				s.HeldBy = by
			}
			if s.UndoError != "" {
				if _, ok := failedIn[s.Undo.Chain]; !ok {
					failedIn[s.Undo.Chain] = s.Seq
				}
			}
		}
		st.Steps = append([]StepStatus{s}, st.Steps...)
	}
	return st, rows.Err()
}

// String explains the job to an operator.
func (st *JobStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "restore job %s (%s): %s since %s\n", st.ID, st.Target, st.State, st.Updated.UTC().Format(time.RFC3339))
	if st.UPID != "" {
		fmt.Fprintf(&b, "task: %s\n", st.UPID)
	}
	committed := false
	for _, s := range st.Steps {
		if s.Step == "commit" && (s.State == entryDone || s.State == entryUndone) {
			committed = true
		}
	}
	switch st.State {
	case StateStuck:
		if committed {
			b.WriteString("The restore committed (the VM has the restored data); its cleanup is incomplete.\n")
		} else {
			b.WriteString("The restore did not commit; its rollback is incomplete. Nothing the VM had was removed: an original disk set aside is renamed back once the failed undo succeeds.\n")
		}
	case StateRunning, StateCommitted:
		b.WriteString("The restore is in progress (or its worker died and the daemon will finish it).\n")
	}
	if st.Error != "" {
		fmt.Fprintf(&b, "error: %s\n", st.Error)
	}
	fmt.Fprintf(&b, "%4s  %-8s  %-34s  %s\n", "step", "state", "what", "undo")
	for _, s := range st.Steps {
		undo := s.Undo.Kind
		switch {
		case s.Undo.Kind == "none" || s.Undo.Kind == "":
			undo = "-"
		case s.Undo.Revert && committed:
			undo += " (not needed: the restore committed)"
		case s.Undo.Committed && !committed:
			undo += " (not needed: the restore did not commit)"
		case s.State == entryUndone:
			undo += " (done)"
		case s.UndoError != "":
			undo += " FAILED: " + s.UndoError
		case s.HeldBy != 0:
			undo += fmt.Sprintf(" held: waits for step %d", s.HeldBy)
		default:
			undo += " (to run)"
		}
		fmt.Fprintf(&b, "%4d  %-8s  %-34s  %s\n", s.Seq, s.State, clip(s.Step, 34), undo)
		if s.Detail != "" {
			fmt.Fprintf(&b, "      step failed: %s\n", s.Detail)
		}
	}
	if st.State == StateStuck {
		fmt.Fprintf(&b, "Fix the cause of the failed undo above, then run 'pvesnap restore --resume %s' (the daemon also retries every 30 s).\n", st.ID)
	}
	return b.String()
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
