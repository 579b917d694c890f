package hook

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/libvirttest"
	"github.com/google/go-cmp/cmp"
)

// TestLibvirtConnDomains lists domains over libvirt's RPC protocol, against
// go-libvirt's mock libvirtd (two running domains).
func TestLibvirtConnDomains(t *testing.T) {
	conn, err := NewLibvirtConn(context.Background(), libvirttest.New())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := conn.Domains(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []LibvirtDomain{
		{Name: "Droplet-844329", UUID: "5153242e-c6bd-4459-a9ff-20ca798f3171", State: "running", Active: true},
		{Name: "Droplet-33436", UUID: "240d94c5-f047-458b-89f1-cd3ae6d62b5d", State: "running", Active: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Domains (-want +got):\n%s", diff)
	}
	if _, err := conn.XML(context.Background(), LibvirtDomain{Name: "nope", UUID: "00000000-0000-0000-0000-000000000000"}); err == nil {
		t.Error("XML of a domain not in the list: no error")
	}
}

// silentDialer accepts the connection and never answers, like a hung
// libvirtd.
type silentDialer struct{ peers []net.Conn }

func (d *silentDialer) Dial() (net.Conn, error) {
	a, b := net.Pipe()
	d.peers = append(d.peers, b)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
		}
	}()
	return a, nil
}

func TestLibvirtConnBoundedByContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := NewLibvirtConn(ctx, &silentDialer{})
	if err == nil || !strings.Contains(err.Error(), "libvirt did not answer in time") {
		t.Fatalf("connect to a silent libvirtd: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %s, want about the context's 100ms", took)
	}
}

func TestJobOf(t *testing.T) {
	op := func(v libvirt.DomainJobOperation) []libvirt.TypedParam {
		return []libvirt.TypedParam{
			{Field: "time_elapsed", Value: *libvirt.NewTypedParamValueUllong(1234)},
			{Field: libvirt.DomainJobOperationStr, Value: *libvirt.NewTypedParamValueInt(int32(v))},
		}
	}
	tests := []struct {
		name   string
		typ    libvirt.DomainJobType
		params []libvirt.TypedParam
		want   Job
	}{
		{"no job", libvirt.DomainJobNone, nil, JobNone},
		{"outgoing migration", libvirt.DomainJobUnbounded, op(libvirt.DomainJobOperationStrMigrationOut), JobMigrationOut},
		{"incoming migration", libvirt.DomainJobUnbounded, op(libvirt.DomainJobOperationStrMigrationIn), JobMigrationIn},
		{"save", libvirt.DomainJobUnbounded, op(libvirt.DomainJobOperationStrSave), JobOther},
		{"job without operation", libvirt.DomainJobBounded, nil, JobOther},
	}
	for _, tt := range tests {
		if got := jobOf(int32(tt.typ), tt.params); got != tt.want {
			t.Errorf("%s: jobOf = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestReadOnlySocket(t *testing.T) {
	dir := t.TempDir()
	sock := dir + "/libvirt-sock"
	if got := ReadOnlySocket(sock); got != sock {
		t.Errorf("without a -ro socket: %q, want %q", got, sock)
	}
	l, err := net.Listen("unix", sock+"-ro")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := ReadOnlySocket(sock); got != sock+"-ro" {
		t.Errorf("with a -ro socket: %q, want %q", got, sock+"-ro")
	}
}
