package virt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/libvirttest"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/google/go-cmp/cmp"
	"github.com/lvhook/lvhook/internal/testutil"
)

// TestLibvirtConnDomains lists domains over libvirt's RPC protocol, against
// go-libvirt's mock libvirtd (two running domains).
func TestLibvirtConnDomains(t *testing.T) {
	conn, err := connect(context.Background(), libvirttest.New(), callTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := conn.Domains(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Listed{
		{Domain: Domain{Name: "Droplet-844329", UUID: "5153242e-c6bd-4459-a9ff-20ca798f3171"}, State: StateRunning, StateName: "running"},
		{Domain: Domain{Name: "Droplet-33436", UUID: "240d94c5-f047-458b-89f1-cd3ae6d62b5d"}, State: StateRunning, StateName: "running"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Domains (-want +got):\n%s", diff)
	}
	for _, d := range got {
		if !d.Active() {
			t.Errorf("%s: running but not active", d.Name)
		}
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
	_, err := connect(ctx, &silentDialer{}, callTimeout)
	if err == nil || !strings.Contains(err.Error(), "libvirt did not answer before its caller gave up: connection closed") {
		t.Fatalf("connect to a silent libvirtd: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %s, want about the context's 100ms", took)
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

// libvirtd is a libvirtd for the adapter's tests: it speaks libvirt's RPC
// protocol over a pipe and answers the calls check makes, about its domains.
type libvirtd struct {
	doms []libvirtdDomain
	// hang lists the procedures it reads and never answers.
	hang map[uint32]bool
	// control answers what evacuate asks (control_test.go).
	control
}

type libvirtdDomain struct {
	name  string
	uuid  libvirt.UUID
	state libvirt.DomainState
	xml   string
	// job answers virDomainGetJobStats, unless jobErr is set.
	job    libvirt.DomainJobOperation
	jobErr *libvirt.Error
	// maxMemKiB answers virDomainGetInfo.
	maxMemKiB uint64
}

// RPC procedures (libvirt's remote_protocol.x).
const (
	procConnectOpen              = 1
	procConnectClose             = 2
	procDomainGetXMLDesc         = 14
	procAuthList                 = 66
	procDomainGetJobStats        = 298
	procConnectGetAllDomainStats = 344
)

// errDestinationJobStats is libvirt's answer to virDomainGetJobStats on a
// live migration's destination (qemuDomainGetJobStats).
var errDestinationJobStats = &libvirt.Error{Code: uint32(libvirt.ErrOperationUnsupported),
	Message: "Operation not supported: migration statistics are available only on the source host"}

func (d *libvirtd) Dial() (net.Conn, error) {
	client, server := net.Pipe()
	d.mu.Lock()
	d.dials++
	d.mu.Unlock()
	go d.serve(server)
	return client, nil
}

func (d *libvirtd) serve(conn net.Conn) {
	defer conn.Close()
	for {
		var n uint32
		if err := binary.Read(conn, binary.BigEndian, &n); err != nil {
			return
		}
		pkt := make([]byte, n-4)
		if _, err := io.ReadFull(conn, pkt); err != nil {
			return
		}
		var h struct{ Program, Version, Procedure, Type, Serial, Status uint32 }
		if err := binary.Read(bytes.NewReader(pkt[:24]), binary.BigEndian, &h); err != nil {
			return
		}
		if d.hang[h.Procedure] {
			continue
		}
		body, fail := d.answer(h.Procedure, pkt[24:])
		var ret xdrBuf
		h.Type, h.Status = 1, 0 // reply, ok
		if fail != nil {
			h.Status = 1
			body = remoteError(fail)
		}
		ret.u32(uint32(4 + 24 + len(body)))
		_ = binary.Write(&ret, binary.BigEndian, h)
		ret.Write(body)
		if _, err := conn.Write(ret.Bytes()); err != nil {
			return
		}
	}
}

// answer returns the reply's payload, or the error libvirtd answers with.
func (d *libvirtd) answer(proc uint32, args []byte) ([]byte, *libvirt.Error) {
	var b xdrBuf
	switch proc {
	case procAuthList:
		b.u32(0) // no authentication
	case procConnectOpen, procConnectClose:
	case procConnectGetAllDomainStats:
		b.u32(uint32(len(d.doms)))
		for _, dom := range d.doms {
			b.str(dom.name)
			b.Write(dom.uuid[:])
			b.u32(1) // id
			b.u32(1) // one typed parameter: state.state, an int
			b.str("state.state")
			b.u32(1)
			b.u32(uint32(dom.state))
		}
	case procDomainGetXMLDesc, procDomainGetJobStats:
		dom, fail := d.domain(args)
		if fail != nil {
			return nil, fail
		}
		switch {
		case proc == procDomainGetXMLDesc:
			b.str(dom.xml)
		case dom.jobErr != nil:
			return nil, dom.jobErr
		case dom.job == 0:
			b.u32(uint32(libvirt.DomainJobNone))
			b.u32(0)
		default:
			b.u32(uint32(libvirt.DomainJobUnbounded))
			b.u32(1)
			b.str(libvirt.DomainJobOperationStr)
			b.u32(1)
			b.u32(uint32(dom.job))
		}
	default:
		return d.answerControl(proc, args)
	}
	return b.Bytes(), nil
}

// domain returns the domain that a call's arguments start with (its name,
// then its UUID), or libvirt's error for an unknown one.
func (d *libvirtd) domain(args []byte) (libvirtdDomain, *libvirt.Error) {
	l := binary.BigEndian.Uint32(args)
	var u libvirt.UUID
	copy(u[:], args[4+(l+3)/4*4:])
	i := slices.IndexFunc(d.doms, func(dom libvirtdDomain) bool { return dom.uuid == u })
	if i < 0 {
		return libvirtdDomain{}, &libvirt.Error{Code: uint32(libvirt.ErrNoDomain), Message: "Domain not found"}
	}
	return d.doms[i], nil
}

// remoteError encodes libvirt's remote_error.
func remoteError(e *libvirt.Error) []byte {
	var b xdrBuf
	b.u32(e.Code)
	b.u32(10) // VIR_FROM_QEMU
	b.u32(1)  // message: set
	b.str(e.Message)
	b.u32(2)                   // VIR_ERR_ERROR
	b.Write(make([]byte, 4*7)) // no dom, str1, str2, str3; int1, int2; no net
	return b.Bytes()
}

// xdrBuf writes XDR.
type xdrBuf struct{ bytes.Buffer }

func (b *xdrBuf) u32(v uint32) { _ = binary.Write(b, binary.BigEndian, v) }

func (b *xdrBuf) str(s string) {
	b.u32(uint32(len(s)))
	b.WriteString(s)
	b.Write(make([]byte, (4-len(s)%4)%4))
}

func libvirtUUID(t *testing.T, s string) libvirt.UUID {
	t.Helper()
	var u libvirt.UUID
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(u) {
		t.Fatalf("UUID %q: %v", s, err)
	}
	copy(u[:], b)
	return u
}

// TestLibvirtConnJob reads domains' jobs over libvirt's RPC protocol. On a
// live migration's destination libvirt refuses job statistics: that is an
// incoming migration, as the lock helper takes it.
func TestLibvirtConnJob(t *testing.T) {
	d := &libvirtd{}
	for i, dom := range []libvirtdDomain{
		{name: "idle", state: libvirt.DomainRunning},
		{name: "source", state: libvirt.DomainRunning, job: libvirt.DomainJobOperationStrMigrationOut},
		{name: "destination", state: libvirt.DomainPaused, jobErr: errDestinationJobStats},
		{name: "other-refusal", state: libvirt.DomainRunning, jobErr: &libvirt.Error{Code: uint32(libvirt.ErrOperationUnsupported),
			Message: "Operation not supported: job statistics are not supported"}},
	} {
		dom.uuid[15] = byte(i + 1)
		d.doms = append(d.doms, dom)
	}
	ctx := context.Background()
	conn, err := connect(ctx, d, callTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	doms, err := conn.Domains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, dom := range doms {
		job, err := conn.DomainJob(ctx, dom.UUID)
		got[dom.Name] = job.Kind.String()
		if err != nil {
			got[dom.Name] = "error: " + err.Error()
		}
	}
	want := map[string]string{
		"idle":          "none",
		"source":        "outgoing migration",
		"destination":   "incoming migration",
		"other-refusal": "error: Operation not supported: job statistics are not supported",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("jobs (-want +got):\n%s", diff)
	}
}

// TestLibvirtConnHungCall: a call libvirtd does not answer ends at the first
// of the call timeout and its ctx's end. The connection is then closed, so
// that the next call fails at once, and the call has returned: nothing is
// left running once the connection is closed.
func TestLibvirtConnHungCall(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration // the call timeout
		ctx     time.Duration // the caller's, when set
		want    string
	}{
		{"call timeout", 200 * time.Millisecond, 0, "libvirt did not answer within 200ms: connection closed"},
		{"context ends first", time.Second, 100 * time.Millisecond, "libvirt did not answer before its caller gave up: context deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			d := &libvirtd{doms: []libvirtdDomain{{name: "web", state: libvirt.DomainRunning}},
				hang: map[uint32]bool{procDomainGetJobStats: true}}
			conn, err := connect(context.Background(), d, tc.timeout)
			if err != nil {
				t.Fatal(err)
			}
			doms, err := conn.Domains(context.Background())
			if err != nil || len(doms) != 1 {
				t.Fatalf("Domains = %v, %v", doms, err)
			}
			ctx := context.Background()
			if tc.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			start := time.Now()
			err = testutil.Within(t, 10*time.Second, "Job on a hung libvirtd", func() error {
				_, err := conn.DomainJob(ctx, doms[0].UUID)
				return err
			})
			if err == nil || err.Error() != tc.want {
				t.Errorf("Job = %v, want %q", err, tc.want)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("Job took %s, want about the first of the call timeout and the context's end", took)
			}
			if tc.ctx > 0 {
				// The connection is shared: it stays open for the
				// others until the abandoned call's own timeout.
				if _, err := conn.DomainXML(context.Background(), doms[0].UUID); err != nil {
					t.Errorf("XML after a caller gave up: %v, want an answer", err)
				}
				select {
				case <-conn.Disconnected():
				case <-time.After(5 * time.Second):
					t.Fatal("the abandoned call did not end by its call timeout")
				}
			}
			start = time.Now()
			if _, err := conn.DomainXML(context.Background(), doms[0].UUID); err == nil || time.Since(start) > time.Second {
				t.Errorf("XML after the connection was closed: %v after %s, want an immediate failure", err, time.Since(start))
			}
			if err := testutil.Within(t, 10*time.Second, "Close", conn.Close); err != nil {
				t.Logf("Close: %v", err)
			}
			if n := testutil.SettleGoroutines(before); n > before {
				t.Errorf("%d goroutines after the hung call, %d before", n, before)
			}
		})
	}
}

// TestLibvirtConnCloseBounded: Close says goodbye to a libvirtd that no
// longer answers for no longer than the close timeout, and closes the socket.
func TestLibvirtConnCloseBounded(t *testing.T) {
	before := runtime.NumGoroutine()
	d := &libvirtd{hang: map[uint32]bool{procConnectClose: true}}
	conn, err := connect(context.Background(), d, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = testutil.Within(t, 10*time.Second, "Close on a hung libvirtd", conn.Close)
	if err == nil || !strings.Contains(err.Error(), "libvirt did not answer within 200ms") {
		t.Errorf("Close = %v, want libvirt's silence", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Close took %s, want about 200ms", took)
	}
	if n := testutil.SettleGoroutines(before); n > before {
		t.Errorf("%d goroutines after Close, %d before: the socket is still open", n, before)
	}
}

// slowDialer dials only once released.
type slowDialer struct {
	inner   socket.Dialer
	release chan struct{}
}

func (d *slowDialer) Dial() (net.Conn, error) {
	<-d.release
	return d.inner.Dial()
}

// TestLibvirtConnCutWhileDialing: a ctx that ends while the socket is being
// dialed closes the socket as soon as it is dialed, instead of waiting for the
// handshake's answer from a libvirtd that never gives one.
func TestLibvirtConnCutWhileDialing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	d := &slowDialer{inner: &silentDialer{}, release: make(chan struct{})}
	go func() {
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond)
		close(d.release)
	}()
	err := testutil.Within(t, 10*time.Second, "connect, dialing past ctx's end", func() error {
		_, err := connect(ctx, d, callTimeout)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "libvirt did not answer before its caller gave up: connection closed") {
		t.Errorf("connect = %v, want the context's end", err)
	}
}

// TestCloseAfterAbandonedCall: once a caller gave up on libvirtd (check's
// --timeout), Close cuts the socket at once instead of waiting for a goodbye
// libvirtd is not answering either.
func TestCloseAfterAbandonedCall(t *testing.T) {
	d := &libvirtd{doms: []libvirtdDomain{{name: "web", state: libvirt.DomainRunning}},
		hang: map[uint32]bool{procDomainGetJobStats: true, procConnectClose: true}}
	conn, err := connect(context.Background(), d, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	doms, err := conn.Domains(context.Background())
	if err != nil || len(doms) != 1 {
		t.Fatalf("Domains = %v, %v", doms, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := conn.DomainJob(ctx, doms[0].UUID); err == nil {
		t.Fatal("DomainJob on a hung libvirtd answered")
	}
	start := time.Now()
	testutil.Within(t, 10*time.Second, "Close after an abandoned call", conn.Close)
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %s after an abandoned call, want at once (no goodbye)", took)
	}
}
