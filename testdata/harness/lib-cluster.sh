# shellcheck shell=bash
# lvhook harness: the cluster: diagnostics, booting every host (cluster_boot) and a
# crashed one again (restart_host), the lock daemons and vg0's lockspace, the test LVs,
# libvirt's pool and domains, the hooks (install_lvhook, install_hooks), cluster_up and
# cluster_down. Sourced by lib.sh, whose guest helpers (hrun, hsh, boot_host,
# wait_agent, wait_until, ...) it uses, as it uses lib-lvhook.sh's build_debs,
# lvhook_deb and install_lvhook_pkg.
#
# Every wait here is bounded and fails with a message saying what it waited for.

# lvm_state HOST: one line per test LV, "NAME ACTIVE MODE" (guest-tools/lvm-state).
lvm_state() { hrun "$1" -t 60 bash /mnt/ctl/tools/lvm-state "$VG"; }

# diagnostics prints what each running host saw; called on any failure.
diagnostics() {
	local h
	for h in "${HOSTS[@]}"; do
		echo "==================== $h: diagnostics ====================" >&2
		if [[ -f $(host_dir "$h")/console.log ]]; then
			echo "---- $h: serial console (tail)" >&2
			tail -n 25 "$(host_dir "$h")/console.log" | tr -d '\r' >&2
		fi
		if qemu_running "$h" && agent_ready "$h"; then
			hsh "$h" -t 60 '
				echo "---- journal (libvirtd, lvmlockd, sanlock, lvhook)"
				journalctl -q --no-pager -n 60 -u libvirtd -u lvmlockd -u sanlock -t lvhook -t lvhook-trace
				echo "---- lvmlockctl -i"; lvmlockctl -i
				echo "---- lvmlockd: last lock requests (client[pid] op)"
				lvmlockctl --dump | grep -E "^[0-9]+ (send|recv) " | tail -n 40
				echo "---- sanlock client log_dump (tail)"; sanlock client log_dump | tail -n 30
				echo "---- lvs"; lvs -o lv_name,lv_active,lv_uuid '"$VG"'
				echo "---- virsh list --all"; timeout 30 virsh list --all
				echo "---- hook calls"; tail -n 30 /var/log/lvhook-trace.log 2>/dev/null' >&2 2>&1 || true
		else
			echo "---- $h: QEMU or agent not running" >&2
		fi
	done
}

# cluster_boot: fresh shared disk, every guest booted and its agent answering.
cluster_boot() {
	local h t0=$SECONDS
	for h in "${HOSTS[@]}"; do
		if qemu_running "$h"; then
			die "$h is already running (run '$HARNESS_DIR/cluster.sh down' first)"
		fi
	done
	if command -v ss >/dev/null && ss -Hlun "sport = :$NET_PORT" | grep -q .; then
		die "UDP port $NET_PORT (the guests' network) is in use, another cluster? Set LVHOOK_NET_PORT and LVHOOK_RUN_DIR to run a second one"
	fi
	rm -rf "$RUN_DIR"
	mkdir -p "$RUN_DIR"
	truncate -s "$SHARED_DISK_SIZE" "$RUN_DIR/shared.raw"
	log "booting ${HOSTS[*]}, Debian $DEBIAN (TCG, $GUEST_CPUS vCPU, $GUEST_MEM MiB each; about 1.5 min)"
	for h in "${HOSTS[@]}"; do
		boot_host "$h"
	done
	for h in "${HOSTS[@]}"; do
		wait_agent "$h" 400
		log "$h: agent ready after $((SECONDS - t0)) s"
	done
	TIME_BOOT=$((SECONDS - t0))
}

