package virt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/internal/testutil"
)

// More RPC procedures (libvirt's remote_protocol.x).
const (
	procDomainGetInfo               = 16
	procNodeGetFreeMemory           = 102
	procDomainAbortJob              = 164
	procDomainManagedSave           = 182
	procDomainDestroyFlags          = 234
	procDomainShutdownFlags         = 258
	procDomainMigratePerform3Params = 305
)

// control is the test libvirtd's part for evacuate's calls: it records
// them ("migrate NAME DEST migrate_uri=X flags=0x..", "abort NAME", ...) and
// answers as set.
type control struct {
	mu    sync.Mutex
	dials int
	calls []string
	// freeMemory answers virNodeGetFreeMemory, in bytes.
	freeMemory uint64
	// migrateErr fails migrations; holdMigration answers a migration only
	// once its job is aborted, with libvirt's error for that, unless
	// abortIgnored (the abort is acknowledged, the migration goes on).
	migrateErr                  *libvirt.Error
	holdMigration, abortIgnored bool
	aborted                     chan struct{}
}

func (c *control) record(call string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, call)
}

func (c *control) recorded() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

// errAborted is libvirt's error for a migration whose job was aborted.
var errAborted = &libvirt.Error{Code: uint32(libvirt.ErrOperationAborted), Message: "operation aborted: migration out job: canceled by client"}

func (d *libvirtd) answerControl(proc uint32, args []byte) ([]byte, *libvirt.Error) {
	var b xdrBuf
	if proc == procNodeGetFreeMemory {
		_ = binary.Write(&b, binary.BigEndian, d.freeMemory)
		return b.Bytes(), nil
	}
	dom, fail := d.domain(args)
	if fail != nil {
		return nil, fail
	}
	notRunning := &libvirt.Error{Code: uint32(libvirt.ErrOperationInvalid), Message: "Requested operation is not valid: domain is not running"}
	switch proc {
	case procDomainGetInfo:
		b.u32(uint32(dom.state))
		_ = binary.Write(&b, binary.BigEndian, dom.maxMemKiB)
		_ = binary.Write(&b, binary.BigEndian, dom.maxMemKiB/2) // the balloon
		b.u32(2)                                                // vCPUs
		_ = binary.Write(&b, binary.BigEndian, uint64(0))
		return b.Bytes(), nil
	case procDomainMigratePerform3Params:
		d.record("migrate " + dom.name + " " + migrateArgs(args))
		d.mu.Lock()
		hold, fail := d.holdMigration, d.migrateErr
		if d.aborted == nil {
			d.aborted = make(chan struct{})
		}
		aborted := d.aborted
		d.mu.Unlock()
		switch {
		case hold:
			<-aborted
			return nil, errAborted
		case fail != nil:
			return nil, fail
		}
		b.u32(0) // no cookie
		return b.Bytes(), nil
	case procDomainAbortJob:
		d.record("abort " + dom.name)
		d.mu.Lock()
		if d.aborted == nil {
			d.aborted = make(chan struct{})
		}
		if !d.abortIgnored {
			close(d.aborted)
		}
		d.mu.Unlock()
		return nil, nil
	case procDomainManagedSave, procDomainShutdownFlags, procDomainDestroyFlags:
		d.record(map[uint32]string{procDomainManagedSave: "managedsave", procDomainShutdownFlags: "shutdown",
			procDomainDestroyFlags: "destroy"}[proc] + " " + dom.name)
		if dom.state != libvirt.DomainRunning {
			return nil, notRunning
		}
		return nil, nil
	}
	return nil, &libvirt.Error{Code: 1, Message: "unknown procedure"}
}

// migrateArgs renders remote_domain_migrate_perform3_params_args after
// the domain: the destination, the typed parameters and the flags.
func migrateArgs(args []byte) string {
	r := xdrReader{b: args}
	r.str()     // domain name
	r.skip(16)  // UUID
	r.skip(4)   // id
	dest := "-" // remote_string: optional
	if r.u32() == 1 {
		dest = r.str()
	}
	out := []string{dest}
	for n := r.u32(); n > 0; n-- {
		field := r.str()
		if typ := r.u32(); typ == 7 { // VIR_TYPED_PARAM_STRING
			out = append(out, field+"="+r.str())
		} else {
			out = append(out, fmt.Sprintf("%s=(type %d)", field, typ))
			r.skip(4)
		}
	}
	r.skip(int((r.u32() + 3) / 4 * 4)) // cookie
	return strings.Join(append(out, fmt.Sprintf("flags=%#x", r.u32())), " ")
}

// xdrReader reads XDR; a short buffer reads as zeros.
type xdrReader struct{ b []byte }

func (r *xdrReader) skip(n int) { r.b = r.b[min(n, len(r.b)):] }

