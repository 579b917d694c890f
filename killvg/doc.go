// Package killvg is `lvhook kill-vg VG`, the command lvm.conf's
// global/lvmlockctl_kill_command names (lvm2 >= 2.03.12), and its undoing,
// `lvhook kill-vg --recover VG`.
//
// When sanlock on this host can no longer renew its lease on a VG's lease
// storage, lvmlockd runs `lvmlockctl --kill VG`, which runs the kill command
// with the VG's name appended, about once a second for some 40 s; after that
// the watchdog resets the whole host, killing every domain on it, those of
// other VGs too. If the command exits 0, lvmlockctl drops the VG's locks and
// the reset is avoided (lvmlockd(8), "sanlock lease storage failure"). The
// command must first make every LV of the VG unwritable on this host: other
// hosts may take the LVs once this host's lease is dead there, about 140 s
// after its last renewal.
//
// Kill replaces the table of every device-mapper device of the VG but its
// lvmlock LV (sanlock's) by the error target, the LVs' own devices first,
// then their layers (a thin pool or a cache writes on its own); a wipe's
// suspend flushes, so the writes in flight complete first. It checks the
// tables again, records what it did (state.Killed), then destroys every
// domain of this host that uses the VG: the error tables are the guarantee,
// the destroys hygiene. It exits 0 only when no device of the VG can be
// written. Storage that hangs instead of failing blocks a wipe in the
// kernel: Kill then gives up at its deadline and fails, and the watchdog
// resets the host as it would have without lvhook.
package killvg
