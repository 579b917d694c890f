package migration

import (
	"context"
	"fmt"

	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/peer"
)

// Holds answers a HoldersRequest from this host's lvm and lvmlockd state. It
// only reads, so it takes no host lock.
func (h *Helper) Holds(ctx context.Context, req peer.HoldersRequest) peer.HoldersAnswer {
	ans := peer.HoldersAnswer{Host: h.Host, Holds: []peer.Hold{}}
	if err := req.Check(); err != nil {
		ans.Error = "malformed request: " + err.Error()
		return ans
	}
	var refs []lvmlock.Ref
	for _, l := range req.LVs {
		refs = append(refs, lvmlock.Ref{VG: l.VG, LV: l.LV})
	}
	if len(refs) == 0 {
		return ans
	}
	st, err := h.LVM.State(ctx, true, lvmlock.VGsOf(refs)...)
	if err != nil {
		ans.Error = fmt.Sprintf("cannot read the lock state on %s: %v", h.Host, err)
		return ans
	}
	for _, r := range refs {
		if m := st.Mode(r); m != lvmlock.ModeNone {
			ans.Holds = append(ans.Holds, peer.Hold{VG: r.VG, LV: r.LV, Mode: m})
		}
	}
	return ans
}
