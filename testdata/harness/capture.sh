#!/bin/bash
# Capture real outputs from the running cluster into testdata/real/debian$DEBIAN/ (the
# guests' Debian release, 12 or 13; LVHOOK_CAPTURE_DIR overrides the directory) for
# unit tests: the versions of lvm2, sanlock, libvirt and the kernel, lvs/vgs JSON
# reports, `lvmlockctl -i` with ex and sh locks, the lvm error texts
# lvhook classifies (lvmlock/errors.go), provoked for real, sanlock's view of hosts and leases, the domain
# XML libvirt passes to hooks, the argv of every hook call and `virsh dumpxml` of each
# running test domain.
#
# Needs a cluster that is up (cluster.sh up); run by `make e2e CAPTURE=1`. Leaves the
# cluster as it found it (no domain running, no test LV active, lockspaces started).
set -euo pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HARNESS_DIR/lib.sh"

# The guests' Debian release (lib.sh's DEBIAN: 13 unless set).
RELEASE=$DEBIAN
[[ $RELEASE =~ ^[0-9]+$ ]] || die "DEBIAN=$RELEASE: want a Debian release number (12 or 13)"
OUT=${LVHOOK_CAPTURE_DIR:-$REPO_DIR/testdata/real/debian$RELEASE}
# HOST -> "LVM version: ... , Debian N.N" as the guest reports them (capture_versions).
declare -A GUEST_VERSIONS=()

# grab FILE HOST CMD...: CMD's stdout into OUT/FILE (must succeed).
grab() {
	local file=$1 host=$2
	shift 2
	mkdir -p "$(dirname "$OUT/$file")"
	hrun "$host" -t 120 "$@" >"$OUT/$file" || die "$host: $* failed"
	log "captured $file"
}

# lvm_error CASE HOST SCRIPT: run SCRIPT (which must fail) and keep its stderr, stdout
# and exit status as OUT/lvm-errors/CASE.{stderr,stdout,cmd}.
lvm_error() {
	local name=$1 host=$2 script=$3 dir=$OUT/lvm-errors rc=0 t0=$SECONDS
	mkdir -p "$dir"
	hsh "$host" -t 120 "$script" >"$dir/$name.stdout" 2>"$dir/$name.stderr" || rc=$?
	[[ -n ${GUEST_VERSIONS[$host]:-} ]] || die "$host: versions not read (capture_versions)"
	printf '# %s, %s, LC_ALL=C\n%s\nexit status %s\n' \
		"$host" "${GUEST_VERSIONS[$host]}" "$script" "$rc" >"$dir/$name.cmd"
	((rc != 0)) || log "WARNING: $name: the command succeeded (expected a failure)"
	log "captured lvm error $name (exit $rc, $((SECONDS - t0)) s): $(head -c 200 "$dir/$name.stderr" | tr '\n' '|')"
}

