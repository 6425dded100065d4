// Package auth authenticates callers of the routes pvesnap owns exactly as pveproxy would:
// the same credentials in the same order, CSRF tokens checked with PVE's HMAC, and privileges
// asked of the local pveproxy with the caller's own credential.
package auth

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Kind tells how a caller authenticated.
type Kind int

const (
	None Kind = iota
	Ticket
	Token
)

// Credential is what a request carried.
type Credential struct {
	Kind Kind
	// Ticket is the PVE ticket ("PVE:user@realm:TS::sig"), unescaped.
	Ticket string
	// TokenID and Secret come from "PVEAPIToken=user@realm!id=secret".
	TokenID string
	Secret  string
	// CSRF is the CSRFPreventionToken header.
	CSRF string
}

var tokenHeaderRe = regexp.MustCompile(`(?:^|\s)PVEAPIToken(?:=| )([^;]*)`)
var cookieHeaderRe = regexp.MustCompile(`(?:^|\s)PVEAuthCookie=([^;]*)`)

// Extract reads the credential in pveproxy's order: the PVEAuthCookie cookie, then an
// Authorization header holding PVEAuthCookie=…, then PVEAPIToken=user@realm!id=secret.
// Values are URI-unescaped like Perl's uri_unescape: %XX only, '+' stays '+'.
func Extract(r *http.Request) Credential {
	c := Credential{CSRF: r.Header.Get("CSRFPreventionToken")}
	if ck, err := r.Cookie("PVEAuthCookie"); err == nil && ck.Value != "" {
		c.Kind, c.Ticket = Ticket, uriUnescape(ck.Value)
		return c
	}
	authz := r.Header.Get("Authorization")
	if m := cookieHeaderRe.FindStringSubmatch(authz); m != nil && m[1] != "" {
		c.Kind, c.Ticket = Ticket, uriUnescape(m[1])
		return c
	}
	if m := tokenHeaderRe.FindStringSubmatch(authz); m != nil {
		v := uriUnescape(strings.TrimSpace(m[1]))
		if i := strings.LastIndexByte(v, '='); i > 0 {
			c.Kind, c.TokenID, c.Secret = Token, v[:i], v[i+1:]
		} else {
			c.Kind, c.TokenID = Token, v // "no tokenid specified" later
		}
	}
	return c
}

// uriUnescape decodes %XX sequences and leaves everything else, '+' included, as it is.
func uriUnescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	v, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return v
}

// TicketUser returns the user id inside a PVE ticket ("PVE:<user>:<TS>::<sig>"), or "".
func TicketUser(ticket string) string {
	f := strings.SplitN(ticket, ":", 3)
	if len(f) < 3 || f[0] != "PVE" {
		return ""
	}
	return uriUnescape(f[1])
}

// CSRF tokens: "<8 uppercase hex epoch>:<sig>", sig = base64_nopad(HMAC_SHA256(key=S,
// msg="<TS>:<user>")), S = base64_nopad(HMAC_SHA256(key="", msg=<pve-www.key contents>)).
// Valid from 300 s in the future to 2 h in the past (PVE's $auth_graceperiod and
// $ticket_lifetime). A 27-character signature is the legacy SHA-1 form, still accepted.

const (
	csrfGrace    = 300 * time.Second
	csrfLifetime = 7200 * time.Second
)

var csrfRe = regexp.MustCompile(`^([A-Z0-9]{8}):(\S+)$`)

func csrfSecret(wwwKey []byte) string {
	m := hmac.New(sha256.New, nil)
	m.Write(wwwKey)
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

func csrfSig(secret, ts, user string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + ":" + user))
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

func csrfSigLegacy(wwwKey []byte, ts, user string) string {
	// Digest::SHA::sha1_base64("$ts:$user", $secret) with secret = sha1_base64(key): the
	// arguments are concatenated before hashing.
	k := sha1.Sum(wwwKey)
	secret := base64.RawStdEncoding.EncodeToString(k[:])
	h := sha1.Sum([]byte(ts + ":" + user + secret))
	return base64.RawStdEncoding.EncodeToString(h[:])
}

// MakeCSRF computes the token PVE hands out for user at time now.
func MakeCSRF(wwwKey []byte, user string, now time.Time) string {
	ts := fmt.Sprintf("%08X", now.Unix())
	return ts + ":" + csrfSig(csrfSecret(wwwKey), ts, user)
}

// VerifyCSRF checks a CSRFPreventionToken for user.
func VerifyCSRF(wwwKey []byte, user, token string, now time.Time) bool {
	m := csrfRe.FindStringSubmatch(token)
	if m == nil {
		return false
	}
	ts, sig := m[1], m[2]
	var want string
	if len(sig) == 27 {
		want = csrfSigLegacy(wwwKey, ts, user)
	} else {
		want = csrfSig(csrfSecret(wwwKey), ts, user)
	}
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return false
	}
	t, err := strconv.ParseInt(ts, 16, 64)
	if err != nil {
		return false
	}
	age := now.Sub(time.Unix(t, 0))
	return age > -csrfGrace && age < csrfLifetime
}

// PVE's 401 reasons, as pveproxy writes them in the status line.
const (
	ReasonNoTicket    = "No ticket"
	ReasonBadTicket   = "permission denied - invalid PVE ticket"
	ReasonBadCSRF     = "Permission denied - invalid csrf token"
	ReasonNoTokenID   = "no tokenid specified"
	ReasonBadTokenVal = "invalid token value!"
)
