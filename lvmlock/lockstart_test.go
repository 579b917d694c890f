package lvmlock

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSharedVGs(t *testing.T) {
	out := []byte(`{"report":[{"vg":[{"vg_name":"vg0","vg_lock_type":"sanlock"},{"vg_name":"local","vg_lock_type":""},
		{"vg_name":"old","vg_lock_type":"none"},{"vg_name":"d1","vg_lock_type":"dlm"}]}]}`)
	got, err := parseSharedVGs(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"d1", "vg0"}; !slices.Equal(got, want) {
		t.Errorf("shared VGs = %v, want %v", got, want)
	}
	if _, err := parseSharedVGs([]byte("Volume group")); err == nil {
		t.Error("garbage parsed")
	}
}

// startScript answers lvmlockctl -i, sanlock client status and vgchange
// --lock-start from a sequence of vgchange outcomes: each vgchange takes the
// next one; "" joins the lockspace, "silent" returns 0 without joining,
// anything else is its stderr with exit status 5.
type startScript struct {
	outcomes []string
	joined   bool
	calls    []string
}

func (s *startScript) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	s.calls = append(s.calls, name+" "+strings.Join(args, " "))
	switch {
	case name == "lvmlockctl":
		if s.joined {
			return []byte("VG vg0 lock_type=sanlock AbCd\nLS sanlock lvm_vg0\n"), nil, nil
		}
		return nil, nil, nil
	case name == "sanlock":
		if s.joined {
			return []byte("daemon 1\np -1 helper\ns lvm_vg0:1:/dev/mapper/vg0-lvmlock:0\n"), nil, nil
		}
		return []byte("daemon 1\np -1 helper\n"), nil, nil
	case name == "vgchange":
		if len(s.outcomes) == 0 {
			return nil, nil, errors.New("script exhausted")
		}
		o := s.outcomes[0]
		s.outcomes = s.outcomes[1:]
		switch o {
		case "":
			s.joined = true
			return nil, nil, nil
		case "silent":
			return nil, nil, nil
		}
		return nil, []byte(o), exitErr(5)
	}
	return nil, nil, errors.New("unexpected command " + name)
}

func TestStartLockspaces(t *testing.T) {
	defer func(d time.Duration) { firstStartRetry = d }(firstStartRetry)
	firstStartRetry = time.Millisecond
	eargs := "  VG vg0 start failed: invalid parameters for sanlock\n"
	tests := []struct {
		name     string
		outcomes []string
		joined   bool
		wantErr  string
		vgchange int
	}{
		{"already joined: nothing run", nil, true, "", 0},
		{"started at once", []string{""}, false, "", 1},
		{"EARGS then started", []string{eargs, eargs, ""}, false, "", 3},
		{"exit 0 without joining is retried", []string{"silent", ""}, false, "", 2},
		{"bad host_id is not retried", []string{"  VG vg0 start failed: invalid sanlock host_id, set in lvmlocal.conf\n"}, false, "invalid sanlock host_id", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &startScript{outcomes: tt.outcomes, joined: tt.joined}
			c := &Client{Runner: r}
			var attempts []StartAttempt
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			failed := c.StartLockspaces(ctx, Sanlock{Runner: r}, []string{"vg0"}, func(a StartAttempt) { attempts = append(attempts, a) })
			err := failed["vg0"]
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			n := 0
			for _, c := range r.calls {
				if strings.HasPrefix(c, "vgchange") {
					n++
					if c != "vgchange --lock-start -- vg0" {
						t.Errorf("argv %q", c)
					}
				}
			}
			if n != tt.vgchange || len(attempts) != tt.vgchange {
				t.Errorf("vgchange ran %d times, %d attempts reported, want %d", n, len(attempts), tt.vgchange)
			}
		})
	}
}

func TestStartLockspacesBounded(t *testing.T) {
	r := &startScript{outcomes: slices.Repeat([]string{"  VG vg0 start failed: invalid parameters for sanlock\n"}, 100)}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	failed := (&Client{Runner: r}).StartLockspaces(ctx, Sanlock{Runner: r}, []string{"vg0"}, nil)
	if !LockStartTransient(failed["vg0"]) {
		t.Errorf("error = %v, want the last EARGS", failed["vg0"])
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("returned after %s, past its bound", took)
	}
}

func TestStartLockspacesRefusesOptionNames(t *testing.T) {
	r := &startScript{}
	failed := (&Client{Runner: r}).StartLockspaces(context.Background(), Sanlock{Runner: r}, []string{"--config=x", "-ay"}, nil)
	if len(failed) != 2 || len(r.calls) != 0 {
		t.Errorf("failed %v, calls %v: a name that looks like an option must reach no command", failed, r.calls)
	}
	var ne *NameError
	if !errors.As(failed["-ay"], &ne) {
		t.Errorf("error %v is not a NameError", failed["-ay"])
	}
}

// batchStart answers for two VGs: the first vgchange, naming both, joins
// vg1 only; vg2 joins at its own retry.
type batchStart struct {
	joined map[string]bool
	calls  []string
}

func (b *batchStart) Run(_ context.Context, name string, args ...string) ([]byte, []byte, error) {
	b.calls = append(b.calls, name+" "+strings.Join(args, " "))
	var out strings.Builder
	switch name {
	case "lvmlockctl":
		for _, vg := range []string{"vg1", "vg2"} {
			if b.joined[vg] {
				out.WriteString("VG " + vg + " lock_type=sanlock x\n")
			}
		}
	case "sanlock":
		for _, vg := range []string{"vg1", "vg2"} {
			if b.joined[vg] {
				out.WriteString("s lvm_" + vg + ":1:/dev/mapper/" + vg + "-lvmlock:0\n")
			}
		}
	case "vgchange":
		if len(args) == 4 {
			b.joined["vg1"] = true
			return nil, []byte("  VG vg2 start failed: invalid parameters for sanlock\n"), exitErr(5)
		}
		b.joined[args[len(args)-1]] = true
	}
	return []byte(out.String()), nil, nil
}

func TestStartLockspacesTogether(t *testing.T) {
	defer func(d time.Duration) { firstStartRetry = d }(firstStartRetry)
	firstStartRetry = time.Millisecond
	b := &batchStart{joined: map[string]bool{}}
	failed := (&Client{Runner: b}).StartLockspaces(context.Background(), Sanlock{Runner: b}, []string{"vg1", "vg2"}, nil)
	if len(failed) != 0 {
		t.Fatalf("failed: %v", failed)
	}
	var starts []string
	for _, c := range b.calls {
		if strings.HasPrefix(c, "vgchange") {
			starts = append(starts, c)
		}
	}
	if want := []string{"vgchange --lock-start -- vg1 vg2", "vgchange --lock-start -- vg2"}; !slices.Equal(starts, want) {
		t.Errorf("starts %q, want %q: both asked at once, then the one not joined", starts, want)
	}
}
