package migration

import (
	"context"
	"errors"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/libvirttest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestGoLibvirtAdapter talks to go-libvirt's mock libvirtd over its RPC
// protocol: connect, list the active domains, disconnect.
func TestGoLibvirtAdapter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lv, err := connectLibvirt(ctx, libvirttest.New())
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
