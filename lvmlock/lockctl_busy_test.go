package lvmlock_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lvhook/lvhook/lvmlock"
)

type exitErr int

func (e exitErr) Error() string { return "exit status" }
func (e exitErr) ExitCode() int { return int(e) }

// busyRunner answers `lvmlockctl --info` as lvmlockctl does while another
// lvmlockctl holds the dump socket, busy times, then with a real dump.
type busyRunner struct {
	busy  int
	calls int
	out   string
}

func (r *busyRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	r.calls++
	if r.calls <= r.busy {
		return []byte("socket error -98\n"), nil, exitErr(158)
	}
	return []byte(r.out), nil, nil
}

const dump = "VG vg0 lock_type=sanlock Ka1tlx\nLS sanlock lvm_vg0\nLK VG un ver 11\nLK LV ex U3aizZ\n"

// Two `lvmlockctl -i` at once: the second fails with "socket error -98"
// (seen on the harness); Locks tries again instead of failing the caller.
func TestLocksRetriesBusyDumpSocket(t *testing.T) {
	r := &busyRunner{busy: 3, out: dump}
	c := &lvmlock.Client{Runner: r, Log: zerolog.Nop()}
	locks, err := c.Locks(context.Background())
	if err != nil {
		t.Fatalf("Locks: %v", err)
	}
	if got := locks.Mode("vg0", "U3aizZ"); got != lvmlock.ModeEx {
		t.Errorf("mode = %q, want ex", got)
	}
	if r.calls != 4 {
		t.Errorf("lvmlockctl ran %d times, want 4", r.calls)
	}
}

func TestLocksGivesUpWhenAlwaysBusy(t *testing.T) {
	r := &busyRunner{busy: 1000, out: dump}
	c := &lvmlock.Client{Runner: r, Log: zerolog.Nop()}
	if _, err := c.Locks(context.Background()); err == nil {
		t.Fatal("Locks succeeded although lvmlockctl always failed")
	}
	if r.calls < 2 || r.calls > 20 {
		t.Errorf("lvmlockctl ran %d times, want a few bounded tries", r.calls)
	}
}

// Any other failure is not retried.
func TestLocksDoesNotRetryOtherFailures(t *testing.T) {
	r := &failRunner{}
	c := &lvmlock.Client{Runner: r, Log: zerolog.Nop()}
	if _, err := c.Locks(context.Background()); err == nil {
		t.Fatal("Locks succeeded")
	}
	if r.calls != 1 {
		t.Errorf("lvmlockctl ran %d times, want 1", r.calls)
	}
}

type failRunner struct{ calls int }

func (r *failRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	r.calls++
	return nil, []byte("lvmlockd not running\n"), exitErr(1)
}
