# shellcheck shell=bash
# lvhook e2e: live migration's failures and refusals: the slow domain tslow and the
# migrations interrupted with it, the lock helper down on the source or the destination,
# libvirtd restarted on the destination, offline migration, forged requests. Sourced by
# e2e.sh after scenarios-migration.sh (migrate, migrate_cmd, wait_modes, modes_are) and
# scenarios-check.sh (check_case), and assert.sh's assertions. scenarios-three.sh uses
# its tslow helpers (define_tslow, start_slow_migration, tslow_migrating, ...).

# A domain whose migration lasts: 256 MiB with 160 MiB of random bytes placed in its RAM
# by QEMU's generic loader (a no-OS guest's RAM is otherwise zero pages, which migrate
# in no time), migrated at 1 MiB/s. It uses t1's LV (t1 and tslow never run together).

TSLOW_UUID=6c76686b-0000-4000-8000-0000000000aa

tslow_xml() {
	cat <<EOF2
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>tslow</name>
  <uuid>$TSLOW_UUID</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/$VG/t1'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-device'/>
    <qemu:arg value='loader,file=/var/lib/libvirt/images/tslow.ram,addr=0x2000000,force-raw=on'/>
  </qemu:commandline>
</domain>
EOF2
}

define_tslow() {
	local h
	for h in "${HOSTS[@]}"; do
		tslow_xml >"$(host_dir "$h")/share/tslow.xml"
		hsh "$h" -t 120 '
			set -e
			f=/var/lib/libvirt/images/tslow.ram
			[ "$(stat -c %s $f 2>/dev/null)" = 167772160 ] || { head -c 160M /dev/urandom >$f.tmp && chmod 0644 $f.tmp && mv $f.tmp $f; }
			virsh -q define /mnt/ctl/tslow.xml >/dev/null' || fail "$h: defining tslow failed"
	done
}

# start_slow_migration SRC DST: virsh migrate --live tslow at 1 MiB/s in the background
# (output in $RUN_DIR/slow-migration.out, status in .rc), waits until the source shows
# the outgoing job and the destination holds sh.
start_slow_migration() {
	local src=$1 dst=$2
	rm -f "$RUN_DIR/slow-migration".*
	(
		set +e
		migrate_cmd "$src" "$dst" tslow --bandwidth 1 >"$RUN_DIR/slow-migration.out" 2>&1
		echo $? >"$RUN_DIR/slow-migration.rc"
	) &
	SLOW_PID=$!
	# Not a job of this shell: expect's bare `wait` must not wait for it.
	disown "$SLOW_PID"
	wait_until "tslow's outgoing job on $src and sh on both hosts" 120 slow_migration_running "$src" "$dst" ||
		fail "the migration of tslow did not get going: $(cat "$RUN_DIR/slow-migration.out" 2>/dev/null)"
}
slow_migration_running() {
	hsh "$1" -t 30 'timeout 20 virsh domjobinfo tslow | grep -q "^Job type: *Unbounded" &&
		timeout 20 virsh domjobinfo tslow | grep -q "^Memory processed: *[1-9]"' &&
		modes_are "$1:t1:sh" "$2:t1:sh"
}
# finish_slow_migration: wait for the background virsh; prints its status and output.
finish_slow_migration() {
	local start=$SECONDS
	while [[ ! -f $RUN_DIR/slow-migration.rc ]]; do
		((SECONDS - start < 300)) || fail "virsh migrate of tslow still running after 300 s"
		sleep 1
	done
	echo "rc=$(cat "$RUN_DIR/slow-migration.rc") $(tr '\n' ' ' <"$RUN_DIR/slow-migration.out")"
}

# tslow_migrating SRC DST: tslow started on SRC and migrating live to DST at 1 MiB/s,
# the invariant checked before and during the migration (sh on both).
tslow_migrating() {
	define_tslow
	start_ok "$1" tslow
	expect "tslow started on $1" "t1@$1=ex"
	start_slow_migration "$1" "$2"
	expect "during the migration: sh on $1 and $2" "t1@$1=sh" "t1@$2=sh"
}

# interrupted_migration WHAT ACTION...: tslow runs on host1 and migrates to host2 at
# 1 MiB/s; ACTION interrupts the migration. It must fail, host1 get ex back and run
# tslow on, host2 hold nothing. (libvirt calls no hook on the source here: the lock
# helper sees the job end and takes ex back.)
interrupted_migration() {
	local what=$1 r
	shift
	tslow_migrating host1 host2
	"$@"
	r=$(finish_slow_migration)
	log "  virsh migrate after $what: $r"
	[[ $r != rc=0* ]] || fail "the migration succeeded despite $what"
	wait_modes 90 "t1 ex again on host1 after $what" host1:t1:ex host2:t1:none
	expect "$what: source ex again, destination nothing" t1@host1=ex
	expect_dom tslow running "shut off"
	destroy host1 tslow
	expect "tslow destroyed"
}

