package pve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CLI answers the `qm` commands pvesnap's workers run on a node (status, shutdown, stop,
// start, set --lock, unlock, guest cmd) by calling the simulated cluster's API as root@pam,
// so a worker drives the simulator exactly as it drives a real node's qm. `pvesnap sim qm`
// and the executables of a simulated node (sim/node) put it on the command line.
type CLI struct {
	Client *Client // logged in as root@pam
	Node   string
}

// cliError is a failed qm: its exit status and what it printed on stderr.
type cliError struct {
	code int
	msg  string
}

func (e *cliError) Error() string { return e.msg }

func cliFail(argv []string, code int, msg string) error {
	return &cliError{code: code, msg: msg + "\n"}
}

// Command runs argv (qm …) and returns what qm would print and its exit status.
func (c *CLI) Command(ctx context.Context, argv []string) (stdout []byte, stderr string, code int) {
	out, err := c.run(ctx, argv)
	if err != nil {
		var ce *cliError
		if errors.As(err, &ce) {
			return out, ce.msg, ce.code
		}
		return out, err.Error() + "\n", 255
	}
	return out, "", 0
}

func (c *CLI) run(ctx context.Context, argv []string) ([]byte, error) {
	if len(argv) > 0 {
		argv = append([]string{filepath.Base(argv[0])}, argv[1:]...)
	}
	if len(argv) < 3 || argv[0] != "qm" {
		return nil, cliFail(argv, 2, "sim: only qm <command> <vmid> is emulated")
	}
	vmid, err := strconv.ParseInt(argv[2], 10, 64)
	if argv[1] == "guest" {
		if len(argv) < 5 {
			return nil, cliFail(argv, 255, "400 not enough arguments")
		}
		return nil, cliFail(argv, 255, "QEMU guest agent is not running")
	}
	if err != nil {
		return nil, cliFail(argv, 255, fmt.Sprintf("400 Parameter verification failed.\nvmid: invalid format - value '%s' does not look like a valid VM ID", argv[2]))
	}
	base := fmt.Sprintf("/nodes/%s/qemu/%d", c.Node, vmid)
	flags := map[string]string{}
	for i := 3; i < len(argv); i++ {
		if k, ok := strings.CutPrefix(argv[i], "--"); ok && i+1 < len(argv) {
			flags[k] = argv[i+1]
			i++
		}
	}
	switch argv[1] {
	case "status":
		d, err := c.call(argv, "GET", base+"/status/current", nil)
		if err != nil {
			return nil, err
		}
		var st struct {
			Status string `json:"status"`
		}
		json.Unmarshal(d, &st)
		return []byte("status: " + st.Status + "\n"), nil
	case "stop", "shutdown":
		return nil, c.task(ctx, argv, base+"/status/stop", skiplock(flags))
	case "start":
		return nil, c.task(ctx, argv, base+"/status/start", skiplock(flags))
	case "set":
		if l, ok := flags["lock"]; ok {
			_, err := c.call(argv, "PUT", base+"/config", url.Values{"lock": {l}})
			return nil, err
		}
		return nil, cliFail(argv, 2, "sim: qm set emulates --lock only")
	case "unlock":
		_, err := c.call(argv, "PUT", base+"/config", url.Values{"delete": {"lock"}, "skiplock": {"1"}})
		return nil, err
	}
	return nil, cliFail(argv, 2, "sim: qm "+argv[1]+" not emulated")
}

// skiplock passes qm's --skiplock on (only root may, and the CLI runs as root@pam).
func skiplock(flags map[string]string) url.Values {
	if flags["skiplock"] == "1" {
		return url.Values{"skiplock": {"1"}}
	}
	return nil
}

// call makes one API call; an error carries PVE's message as qm prints it.
func (c *CLI) call(argv []string, method, path string, params url.Values) (json.RawMessage, error) {
	r, err := c.Client.Do(method, path, params)
	if err != nil {
		return nil, cliFail(argv, 255, err.Error())
	}
	if r.Code != 200 {
		return nil, cliFail(argv, 255, r.Status)
	}
	return r.Data, nil
}

// task runs an API call that starts a task and waits for it, like qm does.
func (c *CLI) task(ctx context.Context, argv []string, path string, params url.Values) error {
	d, err := c.call(argv, "POST", path, params)
	if err != nil {
		return err
	}
	var upid string
	json.Unmarshal(d, &upid)
	deadline := time.Now().Add(5 * time.Minute)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	st, err := c.Client.WaitTask(upid, time.Until(deadline))
	if err != nil {
		return cliFail(argv, 255, err.Error())
	}
	if st != "OK" {
		return cliFail(argv, 255, st)
	}
	return nil
}
