package flasharray

import (
	"net/http"
	"strconv"
	"time"
)

// RateLimit is the API gateway's request limit per session, per second and per minute (0: no
// limit). Every answer to an authenticated request carries the gateway's counters
// (X-RateLimit-Limit-second, X-RateLimit-Remaining-second, and the same for -minute, the
// headers py-pure-client reads); a request over a limit is answered 429 in the gateway's own
// shape ({"message": …}) with Retry-After, the seconds until the exhausted window starts
// again. The gateway keeps real time, whatever clock the array's objects run on.
type RateLimit struct {
	Second, Minute int
	// NoRetryAfter leaves Retry-After out of the 429: the counters alone say how long to
	// wait (py-pure-client reads only them).
	NoRetryAfter bool
}

type rateWindows struct {
	second, minute time.Time // start of the current windows
	nSecond, nMin  int
}

// rateLimited counts a request of session and writes the counters; it reports whether the
// request is over a limit (then the 429 is written too).
func (a *Array) rateLimited(w http.ResponseWriter, session string) bool {
	l := a.RateLimit
	if l.Second == 0 && l.Minute == 0 {
		return false
	}
	now := time.Now()
	rw := a.rates[session]
	if rw == nil {
		rw = &rateWindows{}
		a.rates[session] = rw
	}
	if now.Sub(rw.second) >= time.Second {
		rw.second, rw.nSecond = now, 0
	}
	if now.Sub(rw.minute) >= time.Minute {
		rw.minute, rw.nMin = now, 0
	}
	over := (l.Second > 0 && rw.nSecond >= l.Second) || (l.Minute > 0 && rw.nMin >= l.Minute)
	if !over {
		rw.nSecond++
		rw.nMin++
	}
	h := w.Header()
	if l.Second > 0 {
		h.Set("X-RateLimit-Limit-second", strconv.Itoa(l.Second))
		h.Set("X-RateLimit-Remaining-second", strconv.Itoa(max(l.Second-rw.nSecond, 0)))
	}
	if l.Minute > 0 {
		h.Set("X-RateLimit-Limit-minute", strconv.Itoa(l.Minute))
		h.Set("X-RateLimit-Remaining-minute", strconv.Itoa(max(l.Minute-rw.nMin, 0)))
	}
	if !over {
		return false
	}
	reset := rw.second.Add(time.Second)
	if l.Minute > 0 && rw.nMin >= l.Minute {
		reset = rw.minute.Add(time.Minute)
	}
	secs := int(reset.Sub(now)/time.Second) + 1
	if !l.NoRetryAfter {
		h.Set("Retry-After", strconv.Itoa(secs))
	}
	writeJSON(w, 429, obj{"message": "API rate limit exceeded"})
	return true
}
