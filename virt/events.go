package virt

import (
	"context"
	"fmt"

	libvirt "github.com/digitalocean/go-libvirt"
)

func (g *Conn) LifecycleEvents(ctx context.Context) (<-chan Event, error) {
	out := make(chan Event)
	err := do(ctx, g, g.timeout, false, func() error {
		in, err := g.l.LifecycleEvents(ctx)
		if err != nil {
			return err
		}
		// Started here, not after call returns: a registration that
		// succeeds after its caller gave up must be drained as well.
		go forwardEvents(ctx, in, out)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to lifecycle events: %w", err)
	}
	return out, nil
}

// forwardEvents passes go-libvirt's events on until in is closed (ctx ended
// or the connection is lost). Once ctx has ended it drops them, but reads in
// to its end: go-libvirt's goroutine, which blocks on sending an event,
// then sees ctx's end and unsubscribes.
func forwardEvents(ctx context.Context, in <-chan libvirt.DomainEventLifecycleMsg, out chan<- Event) {
	defer close(out)
	for m := range in {
		ev := Event{Domain: Domain{Name: m.Dom.Name, UUID: formatUUID(m.Dom.UUID)}, Kind: eventKind(m.Event, m.Detail)}
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	}
}

func eventKind(typ, detail int32) EventKind {
	switch libvirt.DomainEventType(typ) {
	case libvirt.DomainEventStarted:
		if libvirt.DomainEventStartedDetailType(detail) == libvirt.DomainEventStartedMigrated {
			return EventStartedMigrated
		}
		return EventStarted
	case libvirt.DomainEventSuspended:
		return EventSuspended
	case libvirt.DomainEventResumed:
		if libvirt.DomainEventResumedDetailType(detail) == libvirt.DomainEventResumedMigrated {
			return EventResumedMigrated
		}
		return EventResumed
	case libvirt.DomainEventStopped:
		switch libvirt.DomainEventStoppedDetailType(detail) {
		case libvirt.DomainEventStoppedMigrated:
			return EventStoppedMigrated
		case libvirt.DomainEventStoppedFailed:
			return EventStoppedFailed
		}
		return EventStopped
	}
	return EventOther
}
