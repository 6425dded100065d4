// Package store is pvesnap's node-local working state in SQLite (modernc.org/sqlite, pure Go):
// the task index, jobs and their step journal, the snapshot cache and VM sightings. The file
// is opened in WAL mode so the daemon and its task workers share it safely.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// States of a row in jobs that other packages than the job's own read: a job in one of these
// has not committed and may still change or undo what it made.
const (
	JobRunning = "running"
	JobStuck   = "cleanup-failed" // failed, and its undo did not complete yet
)

// DB is the opened state database.
type DB struct {
	*sql.DB
	Path string
}

// migrations are applied in order, each once; never edit one that has shipped.
var migrations = []string{
	// 1: tasks and jobs
	`CREATE TABLE tasks (
		upid      TEXT PRIMARY KEY,
		node      TEXT NOT NULL,
		type      TEXT NOT NULL,
		id        TEXT NOT NULL,
		user      TEXT NOT NULL,
		starttime INTEGER NOT NULL,
		job_id    TEXT,
		endtime   INTEGER,
		status    TEXT
	);
	CREATE INDEX tasks_start ON tasks(starttime);
	CREATE TABLE jobs (
		id            TEXT PRIMARY KEY,
		kind          TEXT NOT NULL,
		state         TEXT NOT NULL,
		upid          TEXT,
		spec          TEXT NOT NULL,
		target        TEXT NOT NULL DEFAULT '',
		created       INTEGER NOT NULL,
		updated       INTEGER NOT NULL,
		error         TEXT
	);
	CREATE INDEX jobs_state ON jobs(state);
	CREATE TABLE journal (
		job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
		seq     INTEGER NOT NULL,
		step    TEXT NOT NULL,
		undo    TEXT NOT NULL,
		state   TEXT NOT NULL,
		detail  TEXT NOT NULL DEFAULT '',
		updated INTEGER NOT NULL,
		PRIMARY KEY (job_id, seq)
	);`,
	// 2: inventory caches
	`CREATE TABLE snapshots (
		array     TEXT NOT NULL,
		volume    TEXT NOT NULL,
		name      TEXT NOT NULL,
		serial    TEXT NOT NULL DEFAULT '',
		created   INTEGER NOT NULL,
		pgroup    TEXT NOT NULL DEFAULT '',
		suffix    TEXT NOT NULL DEFAULT '',
		destroyed INTEGER NOT NULL DEFAULT 0,
		fetched   INTEGER NOT NULL,
		PRIMARY KEY (array, name)
	);
	CREATE INDEX snapshots_volume ON snapshots(array, volume);
	CREATE TABLE refresh (
		array   TEXT PRIMARY KEY,
		fetched INTEGER NOT NULL,
		error   TEXT NOT NULL DEFAULT ''
	);
	-- One row per VM incarnation (vmid, ctime) ever seen in the cluster: deleted VMs stay
	-- restorable while a snapshot holds their disks.
	CREATE TABLE incarnations (
		vmid         INTEGER NOT NULL,
		ctime        INTEGER NOT NULL,
		ctime_source TEXT NOT NULL,
		node         TEXT NOT NULL,
		name         TEXT NOT NULL DEFAULT '',
		config       TEXT NOT NULL,
		first_seen   INTEGER NOT NULL,
		last_seen    INTEGER NOT NULL,
		deleted      INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (vmid, ctime)
	);
	CREATE TABLE incarnation_disks (
		vmid     INTEGER NOT NULL,
		ctime    INTEGER NOT NULL,
		key      TEXT NOT NULL,
		volid    TEXT NOT NULL,
		storage  TEXT NOT NULL,
		lv_uuid  TEXT NOT NULL DEFAULT '',
		lv_time  INTEGER NOT NULL DEFAULT 0,
		size     INTEGER NOT NULL DEFAULT 0,
		lineage  TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (vmid, ctime, key),
		FOREIGN KEY (vmid, ctime) REFERENCES incarnations(vmid, ctime) ON DELETE CASCADE
	);
	-- An LV swapped in by an in-place restore is the same disk as the one it replaced: its
	-- identity is the original's (creation time, and every earlier LV UUID it descends from).
	-- Cluster locks (directories under /etc/pve/priv/lock) held by restore workers.
	CREATE TABLE held_locks (
		path  TEXT PRIMARY KEY,
		job   TEXT NOT NULL,
		taken INTEGER NOT NULL
	);
	CREATE TABLE lineage (
		lv_uuid     TEXT PRIMARY KEY,
		origin      TEXT NOT NULL,
		origin_time INTEGER NOT NULL,
		recorded    INTEGER NOT NULL
	);`,
	// 3: why an undo failed, so that 'pvesnap restore --status' can say it.
	`ALTER TABLE journal ADD COLUMN undo_error TEXT NOT NULL DEFAULT '';`,
}

