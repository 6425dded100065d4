// Package tasks makes pvesnap's long operations native Proxmox VE tasks: UPIDs encoded as PVE
// encodes them, task logs and the active/index files kept the way PVE keeps them, worker
// processes that outlive the daemon, and the task endpoints.
package tasks

import (
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// UPID is a task identifier: UPID:node:pid:pstart:starttime:type:id:user:
type UPID struct {
	Node      string
	PID       int
	PStart    uint64 // start time of the worker in clock ticks since boot (/proc/pid/stat field 22)
	StartTime int64  // epoch seconds
	Type      string
	ID        string // may be empty
	User      string // user@realm or user@realm!token
}

// upidRe is PVE::UPID's decode regex: pid 8 hex digits, pstart 8 or 9, starttime 8, id may be
// empty, trailing colon mandatory.
var upidRe = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$`)

// ParseUPID decodes a UPID string.
func ParseUPID(s string) (UPID, error) {
	m := upidRe.FindStringSubmatch(s)
	if m == nil {
		return UPID{}, fmt.Errorf("unable to parse worker upid '%s'", s)
	}
	pid, _ := strconv.ParseUint(m[3], 16, 32)
	pstart, _ := strconv.ParseUint(m[4], 16, 64)
	start, _ := strconv.ParseUint(m[5], 16, 32)
	return UPID{Node: m[1], PID: int(pid), PStart: pstart, StartTime: int64(start), Type: m[6], ID: m[7], User: m[8]}, nil
}

// String encodes the UPID exactly as PVE's upid_encode (uppercase hex, trailing colon).
func (u UPID) String() string {
	return fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", u.Node, u.PID, u.PStart, u.StartTime, u.Type, u.ID, u.User)
}

// Validate checks that the fields can be encoded into a UPID that decodes to the same value.
func (u UPID) Validate() error {
	if _, err := ParseUPID(u.String()); err != nil {
		return fmt.Errorf("invalid task identity (node %q type %q id %q user %q)", u.Node, u.Type, u.ID, u.User)
	}
	if u.PID < 0 || u.PID > 0xFFFFFFFF || u.PStart > 0xFFFFFFFFF || u.StartTime < 0 || u.StartTime > 0xFFFFFFFF {
		return fmt.Errorf("task numbers out of range")
	}
	return nil
}

// LogDir is the subdirectory of the task root holding this task's log: the last hex digit of
// the starttime field as written in the UPID.
func (u UPID) LogDir() string {
	return fmt.Sprintf("%X", u.StartTime&0xF)
}

// Start returns StartTime as a time.
func (u UPID) Start() time.Time { return time.Unix(u.StartTime, 0) }
