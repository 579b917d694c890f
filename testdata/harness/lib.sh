# shellcheck shell=bash
# lvhook harness library: the test cluster (QEMU guests host1, host2 and, with
# HOSTS=3, host3 on this machine, one shared disk, real lvm2 + lvmlockd + sanlock +
# libvirtd inside).
# Sourced by build-image.sh, cluster.sh, e2e.sh, demo.sh and capture.sh.
#
# Every wait here is bounded and fails with a message saying what it waited for.

HARNESS_DIR=${HARNESS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO_DIR=$(cd "$HARNESS_DIR/../.." && pwd)
IMAGE_CACHE=${LVHOOK_IMAGE_CACHE:-/var/cache/lvhook-harness}
RUN_DIR=${LVHOOK_RUN_DIR:-/var/tmp/lvhook-harness/run}
NET_PORT=${LVHOOK_NET_PORT:-47901}
NET_GROUP=230.76.86.1
GUEST_MEM=${LVHOOK_GUEST_MEM:-3072}
GUEST_CPUS=${LVHOOK_GUEST_CPUS:-2}
SHARED_DISK_SIZE=${LVHOOK_SHARED_DISK_SIZE:-1G}
LVHOOK_BIN=${LVHOOK_BIN:-$REPO_DIR/bin/lvhook}
# The guests' Debian release: 13 "trixie" (current stable, the default) or 12 "bookworm".
DEBIAN=${DEBIAN:-13}
# HOSTS=2 (default) or 3: how many hosts share the disk (host_id 1..N). HOST_COUNT is
# what child scripts inherit (HOSTS becomes the array of names below, not exported);
# a HOSTS given by the caller wins over an inherited HOST_COUNT.
HOST_COUNT=${HOSTS:-${HOST_COUNT:-2}}
[[ $HOST_COUNT == 2 || $HOST_COUNT == 3 ]] ||
	{ echo "HOSTS=$HOST_COUNT: the harness runs 2 or 3 hosts" >&2 && exit 2; }
export HOST_COUNT
unset HOSTS
HOSTS=()
for ((i = 1; i <= HOST_COUNT; i++)); do HOSTS+=("host$i"); done
unset i
VG=vg0
SHARED_PV=/dev/disk/by-id/virtio-shared0

# Test LVs in vg0 (name:size). Which domain uses which is in domains/*.xml.
TEST_LVS=(t1 t3a t3b t3c pool1 mixed1 share1 optout1)

# Host packages the harness needs on the build machine (command:package).
HOST_TOOLS=(debootstrap:debootstrap qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils
	mkfs.ext4:e2fsprogs inotifywait:inotify-tools jq:jq flock:util-linux)

HARNESS_T0=${HARNESS_T0:-$SECONDS}

log() { printf '[%4ds] %s\n' "$((SECONDS - HARNESS_T0))" "$*" >&2; }
# Progress lines go to the stderr the script started with (fd 9), never into the
# output of a command being captured.
exec 9>&2
progress() { printf '[%4ds] %s\n' "$((SECONDS - HARNESS_T0))" "$*" >&9; }
die() {
	printf '[%4ds] FATAL: %s\n' "$((SECONDS - HARNESS_T0))" "$*" >&2
	# e2e.sh repeats it as its last line, after the diagnostics (dies in subshells too).
	[[ -n ${HARNESS_FATAL:-} ]] && printf '%s\n' "$*" >>"$HARNESS_FATAL"
	# Into e2e.sh's results file once this run has started it (e2e-ci.sh recaps it).
	if [[ ${RESULTS_STARTED:-} == 1 ]] && declare -F result >/dev/null; then
		result failure --arg message "FATAL: $*"
	fi
	exit 1
}
need_root() { ((EUID == 0)) || die "must run as root (it boots QEMU guests and builds a root image)"; }

# install_host_packages installs with apt-get whatever of HOST_TOOLS is missing.
install_host_packages() {
	local t missing=()
	for t in "${HOST_TOOLS[@]}"; do
		command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
	done
	((${#missing[@]} == 0)) && return 0
	log "installing host packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Two image builds may install at once: one apt-get at a time (apt's own locks
	# make the second fail rather than wait).
	local lock
	exec {lock}>/run/lvhook-harness-apt.lock
	flock -w 900 "$lock" || die "timed out waiting for another harness apt-get"
	apt-get update -q >/dev/null || die "apt-get update failed"
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
	exec {lock}>&-
}

# debian_suite prints the suite of DEBIAN (12 or 13).
debian_suite() {
	case $DEBIAN in
	12) echo bookworm ;;
	13) echo trixie ;;
	*) die "DEBIAN=$DEBIAN: the harness builds Debian 12 or 13 guests" ;;
	esac
}

# image_hash is the cache key of the guest image: what builds it, nothing else.
image_hash() {
	(
		cd "$HARNESS_DIR" || exit 1
		echo "debian $DEBIAN"
		sha256sum build-image.sh guest/*
	) | sha256sum | cut -c1-16
}

image_dir() { echo "$IMAGE_CACHE/$(image_hash)"; }

# wait_until DESC TIMEOUT CMD...: run CMD every second until it succeeds; fail after
# TIMEOUT seconds. Prints progress every 20 s so a long wait is visibly alive.
wait_until() {
	local desc=$1 timeout=$2 start=$SECONDS next=20
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - start >= timeout)); then
			log "timed out after ${timeout}s waiting for: $desc"
			return 1
		fi
		if ((SECONDS - start >= next)); then
			progress "  still waiting for $desc ($((SECONDS - start))s of ${timeout}s)"
			next=$((next + 20))
		fi
		sleep 1
	done
}

# wait_file PATH TIMEOUT [DESC]: wait until PATH exists, woken by inotify (host side),
# with a periodic recheck so a missed event only costs a few seconds. With DESC, says
# every 20 s that it is still waiting.
wait_file() {
	local path=$1 timeout=$2 desc=${3:-} start=$SECONDS left next=20
	while [[ ! -e $path ]]; do
		left=$((timeout - (SECONDS - start)))
		((left > 0)) || return 1
		((left > 5)) && left=5
		inotifywait -qq -t "$left" -e moved_to -e create -e close_write "$(dirname "$path")" \
			>/dev/null 2>&1 || true
		if [[ -n $desc ]] && ((SECONDS - start >= next)); then
			progress "  ... $desc: $((SECONDS - start)) s"
			next=$((next + 20))
		fi
	done
}

host_num() {
	local n=${1#host}
	if [[ ! $n =~ ^[1-9]$ ]] || ((n > HOST_COUNT)); then
		die "unknown host '$1' (${HOSTS[*]})"
	fi
	echo "$n"
}
host_dir() { echo "$RUN_DIR/host$(host_num "$1")"; }

# ---------------------------------------------------------------------------------
# Running commands in a guest

# hrun HOST [-t TIMEOUT] CMD...: run CMD (argv, quoted for bash) in HOST as root with
# LC_ALL=C; prints its stdout and stderr, returns its exit status (124 on timeout).
hrun() {
	local host=$1 limit=120
	shift
	if [[ ${1:-} == -t ]]; then
		limit=$2
		shift 2
	fi
	local script
	printf -v script '%q ' "$@"
	hrun_script "$host" "$limit" "$script"
}

# hsh HOST [-t TIMEOUT] SCRIPT: like hrun, for a bash script (pipes, &&, ...).
hsh() {
	local host=$1 limit=120
	shift
	if [[ ${1:-} == -t ]]; then
		limit=$2
		shift 2
	fi
	hrun_script "$host" "$limit" "$1"
}

hrun_script() {
	local host=$1 limit=$2 script=$3 dir req id rc
	dir=$(host_dir "$host")
	req=$dir/share/req
	[[ -d $req ]] || die "$host: no agent directory $req (is the cluster up?)"
	id=$(date +%s%N)-$BASHPID-$RANDOM
	# fd 3 is the agent's doorbell port: keep it from leaking into lvm (which warns).
	printf 'exec 3<&-\nexport LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n%s\n' \
		"$script" >"$req/$id.sh.tmp"
	mv -f "$req/$id.sh.tmp" "$req/$id.sh"
	# O_RDWR open of the FIFO never blocks, even if QEMU is gone.
	printf '%s %s\n' "$id" "$limit" 1<>"$dir/ctl.in"
	local what=${script//$'\n'/; }
	if ! wait_file "$req/$id.rc" $((limit + 20)) "$host: ${what:0:60}"; then
		log "$host: no answer from the agent within $((limit + 20))s for: $script"
		return 125
	fi
	cat "$req/$id.out"
	cat "$req/$id.err" >&2
	rc=$(cat "$req/$id.rc")
	rm -f "$req/$id".*
	return "$rc"
}

# on_all CMD...: run CMD (a function or command taking HOST as its first argument)
# for every host in parallel; output of each host prefixed; fails if any fails.
on_all() {
	local h pids=() rc=0 i
	for h in "${HOSTS[@]}"; do
		("$@" "$h" > >(sed "s/^/$h: /") 2> >(sed "s/^/$h: /" >&2)) &
		pids+=($!)
	done
	for i in "${pids[@]}"; do
		wait "$i" || rc=1
	done
	return $rc
}

# ---------------------------------------------------------------------------------
# QEMU guests

qemu_pid() {
	local dir pid
	dir=$(host_dir "$1")
	[[ -f $dir/qemu.pid ]] || return 1
	pid=$(cat "$dir/qemu.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	# Only a QEMU started from this run directory counts (pids get reused).
	{ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$dir/" || return 1
	echo "$pid"
}

qemu_running() { qemu_pid "$1" >/dev/null; }

boot_host() {
	local host=$1 n dir img net
	n=$(host_num "$host")
	dir=$(host_dir "$host")
	img=$(image_dir)
	mkdir -p "$dir/share/req"
	rm -rf "$dir/share/tools"
	cp -r "$HARNESS_DIR/guest-tools" "$dir/share/tools"
	rm -f "$dir/share/ready" "$dir/share/req/"* "$dir/qemu.pid"
	[[ -p $dir/ctl.in ]] || mkfifo "$dir/ctl.in"
	[[ -p $dir/ctl.out ]] || mkfifo "$dir/ctl.out"
	# A fresh root disk, unless the host is restarted after a crash (restart_host).
	if [[ ${BOOT_KEEP_DISK:-0} != 1 || ! -f $dir/disk.qcow2 ]]; then
		qemu-img create -q -f qcow2 -b "$img/base.raw" -F raw "$dir/disk.qcow2"
	fi
	# The guests' private network: one UDP multicast group on this machine's loopback,
	# which any number of guests join (10.0.0.N each); cluster_boot checks it is free.
	net=mcast=$NET_GROUP:$NET_PORT,localaddr=127.0.0.1
	# The shared disk goes through the host's page cache (cache=writeback): one copy
	# of the file for both QEMU processes. With cache=none (O_DIRECT) a full run once
	# saw host1's sanlock read back an older copy of its own host lease ("delta_renew
	# reread mismatch", then the lockspace was killed); the cause was not found.
	# One TCG thread per guest (thread=single): with a thread per vCPU, a Debian 13
	# guest (kernel 6.12) once died in a three-host run with "Fatal exception in
	# interrupt", its RIP one byte into a 5-byte NOP of get_page_from_freelist: an
	# int3 of the kernel's live code patching (static keys) seen by another vCPU
	# after the patch was done. A round-robin thread runs no two vCPUs of a guest
	# at once; on this 2-core machine the guests share 2 cores either way.
	# fd 9 (progress lines) closed for QEMU: once daemonized it would hold the caller's
	# pipe open (e2e-ci.sh's tee) for as long as the guest runs.
	qemu-system-x86_64 -name "lvhook-$host" \
		-machine pc -accel tcg,thread=single -cpu max -smp "$GUEST_CPUS" -m "$GUEST_MEM" \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
		-append "root=LABEL=lvhook-root rw console=ttyS0 net.ifnames=0 apparmor=0 panic=-1 lvhook.host=$n" \
		-drive "file=$dir/disk.qcow2,format=qcow2,if=none,id=root,cache=unsafe" \
		-device virtio-blk-pci,drive=root,addr=0x4 \
		-drive "file=$RUN_DIR/shared.raw,format=raw,if=none,id=sd,cache=writeback,file.locking=off" \
		-device virtio-blk-pci,drive=sd,share-rw=on,serial=shared0,addr=0x5 \
		-netdev "socket,id=n0,$net" -device "virtio-net-pci,netdev=n0,mac=52:54:00:4c:56:0$n" \
		-virtfs "local,path=$dir/share,mount_tag=ctl,security_model=none,id=ctl" \
		-device virtio-serial-pci -chardev "pipe,id=ctl,path=$dir/ctl" \
		-device virtserialport,chardev=ctl,name=lvhook.ctl \
		-chardev "socket,id=con,path=$dir/console.sock,server=on,wait=off,logfile=$dir/console.log,logappend=on" \
		-serial chardev:con \
		-qmp "unix:$dir/qmp.sock,server=on,wait=off" \
		-display none -monitor none -no-reboot \
		-pidfile "$dir/qemu.pid" -daemonize 9>&- ||
		die "$host: QEMU failed to start"
}

# kill_host HOST [GRACE]: wait up to GRACE seconds for QEMU to exit, then SIGTERM, then
# SIGKILL. Never returns with that QEMU still running.
kill_host() {
	local host=$1 grace=${2:-0} pid start=$SECONDS
	pid=$(qemu_pid "$host") || return 0
	while kill -0 "$pid" 2>/dev/null && ((SECONDS - start < grace)); do sleep 1; done
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	start=$SECONDS
	while kill -0 "$pid" 2>/dev/null && ((SECONDS - start < 10)); do sleep 1; done
	if kill -0 "$pid" 2>/dev/null; then
		log "$host: QEMU $pid ignored SIGTERM; SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		start=$SECONDS
		while kill -0 "$pid" 2>/dev/null && ((SECONDS - start < 10)); do sleep 1; done
	fi
}

agent_ready() { [[ -f $(host_dir "$1")/share/ready ]]; }

# wait_agent HOST TIMEOUT: wait for HOST's agent; fail early if its QEMU died.
wait_agent() {
	local host=$1 timeout=$2 start=$SECONDS next=30 ready
	ready=$(host_dir "$host")/share/ready
	until [[ -f $ready ]]; do
		qemu_running "$host" || die "$host: QEMU exited during boot (see $(host_dir "$host")/console.log)"
		if ((SECONDS - start >= timeout)); then
			# What failed during the boot, as systemd printed it on the console.
			tr -d '\r' <"$(host_dir "$host")/console.log" | sed 's/\x1b\[[0-9;]*m//g' |
				grep -E 'FAILED|DEPEND|Dependency failed|agent:|9pnet' | tail -n 10 | sed "s/^/$host console: /" >&2 || true
			die "$host: agent not ready within ${timeout}s (see $(host_dir "$host")/console.log)"
		fi
		if ((SECONDS - start >= next)); then
			progress "  still booting $host ($((SECONDS - start))s of ${timeout}s): $(tr -d '\r' <"$(host_dir "$host")/console.log" | tail -n1 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-100)"
			next=$((next + 30))
		fi
		wait_file "$ready" 5 || true
	done
}

# ---------------------------------------------------------------------------------
# The cluster

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

# shellcheck source=lib-lvhook.sh
source "$HARNESS_DIR/lib-lvhook.sh"
