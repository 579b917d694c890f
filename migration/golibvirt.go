package migration

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// DialLibvirt returns a Connector to the libvirtd (or virtqemud) listening on
// the UNIX socket at path, speaking qemu:///system.
func DialLibvirt(path string) Connector { return dialLibvirt(path, libvirtCallTimeout) }

// libvirtCallTimeout bounds each call to libvirtd, connecting included. It is
// above libvirt's own 30 s wait for a domain's job, so that a call waiting for
// one still gets libvirt's answer; a libvirtd that takes longer is taken for
// hung: the connection is closed and Run connects again.
const libvirtCallTimeout = 45 * time.Second

// closeTimeout bounds Close's goodbye to libvirtd (virConnectClose), after
// which the socket is closed anyway.
const closeTimeout = 5 * time.Second

func dialLibvirt(path string, timeout time.Duration) Connector {
	return func(ctx context.Context) (Libvirt, error) {
		return connectLibvirt(ctx, dialers.NewLocal(dialers.WithSocket(path), dialers.WithLocalTimeout(10*time.Second)), timeout)
	}
}

// errHung: libvirtd did not answer a call in time (the call timeout, or its
// caller's ctx).
var errHung = errors.New("libvirt did not answer")

func connectLibvirt(ctx context.Context, d socket.Dialer, timeout time.Duration) (Libvirt, error) {
	c := &conn{dialer: d}
	g := &goLibvirt{l: libvirt.NewWithDialer(c), conn: c, timeout: timeout}
	if err := do(ctx, g, timeout, func() error { return g.l.ConnectToURI(libvirt.QEMUSystem) }); err != nil {
		// Nothing will use this connection (a handshake libvirtd
		// refused leaves it open).
		c.close()
		return nil, fmt.Errorf("connect to libvirt: %w", err)
	}
	return g, nil
}

// goLibvirt implements Libvirt with go-libvirt. go-libvirt's calls take no
// context, and closing the socket is the one way to end a call that libvirtd
// does not answer: call bounds each one by its ctx and the call timeout, then
// closes the connection (Disconnected tells Run), which ends the call and the
// goroutines of the connection.
type goLibvirt struct {
	l       *libvirt.Libvirt
	conn    *conn
	timeout time.Duration
}

// conn is the dialer of one go-libvirt connection, which keeps the socket so
// that it can be closed from outside go-libvirt: go-libvirt's own Disconnect
// first sends virConnectClose, which a hung libvirtd never answers either.
type conn struct {
	dialer socket.Dialer
	mu     sync.Mutex
	c      net.Conn
	closed bool
}

func (c *conn) Dial() (net.Conn, error) {
	nc, err := c.dialer.Dial()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		nc.Close()
		return nil, errors.New("connection to libvirt abandoned")
	}
	c.c = nc
	return nc, nil
}

// close closes the socket, now or as soon as it is dialed.
func (c *conn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.c != nil {
		_ = c.c.Close()
	}
}

// call runs f, a go-libvirt call, until the first of its answer, ctx's end
// and the call timeout. Without an answer it closes the connection, which
// fails f (go-libvirt fails every call in flight when its socket is closed),
// and waits for f to return: no call outlives its caller. Disconnected then
// tells Run, which connects again.
//
// check's adapter (hook/check_libvirt.go, bounded) does the same: the two
// adapters are to be merged into one package.
func call[T any](ctx context.Context, g *goLibvirt, f func() (T, error)) (T, error) {
	return callWithin(ctx, g, g.timeout, f)
}

func callWithin[T any](ctx context.Context, g *goLibvirt, timeout time.Duration, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var err error
	select {
	case r := <-done:
		return r.v, r.err
	case <-t.C:
		err = fmt.Errorf("%w within %s: connection closed", errHung, timeout)
	case <-ctx.Done():
		err = fmt.Errorf("%w before its caller gave up: connection closed: %w", errHung, ctx.Err())
	}
	g.conn.close()
	<-done
	var zero T
	return zero, err
}

// do is call for a go-libvirt call that returns only an error.
func do(ctx context.Context, g *goLibvirt, timeout time.Duration, f func() error) error {
	_, err := callWithin(ctx, g, timeout, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

func (g *goLibvirt) ActiveDomains(ctx context.Context) ([]Domain, error) {
	doms, err := call(ctx, g, func() ([]libvirt.Domain, error) {
		doms, _, err := g.l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
		return doms, err
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
	d, err := call(ctx, g, func() (libvirt.Domain, error) { return g.l.DomainLookupByUUID(u) })
	if err != nil {
		return libvirt.Domain{}, mapError(err)
	}
	return d, nil
}

func (g *goLibvirt) DomainState(ctx context.Context, uuid string) (DomainState, error) {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return StateOther, err
	}
	state, err := call(ctx, g, func() (int32, error) {
		state, _, err := g.l.DomainGetState(d, 0)
		return state, err
	})
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
	case libvirt.DomainShutoff:
		return StateShutoff
	case libvirt.DomainCrashed:
		// libvirt lists a crashed domain as active: QEMU is kept.
		return StateCrashed
	}
	return StateOther
}

func (g *goLibvirt) DomainJob(ctx context.Context, uuid string) (Job, error) {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return Job{}, err
	}
	type stats struct {
		typ    int32
		params []libvirt.TypedParam
	}
	st, err := call(ctx, g, func() (stats, error) {
		typ, params, err := g.l.DomainGetJobStats(d, 0)
		return stats{typ, params}, err
	})
	return jobOf(st.typ, st.params, err)
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
	x, err := call(ctx, g, func() (string, error) { return g.l.DomainGetXMLDesc(d, 0) })
	if err != nil {
		return nil, mapError(err)
	}
	return []byte(x), nil
}

func (g *goLibvirt) LifecycleEvents(ctx context.Context) (<-chan Event, error) {
	out := make(chan Event)
	err := do(ctx, g, g.timeout, func() error {
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

func (g *goLibvirt) Disconnected() <-chan struct{} { return g.l.Disconnected() }

// Close says goodbye to libvirtd, bounded by closeTimeout, and closes the
// socket whatever the answer.
func (g *goLibvirt) Close() error {
	err := do(context.Background(), g, min(g.timeout, closeTimeout), g.l.Disconnect)
	g.conn.close()
	return err
}

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
