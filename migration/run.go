package migration

import (
	"context"
	"time"

	"github.com/lvhook/lvhook/internal/clock"
	"github.com/lvhook/lvhook/virt"
)

// Reconnection pace when libvirtd is down or restarting, unless the Helper's
// ReconnectMin and ReconnectMax say otherwise.
const (
	reconnectMin = time.Second
	reconnectMax = 30 * time.Second
)

// Run is the lock helper's main loop: connect to libvirtd (again and again,
// with backoff, when it restarts), subscribe to lifecycle events before the
// full reconciliation so that none is missed, then handle events and timers
// until ctx ends. notify, when not nil, gets sd_notify states: READY=1 after
// the first connection attempt, whatever its outcome (a libvirtd that is down
// must not keep the unit from starting), then STATUS= changes.
func (h *Helper) Run(ctx context.Context, connect virt.Connector, notify func(state string)) {
	if notify == nil {
		notify = func(string) {}
	}
	ready := false
	status := func(s string) {
		if !ready {
			ready = true
			notify("READY=1\nSTATUS=" + s)
			return
		}
		notify("STATUS=" + s)
	}
	lo, hi := reconnectMin, reconnectMax
	if h.ReconnectMin > 0 {
		lo, hi = h.ReconnectMin, max(h.ReconnectMin, h.ReconnectMax)
	}
	delay := lo
	for ctx.Err() == nil {
		lv, events, cancel, err := h.subscribe(ctx, connect)
		if err != nil {
			h.Log.Warn().Err(err).Dur("retry_in", delay).Msg("libvirt not reachable")
			status("waiting for libvirt: " + err.Error())
			if clock.Sleep(ctx, delay) != nil {
				return
			}
			delay = min(2*delay, hi)
			continue
		}
		delay = lo
		h.Connected(ctx, lv)
		status("connected to libvirt")
		h.serve(ctx, lv, events)
		cancel()
		h.Disconnected()
		_ = lv.Close()
		if ctx.Err() != nil {
			return
		}
		h.Log.Warn().Msg("libvirt connection lost; reconnecting")
		status("libvirt connection lost; reconnecting")
	}
}

func (h *Helper) subscribe(ctx context.Context, connect virt.Connector) (virt.Libvirt, <-chan virt.Event, context.CancelFunc, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	lv, err := connect(cctx)
	cancel()
	if err != nil {
		return nil, nil, nil, err
	}
	ectx, ecancel := context.WithCancel(ctx)
	events, err := lv.LifecycleEvents(ectx)
	if err != nil {
		ecancel()
		_ = lv.Close()
		return nil, nil, nil, err
	}
	return lv, events, ecancel, nil
}

// serve handles events and timers until the connection is lost or ctx ends.
func (h *Helper) serve(ctx context.Context, lv virt.Libvirt, events <-chan virt.Event) {
	for {
		wait := max(h.NextWake().Sub(h.now()), 10*time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-lv.Disconnected():
			t.Stop()
			return
		case ev, ok := <-events:
			t.Stop()
			if !ok {
				return
			}
			h.HandleEvent(ctx, ev)
		case <-t.C:
			h.Tick(ctx)
		}
	}
}