abort_job() {
	local out
	out=$(virsh_on host1 domjobabort tslow 2>&1) || fail "virsh domjobabort failed: $out"
	log "  host1: virsh domjobabort tslow"
}

kill_destination_qemu() {
	hsh host2 -t 30 'pkill -KILL -f "^/usr/bin/qemu-system-x86_64 -name guest=tslow"' ||
		fail "no QEMU of tslow on host2"
	log "  host2: tslow's QEMU killed (SIGKILL) mid-migration"
}

# migrating_report JOB: the jq test of a healthy report of tslow in a live migration
# job JOB, its LVs expected and held sh.
migrating_report() {
	printf '.healthy and (.domains | length == 1) and .domains[0].job == "%s" and
		(.domains[0].lvs | length > 0 and all(.expected == "sh" and .actual == "sh"))' "$1"
}

# check_then_abort: lvhook check during tslow's live migration host1 -> host2 sees
# the job on both ends (libvirt refuses job statistics on the destination: that
# refusal is the incoming migration), expects sh and finds no problem; then the job
# is aborted.
check_then_abort() {
	check_json host2 tslow "$(migrating_report migration-in)" ||
		fail "lvhook check on host2 during the migration: not a healthy migration-in, sh expected and held"
	log "  ok   lvhook check on host2 (destination): migration-in, sh expected and held, healthy"
	check_json host1 tslow "$(migrating_report migration-out)" ||
		fail "lvhook check on host1 during the migration: not a healthy migration-out, sh expected and held"
	log "  ok   lvhook check on host1 (source): migration-out, sh expected and held, healthy"
	abort_job
}

# (b) virsh domjobabort during the migration (lvhook check looks at both ends first).
scenario_migrate_abort() { interrupted_migration "domjobabort" check_then_abort; }

# (c) the destination's QEMU killed mid-migration.
scenario_migrate_dest_killed() { interrupted_migration "the destination's QEMU killed" kill_destination_qemu; }

# (e) the lock helper stopped on the destination during the migration, then started:
# it finds sh where ex is due and converts it. lvhook check shows sh-after-migration
# meanwhile.
scenario_migrate_dest_helper_down() {
	define_tslow
	start_ok host1 tslow
	expect "tslow started on host1" t1@host1=ex
	start_slow_migration host1 host2
	hrun host2 systemctl stop lvhook.service || fail "stopping lvhook.service on host2 failed"
	log "  host2: lock helper stopped during the migration"
	virsh_on host1 migrate-setspeed tslow 8192 >/dev/null || fail "virsh migrate-setspeed failed"
	local r
	r=$(finish_slow_migration)
	[[ $r == rc=0* ]] || fail "the migration failed: $r"
	expect_dom tslow "shut off" running
	expect "migrated with host2's lock helper down: sh on host2, nothing on host1" t1@host2=sh
	check_case "sh after a migration (host2's lock helper down)" host2 1 sh-after-migration tslow
	hrun host2 systemctl start lvhook.service || fail "starting lvhook.service on host2 failed"
	log "  host2: lock helper started again"
	wait_modes 90 "t1 ex on host2 after the lock helper came back" host2:t1:ex
	expect "lock helper back: ex on host2" t1@host2=ex
	destroy host2 tslow
	expect "tslow destroyed"
}

# (d) the lock helper stopped on the source: the migration is refused, the VM runs on.
scenario_migrate_src_helper_down() {
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	hrun host1 systemctl stop lvhook.service || fail "stopping lvhook.service on host1 failed"
	log "  host1: lock helper stopped"
	local out t0=$SECONDS
	if out=$(migrate_cmd host1 host2 t1 2>&1); then
		fail "the migration succeeded without the source's lock helper"
	fi
	log "  virsh migrate refused after $((SECONDS - t0)) s; libvirt says:"
	printf '%s\n' "$out" | sed 's/^/      | /' >&2
	[[ $out == *"lvhook: "* ]] || fail "the error does not carry lvhook's line"
	expect "refused: t1 still ex on host1 only" t1@host1=ex
	expect_dom t1 running "shut off"
	hrun host1 systemctl start lvhook.service || fail "starting lvhook.service on host1 failed"
	destroy host1 t1
	expect "t1 destroyed"
}

# (f) libvirtd restarted on the destination right after a migration.
scenario_migrate_dest_libvirtd_restart() {
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	local ms
	ms=$(migrate host1 host2 t1)
	hrun host2 -t 180 sh -c 'systemctl restart libvirtd && timeout 120 virsh -q version >/dev/null' ||
		fail "libvirtd restart on host2 failed"
	log "  t1 migrated to host2 (${ms} ms), libvirtd restarted there at once"
	wait_modes 120 "t1 ex on host2 after the restart" host2:t1:ex
	expect "libvirtd restarted on the destination: ex on host2" t1@host2=ex
	expect_dom t1 "shut off" running
	destroy host2 t1
	expect "t1 destroyed"
}

