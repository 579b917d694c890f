package migration

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt/libvirttest"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/internal/testutil"
	"github.com/lvhook/lvhook/lvmlock"
	"github.com/lvhook/lvhook/virt"
)

// TestRunReconnects: Run waits for a libvirtd that is down (READY anyway),
// connects, handles events, and reconnects when libvirtd restarts,
// reconciling at each connection.
func TestRunReconnects(t *testing.T) {
	c := newTestCluster(t, 2)
	h := c.hosts[1]
	cmds := make(chan string, 64)
	h.helper.LVM.Runner = &tellingRunner{inner: c.lvm.Host(2), cmds: cmds}
	h.helper.Disconnected()
	h.helper.Now = time.Now
	h.helper.ReconnectMin, h.helper.ReconnectMax = time.Millisecond, 5*time.Millisecond

	// libvirtd: down at first, then two lives.
	lives := []*fakeLibvirt{newFakeLibvirt(), newFakeLibvirt()}
	for _, lv := range lives {
		lv.run("vm1", uuid1, virt.StateRunning, virt.JobNone, "/dev/vg0/a")
	}
	c.record(2, "vm1", uuid1, true, "a")
	c.hold(1, "a", lvmlock.ModeSh)
	c.hold(2, "a", lvmlock.ModeSh)
	connects := make(chan int, 8)
	var mu sync.Mutex
	attempt := 0
	connect := func(context.Context) (virt.Libvirt, error) {
		mu.Lock()
		defer mu.Unlock()
		attempt++
		connects <- attempt
		if attempt == 1 {
			return nil, errors.New("dial unix /var/run/libvirt/libvirt-sock: connection refused")
		}
		if attempt-2 < len(lives) {
			return lives[attempt-2], nil
		}
		return nil, errors.New("connection refused")
	}
	notes := make(chan string, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.helper.Run(ctx, connect, func(s string) { notes <- s })
	}()

	if n := <-connects; n != 1 {
		t.Fatalf("first connection attempt %d", n)
	}
	if note := <-notes; !strings.HasPrefix(note, "READY=1\nSTATUS=waiting for libvirt") {
		t.Errorf("first notification %q, want READY while waiting for libvirt", note)
	}
	<-connects
	if note := <-notes; note != "STATUS=connected to libvirt" {
		t.Errorf("notification %q, want connected", note)
	}
	// The source's release drops its sh; the event makes the helper try.
	c.hold(1, "a", lvmlock.ModeNone)
	lives[0].Events <- virt.Event{Domain: virt.Domain{Name: "vm1", UUID: uuid1}, Kind: virt.EventResumedMigrated}
	waitCmd(t, cmds, "lvchange -aey --select vg_shared=1 -- vg0/a: ok")
	if diff := cmp.Diff(map[int]lvmlock.Mode{2: "ex"}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("vg0/a after the event (-want +got):\n%s", diff)
	}

	// libvirtd restarts: the helper reconnects and reconciles again.
	c.hold(2, "a", lvmlock.ModeSh)
	close(lives[0].Gone)
	if note := <-notes; note != "STATUS=libvirt connection lost; reconnecting" {
		t.Errorf("notification %q, want connection lost", note)
	}
	<-connects
	waitCmd(t, cmds, "lvchange -aey --select vg_shared=1 -- vg0/a: ok")
	cancel()
	<-done
	if diff := cmp.Diff(map[int]lvmlock.Mode{2: "ex"}, c.lvm.Holders("vg0", "a")); diff != "" {
		t.Errorf("vg0/a (-want +got):\n%s", diff)
	}
}

// connector connects through d with a 100 ms call timeout.
func connector(d socket.Dialer) virt.Connector {
	return func(ctx context.Context) (virt.Libvirt, error) {
		c, err := virt.ConnectWith(ctx, d, 100*time.Millisecond)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// mockUUID is a domain that go-libvirt's mock lists as active; the mock
// never answers virDomainLookupByUUID.
const mockUUID = "dc329f87-d4de-4719-8cfd-2e21c6105b01"

// TestHandleEventHungLibvirt: a RESUMED_MIGRATED event while libvirtd hangs
// in the middle of the reconciliation's calls. HandleEvent returns after the
// call timeout, the domain is reported, and the connection is closed so that
// Run reconnects.
func TestHandleEventHungLibvirt(t *testing.T) {
	c := newTestCluster(t, 1)
	h := c.hosts[0].helper
	lv, err := virt.ConnectWith(context.Background(), libvirttest.New(), 200*time.Millisecond)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { testutil.CloseWithin(t, lv) })
	// Not Connected: its full reconciliation would meet the hang first.
	h.mu.Lock()
	h.lv = lv
	h.mu.Unlock()
	start := time.Now()
	testutil.Within(t, 10*time.Second, "HandleEvent(RESUMED_MIGRATED) on a hung libvirtd", func() struct{} {
		h.HandleEvent(context.Background(), virt.Event{Domain: virt.Domain{Name: "aaaaaaa-1", UUID: mockUUID}, Kind: virt.EventResumedMigrated})
		return struct{}{}
	})
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("HandleEvent took %s, want about the 200 ms call timeout", d)
	}
	probs, err := h.State.Problems()
	if err != nil || len(probs) != 1 || probs[0].UUID != mockUUID {
		t.Errorf("problems = %+v, %v; want one for the domain libvirt did not answer about", probs, err)
	}
	select {
	case <-lv.Disconnected():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection is still open after a call timed out")
	}
}

