package virt

import (
	"context"
	"errors"
	"fmt"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// What `lvhook evacuate` does to domains: the memory it needs, a live
// migration, a managed save, a shutdown, a destroy; and the host's free
// memory, which the lock helper tells its peers.

// Migration is a peer-to-peer live migration, as virsh migrate --live --p2p
// --abort-on-error DOMAIN DEST [--migrateuri MIGRATEURI] would start it:
// this host's libvirtd drives it, over its own connection to DestURI.
type Migration struct {
	// DestURI is the destination's libvirtd as this host's libvirtd
	// reaches it (qemu+tls://kvm2/system).
	DestURI string
	// MigrateURI, when set, is where QEMU sends the memory (migrate_uri).
	MigrateURI string
	// Timeout bounds the migration: its job is then aborted.
	Timeout time.Duration
}

// migrateFlags are those of virsh migrate --live --p2p --abort-on-error: the
// domain keeps running during the copy, libvirtd drives the migration to
// the destination itself, and an I/O error aborts it rather than pausing the
// guest halfway.
const migrateFlags = libvirt.MigrateLive | libvirt.MigratePeer2peer | libvirt.MigrateAbortOnError

// ErrJobAborted: a long job (a migration, a managed save) did not finish
// within its bound, or its caller gave up: it was aborted (virDomainAbortJob),
// and the domain still runs here.
var ErrJobAborted = errors.New("job aborted")

// abortWait bounds the wait for a long job's call to return once the job was
// aborted; its connection is then closed.
var abortWait = 30 * time.Second

// JobAbortBound is how long a long job (Migrate, ManagedSave) may outlive
// its deadline while it is aborted: the abort call's bound and the wait for
// the job to end. A caller that must act after the job keeps this much.
const JobAbortBound = callTimeout + 30*time.Second

// NodeFreeMemory is the host's free memory in bytes, as libvirt reports it
// (virNodeGetFreeMemory: free pages, without the page cache).
func (g *Conn) NodeFreeMemory(ctx context.Context) (uint64, error) {
	free, err := call(ctx, g, func() (uint64, error) { return g.l.NodeGetFreeMemory() })
	if err != nil {
		return 0, fmt.Errorf("free memory: %w", err)
	}
	return free, nil
}

// DomainMemory is the memory a domain may use, in bytes: its maximum
// (virDomainGetInfo's maxMem, virsh dominfo's "Max memory"), which its QEMU
// on a destination may allocate whatever the balloon holds now.
func (g *Conn) DomainMemory(ctx context.Context, uuid string) (uint64, error) {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return 0, err
	}
	kib, err := call(ctx, g, func() (uint64, error) {
		_, maxMem, _, _, _, err := g.l.DomainGetInfo(d)
		return maxMem, err
	})
	if err != nil {
		return 0, mapError(err)
	}
	return kib * 1024, nil
}

// Migrate live-migrates a domain to m.DestURI and returns once libvirt says
// it is done. The call lasts as long as the migration, so it runs on a
// connection of its own: the shared connection's call timeout would cut it.
// When m.Timeout passes or ctx ends first, the job is aborted and the error
// wraps ErrJobAborted; the domain then still runs here.
func (g *Conn) Migrate(ctx context.Context, uuid string, m Migration) error {
	params := []libvirt.TypedParam{}
	if m.MigrateURI != "" {
		params = append(params, libvirt.TypedParam{Field: libvirt.MigrateParamURI, Value: *libvirt.NewTypedParamValueString(m.MigrateURI)})
	}
	err := g.longJob(ctx, uuid, m.Timeout, func(l *libvirt.Libvirt, d libvirt.Domain) error {
		_, err := l.DomainMigratePerform3Params(d, libvirt.OptString{m.DestURI}, params, nil, migrateFlags)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate to %s: %w", m.DestURI, err)
	}
	return nil
}

// ManagedSave saves a domain's memory to libvirt's managed save image and
// stops it (virsh managedsave); its next start restores it. Bounded like a
// migration, on a connection of its own.
func (g *Conn) ManagedSave(ctx context.Context, uuid string, timeout time.Duration) error {
	err := g.longJob(ctx, uuid, timeout, func(l *libvirt.Libvirt, d libvirt.Domain) error {
		return l.DomainManagedSave(d, 0)
	})
	if err != nil {
		return fmt.Errorf("managed save: %w", err)
	}
	return nil
}

// Shutdown asks the guest to shut down (virsh shutdown: ACPI power button
// or guest agent, as libvirt chooses); it returns before the guest is off.
func (g *Conn) Shutdown(ctx context.Context, uuid string) error {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return err
	}
	if err := do(ctx, g, g.timeout, false, func() error { return g.l.DomainShutdownFlags(d, libvirt.DomainShutdownDefault) }); err != nil {
		return fmt.Errorf("shutdown: %w", mapError(err))
	}
	return nil
}

// Destroy stops a domain's QEMU at once (virsh destroy).
func (g *Conn) Destroy(ctx context.Context, uuid string) error {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return err
	}
	if err := do(ctx, g, g.timeout, false, func() error { return g.l.DomainDestroyFlags(d, 0) }); err != nil {
		return fmt.Errorf("destroy: %w", mapError(err))
	}
	return nil
}

// longJob runs f, a call that returns when a domain's job ends, on a new
// connection, for at most timeout and until ctx ends. Then it aborts the
// job over the shared connection and waits for f at most abortWait; a job
// that finished meanwhile is no error.
func (g *Conn) longJob(ctx context.Context, uuid string, timeout time.Duration, f func(*libvirt.Libvirt, libvirt.Domain) error) error {
	d, err := g.lookup(ctx, uuid)
	if err != nil {
		return err
	}
	jc, err := connect(ctx, g.conn.dialer, g.timeout)
	if err != nil {
		return err
	}
	defer jc.Close()
	done := make(chan error, 1)
	go func() { done <- f(jc.l, d) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var why error
	select {
	case err := <-done:
		return mapError(err)
	case <-t.C:
		why = fmt.Errorf("not done within %s", timeout)
	case <-ctx.Done():
		why = ctx.Err()
	}
	// The caller's ctx may be over: the abort has its own bound.
	abortErr := do(context.Background(), g, g.timeout, false, func() error { return g.l.DomainAbortJob(d) })
	select {
	case err := <-done:
		if err == nil {
			return nil
		}
	case <-time.After(abortWait):
		jc.abandoned.Store(true)
		jc.conn.close()
	}
	if abortErr != nil {
		return fmt.Errorf("%w (%w), and aborting it failed: %w", ErrJobAborted, why, mapError(abortErr))
	}
	return fmt.Errorf("%w (%w)", ErrJobAborted, why)
}