# restart_host HOST: boot HOST again after a crash (kill_host), on its own root disk
# (lvhook, libvirt's domains and the configuration stay), start its lock daemons and
# rejoin the lockspace (it waits for the host's lease of before the crash to expire).
restart_host() {
	local host=$1 t0=$SECONDS
	qemu_running "$host" && die "$host is running"
	log "$host: booting again on its own root disk"
	BOOT_KEEP_DISK=1 boot_host "$host"
	wait_agent "$host" 400
	start_lock_daemons "$host" || die "$host: sanlock/lvmlockd did not start"
	# sanlock takes the host's host_id back only once its lease of before the crash
	# has expired; a lock start may also fail meanwhile: try again, bounded.
	wait_until "$host rejoins lockspace $VG" 420 rejoin "$host" || {
		lock_logs "$host"
		die "$host: lockspace $VG not started 420 s after the restart"
	}
	hsh "$host" -t 150 'for i in $(seq 120); do systemctl is-active -q libvirtd lvhook.service && exit 0; sleep 1; done; exit 1' ||
		die "$host: libvirtd or lvhook.service not active after the restart"
	log "$host: back in $((SECONDS - t0)) s (booted, lockspace $VG joined, libvirtd and lvhook.service active)"
}

# The first join of a crashed host's host_id takes about 160 s: sanlock watches the
# old host lease for 140 s (host_dead_seconds) before it takes it over. Every failed
# try (the lease still held, lvmlockd's transient EARGS of lock_start) is retried by
# the caller's wait_until; the last one's output stays in the guest for lock_logs.
rejoin() {
	lockspace_started "$1" && return 0
	hsh "$1" -t 330 "vgchange --lock-start $VG >/root/lock-start.out 2>&1" >/dev/null 2>&1
	lockspace_started "$1"
}

start_lock_daemons() {
	hsh "$1" -t 60 'systemctl start sanlock lvmlockd && systemctl is-active sanlock lvmlockd >/dev/null'
}

# lvmlockctl -i lists the VG as soon as its lock start begins; sanlock client status
# marks the lockspace ADD until the join is done (activations are refused until then).
lockspace_started() {
	hsh "$1" -t 30 "lvmlockctl -i | grep -q '^VG $VG lock_type=sanlock' &&
		sanlock client status | grep -q '^s lvm_$VG:[0-9]*:[^ ]*\$'"
}
lockspace_stopped() { hsh "$1" -t 30 "! lvmlockctl -i | grep -q '^VG $VG lock_type=sanlock'"; }

# lock_start HOST: join vg0's lockspace and verify it (vgchange may exit 0 on failure).
# lvmlockd's lock start can fail with EARGS ("invalid parameters for sanlock", rv
# -212) when udev has not yet made the lvmlock LV's device node (lvm2's
# prepare_lockspace_san: "device is not always ready for us here"), seen on a busy
# machine: that error alone is tried again, up to 5 times with a pause growing from
# 5 s. Any failure prints sanlock's and lvmlockd's own logs.
lock_start() {
	local host=$1 out try
	hrun "$host" rm -f /root/lock-start.out >/dev/null 2>&1 || true
	for try in 1 2 3 4 5; do
		out=$(hrun "$host" -t 180 vgchange --lock-start "$VG" 2>&1) && break
		if [[ $out != *"invalid parameters for sanlock"* || $try == 5 ]]; then
			lock_logs "$host"
			die "$host: vgchange --lock-start $VG failed (try $try): $out"
		fi
		log "  $host: vgchange --lock-start $VG: EARGS (device node not ready yet); trying again in $((5 * try)) s"
		sleep $((5 * try))
	done
	wait_until "$host: lockspace $VG in lvmlockctl -i" 120 lockspace_started "$host" || {
		lock_logs "$host"
		die "$host: lockspace $VG not started"
	}
}

# lock_logs HOST: the tails of sanlock's and lvmlockd's own logs, on stderr.
lock_logs() {
	hsh "$1" -t 60 '
		[ -s /root/lock-start.out ] && { echo "---- '"$1"': last vgchange --lock-start"; cat /root/lock-start.out; }
		echo "---- '"$1"': sanlock client log_dump (tail)"; sanlock client log_dump | tail -n 40
		echo "---- '"$1"': lvmlockctl --dump (tail)"; lvmlockctl --dump | tail -n 60' >&2 2>&1 || true
}

