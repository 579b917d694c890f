package virttest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lvhook/lvhook/virt"
)

// The calls of virt.Conn that `lvhook evacuate` makes, on the fake.

// Actions lists what was done to the fake's domains, in order: "migrate
// NAME DEST [MIGRATEURI]", "abort NAME", "managedsave NAME", "shutdown
// NAME", "destroy NAME".
func (f *Fake) Actions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.actions)
}

// MaxMigrating is the most migrations that were in flight at once.
func (f *Fake) MaxMigrating() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxInFlight
}

func (f *Fake) NodeFreeMemory(context.Context) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.FreeMemory, nil
}

func (f *Fake) DomainMemory(_ context.Context, uuid string) (uint64, error) {
	d, err := f.get(uuid, true)
	if err != nil {
		return 0, err
	}
	return d.Memory, nil
}

// act records an action on an active domain and returns it.
func (f *Fake) act(uuid, what string, extra ...string) (*FakeDomain, error) {
	d, err := f.get(uuid, true)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, strings.Join(append([]string{what, d.Name}, extra...), " "))
	return d, nil
}

// stop shuts a domain off and tells Stopped.
func (f *Fake) stop(uuid string, d *FakeDomain, reason string) {
	f.mu.Lock()
	d.State, d.Job = virt.StateShutoff, virt.Job{}
	stopped := f.Stopped
	f.mu.Unlock()
	if stopped != nil {
		stopped(uuid, reason)
	}
}

// Migrate holds (MigrateHold), fails (MigrateErr) or moves the domain away:
// shut off here, as libvirt leaves a persistent domain on its source.
func (f *Fake) Migrate(ctx context.Context, uuid string, m virt.Migration) error {
	extra := []string{m.DestURI}
	if m.MigrateURI != "" {
		extra = append(extra, m.MigrateURI)
	}
	d, err := f.act(uuid, "migrate", extra...)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	d.Job = virt.Job{Kind: virt.JobMigrationOut}
	d.Started = jobs.Add(1)
	hold, fail := d.MigrateHold, d.MigrateErr
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if hold != nil {
		t := time.NewTimer(m.Timeout)
		defer t.Stop()
		var why error
		select {
		case <-hold:
		case <-t.C:
			why = fmt.Errorf("not done within %s", m.Timeout)
		case <-ctx.Done():
			why = ctx.Err()
		}
		if why != nil {
			f.mu.Lock()
			f.actions = append(f.actions, "abort "+d.Name)
			d.Job = virt.Job{}
			f.mu.Unlock()
			return fmt.Errorf("migrate to %s: %w (%w)", m.DestURI, virt.ErrJobAborted, why)
		}
	}
	if fail != nil {
		f.mu.Lock()
		d.Job = virt.Job{}
		f.mu.Unlock()
		return fmt.Errorf("migrate to %s: %w", m.DestURI, fail)
	}
	f.stop(uuid, d, "migrated")
	return nil
}

func (f *Fake) ManagedSave(_ context.Context, uuid string, _ time.Duration) error {
	d, err := f.act(uuid, "managedsave")
	if err != nil {
		return err
	}
	if d.StopErr != nil {
		return fmt.Errorf("managed save: %w", d.StopErr)
	}
	f.mu.Lock()
	d.ManagedSaved = true
	f.mu.Unlock()
	f.stop(uuid, d, "saved")
	return nil
}

func (f *Fake) Shutdown(_ context.Context, uuid string) error {
	d, err := f.act(uuid, "shutdown")
	if err != nil {
		return err
	}
	switch {
	case d.StopErr != nil:
		return fmt.Errorf("shutdown: %w", d.StopErr)
	case d.ShutdownErr != nil:
		return fmt.Errorf("shutdown: %w", d.ShutdownErr)
	case !d.IgnoresShutdown:
		f.stop(uuid, d, "shutdown")
	}
	return nil
}

func (f *Fake) Destroy(_ context.Context, uuid string) error {
	d, err := f.act(uuid, "destroy")
	if err != nil {
		return err
	}
	if d.StopErr != nil {
		return fmt.Errorf("destroy: %w", d.StopErr)
	}
	f.stop(uuid, d, "destroyed")
	return nil
}
