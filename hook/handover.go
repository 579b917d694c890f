package hook

import (
	"context"

	"github.com/lvhook/lvhook/domxml"
	"github.com/lvhook/lvhook/lvmlock"
)

// Handover is the destination's side of a live migration's lock handover,
// done by the peers' lock helpers (package migration). libvirt's order makes
// it two steps: the destination's migrate begin runs while the source
// already has its outgoing migration job, so it reserves the handover of
// that job for this host; the prepare that follows then asks that one source
// to downgrade. A source accepts one reservation per outgoing job and grants
// the downgrade only to the host that made it, during that job: a marker
// left by an offline migration or an older job reserves nothing.
type Handover interface {
	// Reserve asks the peers which one has d migrating out now and
	// reserves that job's handover for this host; it returns that peer.
	// Without a reservation the error wraps ErrHandoverRefused.
	Reserve(ctx context.Context, d *domxml.Domain) (source string, err error)
	// Downgrade asks source, which reserved the handover, to convert the
	// LVs to sh. Without its yes the error wraps ErrHandoverRefused.
	Downgrade(ctx context.Context, source string, d *domxml.Domain, refs []lvmlock.Ref) error
}