cluster_storage() {
	local t0=$SECONDS lv
	log "starting sanlock and lvmlockd on ${HOSTS[*]}"
	on_all start_lock_daemons || die "sanlock/lvmlockd did not start"
	log "host1: vgcreate --shared $VG (about 35 s)"
	hrun host1 -t 300 vgcreate --shared "$VG" "$SHARED_PV" >/dev/null || die "vgcreate --shared failed"
	TIME_VGCREATE=$((SECONDS - t0))
	log "vgcreate took $TIME_VGCREATE s"
	wait_until "host1: lockspace $VG" 120 lockspace_started host1 || die "host1: lockspace $VG not started"
	t0=$SECONDS
	log "${HOSTS[*]:1}: vgchange --lock-start $VG (about 25 s), while host1 creates the test LVs"
	local ls_pids=() h
	for h in "${HOSTS[@]:1}"; do
		lock_start "$h" &
		ls_pids+=($!)
	done
	local script="set -e -o pipefail"
	for lv in "${TEST_LVS[@]}"; do
		script+=$'\n'"lvcreate -qq -an -Zn -Wn -L 8m -n $lv $VG 2>&1 | { grep -v 'not zeroed' || true; }"
	done
	hsh host1 -t 300 "$script" >/dev/null || die "lvcreate of the test LVs failed"
	log "host1: ${#TEST_LVS[@]} LVs created in $((SECONDS - t0)) s"
	for h in "${ls_pids[@]}"; do
		wait "$h" || die "a lock start failed (above)"
	done
	TIME_LOCKSTART=$((SECONDS - t0))
	log "${HOSTS[*]} in lockspace $VG ($TIME_LOCKSTART s for the lock starts)"
}

