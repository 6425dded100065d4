// Package auth authenticates callers of the routes pvesnap owns exactly as pveproxy would:
// the same credentials in the same order, CSRF tokens checked with PVE's HMAC, and privileges
// asked of the local pveproxy with the caller's own credential.
package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
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
	// Raw is the credential's value exactly as it arrived (still URI-escaped): it is what
	// pvesnap hands pveproxy to check, so pveproxy unescapes it once, as for a direct call.
	Raw string
	// Ticket is the PVE ticket ("PVE:user@realm:TS::sig"), unescaped.
	Ticket string
	// TokenID and Secret come from "PVEAPIToken=user@realm!id=secret", unescaped; TokenID is
	// everything before the last '=' (PVE's verify_token), Secret "" when there is no '='.
	TokenID string
	Secret  string
	// CSRF is the CSRFPreventionToken header.
	CSRF string
}

// Extract reads the credential as pveproxy does (pve-http-server's
// authenticate_and_handle_request and Formatter::extract_auth_value): the PVEAuthCookie in the
// Cookie header, else PVEAuthCookie in the Authorization header, else PVEAPIToken there. A
// name counts at the start of the header or after white space, followed by '=' or a space;
// the value runs to the next ';' and is URI-unescaped once (%XX only, '+' stays '+'). An empty
// or "0" value counts as none, as Perl's truth test makes it.
func Extract(r *http.Request) Credential {
	c := Credential{CSRF: r.Header.Get("CSRFPreventionToken")}
	cookie := strings.Join(r.Header.Values("Cookie"), ", ")
	authz := strings.Join(r.Header.Values("Authorization"), ", ")
	if v, ok := authValue(cookie, "PVEAuthCookie"); ok {
		c.Kind, c.Raw, c.Ticket = Ticket, v, uriUnescape(v)
		return c
	}
	if v, ok := authValue(authz, "PVEAuthCookie"); ok {
		c.Kind, c.Raw, c.Ticket = Ticket, v, uriUnescape(v)
		return c
	}
	if v, ok := authValue(authz, "PVEAPIToken"); ok {
		c.Kind, c.Raw = Token, v
		v = uriUnescape(v)
		if i := strings.LastIndexByte(v, '='); i >= 0 {
			c.TokenID, c.Secret = v[:i], v[i+1:]
		} else {
			c.TokenID = v // "no tokenid specified" later
		}
	}
	return c
}

// authValue is extract_auth_value: /(?:^|\s)NAME(?:=| )([^;]*)/ on the header text.
func authValue(header, name string) (string, bool) {
	for i := 0; ; {
		j := strings.Index(header[i:], name)
		if j < 0 {
			return "", false
		}
		j += i
		i = j + 1
		if j > 0 && !isPerlSpace(header[j-1]) {
			continue
		}
		rest := header[j+len(name):]
		if rest == "" || (rest[0] != '=' && rest[0] != ' ') {
			continue
		}
		v, _, _ := strings.Cut(rest[1:], ";")
		return v, v != "" && v != "0"
	}
}

// isPerlSpace is Perl's \s for a byte string.
func isPerlSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' || b == '\v'
}

// uriUnescape decodes %XX sequences and leaves everything else, '+' included, as it is, as
// URI::Escape's uri_unescape does: a '%' not followed by two hex digits stays.
func uriUnescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func ishex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
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
// $ticket_lifetime). PVE::Ticket compares every signature with the SHA-256 HMAC, so the
// legacy 27-character SHA-1 form is refused (pve-access-control only picks its secret).

// PVE's $auth_graceperiod and $ticket_lifetime (pve-access-control AccessControl.pm): CSRF
// tokens and tickets alike.
const (
	authGrace      = 300 * time.Second
	ticketLifetime = 7200 * time.Second
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
	if !hmac.Equal([]byte(sig), []byte(csrfSig(csrfSecret(wwwKey), ts, user))) {
		return false
	}
	t, err := strconv.ParseInt(ts, 16, 64)
	if err != nil {
		return false
	}
	age := now.Sub(time.Unix(t, 0))
	return age > -authGrace && age < ticketLifetime
}

// PVE's 401 reasons, as pveproxy writes them in the status line (pve-manager HTTPServer.pm
// auth_handler): no credential is "No ticket"; every rejected ticket or token is
// "Authentication failed!" (the cause goes to pveproxy's log only); a ticket-authenticated
// write without a valid CSRF token gets PVE::Ticket's message.
const (
	ReasonNoTicket   = "No ticket"
	ReasonAuthFailed = "Authentication failed!"
	ReasonBadCSRF    = "Permission denied - invalid csrf token"
	// ReasonBadTicket is PVE::Ticket's own message for a bad ticket, which pveproxy logs but
	// does not send.
	ReasonBadTicket = "permission denied - invalid PVE ticket"
)
