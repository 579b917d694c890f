package lvmlock

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sanlock shows what lvm cannot: which host_id holds an LV lease, and how
// recently each host of a lockspace renewed its own (host) lease. lvhook reads
// it only (`lvhook check`, when the peers' lock helpers do not answer); it
// never asks sanlock for a lease.

// LockspaceName is the sanlock lockspace lvmlockd uses for a shared VG.
func LockspaceName(vg string) string { return "lvm_" + vg }

// SanlockLockspace is one lockspace this host has joined (an "s" line of
// `sanlock client status`).
type SanlockLockspace struct {
	Name   string // lvm_<vg>
	HostID int    // this host's host_id in it
	Path   string // the device holding its leases: the VG's lvmlock LV
	Offset int64
}

// ParseSanlockStatus reads the lockspaces of `sanlock client status`, by
// name. Lines look like "s lvm_vg0:1:/dev/mapper/vg0-lvmlock:0" (name, host
// id, path with ':' escaped as "\:", offset); others are skipped.
func ParseSanlockStatus(out []byte) map[string]SanlockLockspace {
	spaces := map[string]SanlockLockspace{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// A lockspace still joining or leaving has a suffix (ADD, REM):
		// not joined.
		if len(fields) != 2 || fields[0] != "s" {
			continue
		}
		f := splitEscaped(fields[1], ':')
		if len(f) != 4 {
			continue
		}
		id, err1 := strconv.Atoi(f[1])
		off, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		spaces[f[0]] = SanlockLockspace{Name: f[0], HostID: id, Path: f[2], Offset: off}
	}
	return spaces
}

// splitEscaped splits s at sep, except where sep follows a backslash (the
// backslash is dropped).
func splitEscaped(s string, sep byte) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == sep:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(out, cur.String())
}

// SanlockHost is one host of a lockspace as this host's sanlock daemon sees
// it (`sanlock client host_status -s LOCKSPACE -D`).
type SanlockHost struct {
	HostID     int
	Generation uint64
	// Timestamp is the last renewal of its host lease, in its own clock; 0
	// means the host_id is free (the host left the lockspace cleanly).
	Timestamp uint64
	// LastCheck and LastLive are this host's monotonic seconds at which it
	// last read that host lease, and last saw it renewed.
	LastCheck, LastLive uint64
	IOTimeout           int
	// Name is sanlock's name of the host, "<uuid>.<hostname>" by default.
	Name string
	// Now is this host's monotonic clock, in seconds, when the status was
	// read (sanlock's clock: CLOCK_MONOTONIC); 0 when unknown.
	Now uint64
}

// HostState is what a host's lease renewals say about it.
type HostState string

const (
	HostFree    HostState = "free"    // not in the lockspace: holds nothing
	HostLive    HostState = "live"    // renewing
	HostFailing HostState = "failing" // stopped renewing; its leases still hold
	HostDead    HostState = "dead"    // its leases may be taken by other hosts
)

// sanlock's watchdog_fire_timeout default (sanlock.conf); its timeouts.c:
// a host that stopped renewing is dead after 8 io_timeouts plus this.
const watchdogFireTimeout = 60

// DeadAfter is how long after its last renewal sanlock lets other hosts take
// this host's leases: 8 io_timeouts + 60 s (140 s with the default 10 s).
func (h SanlockHost) DeadAfter() time.Duration {
	io := h.IOTimeout
	if io <= 0 {
		io = 10
	}
	return time.Duration(8*io+watchdogFireTimeout) * time.Second
}

// Silent is how long the host has not been seen renewing its lease: since
// LastLive, by this host's clock when the status was read (else by its last
// read of the leases, which lags by up to 2 io_timeouts and stops when this
// host's own renewals fail).
func (h SanlockHost) Silent() time.Duration {
	now := h.Now
	if now == 0 {
		now = h.LastCheck
	}
	if now <= h.LastLive {
		return 0
	}
	return time.Duration(now-h.LastLive) * time.Second
}