// Open opens (creating if needed) the database at path and applies pending migrations.
func Open(path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	q := url.Values{}
	// synchronous=FULL: every commit is on stable media before it returns. The restore journal
	// records each step's undo before the step's side effect (an array volume, a renamed LV);
	// with NORMAL, a WAL commit could still be lost to a power failure after that side effect
	// happened, leaving an object no journal knows.
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(FULL)"} {
		q.Add("_pragma", p)
	}
	// Every transaction pvesnap opens writes, most after reading first (the restore journal
	// checks its target is free, then inserts). Deferred, such a transaction cannot take the
	// write lock once another connection has committed and fails at once with SQLITE_BUSY,
	// without waiting out busy_timeout; BEGIN IMMEDIATE takes the lock up front and waits.
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	d := &DB{DB: db, Path: path}
	if err := d.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("state database %s: %w", path, err)
	}
	return d, nil
}

func (d *DB) migrate(ctx context.Context) error {
	if _, err := d.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var v int
	err := d.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := d.ExecContext(ctx, `INSERT INTO schema_version VALUES (0)`); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this pvesnap knows (%d): refusing to downgrade", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		tx, err := d.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, i+1); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// Version is the applied schema version.
func (d *DB) Version() (int, error) {
	var v int
	err := d.QueryRow(`SELECT version FROM schema_version`).Scan(&v)
	return v, err
}

// TaskRecord is a task pvesnap started.
type TaskRecord struct {
	UPID      string
	Node      string
	Type      string
	ID        string
	User      string
	StartTime int64
	JobID     string
	EndTime   int64
	Status    string
}

// AddTask indexes a task.
func (d *DB) AddTask(ctx context.Context, t TaskRecord) error {
	_, err := d.ExecContext(ctx, `INSERT OR IGNORE INTO tasks (upid, node, type, id, user, starttime, job_id) VALUES (?,?,?,?,?,?,?)`,
		t.UPID, t.Node, t.Type, t.ID, t.User, t.StartTime, nullIfEmpty(t.JobID))
	return err
}

// FinishTask records a task's end.
func (d *DB) FinishTask(ctx context.Context, upid string, end int64, status string) error {
	_, err := d.ExecContext(ctx, `UPDATE tasks SET endtime = ?, status = ? WHERE upid = ?`, end, status, upid)
	return err
}

// HasTask reports whether upid is one of ours.
func (d *DB) HasTask(ctx context.Context, upid string) (bool, error) {
	var n int
	err := d.QueryRowContext(ctx, `SELECT COUNT(*) FROM tasks WHERE upid = ?`, upid).Scan(&n)
	return n > 0, err
}

// Tasks lists our tasks newest first.
func (d *DB) Tasks(ctx context.Context, limit int) ([]TaskRecord, error) {
	rows, err := d.QueryContext(ctx, `SELECT upid, node, type, id, user, starttime, COALESCE(job_id,''), COALESCE(endtime,0), COALESCE(status,'')
		FROM tasks ORDER BY starttime DESC, upid DESC LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []TaskRecord
	for rows.Next() {
		var t TaskRecord
		if err := rows.Scan(&t.UPID, &t.Node, &t.Type, &t.ID, &t.User, &t.StartTime, &t.JobID, &t.EndTime, &t.Status); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// PruneTasks removes finished tasks that ended before cutoff (retention); jobs go with them
// once they are finished too.
func (d *DB) PruneTasks(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := d.ExecContext(ctx, `DELETE FROM tasks WHERE endtime IS NOT NULL AND endtime < ?`, cutoff.Unix())
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	_, err = d.ExecContext(ctx, `DELETE FROM jobs WHERE state IN ('done','failed','recovered') AND updated < ?`, cutoff.Unix())
	return n, err
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
