package virt

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/libvirttest"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/lvhook/lvhook/internal/testutil"
)

// TestGoLibvirtAdapter talks to go-libvirt's mock libvirtd over its RPC
// protocol: connect, list the active domains, disconnect.
func TestGoLibvirtAdapter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lv, err := connect(ctx, libvirttest.New(), time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	doms, err := lv.ActiveDomains(ctx)
	if err != nil {
		t.Fatalf("ActiveDomains: %v", err)
	}
	want := []Domain{
		{Name: "aaaaaaa-1", UUID: "dc329f87-d4de-4719-8cfd-2e21c6105b01"},
		{Name: "aaaaaaa-2", UUID: "dc229f87-d4de-4719-8cfd-2e21c6105b01"},
	}
	if diff := cmp.Diff(want, doms); diff != "" {
		t.Errorf("ActiveDomains mismatch (-want +got):\n%s", diff)
	}
	if err := lv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-lv.Disconnected():
	case <-ctx.Done():
		t.Error("Disconnected not closed after Close")
	}
}

// mockUUID is a domain that go-libvirt's mock lists as active. The mock
// never answers virDomainLookupByUUID (nor the lifecycle event registration):
// past the handshake it is a libvirtd that hangs mid-call.
const mockUUID = "dc329f87-d4de-4719-8cfd-2e21c6105b01"

