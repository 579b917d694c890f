package virt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// Dialer returns a Connector to the libvirtd (or virtqemud) listening on
// the UNIX socket at path, speaking qemu:///system.
func Dialer(path string) Connector {
	return func(ctx context.Context) (Libvirt, error) {
		c, err := Connect(ctx, path)
		if err != nil {
			return nil, err // not a nil *Conn in a non-nil Libvirt
		}
		return c, nil
	}
}

// Connect connects to the libvirtd (or virtqemud) listening on the UNIX
// socket at path, speaking qemu:///system.
func Connect(ctx context.Context, path string) (*Conn, error) {
	return connect(ctx, dialers.NewLocal(dialers.WithSocket(path), dialers.WithLocalTimeout(10*time.Second)), callTimeout)
}

// ReadOnlySocket returns libvirt's read-only socket next to sock (which
// needs no root) when it exists, else sock itself.
func ReadOnlySocket(sock string) string {
	if _, err := os.Stat(sock + "-ro"); err == nil {
		return sock + "-ro"
	}
	return sock
}

// callTimeout bounds each call to libvirtd, connecting included. It is
// above libvirt's own 30 s wait for a domain's job, so that a call waiting for
// one still gets libvirt's answer; a libvirtd that takes longer is taken for
// hung: the connection is closed and Run connects again.
const callTimeout = 45 * time.Second

// closeTimeout bounds Close's goodbye to libvirtd (virConnectClose), after
// which the socket is closed anyway.
const closeTimeout = 5 * time.Second

// errHung: libvirtd did not answer a call in time (the call timeout, or its
// caller's ctx).
var errHung = errors.New("libvirt did not answer")

// ConnectWith connects to qemu:///system through d, each call bounded by
// callTimeout.
func ConnectWith(ctx context.Context, d socket.Dialer, callTimeout time.Duration) (*Conn, error) {
	return connect(ctx, d, callTimeout)
}

func connect(ctx context.Context, d socket.Dialer, timeout time.Duration) (*Conn, error) {
	c := &conn{dialer: d}
	g := &Conn{l: libvirt.NewWithDialer(c), conn: c, timeout: timeout, handles: map[string]libvirt.Domain{}}
	if err := do(ctx, g, timeout, true, func() error { return g.l.ConnectToURI(libvirt.QEMUSystem) }); err != nil {
		// Nothing will use this connection (a handshake libvirtd
		// refused leaves it open).
		c.close()
		return nil, fmt.Errorf("connect to libvirt: %w", err)
	}
	return g, nil
}