# capture_versions: versions.txt, what host1 runs (one section per command: a `# CMD`
# line, then its output), and each guest's lvm2 and Debian versions for the lvm-errors
# headers. Dies unless the guests run Debian $RELEASE: their outputs would land in the
# wrong release directory.
capture_versions() {
	local h v c file=$OUT/versions.txt
	for h in "${HOSTS[@]}"; do
		v=$(hsh "$h" -t 60 'set -o pipefail
			lvm=$(lvm version | head -n 1 | sed "s/^ *//; s/  */ /g") && deb=$(cat /etc/debian_version) &&
				[[ -n $lvm && -n $deb ]] && printf "%s, Debian %s\n" "$lvm" "$deb"') ||
			die "$h: reading the lvm and Debian versions failed"
		[[ $v == *", Debian $RELEASE".* || $v == *", Debian $RELEASE" ]] ||
			die "$h runs $v, not Debian $RELEASE: set DEBIAN to the guests' release"
		GUEST_VERSIONS[$h]=$v
		log "$h: $v"
	done
	: >"$file"
	for c in 'cat /etc/debian_version' 'lvm version' 'sanlock version' 'virsh version' \
		'libvirtd --version' 'uname -r'; do
		printf '# %s\n' "$c" >>"$file"
		hsh host1 -t 60 "timeout 50 $c" >>"$file" || die "host1: $c failed"
	done
	log "captured versions.txt"
}

capture_reports() {
	hrun host1 -t 120 lvchange -aey "$VG/t1" >/dev/null
	hrun host1 -t 120 lvchange -asy "$VG/share1" >/dev/null
	hrun host2 -t 120 lvchange -asy "$VG/share1" >/dev/null
	grab lvs-report.json host1 lvs --reportformat json \
		-o lv_name,lv_uuid,vg_name,lv_path,lv_dm_path,lv_attr,lv_active,lv_active_locally,lv_active_remotely,lv_active_exclusively,lv_lockargs,lv_size "$VG"
	grab lvs-report-default.json host1 lvs --reportformat json "$VG"
	grab vgs-report.json host1 vgs --reportformat json -o vg_name,vg_uuid,vg_shared,vg_lock_type,vg_lock_args "$VG"
	grab lvmlockctl-i-ex-sh.txt host1 lvmlockctl -i
	grab lvmlockctl-i-sh.txt host2 lvmlockctl -i
	grab sanlock-client-status.txt host1 sanlock client status
	# What lvhook check reads from sanlock: the hosts of the lockspace, and the LV leases
	# (t1 ex on host1, share1 sh on both) from their offsets in lv_lockargs.
	grab sanlock-host-status.txt host1 sanlock client host_status -s "lvm_$VG" -D
	local span
	span=$(hsh host1 -t 60 "lvs --noheadings -o lv_lockargs $VG/t1 $VG/share1" |
		awk -F: '{ o = $2 + 0; if (!lo || o < lo) lo = o; if (o > hi) hi = o } END { printf "%d:%d", lo, hi - lo + 1048576 }')
	grab sanlock-direct-dump.txt host1 sanlock direct dump "/dev/mapper/$VG-lvmlock:$span"
	grab lvs-lockargs.txt host1 lvs --noheadings -o lv_name,lv_uuid,lv_lockargs "$VG"
}

capture_errors() {
	# host1 holds t1 ex and share1 sh; host2 holds share1 sh.
	lvm_error locked-by-other-host host2 "lvchange -aey $VG/t1"
	lvm_error locked-by-other-host-sh host2 "lvchange -asy $VG/t1"
	lvm_error ex-while-other-host-sh host1 "lvchange -aey $VG/share1"
	lvm_error incompatible-mode host1 "lvextend -L +4m $VG/share1"
	lvm_error lv-in-use host1 "sleep 60 </dev/$VG/t1 & pid=\$!; sleep 1; lvchange -an $VG/t1; rc=\$?; kill \$pid; exit \$rc"
	lvm_error lv-missing host1 "lvchange -aey $VG/nosuchlv"
	lvm_error vg-missing host1 "lvchange -aey nosuchvg/nosuchlv"
	lvm_error lv-missing-json host1 "lvchange --reportformat json -aey $VG/nosuchlv"
	hrun host1 -t 120 vgchange -an "$VG" >/dev/null
	hrun host2 -t 120 vgchange -an "$VG" >/dev/null

	hrun host2 -t 120 vgchange --lock-stop "$VG" >/dev/null
	lvm_error lockspace-not-started host2 "lvchange -aey $VG/t3a"
	# A lock start takes ~20 s: an activation during it.
	lvm_error lockspace-starting host2 "vgchange --lock-start $VG >/dev/null 2>&1 & sleep 2; lvchange -aey $VG/t3a; rc=\$?; wait; exit \$rc"
	wait_until "host2: lockspace $VG" 120 lockspace_started host2 || die "host2: lockspace did not come back"
	hrun host2 -t 120 vgchange -an "$VG" >/dev/null
	hrun host2 -t 120 vgchange --lock-stop "$VG" >/dev/null
	hrun host2 -t 60 systemctl stop lvmlockd >/dev/null
	lvm_error lvmlockd-not-running host2 "lvchange -aey $VG/t3a"
	hrun host2 -t 60 systemctl start lvmlockd >/dev/null
	lock_start host2
}

# capture_domains: for each test domain, the XML libvirt gave the hooks (kept by the
# 00-trace hook) and `virsh dumpxml` while it runs. LVs are activated by hand first so
# this works with or without lvhook installed.
capture_domains() {
	local d lvs mode
	mkdir -p "$OUT/domains" "$OUT/hook-stdin"
	hrun host1 sh -c 'rm -rf /var/log/lvhook-trace; : >/var/log/lvhook-trace.log; : >/var/log/lvhook-trace-argv.log'
	pool_start host1 >/dev/null || die "host1: pool-start vgpool failed"
	for d in t1 t3 tpool tmixed tshare1 toptout; do
		case $d in
		t1) lvs=t1 ;; t3) lvs="t3a t3b t3c" ;; tpool) lvs=pool1 ;; tmixed) lvs=mixed1 ;;
		tshare1) lvs=share1 ;; toptout) lvs=optout1 ;;
		esac
		mode=-aey
		[[ $d == tshare1 ]] && mode=-asy
		# shellcheck disable=SC2086
		hsh host1 -t 120 "lvchange $mode $(printf "$VG/%s " $lvs)" >/dev/null
		hrun host1 -t 180 timeout 170 virsh -q start "$d" >/dev/null || die "host1: virsh start $d failed"
		grab "domains/$d.running.xml" host1 timeout 60 virsh dumpxml "$d"
		grab "domains/$d.inactive.xml" host1 timeout 60 virsh dumpxml --inactive "$d"
		hrun host1 -t 180 timeout 170 virsh -q destroy "$d" >/dev/null || die "host1: virsh destroy $d failed"
		hrun host1 -t 120 vgchange -an "$VG" >/dev/null
	done
	local f
	for f in $(hrun host1 sh -c 'cd /var/log/lvhook-trace && ls'); do
		grab "hook-stdin/$f" host1 cat "/var/log/lvhook-trace/$f"
	done
	grab hook-calls-start-destroy.txt host1 cat /var/log/lvhook-trace.log
	grab hook-argv.txt host1 cat /var/log/lvhook-trace-argv.log
	[[ -s $OUT/hook-argv.txt ]] ||
		die "host1: the 00-trace hook logged no argv: it predates lvhook-trace-argv.log (run cluster.sh install)"
}

