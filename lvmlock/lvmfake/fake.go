// Package lvmfake models lvm and lvmlockd on several hosts sharing one set of
// VGs, behind lvmlock.Runner: lvs, lvchange -aey/-asy/-an and lvmlockctl -i,
// with lvmlockd's lock semantics and lvm 2.03.16's exact messages (as
// captured in testdata/real, see its README: ex/sh conflicts, in-place conversion, lockspaces,
// LV types that cannot be shared), and the sanlock reads of `lvhook check`
// (client status, client host_status -D, direct dump of the LV leases; host
// h is host_id h). Tests drive real lvhook code through it.
package lvmfake

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/lvhook/lvhook/lvmlock"
)

// ExitError is what a failed fake command returns, like *exec.ExitError.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }
func (e ExitError) ExitCode() int { return e.Code }

// LV is one logical volume of the fake cluster.
type LV struct {
	UUID    string
	Segtype string
	Attr    string
	// Offset is its lease's offset on the VG's lvmlock LV (lv_lockargs).
	Offset int64
	// Holders maps a host id to the mode it holds (active there).
	Holders map[int]lvmlock.Mode
	// Ghosts are leases hosts still hold on the storage although their
	// lvmlockd no longer does (dropped after a kill, or released while
	// the storage was lost): other hosts are refused until Expire.
	Ghosts map[int]lvmlock.Mode
	// Stale: hosts where its device stays without a lock (after Drop).
	Stale map[int]bool
}

// VG is one volume group.
type VG struct {
	Shared bool
	LVs    map[string]*LV
}

// Cluster is the shared state of every fake host.
type Cluster struct {
	mu  sync.Mutex
	VGs map[string]*VG
	// Started[host][vg]: lockspace joined. Lvmlockd[host]: daemon running.
	Started  map[int]map[string]bool
	Lvmlockd map[int]bool
	// Open[host][ref]: the LV is open on host (QEMU uses it): -an fails.
	Open  map[int]map[lvmlock.Ref]bool
	calls map[int][]string
	// Intercept, when set, may answer a command instead of the model
	// (failure injection); handled=false lets the model answer.
	Intercept func(host int, args []string) (stdout, stderr string, err error, handled bool)
	// Silent[host]: seconds since that host last renewed its sanlock host
	// lease (a crashed host keeps its leases until it is dead, 140 s).
	Silent map[int]int
	// Generation[host]: its host lease's generation (default 3, the
	// generation of every lease hold the fake writes); higher means it
	// joined again since. Left[host]: it left the lockspace (timestamp 0)
	// while its holds stay written.
	Generation map[int]uint64
	Left       map[int]bool
	// Lost[host][vg]: the host lost the VG's lease storage. Killed: its
	// lvmlockd got kill_vg. Dropped: its lvmlockd dropped the VG after a
	// kill (the devices stay). Wiped[host][dm name]: the device has the
	// error table; Removed[host][dm name]: dmsetup removed it while
	// other devices of its LV remain. Layers: layer devices of an LV (dm.go).
	Lost, Killed, Dropped, Wiped, Removed map[int]map[string]bool
	Layers                                map[lvmlock.Ref][]string
	nextID                                int
}

// NewCluster returns a cluster of hosts 1..n with lvmlockd running and no VG.
func NewCluster(n int) *Cluster {
	c := &Cluster{VGs: map[string]*VG{}, Started: map[int]map[string]bool{}, Lvmlockd: map[int]bool{},
		Open: map[int]map[lvmlock.Ref]bool{}, calls: map[int][]string{}, Silent: map[int]int{},
		Generation: map[int]uint64{}, Left: map[int]bool{}, Lost: map[int]map[string]bool{}, Killed: map[int]map[string]bool{},
		Dropped: map[int]map[string]bool{}, Wiped: map[int]map[string]bool{}, Removed: map[int]map[string]bool{},
		Layers: map[lvmlock.Ref][]string{}}
	for h := 1; h <= n; h++ {
		c.Started[h] = map[string]bool{}
		c.Lvmlockd[h] = true
		c.Open[h] = map[lvmlock.Ref]bool{}
	}
	return c
}

// AddVG creates a VG (shared: lockspace started on every host) with linear LVs.
func (c *Cluster) AddVG(name string, shared bool, lvs ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	vg := &VG{Shared: shared, LVs: map[string]*LV{}}
	c.VGs[name] = vg
	for h := range c.Started {
		c.Started[h][name] = shared
	}
	for _, lv := range lvs {
		c.nextID++
		vg.LVs[lv] = &LV{UUID: fmt.Sprintf("uuid-%s-%s-%04d", name, lv, c.nextID), Segtype: "linear",
			Attr: "-wi-------", Holders: map[int]lvmlock.Mode{}, Ghosts: map[int]lvmlock.Mode{}, Stale: map[int]bool{}, Offset: firstLease + int64(len(vg.LVs))*leaseSize}
	}
}