// Conn is a connection to the local libvirtd over its RPC protocol
// (github.com/digitalocean/go-libvirt); it implements Libvirt, and Domains
// for `lvhook check`. go-libvirt's calls take no
// context, and closing the socket is the one way to end a call that libvirtd
// does not answer: call bounds each one by its ctx and the call timeout, then
// closes the connection (Disconnected tells Run), which ends the call and the
// goroutines of the connection.
type Conn struct {
	l       *libvirt.Libvirt
	conn    *conn
	timeout time.Duration

	mu sync.Mutex
	// handles are the domains of the last Domains, by UUID: the calls
	// that follow a listing need no lookup.
	handles map[string]libvirt.Domain
	// abandoned: a caller gave up on a call (Close then says no goodbye).
	abandoned atomic.Bool
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

// call runs f, a go-libvirt call, for its caller until the first of its
// answer, ctx's end and the call timeout.
//
//   - No answer within the call timeout: libvirtd is taken for hung. The
//     connection is closed, which fails f and every other call in flight
//     (go-libvirt fails them when its socket closes); Disconnected then
//     tells Run, which connects again.
//   - ctx ends first: the caller gets ctx's error at once, and the call goes
//     on in the background, still bounded by the call timeout. The
//     connection is shared (the peer server's requests and the
//     reconciler), so one caller that gives up, such as a peer's request
//     with a short deadline, must not cut it for the others.
//
// After a cut, call waits for f's goroutine for at most closeTimeout: f
// returns once go-libvirt sees its socket closed, and the bound keeps a
// go-libvirt that does not (a deadlock in its reader) from hanging the
// caller for good.
func call[T any](ctx context.Context, g *Conn, f func() (T, error)) (T, error) {
	return callWithin(ctx, g, g.timeout, false, f)
}

// callWithin is call with its own timeout; cutOnCancel closes the
// connection when ctx ends too, for the connection's own handshake and
// goodbye, which no one else shares.
func callWithin[T any](ctx context.Context, g *Conn, timeout time.Duration, cutOnCancel bool, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	// cut closes the connection and waits for f, at most closeTimeout.
	cut := func() {
		g.conn.close()
		select {
		case <-done:
		case <-time.After(closeTimeout):
		}
	}
	t := time.NewTimer(timeout)
	var zero T
	select {
	case r := <-done:
		t.Stop()
		return r.v, r.err
	case <-t.C:
		cut()
		return zero, fmt.Errorf("%w within %s: connection closed", errHung, timeout)
	case <-ctx.Done():
		if cutOnCancel {
			t.Stop()
			cut()
			return zero, fmt.Errorf("%w before its caller gave up: connection closed: %w", errHung, ctx.Err())
		}
		g.abandoned.Store(true)
		go func() {
			select {
			case <-done:
				t.Stop()
			case <-t.C:
				cut()
			}
		}()
		return zero, fmt.Errorf("%w before its caller gave up: %w", errHung, ctx.Err())
	}
}

// do is callWithin for a go-libvirt call that returns only an error.
func do(ctx context.Context, g *Conn, timeout time.Duration, cutOnCancel bool, f func() error) error {
	_, err := callWithin(ctx, g, timeout, cutOnCancel, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

func (g *Conn) ActiveDomains(ctx context.Context) ([]Domain, error) {
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

// Domains lists every domain defined or running here with its state, in one
// virConnectGetAllDomainStats call, and keeps their handles for the calls
// that follow.
func (g *Conn) Domains(ctx context.Context) ([]Listed, error) {
	recs, err := call(ctx, g, func() ([]libvirt.DomainStatsRecord, error) {
		return g.l.ConnectGetAllDomainStats(nil, uint32(libvirt.DomainStatsState), 0)
	})
	if err != nil {
		return nil, err
	}
	out := make([]Listed, 0, len(recs))
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.handles)
	for _, r := range recs {
		state := libvirt.DomainNostate
		for _, p := range r.Params {
			if v, ok := p.Value.I.(int32); ok && p.Field == "state.state" {
				state = libvirt.DomainState(v)
			}
		}
		d := Listed{Domain: Domain{Name: r.Dom.Name, UUID: formatUUID(r.Dom.UUID)}, State: stateOf(state), StateName: stateName(state)}
		g.handles[d.UUID] = r.Dom
		out = append(out, d)
	}
	return out, nil
}

func (g *Conn) lookup(ctx context.Context, uuid string) (libvirt.Domain, error) {
	g.mu.Lock()
	d, listed := g.handles[uuid]
	g.mu.Unlock()
	if listed {
		return d, nil
	}
	u, err := parseUUID(uuid)
	if err != nil {
		return libvirt.Domain{}, err
	}
	d, err = call(ctx, g, func() (libvirt.Domain, error) { return g.l.DomainLookupByUUID(u) })
	if err != nil {
		return libvirt.Domain{}, mapError(err)
	}
	return d, nil
}

func (g *Conn) DomainState(ctx context.Context, uuid string) (DomainState, error) {
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

func (g *Conn) DomainJob(ctx context.Context, uuid string) (Job, error) {
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

// DomainAutostart tells whether libvirt starts the domain when its daemon
// starts (virsh autostart).
func (g *Conn) DomainAutostart(ctx context.Context, uuid string) (bool, error) {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return false, err
	}
	on, err := call(ctx, g, func() (int32, error) { return g.l.DomainGetAutostart(d) })
	if err != nil {
		return false, mapError(err)
	}
	return on != 0, nil
}

func (g *Conn) DomainXML(ctx context.Context, uuid string) ([]byte, error) {
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

func (g *Conn) Disconnected() <-chan struct{} { return g.l.Disconnected() }

// Close says goodbye to libvirtd, bounded by closeTimeout, and closes the
// socket whatever the answer.
func (g *Conn) Close() error {
	if g.abandoned.Load() {
		// A caller gave up on libvirtd: no goodbye it may not answer
		// either (check's --timeout is then its whole run).
		g.conn.close()
		return nil
	}
	err := do(context.Background(), g, min(g.timeout, closeTimeout), true, g.l.Disconnect)
	g.conn.close()
	return err
}
