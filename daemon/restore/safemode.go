package restore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
)

// Under SafeMode an array refuses to eradicate some or all destroyed objects (manual
// eradication disabled array-wide, or a ratcheted retention lock on a protection group the
// object is in); they stay destroyed, their names taken, until the array eradicates them
// itself when their eradication delay ends. pvesnap then says so, with the date, and lists
// such objects of its own as pending.

// PendingEradication explains a refused eradication of volume name on array: why, as far as
// the array's eradication settings tell, and when the array will eradicate it.
func PendingEradication(ctx context.Context, c *pure.Client, array, name string, refusal error) string {
	why := ""
	if arrs, err := c.Arrays(ctx); err == nil && len(arrs) == 1 && arrs[0].EradicationConfig != nil {
		switch arrs[0].EradicationConfig.ManualEradication {
		case "all-disabled":
			why = "; SafeMode: manual eradication is disabled on the array"
		case "partially-disabled":
			why = "; SafeMode: a retention-locked protection group holds it"
		}
	}
	var msg string
	var ae *pure.Error
	if errors.As(refusal, &ae) {
		msg = ae.Message
	} else {
		msg = refusal.Error()
	}
	when := "when its eradication delay ends"
	if v, err := c.Volume(ctx, name); err == nil && v.TimeRemaining != nil {
		when = "on " + eradicationDate(time.Now(), *v.TimeRemaining)
	}
	return fmt.Sprintf("array %s refuses to eradicate %s (%s%s): it stays destroyed, its name taken, until the array eradicates it by itself %s",
		array, name, msg, why, when)
}

func eradicationDate(now time.Time, remainingMS int64) string {
	return now.Add(time.Duration(remainingMS) * time.Millisecond).UTC().Format("2006-01-02 15:04 UTC")
}

// Pending is a temporary volume of this cluster that an array holds destroyed until it
// eradicates it.
type Pending struct {
	Array      string `json:"array"`
	Volume     string `json:"volume"`
	Serial     string `json:"serial"`
	Job        string `json:"job"`
	Eradicates int64  `json:"eradicates"` // unix seconds (0: unknown)
	Manual     string `json:"manual_eradication,omitempty"`
	// Error is why an array could not be asked (its row has no volume).
	Error string `json:"error,omitempty"`
}

// Pending lists the temporary volumes of this cluster that the arrays hold destroyed; an
// array that cannot be asked is a row with its error.
func (r *Restorer) Pending(ctx context.Context) ([]Pending, error) {
	id, err := NewIdentity(r.VMs.PVE, r.Node)
	if err != nil {
		return nil, err
	}
	found, err := r.clusterTemps(ctx, id)
	if err != nil {
		return nil, err
	}
	out := []Pending{}
	now := time.Now()
	for _, at := range found {
		if at.err != nil {
			out = append(out, Pending{Array: at.array.ID, Error: at.err.Error()})
			continue
		}
		manual := ""
		if arr, err := at.client.Arrays(ctx); err == nil && len(arr) == 1 && arr[0].EradicationConfig != nil {
			manual = arr[0].EradicationConfig.ManualEradication
		}
		for _, v := range at.vols {
			if !v.Destroyed {
				continue
			}
			p := Pending{Array: at.array.ID, Volume: v.Name, Serial: v.Serial, Job: v.match[3], Manual: manual}
			if v.TimeRemaining != nil {
				p.Eradicates = now.Add(time.Duration(*v.TimeRemaining) * time.Millisecond).Unix()
			}
			out = append(out, p)
		}
	}
	return out, nil
}
