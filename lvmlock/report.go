package lvmlock

import (
	"encoding/json"
	"fmt"
	"strings"
)

// LV is one row of `lvs --reportformat json` as lvhook reads it.
type LV struct {
	VG       string
	Name     string
	UUID     string
	LockType string // the VG's lock type: "sanlock", "dlm", "idm"; "" for a local VG
	Segtype  string // linear, striped, thin, raid1, ...
	Attr     string // lv_attr, e.g. "-wi-a-----"
	Active   bool   // active on this host (lv_active_locally)
	LockArgs string // lv_lockargs: where the LV's lease lives on the lock LV
}

// Shared reports whether the LV's VG is a shared (lvmlockd) VG.
func (lv LV) Shared() bool { return lv.LockType != "" && lv.LockType != "none" }

// SharedActivationProblem returns why the LV cannot be activated sh, or "".
// lvmlockd refuses sh for these types ("Shared activation not compatible with
// LV type"); lvhook says so before asking, with the reason.
func (lv LV) SharedActivationProblem() string {
	switch {
	case strings.HasPrefix(lv.Segtype, "thin"):
		return "a thin LV (its lock is its pool's, always exclusive)"
	case lv.Segtype == "cache" || lv.Segtype == "writecache" || lv.Segtype == "cache-pool":
		return "a " + lv.Segtype + " LV"
	case strings.HasPrefix(lv.Segtype, "raid") || lv.Segtype == "mirror":
		return "a " + lv.Segtype + " LV"
	case strings.HasPrefix(lv.Segtype, "vdo"):
		return "a VDO LV"
	case len(lv.Attr) > 0 && (lv.Attr[0] == 'o' || lv.Attr[0] == 'O'):
		return "the origin of a snapshot"
	case len(lv.Attr) > 0 && (lv.Attr[0] == 's' || lv.Attr[0] == 'S'):
		return "a snapshot"
	}
	return ""
}

// lvsFields are the columns asked of lvs, in ParseLVs' order.
const lvsFields = "vg_name,lv_name,lv_uuid,vg_lock_type,segtype,lv_attr,lv_active_locally,lv_lockargs"

type jsonReport struct {
	Report []struct {
		LV []map[string]string `json:"lv"`
		VG []map[string]string `json:"vg"`
	} `json:"report"`
	Log []struct {
		Type    string `json:"log_type"`
		Message string `json:"log_message"`
	} `json:"log"`
}

// ParseLVs decodes `lvs --reportformat json -o <lvsFields>` output (lvm
// 2.03.16: every value is a string; json_std needs 2.03.17).
func ParseLVs(out []byte) ([]LV, error) {
	var r jsonReport
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("decode lvs json report: %w", err)
	}
	var lvs []LV
	for _, rep := range r.Report {
		for _, row := range rep.LV {
			lvs = append(lvs, LV{
				VG:       row["vg_name"],
				Name:     row["lv_name"],
				UUID:     row["lv_uuid"],
				LockType: row["vg_lock_type"],
				Segtype:  row["segtype"],
				Attr:     row["lv_attr"],
				Active:   row["lv_active_locally"] != "",
				LockArgs: row["lv_lockargs"],
			})
		}
	}
	return lvs, nil
}

// reportErrors returns the error messages lvm put in the JSON log array.
func reportErrors(out []byte) string {
	var r jsonReport
	if json.Unmarshal(out, &r) != nil {
		return ""
	}
	var msgs []string
	for _, l := range r.Log {
		if l.Type == "error" {
			msgs = append(msgs, l.Message)
		}
	}
	return strings.Join(msgs, "\n")
}