func (r *xdrReader) u32() uint32 {
	if len(r.b) < 4 {
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *xdrReader) str() string {
	n := int(r.u32())
	s := string(r.b[:min(n, len(r.b))])
	r.skip((n + 3) / 4 * 4)
	return s
}

// controlled connects to a test libvirtd with one running domain, web (and
// db, shut off), listed so that calls need no lookup.
func controlled(t *testing.T, d *libvirtd) (*Conn, string, string) {
	t.Helper()
	d.doms = []libvirtdDomain{
		{name: "web", uuid: libvirtUUID(t, "5153242e-c6bd-4459-a9ff-20ca798f3171"), state: libvirt.DomainRunning, maxMemKiB: 4 << 20},
		{name: "db", uuid: libvirtUUID(t, "240d94c5-f047-458b-89f1-cd3ae6d62b5d"), state: libvirt.DomainShutoff},
	}
	conn, err := connect(context.Background(), d, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Domains(context.Background()); err != nil {
		t.Fatal(err)
	}
	return conn, "5153242e-c6bd-4459-a9ff-20ca798f3171", "240d94c5-f047-458b-89f1-cd3ae6d62b5d"
}

// TestLibvirtConnMigrate: a migration is libvirt's peer-to-peer live
// migration (flags live|peer2peer|abort-on-error = 0x1003) to the given
// libvirtd, with migrate_uri when set, on a connection of its own.
func TestLibvirtConnMigrate(t *testing.T) {
	d := &libvirtd{}
	conn, web, _ := controlled(t, d)
	ctx := context.Background()
	if err := conn.Migrate(ctx, web, Migration{DestURI: "qemu+tls://kvm2/system", MigrateURI: "tcp://10.0.0.2", Timeout: time.Minute}); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := conn.Migrate(ctx, web, Migration{DestURI: "qemu+tcp://kvm3/system", Timeout: time.Minute}); err != nil {
		t.Fatalf("Migrate without migrate_uri: %v", err)
	}
	want := []string{
		"migrate web qemu+tls://kvm2/system migrate_uri=tcp://10.0.0.2 flags=0x1003",
		"migrate web qemu+tcp://kvm3/system flags=0x1003",
	}
	if diff := cmp.Diff(want, d.recorded()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	d.mu.Lock()
	if d.dials != 3 {
		t.Errorf("%d connections, want 3: the shared one and one per migration", d.dials)
	}
	d.mu.Unlock()
	d.migrateErr = &libvirt.Error{Code: uint32(libvirt.ErrOperationFailed), Message: "operation failed: migration out job: unexpectedly failed"}
	err := conn.Migrate(ctx, web, Migration{DestURI: "qemu+tls://kvm2/system", Timeout: time.Minute})
	if err == nil || err.Error() != "migrate to qemu+tls://kvm2/system: operation failed: migration out job: unexpectedly failed" || errors.Is(err, ErrJobAborted) {
		t.Errorf("failed Migrate = %v", err)
	}
}

// TestLibvirtConnMigrateAborted: a migration past its timeout, or whose
// caller gives up, is aborted (virDomainAbortJob on the shared connection);
// the error says so. One libvirt does not stop after the abort is given up
// on after abortWait: its connection is closed.
func TestLibvirtConnMigrateAborted(t *testing.T) {
	defer func(w time.Duration) { abortWait = w }(abortWait)
	abortWait = 200 * time.Millisecond
	for _, tc := range []struct {
		name         string
		timeout, ctx time.Duration
		abortIgnored bool
		want         string
	}{
		{"timeout", 100 * time.Millisecond, 0, false, "migrate to qemu+tls://kvm2/system: job aborted (not done within 100ms)"},
		{"caller gives up", time.Minute, 100 * time.Millisecond, false, "migrate to qemu+tls://kvm2/system: job aborted (context deadline exceeded)"},
		{"abort without effect", 100 * time.Millisecond, 0, true, "migrate to qemu+tls://kvm2/system: job aborted (not done within 100ms)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			d := &libvirtd{control: control{holdMigration: true, abortIgnored: tc.abortIgnored}}
			conn, web, _ := controlled(t, d)
			ctx := context.Background()
			if tc.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			start := time.Now()
			err := testutil.Within(t, 10*time.Second, "Migrate", func() error {
				return conn.Migrate(ctx, web, Migration{DestURI: "qemu+tls://kvm2/system", Timeout: tc.timeout})
			})
			if err == nil || err.Error() != tc.want || !errors.Is(err, ErrJobAborted) {
				t.Errorf("Migrate = %v, want %q", err, tc.want)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("Migrate took %s", took)
			}
			if diff := cmp.Diff([]string{"migrate web qemu+tls://kvm2/system flags=0x1003", "abort web"}, d.recorded()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if tc.abortIgnored {
				close(d.aborted) // the test libvirtd's own goroutine
			}
			select {
			case <-conn.Disconnected():
				t.Error("the abort closed the shared connection")
			default:
			}
			conn.Close()
			if n := testutil.SettleGoroutines(before); n > before {
				t.Errorf("%d goroutines after Migrate, %d before", n, before)
			}
		})
	}
}

// TestLibvirtConnDomainControl: memory, managed save, shutdown and destroy
// reach libvirt for the domain asked; a domain that is not running is
// ErrNoDomain.
func TestLibvirtConnDomainControl(t *testing.T) {
	d := &libvirtd{control: control{freeMemory: 7 << 30}}
	conn, web, db := controlled(t, d)
	ctx := context.Background()
	if free, err := conn.NodeFreeMemory(ctx); err != nil || free != 7<<30 {
		t.Errorf("NodeFreeMemory = %d, %v", free, err)
	}
	if mem, err := conn.DomainMemory(ctx, web); err != nil || mem != 4<<30 {
		t.Errorf("DomainMemory = %d, %v; want the 4 GiB maximum", mem, err)
	}
	for _, f := range []func(context.Context, string) error{
		func(ctx context.Context, u string) error { return conn.ManagedSave(ctx, u, time.Minute) },
		conn.Shutdown, conn.Destroy,
	} {
		if err := f(ctx, web); err != nil {
			t.Errorf("on web: %v", err)
		}
		if err := f(ctx, db); !errors.Is(err, ErrNoDomain) {
			t.Errorf("on db, shut off: %v, want ErrNoDomain", err)
		}
	}
	want := []string{"managedsave web", "managedsave db", "shutdown web", "shutdown db", "destroy web", "destroy db"}
	if diff := cmp.Diff(want, d.recorded()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}