# (g) offline migration of a stopped domain: nothing activated anywhere.
scenario_migrate_offline() {
	expect "t1 stopped everywhere"
	local out
	out=$(hrun host1 -t 200 timeout 180 virsh migrate --offline --persistent t1 qemu+tcp://host2/system 2>&1) ||
		fail "virsh migrate --offline failed: $out"
	log "  host1: virsh migrate --offline --persistent t1 -> host2"
	expect "offline migration: nothing active anywhere"
	expect_dom t1 "shut off" "shut off"
	# An offline migration of a RUNNING domain holds the same outgoing migration job
	# on the source as a live one; only the job's flags (libvirt's status file) tell
	# it apart. host2's migrate begin must reserve no handover, so a start right after
	# it is an ordinary start, refused while host1 holds the LV (found by review).
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	out=$(hrun host1 -t 200 timeout 180 virsh migrate --offline --persistent t1 qemu+tcp://host2/system 2>&1) ||
		fail "virsh migrate --offline of a running domain failed: $out"
	log "  host1: virsh migrate --offline --persistent t1 -> host2 while t1 runs on host1"
	start_refused host2 t1 "is active on host1"
	expect "start on host2 after an offline migration refused: t1 ex on host1 only" t1@host1=ex
	# host1's answer is the REASON of host2's "peer refused" record (peer/handover.go).
	local why
	why=$(hsh host2 -t 30 'journalctl -q --no-pager -o json -t lvhook -n 200' | jq -rnR '
		first(inputs | fromjson? | objects
			| select(.PEER == "host1" and .REQUEST == "/v1/reserve" and (.REASON | strings | contains("is offline (--offline)")))
			| .REASON)') || true
	[[ -n $why ]] || fail "host2's journal does not show host1 refusing the reservation of an offline migration"
	log "  host1's answer to host2's reservation, in host2's journal:"
	printf '%s
' "$why" | sed 's/^/      | /' >&2
	destroy host1 t1
	expect "t1 destroyed"
}

# (h) forged requests: a hook run by hand on host2 for t1, which runs on host1 with no
# migration; and the same with a client certificate no CA of the cluster signed.
scenario_forged_request() {
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	local out
	out=$(hsh host2 -t 120 '
		virsh dumpxml --inactive t1 >/root/t1.xml
		lvhook hook t1 migrate begin - </root/t1.xml || exit 10
		lvhook hook t1 prepare begin - </root/t1.xml; rc=$?
		lvhook hook t1 release end - </root/t1.xml
		exit $rc' 2>&1) && fail "the forged prepare on host2 was accepted: $out"
	log "  host2: forged 'migrate begin' + 'prepare begin' of t1 refused:"
	printf '%s\n' "$out" | sed 's/^/      | /' >&2
	[[ $out == *"no outgoing migration job"* ]] || fail "host1 did not refuse for the missing migration job"
	expect "forged request refused: t1 ex on host1 only" t1@host1=ex
	hsh host1 -t 30 'journalctl -q -n 0 --show-cursor -t lvhook | sed -n "s/^-- cursor: //p" >/root/forged.cursor' >/dev/null
	out=$(hsh host2 -t 120 '
		sed -e "s|^\[daemon\]|&\nclient_cert = \"/root/rogue/clientcert.pem\"\nclient_key = \"/root/rogue/clientkey.pem\"\npeer_timeout = \"3s\"|" \
			/etc/lvhook/lvhook.toml >/root/rogue/lvhook.toml
		export LVHOOK_CONFIG=/root/rogue/lvhook.toml
		lvhook hook t1 migrate begin - </root/t1.xml || exit 10
		lvhook hook t1 prepare begin - </root/t1.xml; rc=$?
		lvhook hook t1 release end - </root/t1.xml
		exit $rc' 2>&1) && fail "the prepare with an unknown client certificate was accepted: $out"
	log "  host2: 'prepare begin' with a self-signed client certificate refused:"
	printf '%s\n' "$out" | sed 's/^/      | /' >&2
	local j
	j=$(hsh host1 -t 30 'journalctl -q --no-pager -o cat -t lvhook --after-cursor "$(cat /root/forged.cursor)" | grep -i -m3 "certificate\|handshake"') ||
		fail "host1's journal does not show the refused certificate"
	log "  host1's journal:"
	printf '%s\n' "$j" | sed 's/^/      | /' >&2
	expect "unknown certificate refused: t1 ex on host1 only" t1@host1=ex
	destroy host1 t1
	expect "t1 destroyed"
}