// Do runs f with the cluster locked, to arrange or inspect state.
func (c *Cluster) Do(f func(c *Cluster)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c)
}

// Mode returns the mode host holds on vg/lv.
func (c *Cluster) Mode(host int, vg, lv string) lvmlock.Mode {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.VGs[vg]; v != nil && v.LVs[lv] != nil {
		return v.LVs[lv].Holders[host]
	}
	return lvmlock.ModeNone
}

// Holders returns who holds vg/lv, host -> mode.
func (c *Cluster) Holders(vg, lv string) map[int]lvmlock.Mode {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]lvmlock.Mode{}
	if v := c.VGs[vg]; v != nil && v.LVs[lv] != nil {
		for h, m := range v.LVs[lv].Holders {
			out[h] = m
		}
	}
	return out
}

// Ghosts returns the hosts whose lease of vg/lv stays on the storage
// although their lvmlockd dropped it, host -> mode.
func (c *Cluster) Ghosts(vg, lv string) map[int]lvmlock.Mode {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]lvmlock.Mode{}
	if v := c.VGs[vg]; v != nil && v.LVs[lv] != nil {
		maps.Copy(out, v.LVs[lv].Ghosts)
	}
	return out
}

// Calls returns the command lines host ran, and ResetCalls forgets them.
func (c *Cluster) Calls(host int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls[host])
}

func (c *Cluster) ResetCalls() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = map[int][]string{}
}

// Host returns the lvmlock.Runner of one host.
func (c *Cluster) Host(id int) *Host { return &Host{c: c, id: id} }

// Host runs commands on one fake host.
type Host struct {
	c  *Cluster
	id int
}

// Run implements lvmlock.Runner.
func (h *Host) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	argv := append([]string{name}, args...)
	c.calls[h.id] = append(c.calls[h.id], strings.Join(argv, " "))
	if c.Intercept != nil {
		c.mu.Unlock()
		out, errOut, err, handled := c.Intercept(h.id, argv)
		c.mu.Lock()
		if handled {
			return []byte(out), []byte(errOut), err
		}
	}
	var out, errOut strings.Builder
	var failed bool
	switch name {
	case "lvs":
		failed = h.lvs(args, &out, &errOut)
	case "lvchange":
		failed = h.lvchange(args, &errOut)
	case "lvmlockctl":
		if slices.Equal(args, []string{"--info", "--dump"}) && c.Lvmlockd[h.id] {
			h.lockdDump(&out)
			break
		}
		failed = h.lockctl(&out, &errOut)
	case "dmsetup":
		failed = h.dmsetup(args, &out, &errOut)
	case "vgchange":
		failed = h.vgchange(args, &errOut)
	case "sanlock":
		failed = h.sanlock(args, &out, &errOut)
	default:
		return nil, nil, &exec.Error{Name: name, Err: exec.ErrNotFound}
	}
	if failed {
		return []byte(out.String()), []byte(errOut.String()), ExitError{Code: 5}
	}
	return []byte(out.String()), []byte(errOut.String()), nil
}

func (h *Host) lvs(args []string, out, errOut *strings.Builder) bool {
	var vgs []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--" {
			vgs = append(vgs, args[i+1:]...)
			break
		}
		if strings.HasPrefix(args[i], "-") {
			i++ // every lvs option lvhook uses takes a value
			continue
		}
		vgs = append(vgs, args[i])
	}
	if len(vgs) == 0 {
		for name := range h.c.VGs {
			vgs = append(vgs, name)
		}
		slices.Sort(vgs)
	}
	rows := []map[string]string{}
	failed := false
	for _, name := range vgs {
		vg := h.c.VGs[name]
		if vg == nil {
			fmt.Fprintf(errOut, "  Volume group \"%s\" not found\n  Cannot process volume group %s\n", name, name)
			failed = true
			continue
		}
		lockType := ""
		if vg.Shared {
			lockType = "sanlock"
		}
		names := make([]string, 0, len(vg.LVs))
		for n := range vg.LVs {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			lv := vg.LVs[n]
			active := ""
			if lv.Holders[h.id] != lvmlock.ModeNone || lv.Stale[h.id] {
				active = "active locally"
			}
			rows = append(rows, map[string]string{"vg_name": name, "lv_name": n, "lv_uuid": lv.UUID,
				"vg_lock_type": lockType, "segtype": lv.Segtype, "lv_attr": lv.Attr,
				"lv_active_locally": active, "lv_lockargs": lockArgs(vg, lv)})
		}
	}
	report := map[string]any{"report": []any{map[string]any{"lv": rows}}}
	b, _ := json.MarshalIndent(report, "", "  ")
	out.Write(b)
	out.WriteString("\n")
	return failed
}

