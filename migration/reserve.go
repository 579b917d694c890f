package migration

import (
	"context"
	"fmt"

	"github.com/lvhook/lvhook/peer"
	"github.com/lvhook/lvhook/virt"
)

// reservation binds the handover of one outgoing migration job (by its
// start) to the one peer that is its destination.
type reservation struct {
	peer string
	// job is libvirt's own start of the job (asyncStarted, in ms): it
	// tells one job from the next exactly.
	job uint64
	// contested: another peer asked to reserve the same job. Only one host
	// can be its destination and the source cannot tell which, so
	// neither gets the handover and the migration is refused.
	contested bool
}

// Reserve answers a destination's migrate begin: yes when this host's
// libvirt shows the domain with an outgoing migration job and no other peer
// reserved that job's handover. libvirt runs the destination's migrate begin
// after the source's job began and before anything is copied, so the first
// peer to reserve during the job is the host libvirt migrates to; a host
// that merely holds an old marker runs no migrate begin and cannot. It
// changes no lock: Downgrade, later in the same migration, does.
func (h *Helper) Reserve(ctx context.Context, from string, req peer.Request) (ans peer.Answer) {
	_, refuse, done := h.answering(from, req, &ans)
	defer done("handover reservation answered")
	if from == h.Host {
		return refuse("%s cannot migrate a domain to itself", h.Host)
	}
	dom, why := h.examine(ctx, peer.ReservePath, req)
	if dom == nil {
		return refuse("%s", why)
	}
	flags, why := h.liveJob(dom.Name)
	if why != "" {
		return refuse("%s", why)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if r, ok := h.reservations[req.UUID]; ok && r.job == flags.Started && (r.contested || r.peer != from) {
		r.contested = true
		h.reservations[req.UUID] = r
		return refuse("%s and %s both asked for the handover of %s's migration job: neither gets it", r.peer, from, dom.Name)
	}
	if h.reservations == nil {
		h.reservations = map[string]reservation{}
	}
	h.reservations[req.UUID] = reservation{peer: from, job: flags.Started}
	ans.Granted = true
	return ans
}

func (h *Helper) jobFlags(name string) (virt.JobFlags, error) {
	if h.JobFlags != nil {
		return h.JobFlags(name)
	}
	return virt.ReadJobFlags(virt.LibvirtStatusDir, name)
}

// liveJob reads the job of domain name from libvirt's status file: an
// outgoing live migration's, with its start, or why not.
func (h *Helper) liveJob(name string) (virt.JobFlags, string) {
	flags, err := h.jobFlags(name)
	switch {
	case err != nil:
		return flags, fmt.Sprintf("cannot tell whether the migration of %s on %s is live: %v", name, h.Host, err)
	case flags.Async != virt.AsyncMigrationOut:
		return flags, fmt.Sprintf("libvirt on %s records no outgoing migration job of %s (job: %s)", h.Host, name, flags.Async)
	case flags.Offline():
		return flags, fmt.Sprintf("the migration of %s from %s is offline (--offline): the domain keeps running on %s, nothing to hand over", name, h.Host, h.Host)
	case flags.Started == 0:
		return flags, fmt.Sprintf("libvirt on %s does not record when the migration job of %s began", h.Host, name)
	}
	return flags, ""
}

// reservedFor returns the job running now (read again from libvirt: a
// reservation of an earlier job, or an offline job that followed it, is no
// grant) when peer reserved its handover, else why not.
func (h *Helper) reservedFor(uuid, name, from string) (job uint64, why string) {
	flags, why := h.liveJob(name)
	if why != "" {
		return 0, why
	}
	h.mu.Lock()
	r, found := h.reservations[uuid]
	h.mu.Unlock()
	switch {
	case !found || r.job != flags.Started:
		return 0, fmt.Sprintf("no handover of %s is reserved for its current migration job (the destination's migrate begin reserves it; a start after an offline or an older migration has none)", name)
	case r.contested:
		return 0, fmt.Sprintf("two hosts asked for the handover of %s's migration job: neither gets it", name)
	case r.peer != from:
		return 0, fmt.Sprintf("the handover of %s is reserved for %s, the destination of this migration", name, r.peer)
	}
	return r.job, ""
}
