package hook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// LibvirtConn is check's read-only view of the local libvirtd, over its
// RPC protocol (github.com/digitalocean/go-libvirt): one
// virConnectGetAllDomainStats for the list and the states, then per domain
// virDomainGetXMLDesc and, for an active one, virDomainGetJobStats.
type LibvirtConn struct {
	l       *libvirt.Libvirt
	d       *closingDialer
	timeout time.Duration // of each call, when ctx does not end first

	mu   sync.Mutex
	doms map[string]libvirt.Domain // by UUID, from the last Domains
}

// ReadOnlySocket returns libvirt's read-only socket next to sock (which
// needs no root) when it exists, else sock itself.
func ReadOnlySocket(sock string) string {
	if _, err := os.Stat(sock + "-ro"); err == nil {
		return sock + "-ro"
	}
	return sock
}

// DialLibvirt connects to qemu:///system through the UNIX socket at path.
func DialLibvirt(ctx context.Context, path string) (*LibvirtConn, error) {
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	return NewLibvirtConn(ctx, dialers.NewLocal(dialers.WithSocket(path), dialers.WithLocalTimeout(timeout)))
}

// libvirtCallTimeout bounds each call to libvirtd, as the lock helper's
// does (migration's libvirtCallTimeout): above libvirt's own 30 s wait for a
// domain's job. check's ctx usually ends first.
const libvirtCallTimeout = 45 * time.Second

// closeTimeout bounds Close's goodbye to libvirtd (virConnectClose), after
// which the socket is closed anyway.
const closeTimeout = 5 * time.Second

// NewLibvirtConn connects to qemu:///system through dialer.
func NewLibvirtConn(ctx context.Context, dialer socket.Dialer) (*LibvirtConn, error) {
	return newLibvirtConn(ctx, dialer, libvirtCallTimeout)
}

func newLibvirtConn(ctx context.Context, dialer socket.Dialer, timeout time.Duration) (*LibvirtConn, error) {
	c := &LibvirtConn{d: &closingDialer{inner: dialer}, timeout: timeout, doms: map[string]libvirt.Domain{}}
	c.l = libvirt.NewWithDialer(c.d)
	if err := c.bounded(ctx, func() error { return c.l.ConnectToURI(libvirt.QEMUSystem) }); err != nil {
		// Nothing will use this connection (a handshake libvirtd
		// refused leaves it open).
		c.d.close()
		return nil, fmt.Errorf("connect to libvirt: %w", err)
	}
	return c, nil
}

// Close says goodbye to libvirtd, bounded by closeTimeout, and closes the
// socket whatever the answer.
func (c *LibvirtConn) Close() error {
	err := c.within(context.Background(), min(c.timeout, closeTimeout), c.l.Disconnect)
	c.d.close()
	return err
}

// Domains implements Libvirt with one virConnectGetAllDomainStats call.
func (c *LibvirtConn) Domains(ctx context.Context) ([]LibvirtDomain, error) {
	var recs []libvirt.DomainStatsRecord
	err := c.bounded(ctx, func() (err error) {
		recs, err = c.l.ConnectGetAllDomainStats(nil, uint32(libvirt.DomainStatsState), 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]LibvirtDomain, 0, len(recs))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		d := LibvirtDomain{Name: r.Dom.Name, UUID: formatUUID(r.Dom.UUID)}
		state := libvirt.DomainNostate
		for _, p := range r.Params {
			if p.Field == "state.state" {
				if v, ok := p.Value.I.(int32); ok {
					state = libvirt.DomainState(v)
				}
			}
		}
		d.State = stateName(state)
		// An inactive domain is shut off; every other state has a QEMU.
		d.Active = state != libvirt.DomainShutoff
		c.doms[d.UUID] = r.Dom
		out = append(out, d)
	}
	return out, nil
}

// XML implements Libvirt.
func (c *LibvirtConn) XML(ctx context.Context, d LibvirtDomain) ([]byte, error) {
	dom, err := c.domain(d)
	if err != nil {
		return nil, err
	}
	var x string
	err = c.bounded(ctx, func() (err error) {
		x, err = c.l.DomainGetXMLDesc(dom, 0)
		return err
	})
	return []byte(x), err
}

