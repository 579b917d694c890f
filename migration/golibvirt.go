package migration

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// DialLibvirt returns a Connector to the libvirtd (or virtqemud) listening on
// the UNIX socket at path, speaking qemu:///system.
func DialLibvirt(path string) Connector {
	return func(ctx context.Context) (Libvirt, error) {
		return connectLibvirt(ctx, dialers.NewLocal(dialers.WithSocket(path), dialers.WithLocalTimeout(10*time.Second)))
	}
}

func connectLibvirt(ctx context.Context, d socket.Dialer) (Libvirt, error) {
	l := libvirt.NewWithDialer(d)
	if err := call(ctx, func() error { return l.ConnectToURI(libvirt.QEMUSystem) }); err != nil {
		return nil, fmt.Errorf("connect to libvirt: %w", err)
	}
	return &goLibvirt{l: l}, nil
}

// goLibvirt implements Libvirt with go-libvirt. go-libvirt's calls take no
// context: call bounds each one so that a hung libvirtd cannot hang the lock
// helper (the abandoned call ends when the connection is closed).
type goLibvirt struct{ l *libvirt.Libvirt }

func call(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *goLibvirt) ActiveDomains(ctx context.Context) ([]Domain, error) {
	var doms []libvirt.Domain
	err := call(ctx, func() (err error) {
		doms, _, err = g.l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list active domains: %w", err)
	}
	out := make([]Domain, len(doms))
	for i, d := range doms {
		out[i] = Domain{Name: d.Name, UUID: formatUUID(d.UUID)}
	}
	return out, nil
}

func (g *goLibvirt) lookup(ctx context.Context, uuid string) (libvirt.Domain, error) {
	u, err := parseUUID(uuid)
	if err != nil {
		return libvirt.Domain{}, err
	}
	var d libvirt.Domain
	err = call(ctx, func() (err error) { d, err = g.l.DomainLookupByUUID(u); return err })
	if err != nil {
		return d, mapError(err)
	}
	return d, nil
}

func (g *goLibvirt) DomainState(ctx context.Context, uuid string) (DomainState, error) {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return StateOther, err
	}
	var state int32
	err = call(ctx, func() (err error) { state, _, err = g.l.DomainGetState(d, 0); return err })
	if err != nil {
		return StateOther, mapError(err)
	}
	return stateOf(libvirt.DomainState(state)), nil
}

func stateOf(s libvirt.DomainState) DomainState {
	switch s {
	case libvirt.DomainRunning:
		return StateRunning
	case libvirt.DomainPaused, libvirt.DomainPmsuspended:
		return StatePaused
	case libvirt.DomainShutoff, libvirt.DomainCrashed:
		return StateShutoff
	}
	return StateOther
}

func (g *goLibvirt) DomainJob(ctx context.Context, uuid string) (Job, error) {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return Job{}, err
	}
	var typ int32
	var params []libvirt.TypedParam
	err = call(ctx, func() (err error) { typ, params, err = g.l.DomainGetJobStats(d, 0); return err })
	return jobOf(typ, params, err)
}

// jobOf reads virDomainGetJobStats' answer. On a migration's destination
// libvirt refuses the call ("migration statistics are available only on the
// source host"): that refusal is how an incoming migration shows.
func jobOf(typ int32, params []libvirt.TypedParam, err error) (Job, error) {
	if err != nil {
		var le libvirt.Error
		if errors.As(err, &le) && le.Code == uint32(libvirt.ErrOperationUnsupported) &&
			strings.Contains(le.Message, "only on the source host") {
			return Job{Kind: JobMigrationIn}, nil
		}
		return Job{}, mapError(err)
	}
	if libvirt.DomainJobType(typ) == libvirt.DomainJobNone {
		return Job{Kind: JobNone}, nil
	}
	job := Job{Kind: JobUnknown}
	for _, p := range params {
		switch p.Field {
		case libvirt.DomainJobOperationStr:
			op, ok := p.Value.I.(int32)
			if !ok {
				continue
			}
			switch libvirt.DomainJobOperation(op) {
			case libvirt.DomainJobOperationStrMigrationOut:
				job.Kind = JobMigrationOut
			case libvirt.DomainJobOperationStrMigrationIn:
				job.Kind = JobMigrationIn
			case libvirt.DomainJobOperationStrUnknown:
			default:
				job.Kind = JobOther
			}
		case libvirt.DomainJobTimeElapsed:
			if ms, ok := p.Value.I.(uint64); ok {
				job.Elapsed = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return job, nil
}

func (g *goLibvirt) DomainXML(ctx context.Context, uuid string) ([]byte, error) {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return nil, err
	}
	var x string
	err = call(ctx, func() (err error) { x, err = g.l.DomainGetXMLDesc(d, 0); return err })
	if err != nil {
		return nil, mapError(err)
	}
	return []byte(x), nil
}

func (g *goLibvirt) LifecycleEvents(ctx context.Context) (<-chan Event, error) {
	var in <-chan libvirt.DomainEventLifecycleMsg
	err := call(ctx, func() (err error) { in, err = g.l.LifecycleEvents(ctx); return err })
	if err != nil {
		return nil, fmt.Errorf("subscribe to lifecycle events: %w", err)
	}
	out := make(chan Event)
	go func() {
		defer close(out)
		for m := range in {
			ev := Event{Domain: Domain{Name: m.Dom.Name, UUID: formatUUID(m.Dom.UUID)}, Kind: eventKind(m.Event, m.Detail)}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
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

func (g *goLibvirt) Disconnected() <-chan struct{} { return g.l.Disconnected() }

func (g *goLibvirt) Close() error { return g.l.Disconnect() }

// mapError turns libvirt's "no domain" errors into ErrNoDomain.
func mapError(err error) error {
	var le libvirt.Error
	if errors.As(err, &le) {
		switch libvirt.ErrorNumber(le.Code) {
		case libvirt.ErrNoDomain:
			return fmt.Errorf("%w: %s", ErrNoDomain, le.Message)
		case libvirt.ErrOperationInvalid:
			if strings.Contains(le.Message, "not running") {
				return fmt.Errorf("%w: %s", ErrNoDomain, le.Message)
			}
		}
	}
	return err
}

func formatUUID(u libvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func parseUUID(s string) (libvirt.UUID, error) {
	var u libvirt.UUID
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(u) {
		return u, fmt.Errorf("%q is not a domain UUID", s)
	}
	copy(u[:], b)
	return u, nil
}