// TestRunHungLibvirt: Run against a libvirtd that hangs, before its first
// answer or right after the handshake (go-libvirt's mock never answers the
// lifecycle event registration). Each connection ends at the call timeout and
// Run connects again; many reconnections leave no goroutine behind, and Run
// still stops at once when asked.
func TestRunHungLibvirt(t *testing.T) {
	path, _ := testutil.HungLibvirtd(t)
	for _, tc := range []struct {
		name    string
		connect virt.Connector
	}{
		{"never answers", connector(dialers.NewLocal(dialers.WithSocket(path)))},
		{"hangs after the handshake", connector(libvirttest.New())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if raceDetector && tc.name == "hangs after the handshake" {
				// go-libvirt's disconnect goroutine reads a field its
				// ConnectToURI writes last, with no ordering between
				// the two once the socket is cut: go test -race reports
				// it in go-libvirt's code, now and then, under load.
				// lvhook drops a connection it cut, so it is harmless
				// here; the case runs without -race (go test ./...).
				t.Skip("a data race inside go-libvirt (ConnectToURI and waitAndDisconnect) under -race")
			}
			c := newTestCluster(t, 1)
			h := c.hosts[0].helper
			h.Disconnected()
			h.Now = time.Now
			h.ReconnectMin, h.ReconnectMax = time.Millisecond, time.Millisecond
			before := runtime.NumGoroutine()
			const reconnects = 8
			connects := make(chan struct{}, 100)
			connect := func(ctx context.Context) (virt.Libvirt, error) {
				select {
				case connects <- struct{}{}:
				default:
				}
				return tc.connect(ctx)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.Run(ctx, connect, nil)
			}()
			timeout := time.After(20 * time.Second)
			for i := range reconnects + 1 {
				select {
				case <-connects:
				case <-timeout:
					cancel()
					t.Fatalf("Run stuck on a hung libvirtd: %d connection attempts in 20 s, want %d", i, reconnects+1)
				}
			}
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not stop within 5 s of its context's end")
			}
			if n := testutil.SettleGoroutines(before); n > before {
				t.Errorf("%d goroutines after %d reconnections, %d before", n, reconnects, before)
			}
		})
	}
}

// eventsAnswered is a connection whose lifecycle event registration
// succeeds (go-libvirt's mock never answers it); no event ever comes.
type eventsAnswered struct{ virt.Libvirt }

func (eventsAnswered) LifecycleEvents(ctx context.Context) (<-chan virt.Event, error) {
	ch := make(chan virt.Event)
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch, nil
}

// TestRunReconnectsAfterCutCall: connected and subscribed, the lock helper
// makes a call libvirtd does not answer (the first reconciliation's domain
// lookup): the call's end closes the connection, and Run, told by
// Disconnected, connects again.
func TestRunReconnectsAfterCutCall(t *testing.T) {
	c := newTestCluster(t, 1)
	h := c.hosts[0].helper
	h.Disconnected()
	h.Now = time.Now
	h.ReconnectMin, h.ReconnectMax = time.Millisecond, time.Millisecond
	before := runtime.NumGoroutine()
	// Two connections, then libvirtd is down, so that the test's end (ctx)
	// cuts no call: go-libvirt's mock answers a call before it has read
	// all of it, and if the socket is closed then, the call fails on
	// writing while go-libvirt's reader, holding the callbacks' lock, waits
	// to hand it the answer: both wait forever. libvirtd reads a whole
	// call before it answers.
	conns := make(chan virt.Libvirt, 2)
	refused := make(chan struct{})
	connect := func(ctx context.Context) (virt.Libvirt, error) {
		if len(conns) == cap(conns) {
			select {
			case refused <- struct{}{}:
			default:
			}
			return nil, errors.New("connection refused")
		}
		lv, err := virt.ConnectWith(ctx, libvirttest.New(), 100*time.Millisecond)
		if err != nil {
			return nil, err
		}
		conns <- lv
		return eventsAnswered{lv}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx, connect, nil)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not stop within 5 s of its context's end")
		}
		if n := testutil.SettleGoroutines(before); n > before {
			t.Errorf("%d goroutines after Run, %d before", n, before)
		}
	}()
	select {
	case <-refused:
	case <-time.After(10 * time.Second):
		t.Fatalf("Run made %d connections in 10 s, want 2: it does not connect again once a call closed the connection", len(conns))
	}
	first := <-conns
	select {
	case <-first.Disconnected():
	default:
		t.Error("the first connection is still open after a call libvirtd did not answer")
	}
}

// tellingRunner passes each command on to inner and tells it, with its
// outcome, on cmds.
type tellingRunner struct {
	inner lvmlock.Runner
	cmds  chan<- string
}

func (r *tellingRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	out, errOut, err := r.inner.Run(ctx, name, args...)
	result := ": ok"
	if err != nil {
		result = ": failed"
	}
	r.cmds <- strings.Join(append([]string{name}, args...), " ") + result
	return out, errOut, err
}

// waitCmd waits until the helper has run the command want.
func waitCmd(t *testing.T, cmds <-chan string, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case cmd := <-cmds:
			if cmd == want {
				return
			}
		case <-timeout:
			t.Fatalf("the helper did not run %q within 10 s", want)
		}
	}
}