func (h *Host) lockctl(out, errOut *strings.Builder) bool {
	if !h.c.Lvmlockd[h.id] {
		errOut.WriteString("Cannot connect to lvmlockd.\n")
		return true
	}
	names := make([]string, 0)
	for name, started := range h.c.Started[h.id] {
		if started {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(out, "VG %s lock_type=sanlock vguuid-%s\nLS sanlock lvm_%s\nLK VG un ver 12\n", name, name, name)
		vg := h.c.VGs[name]
		for _, lv := range vg.LVs {
			if m := lv.Holders[h.id]; m != lvmlock.ModeNone {
				fmt.Fprintf(out, "LK LV %s %s\n", m, lv.UUID)
			}
		}
	}
	return false
}

func (h *Host) lvchange(args []string, errOut *strings.Builder) bool {
	if len(args) < 2 {
		errOut.WriteString("  No command with matching syntax recognised.\n")
		return true
	}
	var want lvmlock.Mode
	switch args[0] {
	case "-aey", "-ay", "-aly":
		want = lvmlock.ModeEx
	case "-asy":
		want = lvmlock.ModeSh
	case "-an":
		want = lvmlock.ModeNone
	default:
		fmt.Fprintf(errOut, "  lvchange: fake does not model %s\n", args[0])
		return true
	}
	failed := false
	sharedOnly := false
	names := false // after "--"
	for i := 1; i < len(args); i++ {
		arg := args[i]
		if arg == "--" && !names {
			names = true
			continue
		}
		if arg == "--select" && i+1 < len(args) && !names {
			if args[i+1] != lvmlock.SharedOnly {
				fmt.Fprintf(errOut, "  fake does not model --select %s\n", args[i+1])
				return true
			}
			sharedOnly = true
			i++
			continue
		}
		vgName, lvName, _ := strings.Cut(arg, "/")
		vg := h.c.VGs[vgName]
		if vg == nil {
			fmt.Fprintf(errOut, "  Volume group \"%s\" not found\n  Cannot process volume group %s\n", vgName, vgName)
			failed = true
			continue
		}
		if vg.Shared && !h.c.Lvmlockd[h.id] {
			fmt.Fprintf(errOut, "  WARNING: lvmlockd process is not running.\n  Cannot access VG %s due to failed lock.\n", vgName)
			failed = true
			continue
		}
		if vg.Shared && !h.c.Started[h.id][vgName] {
			fmt.Fprintf(errOut, "  Cannot access VG %s due to failed lock.\n", vgName)
			failed = true
			continue
		}
		lv := vg.LVs[lvName]
		if lv == nil {
			fmt.Fprintf(errOut, "  Failed to find logical volume \"%s/%s\"\n", vgName, lvName)
			failed = true
			continue
		}
		if sharedOnly && !vg.Shared {
			continue // not selected
		}
		if msg := h.change(vg, vgName, lvName, lv, want); msg != "" {
			errOut.WriteString(msg)
			failed = true
		}
	}
	return failed
}

// change applies one LV's transition with lvmlockd's rules; "" is success.
func (h *Host) change(vg *VG, vgName, lvName string, lv *LV, want lvmlock.Mode) string {
	mine := lv.Holders[h.id]
	ref := lvmlock.Ref{VG: vgName, LV: lvName}
	if want == lvmlock.ModeNone {
		if mine != lvmlock.ModeNone && h.c.Open[h.id][ref] {
			return fmt.Sprintf("  Logical volume %s/%s in use.\n", vgName, lvName)
		}
		h.c.forget(h.id, lv, ref)
		return ""
	}
	if !vg.Shared {
		lv.Holders[h.id] = lvmlock.ModeEx
		return ""
	}
	if want == mine {
		return ""
	}
	switch {
	case h.c.Killed[h.id][vgName]:
		return fmt.Sprintf("  VG %s lock skipped: storage failed for sanlock leases\n  LV %s/%s lock failed: storage failed for sanlock leases\n", vgName, vgName, lvName)
	case h.c.Lost[h.id][vgName]:
		return fmt.Sprintf("  LV %s/%s lock failed: storage errors for sanlock leases\n", vgName, lvName)
	}
	if want == lvmlock.ModeSh && (strings.HasPrefix(lv.Segtype, "thin") || strings.HasPrefix(lv.Segtype, "raid") ||
		lv.Segtype == "cache" || lv.Attr[0] == 'o' || lv.Attr[0] == 's') {
		return fmt.Sprintf("  Shared activation not compatible with LV type %s of %s/%s\n", lv.Segtype, vgName, lvName)
	}
	for host, m := range lv.leases() {
		if host == h.id {
			continue
		}
		if want == lvmlock.ModeEx || m == lvmlock.ModeEx {
			return fmt.Sprintf("  LV locked by other host: %s/%s\n  Failed to lock logical volume %s/%s.\n", vgName, lvName, vgName, lvName)
		}
	}
	lv.Holders[h.id] = want
	return ""
}

// leases are the LV's leases as sanlock sees them on the storage: its
// holders and its ghosts.
func (lv *LV) leases() map[int]lvmlock.Mode {
	out := maps.Clone(lv.Holders)
	for host, m := range lv.Ghosts {
		if out[host] != lvmlock.ModeEx {
			out[host] = m
		}
	}
	return out
}