// TestGoLibvirtHungCall: a call that libvirtd never answers fails after the
// call timeout and closes the connection, so that later calls fail at once,
// Disconnected tells Run to reconnect, and no goroutine is left behind.
func TestGoLibvirtHungCall(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx := context.Background()
	lv, err := connect(ctx, libvirttest.New(), 200*time.Millisecond)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	start := time.Now()
	err = testutil.Within(t, 10*time.Second, "DomainState on a hung libvirtd", func() error {
		_, err := lv.DomainState(ctx, mockUUID)
		return err
	})
	if err == nil {
		t.Fatal("DomainState on a hung libvirtd succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("DomainState took %s, want about the 200 ms call timeout", d)
	}
	select {
	case <-lv.Disconnected():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection is still open after a call timed out")
	}
	start = time.Now()
	if err := testutil.Within(t, 10*time.Second, "ActiveDomains after a timeout", func() error {
		_, err := lv.ActiveDomains(ctx)
		return err
	}); err == nil {
		t.Error("ActiveDomains on the closed connection succeeded")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("ActiveDomains on the closed connection took %s, want an immediate failure", d)
	}
	testutil.CloseWithin(t, lv)
	if n := testutil.SettleGoroutines(before); n > before {
		t.Errorf("%d goroutines after the hung call, %d before", n, before)
	}
}

// TestGoLibvirtAbandonedCall: a caller whose context ends before libvirtd
// answers gets the context's error then, while the connection, which others
// share, stays open; the call it left still ends by the call timeout, which
// closes the connection (Disconnected tells Run to reconnect) and leaves no
// goroutine behind.
func TestGoLibvirtAbandonedCall(t *testing.T) {
	before := runtime.NumGoroutine()
	lv, err := connect(context.Background(), libvirttest.New(), time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	u, err := parseUUID(mockUUID)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = testutil.Within(t, 10*time.Second, "a call with a 50 ms context", func() error {
		_, err := call(ctx, lv, func() (libvirt.Domain, error) { return lv.l.DomainLookupByUUID(u) })
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errHung) {
		t.Errorf("call = %v, want libvirt's silence and the context's deadline", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("call took %s, want about the context's 50 ms (the call timeout is 1 s)", d)
	}
	select {
	case <-lv.Disconnected():
		t.Error("the caller's deadline closed the shared connection")
	default:
	}
	select {
	case <-lv.Disconnected():
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Errorf("connection closed after %s, before the 1 s call timeout", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the abandoned call's connection is still open after its call timeout")
	}
	start = time.Now()
	if _, err := lv.DomainJob(context.Background(), mockUUID); err == nil || time.Since(start) > time.Second {
		t.Errorf("DomainJob on the closed connection: %v after %s, want an immediate failure", err, time.Since(start))
	}
	testutil.CloseWithin(t, lv)
	if n := testutil.SettleGoroutines(before); n > before {
		t.Errorf("%d goroutines after the abandoned call, %d before", n, before)
	}
}

// TestDialLibvirtHungDaemon: a libvirtd that accepts connections and never
// answers. Each connection attempt fails after the call timeout, not the
// caller's (longer) deadline, and closes its socket; repeated attempts leave
// no goroutine behind.
func TestDialLibvirtHungDaemon(t *testing.T) {
	path, closed := testutil.HungLibvirtd(t)
	before := runtime.NumGoroutine()
	dial := func(ctx context.Context) (*Conn, error) {
		return connect(ctx, dialers.NewLocal(dialers.WithSocket(path), dialers.WithLocalTimeout(10*time.Second)), 200*time.Millisecond)
	}
	const attempts = 5
	for i := range attempts {
		start := time.Now()
		err := testutil.Within(t, 10*time.Second, "connect to a hung libvirtd", func() error {
			// Run gives a connection attempt 30 s.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			lv, err := dial(ctx)
			if err == nil {
				lv.Close()
			}
			return err
		})
		if err == nil {
			t.Fatalf("attempt %d: connected to a libvirtd that never answers", i)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("attempt %d took %s, want about the 200 ms call timeout", i, d)
		}
	}
	for i := range attempts {
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d connections closed by the client", i, attempts)
		}
	}
	if n := testutil.SettleGoroutines(before); n > before {
		t.Errorf("%d goroutines after %d attempts, %d before", n, attempts, before)
	}
}

func TestJobOf(t *testing.T) {
	op := func(o libvirt.DomainJobOperation) libvirt.TypedParam {
		return libvirt.TypedParam{Field: libvirt.DomainJobOperationStr, Value: *libvirt.NewTypedParamValueInt(int32(o))}
	}
	elapsed := libvirt.TypedParam{Field: libvirt.DomainJobTimeElapsed, Value: *libvirt.NewTypedParamValueUllong(1500)}
	for _, tc := range []struct {
		name    string
		typ     libvirt.DomainJobType
		params  []libvirt.TypedParam
		err     error
		want    Job
		wantErr error
	}{
		{name: "no job", typ: libvirt.DomainJobNone, want: Job{Kind: JobNone}},
		{name: "outgoing migration", typ: libvirt.DomainJobUnbounded,
			params: []libvirt.TypedParam{op(libvirt.DomainJobOperationStrMigrationOut), elapsed},
			want:   Job{Kind: JobMigrationOut, Elapsed: 1500 * time.Millisecond}},
		{name: "save", typ: libvirt.DomainJobUnbounded, params: []libvirt.TypedParam{op(libvirt.DomainJobOperationStrSave)},
			want: Job{Kind: JobOther}},
		{name: "operation not said", typ: libvirt.DomainJobUnbounded, want: Job{Kind: JobUnknown}},
		{name: "destination: libvirt refuses statistics", err: libvirt.Error{Code: uint32(libvirt.ErrOperationUnsupported),
			Message: "Operation not supported: migration statistics are available only on the source host"},
			want: Job{Kind: JobMigrationIn}},
		{name: "domain gone", err: libvirt.Error{Code: uint32(libvirt.ErrNoDomain), Message: "Domain not found"},
			wantErr: ErrNoDomain},
		{name: "domain not running", err: libvirt.Error{Code: uint32(libvirt.ErrOperationInvalid), Message: "Requested operation is not valid: domain is not running"},
			wantErr: ErrNoDomain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := jobOf(int32(tc.typ), tc.params, tc.err)
			if diff := cmp.Diff(tc.wantErr, err, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("jobOf error mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("jobOf mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStateOf: a crashed domain keeps its QEMU process and stays in libvirt's
// active list: it is active (StateCrashed), not shut off.
func TestStateOf(t *testing.T) {
	for s, want := range map[libvirt.DomainState]DomainState{
		libvirt.DomainRunning:     StateRunning,
		libvirt.DomainPaused:      StatePaused,
		libvirt.DomainPmsuspended: StatePaused,
		libvirt.DomainShutoff:     StateShutoff,
		libvirt.DomainCrashed:     StateCrashed,
		libvirt.DomainShutdown:    StateOther,
		libvirt.DomainNostate:     StateOther,
	} {
		if got := stateOf(s); got != want {
			t.Errorf("stateOf(%d) = %s, want %s", s, got, want)
		}
	}
}

func TestEventKind(t *testing.T) {
	for _, tc := range []struct {
		typ    libvirt.DomainEventType
		detail int32
		want   EventKind
	}{
		{libvirt.DomainEventResumed, int32(libvirt.DomainEventResumedMigrated), EventResumedMigrated},
		{libvirt.DomainEventResumed, int32(libvirt.DomainEventResumedUnpaused), EventResumed},
		{libvirt.DomainEventStarted, int32(libvirt.DomainEventStartedMigrated), EventStartedMigrated},
		{libvirt.DomainEventStarted, int32(libvirt.DomainEventStartedBooted), EventStarted},
		{libvirt.DomainEventStopped, int32(libvirt.DomainEventStoppedMigrated), EventStoppedMigrated},
		{libvirt.DomainEventStopped, int32(libvirt.DomainEventStoppedFailed), EventStoppedFailed},
		{libvirt.DomainEventStopped, int32(libvirt.DomainEventStoppedDestroyed), EventStopped},
		{libvirt.DomainEventSuspended, 0, EventSuspended},
		{libvirt.DomainEventDefined, 0, EventOther},
	} {
		if got := eventKind(int32(tc.typ), tc.detail); got != tc.want {
			t.Errorf("eventKind(%d, %d) = %s, want %s", tc.typ, tc.detail, got, tc.want)
		}
	}
}

func TestUUIDRoundTrip(t *testing.T) {
	const uuid1 = "11111111-2222-4333-8444-555555555551"
	u, err := parseUUID(uuid1)
	if err != nil {
		t.Fatal(err)
	}
	if got := formatUUID(u); got != uuid1 {
		t.Errorf("formatUUID(parseUUID(%q)) = %q", uuid1, got)
	}
	for _, bad := range []string{"", "../../etc/passwd", "1111", uuid1 + "00"} {
		if _, err := parseUUID(bad); err == nil {
			t.Errorf("parseUUID(%q) accepted", bad)
		}
	}
	if err := mapError(errors.New("other")); errors.Is(err, ErrNoDomain) {
		t.Errorf("mapError made an unrelated error ErrNoDomain")
	}
}
