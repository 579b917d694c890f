package migration

import (
	"context"
	"fmt"

	"github.com/lvhook/lvhook/peer"
)

// Capacity answers a peer's capacity question (`lvhook evacuate` on that
// peer): whether libvirt is connected here, its free memory and the domains
// running here, and whether this host is evacuating itself (draining). It
// only reads.
func (h *Helper) Capacity(ctx context.Context) peer.CapacityAnswer {
	ans := peer.CapacityAnswer{Host: h.Host}
	draining, err := h.State.Evacuating()
	// A marker that cannot be read may be there: take no domain.
	ans.Draining = draining || err != nil
	if err != nil {
		ans.Error = fmt.Sprintf("cannot tell whether %s is evacuating: %v", h.Host, err)
	}
	lv := h.libvirt()
	if lv == nil {
		ans.Error = fmt.Sprintf("the lock helper on %s is not connected to libvirt", h.Host)
		return ans
	}
	free, err := lv.NodeFreeMemory(ctx)
	if err != nil {
		ans.Error = fmt.Sprintf("libvirt on %s: %v", h.Host, err)
		return ans
	}
	doms, err := lv.ActiveDomains(ctx)
	if err != nil {
		ans.Error = fmt.Sprintf("libvirt on %s: %v", h.Host, err)
		return ans
	}
	ans.LibvirtUp, ans.FreeMemoryBytes, ans.ActiveDomains = true, int64(min(free, 1<<62)), len(doms)
	return ans
}
