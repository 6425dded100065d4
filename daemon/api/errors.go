// Package api is the framework for the routes pvesnap answers itself: PVE's envelope and error
// conventions, parameter schemas checked before a handler runs, and a route table in which
// every route declares its permission, as PVE's RESTHandler modules do.
package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error is an API error in PVE's shape: the status code, the message whose first line becomes
// the reason phrase, and per-parameter messages for 400s.
type Error struct {
	Code    int
	Message string
	Errors  map[string]string
}

func (e *Error) Error() string { return strings.TrimRight(e.Message, "\n") }

// Errorf makes an Error with a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ParamError is PVE's "Parameter verification failed." with the offending parameters.
func ParamError(errs map[string]string) *Error {
	return &Error{Code: http.StatusBadRequest, Message: "Parameter verification failed.", Errors: errs}
}

// ParamErr is ParamError for a single parameter.
func ParamErr(name, msg string) *Error { return ParamError(map[string]string{name: msg}) }

// PermError is PVE's 403 for a missing privilege on an ACL path.
func PermError(path, priv string) *Error {
	return &Error{Code: http.StatusForbidden, Message: fmt.Sprintf("Permission check failed (%s, %s)", path, priv)}
}

// Unauthorized is a 401. PVE sends it with an empty body and the reason in the status line.
func Unauthorized(reason string) *Error {
	return &Error{Code: http.StatusUnauthorized, Message: reason}
}

// Sentinel errors handlers return; ErrorCode maps them to HTTP in one place.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflict")
	ErrBusy     = errors.New("busy")
	// ErrUpstream means pveproxy (or a peer) could not be reached: 503, never "denied".
	ErrUpstream = errors.New("upstream unavailable")
	// ErrPassThrough tells the router to hand the request to pveproxy unchanged.
	ErrPassThrough = errors.New("pass through")
)

// AsError turns any handler error into an Error. Messages of non-API errors are kept (they are
// written for operators), but wrapped command output never reaches clients: handlers return
// errors from runner.ExecError only after summarising them.
func AsError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrExists), errors.Is(err, ErrConflict), errors.Is(err, ErrBusy):
		code = http.StatusConflict
	case errors.Is(err, ErrUpstream):
		code = http.StatusServiceUnavailable
	}
	return &Error{Code: code, Message: err.Error()}
}
