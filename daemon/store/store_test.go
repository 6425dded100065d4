package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"
)

// TestConcurrentReadThenWrite runs transactions that read, then write, from two handles on
// one file at once, as the restore journal (check the target is free, then insert) does while
// the inventory scanner records a scan. A deferred transaction cannot upgrade its read to a
// write once another connection has committed, and SQLite answers SQLITE_BUSY at once,
// without waiting out busy_timeout: that reached an operator as "database is locked".
func TestConcurrentReadThenWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pvesnap.db")
	var dbs [2]*DB
	for i := range dbs {
		db, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		dbs[i] = db
	}
	ctx := context.Background()
	if _, err := dbs[0].ExecContext(ctx, `CREATE TABLE t (n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 6, 60
	errs := make(chan error, workers*rounds)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(db *DB) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					errs <- err
					continue
				}
				var n int
				if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM t`).Scan(&n); err != nil {
					tx.Rollback()
					errs <- err
					continue
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO t VALUES (?)`, n); err != nil {
					tx.Rollback()
					errs <- err
					continue
				}
				if err := tx.Commit(); err != nil {
					errs <- err
				}
			}
		}(dbs[w%2])
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed == 0 {
			t.Errorf("transaction failed: %v", err)
		}
		failed++
	}
	var n int
	if err := dbs[1].QueryRowContext(ctx, `SELECT COUNT(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if failed != 0 || n != workers*rounds {
		t.Fatalf("%d of %d transactions failed; %d rows", failed, workers*rounds, n)
	}
}

// Every connection commits durably (synchronous=FULL): the restore journal's rows precede
// side effects on arrays and LVM, and must not be lost to a power failure after them.
func TestSynchronousFull(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "pvesnap.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxIdleConns(4)
	conns := make([]*sql.Conn, 4)
	for i := range conns {
		c, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
		var mode int
		if err := c.QueryRowContext(context.Background(), `PRAGMA synchronous`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != 2 {
			t.Fatalf("connection %d: synchronous=%d, want 2 (FULL)", i, mode)
		}
	}
}
