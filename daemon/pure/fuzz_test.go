package pure

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Whatever an array (or something posing as one) answers, decoding it never panics and an
// error is always classified by its status.
func FuzzArrayAnswers(f *testing.F) {
	f.Add(400, []byte(`{"errors":[{"message":"Connection already exists.","context":"vol"}]}`))
	f.Add(429, []byte(`{"message":"API rate limit exceeded"}`))
	f.Add(200, []byte(`{"continuation_token":"abc","more_items_remaining":true,"items":[{"name":"v","serial":"6C1B16CE1C034D1C000B9FAC","source":{"name":null}}]}`))
	f.Add(500, []byte(`<html>Server is busy</html>`))
	f.Fuzz(func(t *testing.T, status int, raw []byte) {
		if status < 100 || status > 599 {
			return
		}
		h := http.Header{"X-Ratelimit-Remaining-Second": {string(raw)}, "X-Ratelimit-Limit-Second": {"10"}}
		e := decodeError("GET", "/volumes", &http.Response{StatusCode: status, Header: h}, raw, "id")
		if e.Message == "" {
			t.Fatal("an error without a message")
		}
		if (status == 401) != e.Is(ErrSession) {
			t.Fatalf("status %d classified as session=%v", status, e.Is(ErrSession))
		}
		var page struct {
			Items              []Volume `json:"items"`
			ContinuationToken  *string  `json:"continuation_token"`
			MoreItemsRemaining bool     `json:"more_items_remaining"`
		}
		json.Unmarshal(raw, &page)
		for _, v := range page.Items {
			if s, ok := SerialFromWWID("naa." + NAA(v.Serial)); ok && !strings.EqualFold(s, v.Serial) {
				t.Fatalf("serial %q round-trips to %q", v.Serial, s)
			}
		}
		_ = retryAfter(http.Header{"Retry-After": {string(raw)}}, 1)
	})
}

func FuzzSerialFromWWID(f *testing.F) {
	for _, s := range []string{"naa.624a93706c1b16ce1c034d1c000b9fac", "eui.006c1b16ce1c034d24a9371c000b9fac", "3624a9370", "nvme.1234"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		serial, ok := SerialFromWWID(s)
		if !ok {
			return
		}
		if !serialRe.MatchString(serial) {
			t.Fatalf("%q gave serial %q", s, serial)
		}
		if got, _ := SerialFromWWID("naa." + NAA(serial)); got != serial {
			t.Fatalf("NAA round trip %q -> %q", serial, got)
		}
		if got, _ := SerialFromWWID("eui." + NGUID(serial)); got != serial {
			t.Fatalf("NGUID round trip %q -> %q", serial, got)
		}
	})
}
