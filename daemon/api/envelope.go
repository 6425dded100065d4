package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/pvesnap/pvesnap/daemon/httpd"
)

// Format is the output format from the URL: /api2/json or /api2/extjs.
type Format string

const (
	JSON  Format = "json"
	ExtJS Format = "extjs"
)

// FormatOf reads the format from a request path; "" when it is not an /api2 path we serve.
func FormatOf(path string) Format {
	switch {
	case strings.HasPrefix(path, "/api2/json/"):
		return JSON
	case strings.HasPrefix(path, "/api2/extjs/"):
		return ExtJS
	}
	return ""
}

const contentType = "application/json;charset=UTF-8"

// Result carries optional envelope attributes next to data (PVE's "total").
type Result struct {
	Data  any
	Total int
}

// WriteData writes a success envelope.
func WriteData(w http.ResponseWriter, f Format, data any) {
	env := map[string]any{"data": data}
	if r, ok := data.(Result); ok {
		env["data"] = r.Data
		if r.Total != 0 { // PVE omits a zero total
			env["total"] = r.Total
		}
	}
	if f == ExtJS {
		env["success"] = 1
	}
	writeJSON(w, http.StatusOK, "", env)
}

// WriteError writes err the way pveproxy does: for json the status code with the first line
// of the message as reason phrase and {"data":null,"message":…,"errors":…}; 401 with an empty
// body; for extjs always 200 with success 0.
func WriteError(w http.ResponseWriter, f Format, err error) {
	e := AsError(err)
	msg := e.Message
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	reason := strings.SplitN(strings.TrimSpace(msg), "\n", 2)[0]
	if f == ExtJS {
		env := map[string]any{"data": nil, "success": 0, "message": msg, "status": e.Code}
		if len(e.Errors) > 0 {
			env["errors"] = e.Errors
		}
		writeJSON(w, http.StatusOK, "", env)
		return
	}
	if e.Code == http.StatusUnauthorized {
		WriteUnauthorized(w, reason)
		return
	}
	env := map[string]any{"data": nil, "message": msg}
	if len(e.Errors) > 0 {
		env["errors"] = e.Errors
	}
	writeJSON(w, e.Code, reason, env)
}

// WriteUnauthorized refuses a request's credential as pveproxy does, before any formatter:
// 401 with the reason and an empty body, under /api2/extjs as under /api2/json.
func WriteUnauthorized(w http.ResponseWriter, reason string) {
	w.Header().Set("Content-Length", "0")
	httpd.WriteHeader(w, http.StatusUnauthorized, reason)
}

func writeJSON(w http.ResponseWriter, code int, reason string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"data":null,"message":"internal error: unencodable result\n"}`)
		code, reason = http.StatusInternalServerError, "internal error: unencodable result"
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "max-age=0")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")
	httpd.WriteHeader(w, code, reason)
	w.Write(b)
}