# define_libvirt HOST: the logical pool and every test domain, with their fixed UUIDs.
define_libvirt() {
	local host=$1
	hrun "$host" rm -rf /mnt/ctl/domains >/dev/null
	cp -r "$HARNESS_DIR/domains" "$(host_dir "$host")/share/domains"
	# The pool is only defined here: starting a logical pool runs 'vgchange -aly vg0',
	# which takes an ex lock on every LV of the VG (see pool_start).
	hsh "$host" -t 300 '
		set -e
		mkdir -p /var/lib/libvirt/images
		truncate -s 1M /var/lib/libvirt/images/tmixed.iso
		virsh -q pool-define /mnt/ctl/domains/vgpool.pool.xml >/dev/null
		for f in /mnt/ctl/domains/*.xml; do
			case $f in *.pool.xml) continue ;; esac
			virsh -q define "$f" >/dev/null
		done
		virsh -q list --all --name | sort | tr "\n" " "; echo'
}

# pool_start HOST: make the logical pool vgpool active on HOST, listing pool1 (libvirt
# translates a <disk type='volume'> only through an active pool that lists the volume).
# What libvirt 9.0 does with a logical pool over a shared VG:
#  - 'virsh pool-start' runs 'vgchange -aly vg0': EVERY LV of the VG activated ex here;
#  - a refresh (pool start, pool-refresh, libvirtd start or reload) lists only the LVs
#    active on this host at that moment;
#  - at libvirtd start/reload the pool is marked active or inactive by whether /dev/vg0
#    exists, i.e. whether any LV of the VG is active here.
# So: only while no test LV is active anywhere, one host at a time; 'vgchange -an'
# right after a start; and a pool running with a stale list is refreshed while pool1
# alone is active.
pool_start() {
	hsh "$1" -t 300 '
		if ! virsh -q pool-info vgpool | grep -q "^State: *running"; then
			virsh -q pool-start vgpool >/dev/null; rc=$?
			vgchange -an '"$VG"' >/dev/null || rc=1
			((rc == 0)) || exit $rc
		fi
		if ! virsh -q vol-info --pool vgpool pool1 >/dev/null 2>&1; then
			lvchange -aey '"$VG"'/pool1 && virsh -q pool-refresh vgpool >/dev/null; rc=$?
			lvchange -an '"$VG"'/pool1 || rc=1
			((rc == 0)) || exit $rc
		fi
		if ! virsh -q vol-info --pool vgpool pool1 >/dev/null; then
			echo "pool vgpool is running but does not list the volume pool1:" >&2
			virsh vol-list vgpool >&2
			exit 1
		fi'
}

# install_lvhook HOST: the operator's install of lvhook into a guest, kept in this one
# function so it can switch to installing the .deb from dist/. libvirtd is restarted
# by install_hooks afterwards.
install_lvhook() {
	local host=$1
	if lvhook_deb >/dev/null; then
		install_lvhook_pkg "$host" # lib-lvhook.sh: the .deb, peers and TLS
		return
	fi
	cp "$LVHOOK_BIN" "$(host_dir "$host")/share/lvhook"
	hsh "$host" -t 60 '
		set -e
		install -m 0755 /mnt/ctl/lvhook /usr/sbin/lvhook
		ln -sfn /usr/sbin/lvhook /etc/libvirt/hooks/qemu.d/lvhook'
}

# install_hooks HOST: the 00-trace hook (records hook calls), lvhook when built, then
# 'systemctl reload libvirtd': libvirtd caches which hook drivers it found, and looks
# again on SIGHUP (the e2e scenarios fail if the new hook is not called).
install_hooks() {
	local host=$1
	cp "$HARNESS_DIR/guest-hooks/00-trace" "$(host_dir "$host")/share/00-trace"
	hrun "$host" install -m 0755 /mnt/ctl/00-trace /etc/libvirt/hooks/qemu.d/00-trace
	if lvhook_available; then
		install_lvhook "$host"
	else
		hrun "$host" rm -f /etc/libvirt/hooks/qemu.d/lvhook
	fi
	hsh "$host" -t 180 '
		set -e
		systemctl reload libvirtd
		timeout 120 virsh -q version >/dev/null
		ls /etc/libvirt/hooks/qemu.d | tr "\n" " "; echo'
}

lvhook_available() { [[ -x $LVHOOK_BIN ]]; }

# cluster_up: boot, lock daemons, shared VG, test LVs, pool + domains, lvhook (if built).
cluster_up() {
	need_root
	install_host_packages
	local t0=$SECONDS
	HARNESS_IMAGE_T0=$SECONDS
	"$HARNESS_DIR/build-image.sh" >/dev/null || die "image build failed"
	TIME_IMAGE=$((SECONDS - HARNESS_IMAGE_T0))
	cluster_boot
	cluster_storage
	log "defining pool vgpool and the test domains on ${HOSTS[*]}"
	on_all define_libvirt || die "defining the test domains failed"
	if lvhook_available; then
		build_debs
		log "installing lvhook (its .deb) as /etc/libvirt/hooks/qemu.d/lvhook, and the 00-trace hook"
	else
		log "no $LVHOOK_BIN: cluster up WITHOUT lvhook (only the 00-trace hook)"
	fi
	on_all install_hooks || die "installing the hooks failed"
	TIME_UP=$((SECONDS - t0))
	log "cluster up in $TIME_UP s (image $TIME_IMAGE s, boot $TIME_BOOT s, vgcreate $TIME_VGCREATE s, lock-start $TIME_LOCKSTART s)"
}

# guest_shutdown HOST: stop every domain and leave the lockspace, so poweroff does not
# hang on sanlock/lvmlockd (their units do not SIGKILL), then power off.
guest_shutdown() {
	hsh "$1" -t 150 '
		for d in $(timeout 30 virsh -q list --name 2>/dev/null); do timeout 30 virsh -q destroy "$d" >/dev/null 2>&1; done
		timeout 30 vgchange -an '"$VG"' >/dev/null 2>&1
		timeout 60 vgchange --lock-stop '"$VG"' >/dev/null 2>&1
		systemctl --no-block poweroff' >/dev/null 2>&1 || true
}

# cluster_down: clean bounded shutdown; QEMU killed after the bound whatever happens.
cluster_down() {
	local h any=0
	for h in "${HOSTS[@]}"; do
		qemu_running "$h" && any=1
	done
	((any)) || return 0
	log "shutting the cluster down"
	for h in "${HOSTS[@]}"; do
		if qemu_running "$h" && agent_ready "$h"; then
			guest_shutdown "$h" &
		fi
	done
	wait || true
	for h in "${HOSTS[@]}"; do
		kill_host "$h" 60
	done
	log "cluster down"
}
