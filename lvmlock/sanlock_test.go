package lvmlock

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lvhook/lvhook/internal/realdata"
)

func TestParseSanlockStatusReal(t *testing.T) {
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		out := r.Read(t, "sanlock-client-status.txt")
		want := map[string]SanlockLockspace{
			"lvm_vg0": {Name: "lvm_vg0", HostID: 1, Path: "/dev/mapper/vg0-lvmlock", Offset: 0},
		}
		if diff := cmp.Diff(want, ParseSanlockStatus(out)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

// realHosts parses the captured host_status (capture.sh: on host1, every
// host of the cluster renewing) and checks what any capture must show.
func realHosts(t *testing.T, r realdata.Release) map[int]SanlockHost {
	t.Helper()
	out := r.Read(t, "sanlock-host-status.txt")
	list, err := ParseHostStatus(out)
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[int]SanlockHost{}
	for _, h := range list {
		hosts[h.HostID] = h
		if h.Timestamp == 0 || h.Generation == 0 || h.LastCheck == 0 || h.IOTimeout != 10 {
			t.Errorf("host_id %d: fields not read: %+v", h.HostID, h)
		}
		if h.State() != HostLive || h.HostName() != fmt.Sprintf("host%d", h.HostID) {
			t.Errorf("host_id %d: state %s, name %q", h.HostID, h.State(), h.HostName())
		}
	}
	// Captured on a cluster of two or three hosts (host_id 1..N).
	if n := len(hosts); n != len(list) || n < 2 || n > 3 || hosts[1].HostID != 1 || hosts[2].HostID != 2 || n == 3 && hosts[3].HostID != 3 {
		t.Errorf("hosts %v, want host_ids 1..N (N = 2 or 3)", hosts)
	}
	return hosts
}

func TestParseHostStatusReal(t *testing.T) {
	realdata.Run(t, func(t *testing.T, r realdata.Release) { realHosts(t, r) })
}

// The capture holds t1 ex on host1, share1 sh on both hosts, nothing else.
func TestParseLeaseDumpReal(t *testing.T) {
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		out := r.Read(t, "sanlock-direct-dump.txt")
		hosts := realHosts(t, r)
		uuids := lockArgsUUIDs(t, r, "lvs-lockargs.txt")
		got := ParseLeaseDump(out)
		gen := func(id int) uint64 { return hosts[id].Generation }
		want := map[string][]Lease{
			uuids["t1"]:     {{HostID: 1, Generation: gen(1), Mode: ModeEx}},
			uuids["share1"]: {{HostID: 1, Generation: gen(1), Mode: ModeSh}, {HostID: 2, Generation: gen(2), Mode: ModeSh}},
		}
		for _, uuid := range uuids {
			if _, ok := got[uuid]; ok && want[uuid] == nil {
				want[uuid] = nil // in the dump, held by nobody
			}
		}
		if len(got) < 3 {
			t.Errorf("the dump shows %d leases, want t1, share1 and the LVs between", len(got))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

// lockArgsUUIDs maps LV names to UUIDs from FILE, a captured `lvs -o
// lv_name,lv_uuid,lv_lockargs`, and checks that LeaseOffset reads every
// lv_lockargs there.
func lockArgsUUIDs(t *testing.T, r realdata.Release, file string) map[string]string {
	t.Helper()
	out := r.Read(t, file)
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("lvs line %q", line)
		}
		if _, ok := LeaseOffset(f[2]); !ok {
			t.Errorf("LeaseOffset(%q) failed", f[2])
		}
		m[f[0]] = f[1]
	}
	return m
}

func TestParseSanlockStatusEscapedPath(t *testing.T) {
	out := "daemon x.h\ns lvm_a:7:/dev/disk/by-path/ip-10.0.0.1\\:3260-lun-0:1048576\ns broken\ns lvm_b:x:/p:0\n" +
		"s \ns\ns lvm_c:3:/dev/mapper/c-lvmlock:0 ADD\n"
	want := map[string]SanlockLockspace{
		"lvm_a": {Name: "lvm_a", HostID: 7, Path: "/dev/disk/by-path/ip-10.0.0.1:3260-lun-0", Offset: 1048576},
	}
	if diff := cmp.Diff(want, ParseSanlockStatus([]byte(out))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestHostStates(t *testing.T) {
	for _, tc := range []struct {
		name      string
		h         SanlockHost
		want      HostState
		expiresIn time.Duration
	}{
		{"renewing", SanlockHost{Timestamp: 9, LastCheck: 500, LastLive: 500, IOTimeout: 10}, HostLive, 140 * time.Second},
		{"one renewal late", SanlockHost{Timestamp: 9, LastCheck: 520, LastLive: 500, IOTimeout: 10}, HostLive, 120 * time.Second},
		{"three renewals missed", SanlockHost{Timestamp: 9, LastCheck: 560, LastLive: 500, IOTimeout: 10}, HostFailing, 80 * time.Second},
		{"dead", SanlockHost{Timestamp: 9, LastCheck: 640, LastLive: 500, IOTimeout: 10}, HostDead, 0},
		{"left the lockspace", SanlockHost{Timestamp: 0, LastCheck: 900, LastLive: 500, IOTimeout: 10}, HostFree, 0},
		{"io_timeout 20", SanlockHost{Timestamp: 9, LastCheck: 640, LastLive: 500, IOTimeout: 20}, HostFailing, 80 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.h.State(); got != tc.want {
				t.Errorf("State() = %s, want %s", got, tc.want)
			}
			if tc.want != HostFree {
				if got := tc.h.ExpiresIn(); got != tc.expiresIn {
					t.Errorf("ExpiresIn() = %v, want %v", got, tc.expiresIn)
				}
			}
		})
	}
}

func TestParseHostStatusRejectsGarbage(t *testing.T) {
	for _, out := range []string{"hello world\n", "    last_check=5\n", "x timestamp 5\n"} {
		if _, err := ParseHostStatus([]byte(out)); err == nil {
			t.Errorf("ParseHostStatus(%q): no error", out)
		}
	}
}

func TestHostName(t *testing.T) {
	for name, want := range map[string]string{
		"29ce2af0-89d8-4fb7-ac90-437648b1b4e2.host1":    "host1",
		"29ce2af0-89d8-4fb7-ac90-437648b1b4e2.kvm1.lan": "kvm1.lan",
		// 48 bytes, all sanlock keeps: the host name may have been cut.
		"29ce2af0-89d8-4fb7-ac90-437648b1b4e2.hypervisor-": "",
		"kvm7": "",
		"a.b":  "",
		"":     "",
	} {
		if got := (SanlockHost{Name: name}).HostName(); got != want {
			t.Errorf("HostName(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestLeaseOffset(t *testing.T) {
	for args, want := range map[string]int64{"1.0.0:70254592": 70254592, "": 0, "1.0.0": 0, "1.0.0:x": 0, "1.0.0:-5": 0} {
		got, ok := LeaseOffset(args)
		if got != want || ok != (want != 0) {
			t.Errorf("LeaseOffset(%q) = %d, %v", args, got, ok)
		}
	}
}

// scripted answers one command with canned output and records it.
type scripted struct {
	out  string
	args []string
}

func (s *scripted) Run(_ context.Context, name string, args ...string) ([]byte, []byte, error) {
	s.args = append([]string{name}, args...)
	return []byte(s.out), nil, nil
}

func TestLeasesReadsOneSpan(t *testing.T) {
	r := &scripted{}
	ls := SanlockLockspace{Name: "lvm_vg0", HostID: 1, Path: "/dev/mapper/vg0-lvmlock"}
	lvs := []LV{{LockArgs: "1.0.0:72351744"}, {LockArgs: "1.0.0:70254592"}, {LockArgs: ""}, {LockArgs: "1.0.0:71303168"}}
	if _, err := (Sanlock{Runner: r}).Leases(context.Background(), ls, lvs); err != nil {
		t.Fatal(err)
	}
	want := "sanlock direct dump /dev/mapper/vg0-lvmlock:70254592:3145728"
	if got := strings.Join(r.args, " "); got != want {
		t.Errorf("ran %q, want %q", got, want)
	}
}

// host2 crashed (the harness's host_crash): host1's view 82 s after host2's
// last renewal, then past 140 s, and t1's lease, still owned by host2 in the
// generation those views show.
func TestCrashedHostReal(t *testing.T) {
	realdata.Run(t, func(t *testing.T, r realdata.Release) {
		var crashed SanlockHost
		for _, tc := range []struct {
			file  string
			state HostState
		}{
			{"sanlock-host-status-failing.txt", HostFailing},
			{"sanlock-host-status-dead.txt", HostDead},
		} {
			hosts, err := ParseHostStatus(r.Read(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(hosts) != 2 || hosts[0].State() != HostLive || hosts[1].State() != tc.state {
				t.Fatalf("%s: hosts %+v, want host_id 1 live and 2 %s", tc.file, hosts, tc.state)
			}
			h := hosts[1]
			if want := h.DeadAfter() - h.Silent(); tc.state == HostFailing && (h.ExpiresIn() != want || want <= 0) {
				t.Errorf("%s: ExpiresIn() = %v, want %v", tc.file, h.ExpiresIn(), want)
			}
			if tc.state == HostDead && h.ExpiresIn() != 0 {
				t.Errorf("%s: ExpiresIn() = %v, want 0", tc.file, h.ExpiresIn())
			}
			if crashed.Generation != 0 && h.Generation != crashed.Generation {
				t.Errorf("%s: host2 in generation %d, was %d", tc.file, h.Generation, crashed.Generation)
			}
			crashed = h
		}
		if crashed.Generation == 0 {
			t.Fatalf("host2's generation not read: %+v", crashed)
		}
		leases := ParseLeaseDump(r.Read(t, "sanlock-direct-dump-crashed.txt"))
		// The VG of the crash captures (recreated since for the other captures).
		uuid := lockArgsUUIDs(t, r, "lvs-lockargs-crashed.txt")["t1"]
		want := map[string][]Lease{uuid: {{HostID: 2, Generation: crashed.Generation, Mode: ModeEx}}}
		if diff := cmp.Diff(want, leases); diff != "" {
			t.Errorf("t1's lease (-want +got):\n%s", diff)
		}
	})
}
