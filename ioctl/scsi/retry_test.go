package scsi

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

// scripted answers each command with the next error of its script (nil: GOOD), records
// the pauses the retry loop asks for, and never sleeps.
type scripted struct {
	errs   []error
	sent   [][]byte
	pauses []time.Duration
}

func (s *scripted) Exec(ctx context.Context, cdb []byte, dir Direction, data []byte) (int, error) {
	s.sent = append(s.sent, append([]byte(nil), cdb...))
	if len(s.errs) == 0 {
		return 0, nil
	}
	e := s.errs[0]
	if len(s.errs) > 1 {
		s.errs = s.errs[1:]
	}
	return 0, e
}

func (s *scripted) Pause(ctx context.Context, d time.Duration) error {
	s.pauses = append(s.pauses, d)
	return ctx.Err()
}

func senseErr(code, key, asc, ascq byte) *CommandError {
	return &CommandError{Op: "EXTENDED COPY", Status: StatusCheckCondition, Sense: &Sense{ResponseCode: code, Key: key, ASC: asc, ASCQ: ascq}}
}

// A deferred error reports an earlier command's failure: retrying the command that carried
// it back would count that earlier write as done. It must not read as transient.
func TestDeferredErrorsAreNotRetried(t *testing.T) {
	fixed := hx(t, "71 00 0B 00000000 0A 00000000 47 00 00 000000") // deferred ABORTED COMMAND, parity
	s, err := ParseSense(fixed)
	if err != nil || !s.Deferred() || s.Key != KeyAbortedCommand {
		t.Fatalf("fixed 71h: %+v %v", s, err)
	}
	desc := hx(t, "73 0B 47 00 000000 00") // the same in descriptor format
	d, err := ParseSense(desc)
	if err != nil || !d.Deferred() || d.Key != KeyAbortedCommand {
		t.Fatalf("descriptor 73h: %+v %v", d, err)
	}
	for _, sense := range []Sense{s, d} {
		ce := &CommandError{Op: "EXTENDED COPY", Status: StatusCheckCondition, Sense: &sense}
		if ce.Transient() {
			t.Errorf("deferred %v read as transient", ce)
		}
		if !errors.Is(ce, ErrDeferred) || errors.Is(ce, ErrPath) {
			t.Errorf("deferred %v: classification", ce)
		}
	}
	// The current (non-deferred) form of the same condition is retried.
	if !senseErr(0x70, KeyAbortedCommand, 0x47, 0).Transient() {
		t.Error("a current ABORTED COMMAND must be transient")
	}
	// A deferred COPY ABORTED 0D/02 is not "unreachable" for this command.
	if errors.Is(senseErr(0x71, KeyCopyAborted, 0x0D, 0x02), ErrUnreachable) {
		t.Error("a deferred 0D/02 names an earlier command")
	}
	x := &scripted{errs: []error{senseErr(0x71, KeyAbortedCommand, 0x47, 0), nil}}
	if err := ExtendedCopy(context.Background(), x, make([]byte, 108)); !errors.Is(err, ErrDeferred) {
		t.Fatalf("ExtendedCopy with a deferred error: %v", err)
	}
	if len(x.sent) != 1 {
		t.Errorf("a deferred error was retried %d times by the command layer", len(x.sent)-1)
	}
}

func TestPathFailuresAndALUAStates(t *testing.T) {
	cases := []struct {
		name            string
		err             *CommandError
		path, transient bool
	}{
		{"standby 04/0B", senseErr(0x70, KeyNotReady, 0x04, 0x0B), true, false},
		{"unavailable 04/0C", senseErr(0x70, KeyNotReady, 0x04, 0x0C), true, false},
		{"transitioning 04/0A", senseErr(0x70, KeyNotReady, 0x04, 0x0A), false, true},
		{"becoming ready 04/01", senseErr(0x72, KeyNotReady, 0x04, 0x01), false, true},
		{"ALUA state changed UA", senseErr(0x70, KeyUnitAttention, 0x2A, 0x06), false, true},
		{"DID_NO_CONNECT", &CommandError{HostStatus: 0x01}, true, false},
		{"DID_TRANSPORT_DISRUPTED", &CommandError{HostStatus: 0x0e}, true, false},
		{"DID_TRANSPORT_FAILFAST", &CommandError{HostStatus: 0x0f}, true, false},
		{"DID_BUS_BUSY", &CommandError{HostStatus: 0x02}, false, true},
		{"DID_TARGET_FAILURE", &CommandError{HostStatus: 0x10}, false, false},
		{"DID_NEXUS_FAILURE", &CommandError{HostStatus: 0x11}, false, false},
		{"BUSY", &CommandError{Status: StatusBusy}, false, true},
		{"TASK SET FULL", &CommandError{Status: StatusTaskSetFull}, false, true},
		{"RESERVATION CONFLICT", &CommandError{Status: StatusReservationConflict}, false, false},
		{"list identifier in use (00/16)", senseErr(0x70, KeyIllegalRequest, 0x00, 0x16), false, true},
		{"invalid field in parameter list", senseErr(0x70, KeyIllegalRequest, 0x26, 0x00), false, false},
	}
	for _, c := range cases {
		if got := errors.Is(c.err, ErrPath); got != c.path {
			t.Errorf("%s: path failure %v, want %v", c.name, got, c.path)
		}
		if got := c.err.Transient(); got != c.transient {
			t.Errorf("%s: transient %v, want %v", c.name, got, c.transient)
		}
	}
	if ASCName(0x04, 0x0B) == "" || ASCName(0x04, 0x0C) == "" {
		t.Error("ALUA standby/unavailable must be named in messages")
	}
	x := &scripted{errs: []error{senseErr(0x70, KeyNotReady, 0x04, 0x0B)}}
	if err := ExtendedCopy(context.Background(), x, nil); !errors.Is(err, ErrPath) || len(x.sent) != 1 {
		t.Fatalf("standby: %v after %d commands (a path failure goes back to the caller at once)", err, len(x.sent))
	}
}

