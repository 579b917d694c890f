package lvmlock

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Device-mapper devices, for `lvhook kill-vg`. When sanlock loses a VG's
// lease storage, lvmlockd(8) ("sanlock lease storage failure") wants every LV
// of the VG made unwritable before it drops the VG's locks: each LV's table
// replaced by the error target, which dmsetup does without lvm (lvm would
// scan the lost storage). dmsetup (libdm/dm-tools/dmsetup.c) runs like lvm:
// through the Runner, LC_ALL=C, "--" before the device names, which are
// checked first. It can block in the kernel (a suspend waits for in-flight
// I/O), so every dmsetup call returns at its ctx's end (runBounded).

// DMDevice is one device-mapper device as `dmsetup info -c` reports it.
type DMDevice struct {
	Name string
	UUID string
	// Open is its open count: QEMU, a device stacked on it, a mount.
	Open int
	// VG, LV and Layer are dmsetup's split of an LVM device's name (empty
	// for other devices): Layer is "" for an LV's own device (hidden LVs
	// such as pool_tdata included), else the layer (tpool, real, cow, ...).
	VG, LV, Layer string
}

// LVM tells whether lvm made the device: dmsetup splits only those names
// (its uuid starts with LVM-).
func (d DMDevice) LVM() bool { return strings.HasPrefix(d.UUID, "LVM-") }

// DMTarget is one line of a device's live table.
type DMTarget struct {
	Start, Length uint64
	// Type is the target type (linear, striped, thin, error, ...); "" for a
	// line that could not be read.
	Type   string
	Params string
}

// dmInfoFields are the columns DMDevices asks for, in ParseDMInfo's order.
const dmInfoFields = "name,uuid,open,vg_name,lv_name,lv_layer"

// ParseDMInfo reads `dmsetup info -c --noheadings --separator '|' -o
// name,uuid,open,vg_name,lv_name,lv_layer`: one unaligned line per device
// (with a separator dmsetup does not align), "No devices found" when there
// is none. A device-mapper name may hold any character but '/', an LVM one
// only lvm's name characters: a line that does not split into six fields is
// another subsystem's device and is skipped; an LVM device whose open count
// is not a number is an error.
func ParseDMInfo(out []byte) ([]DMDevice, error) {
	var devs []DMDevice
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(strings.TrimRight(sc.Text(), "\r"), "|")
		if len(f) != 6 {
			continue
		}
		d := DMDevice{Name: f[0], UUID: f[1], VG: f[3], LV: f[4], Layer: f[5]}
		open, err := strconv.Atoi(strings.TrimSpace(f[2]))
		switch {
		case err != nil && d.LVM():
			return nil, fmt.Errorf("dmsetup info: device %s: open count %q is not a number", d.Name, f[2])
		case err != nil:
			continue
		}
		d.Open = open
		devs = append(devs, d)
	}
	return devs, sc.Err()
}

// ParseDMTables reads `dmsetup table` with no device named (dmsetup.c,
// _status): "NAME: START LENGTH TYPE PARAMS" per target, "NAME: " alone for
// a device without a live table, "No devices found" when there is none. A
// device without a table maps to an empty slice; a target line that does not
// read gets Type "", which no caller takes for the error target.
func ParseDMTables(out []byte) map[string][]DMTarget {
	tables := map[string][]DMTarget{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		// LVM names hold no ':'; the first ": " ends the name.
		name, rest, ok := strings.Cut(line, ": ")
		if !ok {
			name, ok = strings.CutSuffix(line, ":")
		}
		if !ok || name == "" {
			continue // "No devices found"
		}
		if _, seen := tables[name]; !seen {
			tables[name] = []DMTarget{}
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue // no live table
		}
		var t DMTarget
		if len(f) >= 3 {
			start, err1 := strconv.ParseUint(f[0], 10, 64)
			length, err2 := strconv.ParseUint(f[1], 10, 64)
			if err1 == nil && err2 == nil {
				t = DMTarget{Start: start, Length: length, Type: f[2], Params: strings.Join(f[3:], " ")}
			}
		}
		tables[name] = append(tables[name], t)
	}
	return tables
}

// ErrorOnly tells whether a table makes its device unwritable: no live
// table, or only error targets.
func ErrorOnly(table []DMTarget) bool {
	for _, t := range table {
		if t.Type != "error" {
			return false
		}
	}
	return true
}

// DMDevices lists every device-mapper device of this host (`dmsetup info`).
func (c *Client) DMDevices(ctx context.Context) ([]DMDevice, error) {
	// No operand: every device.
	out, err := c.runBounded(ctx, "dmsetup", "info", "-c", "--noheadings", "--separator", "|", "-o", dmInfoFields)
	if err != nil {
		return nil, err
	}
	return ParseDMInfo(out)
}

// DMTables returns the live table of every device, by name (`dmsetup table`).
func (c *Client) DMTables(ctx context.Context) (map[string][]DMTarget, error) {
	out, err := c.runBounded(ctx, "dmsetup", "table")
	if err != nil {
		return nil, err
	}
	return ParseDMTables(out), nil
}

// WipeTable replaces a device's table by the error target (`dmsetup
// wipe_table`): a reload, then a resume whose suspend flushes and waits for
// the I/O in flight, so that writes already issued complete before the error
// table takes over. No --force (noflush, nolockfs): that would drop what is
// in flight. On storage that hangs the suspend blocks in the kernel; the
// call then returns at ctx's end, the command left behind.
func (c *Client) WipeTable(ctx context.Context, name string) error {
	if err := validDMName(name); err != nil {
		return err
	}
	_, err := c.runBounded(ctx, "dmsetup", "wipe_table", "--", name)
	return err
}

// RemoveDM removes a device (`dmsetup remove`); the kernel refuses an open one.
func (c *Client) RemoveDM(ctx context.Context, name string) error {
	if err := validDMName(name); err != nil {
		return err
	}
	_, err := c.runBounded(ctx, "dmsetup", "remove", "--", name)
	return err
}

// validDMName returns a *NameError unless name could be an LVM device's
// name: lvm's name characters (VG-LV, with '-' doubled inside names, and a
// layer suffix), within dm's 127 bytes, not starting with '-'.
func validDMName(name string) error {
	if !ValidName(name) {
		return &NameError{What: "device-mapper name", Name: name}
	}
	return nil
}

// runBounded is run for a command that may block in the kernel: it returns
// at ctx's end even if the command does not. ExecRunner kills the command
// then, but a process in uninterruptible sleep (D state, a suspend waiting
// for storage that hangs) dies only when the kernel lets it, and exec's Wait
// waits for that; the goroutine is left to it.
func (c *Client) runBounded(ctx context.Context, args ...string) ([]byte, error) {
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := c.run(ctx, args...)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-ctx.Done():
		select {
		case r := <-done:
			return r.out, r.err
		default:
		}
		return nil, newError(args, nil, fmt.Errorf("gave up waiting for it (it may be blocked in the kernel): %w", ctx.Err()))
	}
}