// Job implements Libvirt. A job without an operation field (libvirt older
// than 3.3) is JobOther. On a live migration's destination libvirt refuses
// job statistics: that refusal is JobMigrationIn, as for the lock helper.
func (c *LibvirtConn) Job(ctx context.Context, d LibvirtDomain) (Job, error) {
	dom, err := c.domain(d)
	if err != nil {
		return JobNone, err
	}
	var typ int32
	var params []libvirt.TypedParam
	err = c.bounded(ctx, func() (err error) {
		typ, params, err = c.l.DomainGetJobStats(dom, 0)
		return err
	})
	if incomingMigration(err) {
		return JobMigrationIn, nil
	}
	if err != nil {
		return JobNone, err
	}
	return jobOf(typ, params), nil
}

// incomingMigration tells libvirt's refusal of job statistics on a live
// migration's destination ("migration statistics are available only on the
// source host"), which is how an incoming migration shows.
func incomingMigration(err error) bool {
	var le libvirt.Error
	return errors.As(err, &le) && le.Code == uint32(libvirt.ErrOperationUnsupported) &&
		strings.Contains(le.Message, "only on the source host")
}

func (c *LibvirtConn) domain(d LibvirtDomain) (libvirt.Domain, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dom, ok := c.doms[d.UUID]
	if !ok {
		return dom, fmt.Errorf("domain %s: not in the last list", d.Name)
	}
	return dom, nil
}

// bounded runs f, one go-libvirt call, until the first of its answer, ctx's
// end and the call timeout. go-libvirt takes no context: without an answer
// the connection is closed, which fails every call in flight, and bounded
// waits for f to return, so that no call outlives it.
//
// The lock helper's adapter (migration/golibvirt.go, callWithin) does the
// same: the two adapters are to be merged into one package.
func (c *LibvirtConn) bounded(ctx context.Context, f func() error) error {
	return c.within(ctx, c.timeout, f)
}

func (c *LibvirtConn) within(ctx context.Context, timeout time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var err error
	select {
	case err := <-done:
		return err
	case <-t.C:
		err = fmt.Errorf("libvirt did not answer within %s: connection closed", timeout)
	case <-ctx.Done():
		err = fmt.Errorf("libvirt did not answer in time: %w", ctx.Err())
	}
	c.d.close()
	<-done
	return err
}

// jobOf reads virDomainGetJobStats' answer.
func jobOf(typ int32, params []libvirt.TypedParam) Job {
	if typ == int32(libvirt.DomainJobNone) {
		return JobNone
	}
	for _, p := range params {
		if p.Field != libvirt.DomainJobOperationStr {
			continue
		}
		v, _ := p.Value.I.(int32)
		switch libvirt.DomainJobOperation(v) {
		case libvirt.DomainJobOperationStrMigrationOut:
			return JobMigrationOut
		case libvirt.DomainJobOperationStrMigrationIn:
			return JobMigrationIn
		}
	}
	return JobOther
}

func stateName(s libvirt.DomainState) string {
	switch s {
	case libvirt.DomainRunning:
		return "running"
	case libvirt.DomainBlocked:
		return "blocked"
	case libvirt.DomainPaused:
		return "paused"
	case libvirt.DomainShutdown:
		return "shutdown"
	case libvirt.DomainShutoff:
		return "shutoff"
	case libvirt.DomainCrashed:
		return "crashed"
	case libvirt.DomainPmsuspended:
		return "pmsuspended"
	}
	return "nostate"
}

func formatUUID(u libvirt.UUID) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// closingDialer remembers the connection it made so that a call that
// outlives its context can be cut off.
type closingDialer struct {
	inner  socket.Dialer
	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

func (d *closingDialer) Dial() (net.Conn, error) {
	conn, err := d.inner.Dial()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		_ = conn.Close()
		return nil, errors.New("connection to libvirt abandoned")
	}
	d.conn = conn
	return conn, nil
}

// close closes the socket, now or as soon as it is dialed: a call cut
// while dialing must not go on to wait for libvirtd's answer.
func (d *closingDialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.conn != nil {
		_ = d.conn.Close()
	}
}

var _ Libvirt = (*LibvirtConn)(nil)