t1_ex_on() { lvm_state "$1" | grep -q '^t1 yes ex$'; }

# capture_migration: the hook calls of one live migration of t1 from host1 to host2
# (lvhook installed: its handover makes the migration possible), as each host's
# 00-trace hook saw them: the argv lines of both hosts, in time order, and the XML
# libvirt passed on stdin, per host (migration-src/ is host1, migration-dst/ host2).
capture_migration() {
	local h f dir
	for h in host1 host2; do
		hrun "$h" sh -c 'rm -rf /var/log/lvhook-trace; : >/var/log/lvhook-trace.log; : >/var/log/lvhook-trace-argv.log'
	done
	hrun host1 -t 180 timeout 170 virsh -q start t1 >/dev/null || die "host1: virsh start t1 failed"
	hrun host1 -t 300 timeout 280 virsh migrate --live t1 qemu+tcp://host2/system --migrateuri tcp://10.0.0.2 >/dev/null ||
		die "host1: virsh migrate --live t1 to host2 failed"
	wait_until "t1 ex on host2 after the migration" 120 t1_ex_on host2 ||
		die "host2: no ex lock after the migration"
	hrun host2 -t 180 timeout 170 virsh -q destroy t1 >/dev/null || die "host2: virsh destroy t1 failed"
	for h in host1 host2; do
		dir=hook-stdin/migration-dst
		[[ $h == host1 ]] && dir=hook-stdin/migration-src
		mkdir -p "$OUT/$dir"
		for f in $(hrun "$h" sh -c 'cd /var/log/lvhook-trace && ls'); do
			grab "$dir/$f" "$h" cat "/var/log/lvhook-trace/$f"
		done
	done
	{ hrun host1 cat /var/log/lvhook-trace.log && hrun host2 cat /var/log/lvhook-trace.log; } |
		sort >"$OUT/hook-calls-migration.txt" || die "reading the hook calls of the migration failed"
	# The argv lines carry no time: host by host, each in call order.
	for h in host1 host2; do
		hrun "$h" cat /var/log/lvhook-trace-argv.log | sed "s/^/$h /" || die "$h: reading the hook argv of the migration failed"
	done >"$OUT/hook-argv-migration.txt"
	log "captured hook-calls-migration.txt, hook-argv-migration.txt and the migration's hook stdin"
}

main() {
	need_root
	local h
	for h in "${HOSTS[@]}"; do
		{ agent_ready "$h" && qemu_running "$h"; } || die "$h is not up (run cluster.sh up first)"
	done
	mkdir -p "$OUT"
	log "capturing real outputs of Debian $RELEASE into $OUT"
	capture_versions
	capture_reports
	capture_errors
	capture_domains
	if lvhook_available; then
		capture_migration
	else
		log "no $LVHOOK_BIN: no live migration captured (it needs lvhook's handover)"
	fi
	log "capture done"
}

main "$@"