// The same path is retried for as long as an ALUA transition may last, not 5 × 20-80 ms.
func TestRetryBudgetOnTheSamePath(t *testing.T) {
	busy := &CommandError{Op: "EXTENDED COPY", Status: StatusBusy}
	x := &scripted{errs: []error{busy}}
	err := ExtendedCopy(context.Background(), x, nil)
	if !errors.Is(err, busy) {
		t.Fatalf("a device busy for ever: %v", err)
	}
	var waited time.Duration
	for _, p := range x.pauses {
		waited += p
	}
	if waited < RetryBudget || waited > RetryBudget+2*time.Second {
		t.Errorf("retried for %s of pauses (%d commands), want the %s budget", waited, len(x.sent), RetryBudget)
	}
	// A transition that ends: the command goes through and nothing is reported.
	trans := senseErr(0x70, KeyNotReady, 0x04, 0x0A)
	x = &scripted{errs: []error{trans, trans, trans, trans, trans, trans, trans, nil}}
	if err := ExtendedCopy(context.Background(), x, nil); err != nil || len(x.sent) != 8 {
		t.Fatalf("after 7 transition answers: %v, %d commands", err, len(x.sent))
	}
	if Backoff(1) != 50*time.Millisecond || Backoff(2) != 100*time.Millisecond || Backoff(40) != 2*time.Second {
		t.Errorf("backoff %s %s %s", Backoff(1), Backoff(2), Backoff(40))
	}
}

// A task's context may carry a deadline weeks away; the SG_IO timeout is the command's own
// and must not wrap (uint32 milliseconds end at 49.7 days).
func TestTimeoutsCannotWrap(t *testing.T) {
	far, cancel := context.WithTimeout(context.Background(), 60*24*time.Hour)
	defer cancel()
	for _, c := range []struct {
		cdb  []byte
		want uint32
	}{
		{ExtendedCopyCDB(108), 600_000},
		{SyncCache10CDB(0, 0), 120_000},
		{SyncCache16CDB(0, 0), 120_000},
		{InquiryCDB(false, 0, 96), 60_000},
	} {
		got, err := Timeout(far, c.cdb)
		if err != nil || got != c.want {
			t.Errorf("%s with a 60-day deadline: %d ms %v, want %d", opName(c.cdb), got, err, c.want)
		}
		got, _ = Timeout(context.Background(), c.cdb)
		if got != c.want {
			t.Errorf("%s without a deadline: %d ms, want %d", opName(c.cdb), got, c.want)
		}
	}
	near, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if got, err := Timeout(near, ExtendedCopyCDB(108)); err != nil || got > 5000 || got < 4000 {
		t.Errorf("5 s left: %d ms %v", got, err)
	}
	gone, cancel3 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel3()
	if _, err := Timeout(gone, InquiryCDB(false, 0, 96)); err == nil {
		t.Error("an expired deadline must refuse the command")
	}
	if uint64(xcopyTimeout.Milliseconds()) > math.MaxUint32 {
		t.Error("own timeouts must fit 32 bits")
	}
}

func TestSyncCacheFallsBackToSixteen(t *testing.T) {
	f := &fakeDev{answers: map[byte][]byte{OpSyncCache16: {}}} // (10) not implemented
	if err := SyncCache(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if len(f.sent) != 2 || f.sent[0][0] != OpSyncCache10 || f.sent[1][0] != OpSyncCache16 {
		t.Fatalf("sent % x", f.sent)
	}
	f = &fakeDev{answers: map[byte][]byte{OpSyncCache10: {}}}
	if err := SyncCache(context.Background(), f); err != nil || len(f.sent) != 1 {
		t.Fatalf("(10) implemented: %v, %d commands", err, len(f.sent))
	}
	eq(t, "SYNCHRONIZE CACHE(10) whole medium", SyncCache10CDB(0, 0), hx(t, "35 00 00000000 00 0000 00"))
}

func TestArrayIdentityAndProtection(t *testing.T) {
	for _, c := range []struct {
		hex string
		oui uint32
		ok  bool
	}{
		{"624a93706c1b16ce1c034d1c000b9fac", 0x24a937, true}, // Pure FlashArray (NAA 6)
		{"6001405abea000010000000000000000", 0x001405, true}, // LIO (NAA 6)
		{"5000c5004a3b2c1d", 0x000c50, true},                 // NAA 5 (IEEE Registered)
		{"2000001b32a1b2c3", 0x001b32, true},                 // NAA 2 (IEEE Extended)
		{"3000000000000001", 0, false},                       // NAA 3: locally assigned
	} {
		d := Designator{Type: DesigNAA, Value: hx(t, c.hex)}
		oui, ok := d.CompanyID()
		if ok != c.ok || oui != c.oui {
			t.Errorf("%s: company id %06x %v, want %06x %v", c.hex, oui, ok, c.oui, c.ok)
		}
	}
	for b12, want := range map[byte]uint8{0x00: 0, 0x01: 1, 0x03: 2, 0x05: 3, 0x02: 0} {
		rc := make([]byte, 32)
		rc[11], rc[12] = 0x02, b12
		c, err := ParseReadCapacity16(rc)
		if err != nil || c.ProtectionType != want || c.ProtectionEnabled != (want != 0) {
			t.Errorf("byte 12 %#02x: protection %v type %d, want type %d", b12, c.ProtectionEnabled, c.ProtectionType, want)
		}
	}
}