// State classifies the host: failing after 6 io_timeouts without a renewal
// (60 s: three renewals missed, when the host's own sanlock starts warning;
// sanlock's own FAIL state comes at 8), dead after DeadAfter.
func (h SanlockHost) State() HostState {
	io := h.IOTimeout
	if io <= 0 {
		io = 10
	}
	switch s := h.Silent(); {
	case h.Timestamp == 0:
		return HostFree
	case s >= h.DeadAfter():
		return HostDead
	case s >= time.Duration(6*io)*time.Second:
		return HostFailing
	default:
		return HostLive
	}
}

// ExpiresIn is how long until other hosts may take its leases (0 once dead).
func (h SanlockHost) ExpiresIn() time.Duration { return max(h.DeadAfter()-h.Silent(), 0) }

// HostName returns the host name part of sanlock's "<uuid>.<hostname>", or
// "" when the name has another form or may have been cut (sanlock keeps 48
// bytes: 11 of them for the host name).
func (h SanlockHost) HostName() string {
	uuid, name, ok := strings.Cut(h.Name, ".")
	if !ok || len(uuid) != 36 || strings.Count(uuid, "-") != 4 || len(h.Name) >= maxSanlockName {
		return ""
	}
	return name
}

// maxSanlockName is the length of sanlock's host names (NAME_ID_SIZE).
const maxSanlockName = 48

// ParseHostStatus reads `sanlock client host_status -s LOCKSPACE -D`: a line
// "<host_id> timestamp <n>" per host, then its fields, one "key=value" per
// indented line (sanlock's client_cmd.c, status_host and print_debug).
func ParseHostStatus(out []byte) ([]SanlockHost, error) {
	var hosts []SanlockHost
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasPrefix(line, " ") {
			if len(f) != 3 || f[1] != "timestamp" {
				return nil, fmt.Errorf("sanlock host_status: unexpected line %q", line)
			}
			id, err1 := strconv.Atoi(f[0])
			ts, err2 := strconv.ParseUint(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("sanlock host_status: unexpected line %q", line)
			}
			hosts = append(hosts, SanlockHost{HostID: id, Timestamp: ts})
			continue
		}
		if len(hosts) == 0 {
			return nil, fmt.Errorf("sanlock host_status: %q before any host", line)
		}
		h := &hosts[len(hosts)-1]
		key, val, _ := strings.Cut(strings.TrimSpace(line), "=")
		n, _ := strconv.ParseUint(val, 10, 64)
		switch key {
		case "last_check":
			h.LastCheck = n
		case "last_live":
			h.LastLive = n
		case "owner_generation":
			h.Generation = n
		case "io_timeout":
			h.IOTimeout = int(n)
		case "owner_name":
			h.Name = val
		}
	}
	return hosts, nil
}

// Lease is a host's hold on an LV's lease.
type Lease struct {
	HostID     int
	Generation uint64
	Mode       Mode
}

