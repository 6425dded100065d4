// Package logging builds pvesnap's slog logger: structured records to journald (with
// priorities) when running under systemd, key=value text on stderr otherwise.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
)

// New returns a logger at level. Under systemd (JOURNAL_STREAM set and the journal socket
// reachable) records go to journald with fields; else to w as text.
func New(level slog.Level, w io.Writer) *slog.Logger {
	if os.Getenv("JOURNAL_STREAM") != "" && journal.Enabled() {
		return slog.New(&journalHandler{level: level})
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type journalHandler struct {
	level  slog.Level
	attrs  []slog.Attr
	groups []string
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *journalHandler) Handle(_ context.Context, r slog.Record) error {
	prio := journal.PriInfo
	switch {
	case r.Level >= slog.LevelError:
		prio = journal.PriErr
	case r.Level >= slog.LevelWarn:
		prio = journal.PriWarning
	case r.Level < slog.LevelInfo:
		prio = journal.PriDebug
	}
	vars := map[string]string{"SYSLOG_IDENTIFIER": "pvesnap"}
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) {
		key := strings.Join(append(append([]string(nil), h.groups...), a.Key), ".")
		val := a.Value.Resolve().String()
		fmt.Fprintf(&b, " %s=%q", key, val)
		field := strings.ToUpper(strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				return r
			}
			return '_'
		}, key))
		if field != "" && field[0] != '_' {
			vars["PVESNAP_"+field] = val
		}
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool { add(a); return true })
	return journal.Send(b.String(), prio, vars)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &n
}

func (h *journalHandler) WithGroup(g string) slog.Handler {
	n := *h
	n.groups = append(append([]string(nil), h.groups...), g)
	return &n
}
