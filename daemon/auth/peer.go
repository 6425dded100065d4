package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A call one node's pvesnap forwards to another's carries a mark that only a node of the
// cluster can make: an HMAC under a key derived from pve-www.key (cluster-wide, readable by
// root only; derived so that it never equals the CSRF secret), over the sending node, the
// time and the request. Clients cannot forge it, so a mark they send is just dropped.

// peerSkew is how far apart the nodes' clocks and the call's age may be (PVE's grace).
const peerSkew = 300 * time.Second

func peerKey(wwwKey []byte) []byte {
	m := hmac.New(sha256.New, wwwKey)
	m.Write([]byte("pvesnap peer forwarding"))
	return m.Sum(nil)
}

func peerSig(wwwKey []byte, node, ts string, r *http.Request) string {
	m := hmac.New(sha256.New, peerKey(wwwKey))
	fmt.Fprintf(m, "%s\n%s\n%s\n%s?%s", node, ts, r.Method, r.URL.Path, r.URL.RawQuery)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// PeerMark is the mark node puts on r when forwarding it: "<node>:<hex time>:<signature>".
func PeerMark(wwwKey []byte, node string, r *http.Request, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 16)
	return node + ":" + ts + ":" + peerSig(wwwKey, node, ts, r)
}

// VerifyPeerMark returns the node that marked r, or false when the mark is not one a node
// of this cluster made for this request within peerSkew of now.
func VerifyPeerMark(wwwKey []byte, mark string, r *http.Request, now time.Time) (string, bool) {
	f := strings.Split(mark, ":")
	if len(f) != 3 || f[0] == "" {
		return "", false
	}
	t, err := strconv.ParseInt(f[1], 16, 64)
	if err != nil {
		return "", false
	}
	if d := now.Sub(time.Unix(t, 0)); d > peerSkew || d < -peerSkew {
		return "", false
	}
	if !hmac.Equal([]byte(f[2]), []byte(peerSig(wwwKey, f[0], f[1], r))) {
		return "", false
	}
	return f[0], true
}