// ParseLeaseDump reads `sanlock direct dump PATH:OFFSET:SIZE` over an lvmlock
// LV (sanlock's direct.c, direct_dump): per resource a line "offset lockspace
// resource timestamp own gen lver", followed by a line "host_id gen SH" per
// host with a shared hold. It returns the holds by resource name (lvmlockd
// names an LV's resource by the LV's UUID): an ex hold is a resource with a
// non-zero timestamp, owned by "own". Host leases, resource index and
// warning lines are skipped.
func ParseLeaseDump(out []byte) map[string][]Lease {
	leases := map[string][]Lease{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[2] == "SH" && cur != "":
			id, err1 := strconv.Atoi(f[0])
			gen, err2 := strconv.ParseUint(f[1], 10, 64)
			if err1 == nil && err2 == nil {
				leases[cur] = append(leases[cur], Lease{HostID: id, Generation: gen, Mode: ModeSh})
			}
		case len(f) == 7 && isDigits(f[0]):
			cur = f[2]
			ts, err1 := strconv.ParseUint(f[3], 10, 64)
			id, err2 := strconv.Atoi(f[4])
			gen, err3 := strconv.ParseUint(f[5], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil {
				cur = ""
				continue
			}
			if _, seen := leases[cur]; !seen {
				leases[cur] = nil
			}
			if ts != 0 && id != 0 {
				leases[cur] = append(leases[cur], Lease{HostID: id, Generation: gen, Mode: ModeEx})
			}
		default:
			cur = ""
		}
	}
	return leases
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// Sanlock reads sanlock's state through a Runner.
type Sanlock struct {
	Runner Runner
	// Now returns the monotonic clock in seconds, sanlock's clock; nil:
	// CLOCK_MONOTONIC (tests set it).
	Now func() uint64
}

func (s Sanlock) now() uint64 {
	if s.Now != nil {
		return s.Now()
	}
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return uint64(ts.Sec)
}

func (s Sanlock) run(ctx context.Context, args ...string) ([]byte, error) {
	out, errOut, err := s.Runner.Run(ctx, "sanlock", args...)
	if err != nil {
		msg := strings.TrimSpace(string(errOut))
		if msg == "" {
			msg = strings.TrimSpace(string(out))
		}
		if msg != "" {
			return nil, fmt.Errorf("sanlock %s: %w: %s", strings.Join(args, " "), err, OneLine(msg))
		}
		return nil, fmt.Errorf("sanlock %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// Lockspaces returns the lockspaces this host has joined.
func (s Sanlock) Lockspaces(ctx context.Context) (map[string]SanlockLockspace, error) {
	out, err := s.run(ctx, "client", "status")
	if err != nil {
		return nil, err
	}
	return ParseSanlockStatus(out), nil
}

// Hosts returns the hosts of a lockspace this host has joined, by host_id.
func (s Sanlock) Hosts(ctx context.Context, lockspace string) (map[int]SanlockHost, error) {
	if err := validLockspace(lockspace); err != nil {
		return nil, err
	}
	out, err := s.run(ctx, "client", "host_status", "-s", lockspace, "-D")
	if err != nil {
		return nil, err
	}
	list, err := ParseHostStatus(out)
	if err != nil {
		return nil, err
	}
	now := s.now()
	hosts := make(map[int]SanlockHost, len(list))
	for _, h := range list {
		h.Now = now
		hosts[h.HostID] = h
	}
	return hosts, nil
}

// leaseAlign is the size of one lease on an lvmlock LV (sanlock's align
// size with 512-byte sectors); leases of 4k-sector devices are bigger, and
// one read of an lvmlock LV area covers them as well.
const leaseAlign = 1 << 20

// Leases reads, in one unsynchronised read of the lease device, the other
// hosts' holds on the leases of lvs (offsets from their lv_lockargs), by LV
// UUID; this host's own holds (ls.HostID) are left out. An LV without a
// lease offset, or whose lease the read does not show, has no entry.
func (s Sanlock) Leases(ctx context.Context, ls SanlockLockspace, lvs []LV) (map[string][]Lease, error) {
	var offsets []int64
	for _, lv := range lvs {
		if off, ok := LeaseOffset(lv.LockArgs); ok {
			offsets = append(offsets, off)
		}
	}
	if len(offsets) == 0 {
		return map[string][]Lease{}, nil
	}
	if err := validLeasePath(ls.Path); err != nil {
		return nil, err
	}
	lo, hi := slices.Min(offsets), slices.Max(offsets)
	path := strings.ReplaceAll(ls.Path, ":", `\:`)
	out, err := s.run(ctx, "direct", "dump", fmt.Sprintf("%s:%d:%d", path, lo, hi-lo+leaseAlign))
	if err != nil {
		return nil, err
	}
	leases := ParseLeaseDump(out)
	for uuid, holds := range leases {
		leases[uuid] = slices.DeleteFunc(holds, func(l Lease) bool { return l.HostID == ls.HostID })
	}
	return leases, nil
}

// LeaseOffset returns the offset of an LV's lease on its VG's lvmlock LV,
// from its lv_lockargs ("1.0.0:70254592" with sanlock).
func LeaseOffset(lockArgs string) (int64, bool) {
	_, off, ok := strings.Cut(lockArgs, ":")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(off, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
