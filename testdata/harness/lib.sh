# shellcheck shell=bash
# lvhook harness library: the test cluster (QEMU guests host1, host2 and, with
# HOSTS=3, host3 on this machine, one shared disk, real lvm2 + lvmlockd + sanlock +
# libvirtd inside). This file: the settings, logging, bounded waits, running commands
# in a guest (hrun, hsh) and the QEMU guests; it sources lib-cluster.sh (the cluster:
# lock daemons, shared VG, test LVs, libvirt, hooks, up and down) and lib-lvhook.sh
# (lvhook's package, peers and TLS).
# Sourced by build-image.sh, cluster.sh, e2e.sh, e2e-ci.sh, demo.sh and capture.sh.
#
# Every wait here is bounded and fails with a message saying what it waited for.

HARNESS_DIR=${HARNESS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO_DIR=$(cd "$HARNESS_DIR/../.." && pwd)
IMAGE_CACHE=${LVHOOK_IMAGE_CACHE:-/var/cache/lvhook-harness}
RUN_DIR=${LVHOOK_RUN_DIR:-/var/tmp/lvhook-harness/run}
RUN_DIR=${RUN_DIR%/} # e2e-ci.sh's second lane is $RUN_DIR-lane2, beside it
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
	mkfs.ext4:e2fsprogs inotifywait:inotify-tools jq:jq flock:util-linux socat:socat)

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
		-drive "file=$RUN_DIR/shared.raw,format=raw,if=none,id=sd,node-name=sdfmt,file.node-name=sdfile,cache=writeback,file.locking=off" \
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

# qmp HOST JSON...: send each JSON command to HOST's QEMU monitor (after the capabilities
# handshake) and print the replies; fails if any reply is an error.
qmp() {
	local host=$1 out
	shift
	out=$({
		echo '{"execute":"qmp_capabilities"}'
		printf '%s\n' "$@"
		sleep 1
	} | socat -t 10 - "UNIX-CONNECT:$(host_dir "$host")/qmp.sock") || die "$host: QMP socket did not answer"
	printf '%s\n' "$out"
	! grep -q '"error"' <<<"$out"
}

# disk_cut HOST: from now on every read and write HOST makes on the shared disk fails
# with EIO (the other hosts are untouched): a blkdebug node that injects the error is put
# between the disk's raw format node and its file (blockdev-reopen, QEMU >= 6.1).
# disk_restore HOST puts the file back. A throttle would only delay I/O: in-flight writes
# would never complete, which is a hung path, not a lost one.
disk_cut() {
	qmp "$1" '{"execute":"blockdev-add","arguments":{"driver":"blkdebug","node-name":"sdcut","image":"sdfile","inject-error":[{"event":"read_aio","errno":5},{"event":"write_aio","errno":5},{"event":"flush_to_disk","errno":5}]}}' \
		'{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"raw","node-name":"sdfmt","file":"sdcut"}]}}' >/dev/null ||
		die "$1: could not cut the shared disk"
}

disk_restore() {
	qmp "$1" '{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"raw","node-name":"sdfmt","file":"sdfile"}]}}' \
		'{"execute":"blockdev-del","arguments":{"node-name":"sdcut"}}' >/dev/null ||
		die "$1: could not restore the shared disk"
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

# shellcheck source=lib-cluster.sh
source "$HARNESS_DIR/lib-cluster.sh"
# shellcheck source=lib-lvhook.sh
source "$HARNESS_DIR/lib-lvhook.sh"
