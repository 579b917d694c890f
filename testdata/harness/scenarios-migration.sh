# shellcheck shell=bash
# lvhook e2e: live migration with plain `virsh migrate --live` (no manual step), its
# failures, the packaged install and its upgrade, and `lvhook check`. Sourced by e2e.sh
# after scenarios.sh, whose assertions (expect, expect_dom, ...) it uses.

other_host() { [[ $1 == host1 ]] && echo host2 || echo host1; }

# migrate_cmd SRC DST DOM [ARGS...]: the operator's plain live migration command.
migrate_cmd() {
	local src=$1 dst=$2 dom=$3 n
	shift 3
	n=$(host_num "$dst")
	hrun "$src" -t 300 timeout 280 virsh migrate --live "$dom" "qemu+tcp://$dst/system" \
		--migrateuri "tcp://10.0.0.$n" "$@"
}

# migrate SRC DST DOM [ARGS...]: must succeed; prints its wall time in ms on stdout
# (and writes a "migrate" line of the results, host SRC, expected "migrated to DST").
migrate() {
	local src=$1 dst=$2 dom=$3 t0 ms out
	t0=$(now_us)
	out=$(migrate_cmd "$@" 2>&1) || {
		result_assert migrate "virsh migrate --live $dom" "$src" "migrated to $dst" failed false "$(since_s "$t0")" \
			--arg domain "$dom" --arg dst "$dst" --arg message "$out"
		fail "virsh migrate --live $dom $src -> $dst failed: $out"
	}
	ms=$((($(now_us) - t0) / 1000))
	result_assert migrate "virsh migrate --live $dom" "$src" "migrated to $dst" "migrated to $dst" true "$(since_s "$t0")" \
		--arg domain "$dom" --arg dst "$dst"
	echo "$ms"
}

# lv_mode HOST LV: ex, sh or none.
lv_mode() {
	lvm_state "$1" | awk -v lv="$2" '$1 == lv { print ($2 == "yes" ? $3 : "none") }'
}
lv_mode_is() { [[ $(lv_mode "$1" "$2") == "$3" ]]; }

# wait_modes TIMEOUT DESC HOST:LV:MODE...: wait until every LV has its mode.
modes_are() {
	local s
	for s in "$@"; do
		IFS=: read -r h lv m <<<"$s"
		lv_mode_is "$h" "$lv" "$m" || return 1
	done
}
# Each wait is a "wait" line of the results (expected: the HOST:LV:MODEs; observed
# "reached" or "not reached within TIMEOUT s"; duration_s: how long it waited).
wait_modes() {
	local timeout=$1 desc=$2 t0
	shift 2
	t0=$(now_us)
	if ! wait_until "$desc" "$timeout" modes_are "$@"; then
		result_assert wait "$desc" "" "$*" "not reached within ${timeout} s" false "$(since_s "$t0")"
		fail "$desc: not reached within ${timeout}s"
	fi
	result_assert wait "$desc" "" "$*" reached true "$(since_s "$t0")"
}

# journal_mark HOST: remember (in the guest) the end of lvhook's journal there;
# journal_since HOST: lvhook's journal records since the mark, as `journalctl -o json`
# lines: lvhook logs through zerolog's journald writer, which makes each zerolog field
# an upper-case journal field (op -> OP, took -> TOOK, ...; cmd/lvhook/logging.go).
journal_mark() { hsh "$1" -t 30 'journalctl -q -n 0 --show-cursor -t lvhook | sed -n "s/^-- cursor: //p" >/root/journal.cursor'; }
journal_since() {
	hsh "$1" -t 60 'journalctl -q --no-pager -o json -t lvhook --after-cursor "$(cat /root/journal.cursor)"'
}

# The time of a journal record in µs: when journald received it (the
# _SOURCE_REALTIME_TIMESTAMP journald adds to a native-protocol record, which
# `journalctl -o short-unix` shows), else __REALTIME_TIMESTAMP.
JQ_JOURNAL_TS='def ts: (._SOURCE_REALTIME_TIMESTAMP // .__REALTIME_TIMESTAMP) | tonumber;'

# shared_window_ms DOMAIN: from the source's records of one migration (journal_since on
# stdin), the ms from its grant of the downgrade (the peer server's "answer sent":
# REQUEST=/v1/downgrade, GRANTED=true; migration/transport.go) to the end of the
# hook's release end ("hook done", the only record with ACTION, OP="release end";
# hook/hook.go). Prints nothing when either is missing.
shared_window_ms() {
	jq -rnR --arg dom "$1" "$JQ_JOURNAL_TS"'
		[inputs | fromjson? | objects | select(.DOMAIN == $dom)] as $r
		| first($r[] | select(.REQUEST == "/v1/downgrade" and .GRANTED == "true") | ts) as $g
		| first($r[] | select(has("ACTION") and .OP == "release end") | ts | select(. >= $g)) as $e
		| ($e - $g) / 1000 | floor'
}

# to_ex_ms DOMAIN: from the destination's records of one migration (journal_since on
# stdin), the lock helper's TOOK (ms) of its last "exclusive again" (the record with
# LVS, FROM=sh and TO=ex; migration/reconcile.go; lvm's own "converted" records
# carry LV, not LVS). Prints nothing when there is none.
to_ex_ms() {
	jq -rnR --arg dom "$1" '
		[inputs | fromjson? | objects
			| select(.DOMAIN == $dom and has("LVS") and .FROM == "sh" and .TO == "ex") | .TOOK | tonumber?]
		| last // empty | floor'
}

# migration_figures SRC DST DOMAIN: from the journals of one migration of DOMAIN: the
# shared window on the source (downgrade granted -> release end done) and
# RESUMED_MIGRATED -> ex on the destination (the lock helper's TOOK), in ms, "?" when
# a journal does not show it.
migration_figures() {
	local src=$1 dst=$2 dom=$3 win took
	win=$(journal_since "$src" | shared_window_ms "$dom") || true
	took=$(journal_since "$dst" | to_ex_ms "$dom") || true
	echo "${win:-?} ${took:-?}"
}

# migration_result DOMAIN N SRC DST WALL_MS FIGURES: a "migration" line of the results
# (FIGURES: migration_figures' output).
migration_result() {
	local win toex
	read -r win toex <<<"$6"
	result migration --arg domain "$1" --argjson n "$2" --arg src "$3" --arg dst "$4" \
		--argjson wall_ms "$(jnum "$5")" --argjson window_ms "$(jnum "$win")" --argjson to_ex_ms "$(jnum "$toex")"
}

# lvhook_check HOST ARGS...: `lvhook check` in HOST; its output, then "rc=N" last.
lvhook_check() {
	local host=$1
	shift
	local q
	printf -v q '%q ' "$@"
	hsh "$host" -t 120 "timeout 100 lvhook check $q; echo rc=\$?" 2>&1
}

# ---------------------------------------------------------------------------------

# (a) live migrations back and forth, plain virsh, no manual step.
scenario_migrate_live() {
	local count=${LVHOOK_MIGRATIONS:-20} i src=host1 dst=host2 ms fig order
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	for ((i = 1; i <= count; i++)); do
		journal_mark "$src"
		journal_mark "$dst"
		if ((i == 1)); then
			clear_hook_calls host1
			clear_hook_calls host2
		fi
		ms=$(migrate "$src" "$dst" t1)
		expect_dom t1 "$([[ $dst == host1 ]] && echo running || echo "shut off")" \
			"$([[ $dst == host2 ]] && echo running || echo "shut off")"
		wait_modes 90 "t1 ex on $dst after migration $i" "$dst:t1:ex"
		expect "migration $i: t1 $src -> $dst (${ms} ms), ex on $dst only" "t1@$dst=ex"
		fig=$(migration_figures "$src" "$dst" t1)
		migration_result t1 "$i" "$src" "$dst" "$ms" "$fig"
		record "migrate-t1-$i-ms" "$ms"
		if ((i == 1)); then
			log "  hook calls seen during migration 1 ($src -> $dst), both hosts by time:"
			order=$({
				hook_calls host1
				hook_calls host2
			} | sort)
			printf '%s\n' "$order" | sed 's/^/      | /' >&2
			result hook-order --arg src "$src" --arg dst "$dst" \
				--argjson lines "$(jq -Rsc 'split("\n") | map(select(. != ""))' <<<"$order")"
		fi
		src=$dst
		dst=$(other_host "$src")
	done
	destroy "$src" t1
	expect "t1 destroyed on $src"

	# The three-disk domain, there and back.
	start_ok host1 t3
	expect "t3 started on host1" t3a@host1=ex t3b@host1=ex t3c@host1=ex
	src=host1 dst=host2
	for i in 1 2; do
		journal_mark "$src"
		journal_mark "$dst"
		ms=$(migrate "$src" "$dst" t3)
		wait_modes 90 "t3 ex on $dst" "$dst:t3a:ex" "$dst:t3b:ex" "$dst:t3c:ex"
		expect "t3 migrated $src -> $dst (${ms} ms)" "t3a@$dst=ex" "t3b@$dst=ex" "t3c@$dst=ex"
		fig=$(migration_figures "$src" "$dst" t3)
		migration_result t3 "$i" "$src" "$dst" "$ms" "$fig"
		src=$dst
		dst=$(other_host "$src")
	done
	destroy "$src" t3
	expect "t3 destroyed"
}

# The same migration with the locks set by hand (toptout opts out of lvhook): the wall
# time without lvhook's handover.
scenario_migrate_manual_locks() {
	local i ms src=host1 dst=host2
	lvchange_on host1 -aey "$VG/optout1"
	start_ok host1 toptout
	expect "toptout running on host1 (LV ex by hand)" optout1@host1=ex
	for i in 1 2 3 4; do
		lvchange_on "$src" -asy "$VG/optout1"
		lvchange_on "$dst" -asy "$VG/optout1"
		ms=$(migrate "$src" "$dst" toptout)
		lvchange_on "$src" -an "$VG/optout1"
		lvchange_on "$dst" -aey "$VG/optout1"
		expect "toptout migrated $src -> $dst with locks set by hand (${ms} ms)" "optout1@$dst=ex"
		record "migrate-manual-locks-$i-ms" "$ms"
		src=$dst
		dst=$(other_host "$src")
	done
	destroy "$src" toptout
	lvchange_on "$src" -an "$VG/optout1"
	expect "toptout destroyed, optout1 released by hand"
}

# ---------------------------------------------------------------------------------
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

# (b) virsh domjobabort during the migration.
scenario_migrate_abort() { interrupted_migration "domjobabort" abort_job; }

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
	# host1's answer is the REASON of host2's "peer refused" record (migration/handover.go).
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

# ---------------------------------------------------------------------------------
# lvhook check on the cluster (issue 5)

# check_case DESC HOST WANT_RC CODE [DOMAIN]: `lvhook check --all` and `--all --json`
# on HOST: exit status WANT_RC, and (unless CODE is -) a problem CODE (of DOMAIN). The
# table and the JSON problems are printed, and kept in a "check" line of the results
# (table, report: the JSON's version, host, healthy and summary, problems; json_text
# instead when the JSON does not parse).
check_case() {
	local desc=$1 host=$2 want=$3 code=$4 dom=${5:-} table json rc jrc t0 report problems found=true ok got
	t0=$(now_us)
	table=$(lvhook_check "$host" --all)
	rc=${table##*rc=}
	table=${table%rc=*}
	json=$(lvhook_check "$host" --all --json)
	jrc=${json##*rc=}
	json=${json%rc=*}
	report=$(jq -c '{version, host, healthy, summary}' <<<"$json" 2>/dev/null) || report=
	problems=$(jq -c '[.problems[]]' <<<"$json" 2>/dev/null) || problems=
	{
		echo "==== $desc: lvhook check --all on $host (exit $rc)"
		printf '%s\n' "$table"
		echo "==== $desc: lvhook check --all --json on $host (exit $jrc): summary and problems"
		if [[ -n $report ]]; then printf '%s\n' "$report"; else printf '%s\n' "$json"; fi
		jq -c '.[]' <<<"${problems:-[]}"
	} | sed 's/^/      | /' >&2
	if [[ $code != - ]]; then
		found=$(jq --arg c "$code" --arg d "$dom" '[.[] | select(.code == $c and ($d == "" or .domain == $d))] | length > 0' \
			<<<"${problems:-[]}")
	fi
	ok=false
	[[ $rc == "$want" && $jrc == "$want" && $found == true ]] && ok=true
	got="exit $rc (--json: exit $jrc), problems: $(jq -r 'map(.code) | unique | join(" ") | if . == "" then "none" else . end' <<<"${problems:-[]}" 2>/dev/null)"
	local extra=(--argjson rc "$(jnum "$rc")" --argjson json_rc "$(jnum "$jrc")" --arg table "${table%$'\n'}"
		--argjson report "${report:-null}" --argjson problems "${problems:-null}")
	[[ -n $report ]] || extra+=(--arg json_text "${json%$'\n'}")
	local expected="exit $want"
	[[ $code == - ]] || expected+=", problem $code${dom:+ of $dom}"
	result_assert check "$desc" "$host" "$expected" "$got" "$ok" "$(since_s "$t0")" "${extra[@]}"
	[[ $rc == "$want" && $jrc == "$want" ]] ||
		fail "$desc: lvhook check on $host exited $rc (json $jrc), expected $want"
	[[ $code == - ]] && return 0
	[[ $found == true ]] || fail "$desc: no problem '$code' ${dom:+of $dom }in lvhook check --json on $host"
	log "  ok   $desc: lvhook check on $host exits $rc, reports $code"
}

TMISSING_UUID=6c76686b-0000-4000-8000-0000000000bb

scenario_check() {
	start_ok host1 t1
	expect "t1 running on host1" t1@host1=ex
	check_case "healthy: t1 running on host1" host1 0 -
	check_case "healthy: t1 running on host1" host2 0 -

	lvchange_on host2 -aey "$VG/t3a"
	expect "t3a activated by hand on host2, t3 stopped" t1@host1=ex t3a@host2=ex
	check_case "stale activation (t3a active, t3 stopped)" host2 1 stale-activation t3
	lvchange_on host2 -an "$VG/t3a"

	local h
	for h in host1 host2; do
		sed -e "s/<name>t1</<name>tmissing</" -e "s/<uuid>[^<]*</<uuid>$TMISSING_UUID</" \
			-e "s|/dev/$VG/t1|/dev/$VG/nosuch|" "$HARNESS_DIR/domains/t1.xml" >"$(host_dir "$h")/share/tmissing.xml"
		hrun "$h" virsh -q define /mnt/ctl/tmissing.xml >/dev/null || fail "$h: define tmissing failed"
	done
	check_case "LV missing (tmissing names $VG/nosuch)" host1 1 lv-missing tmissing
	for h in host1 host2; do hrun "$h" virsh -q undefine tmissing >/dev/null || true; done

	destroy host1 t1
	expect "t1 destroyed"
	hrun host1 -t 120 vgchange --lock-stop "$VG" >/dev/null || fail "vgchange --lock-stop failed"
	wait_until "host1 out of lockspace $VG" 60 lockspace_stopped host1 || fail "host1 still in the lockspace"
	check_case "lockspace not started on host1" host1 1 lockspace-not-started
	lock_start host1
	check_case "healthy again" host1 0 -
}

# ---------------------------------------------------------------------------------
# A host crashes while it runs a domain. Its lease keeps the domain's LV locked until
# sanlock takes the host for dead (about 140 s after its last renewal): a start
# elsewhere is refused until then. lvhook check on the survivor names the holder from
# sanlock's leases (the crashed host's lock helper cannot answer) and says how long
# the lock holds; once the host is dead the domain starts on the survivor. The crashed
# host then boots again and rejoins.

# check_json HOST DOMAIN JQ: lvhook check --json DOMAIN on HOST ran (exit 0 or 1) and its
# report satisfies JQ (jq -e: some output, the last neither false nor null).
check_json() {
	local out rc json
	out=$(lvhook_check "$1" --json "$2")
	rc=${out##*rc=}
	json=${out%rc=*}
	[[ ($rc == 0 || $rc == 1) && $json == *'"version"'* ]] || return 1
	[[ $(jq "$3" <<<"$json") =~ ^.+$ ]] || return 1
	jq -e "$3" <<<"$json" >/dev/null
}

scenario_host_crash() {
	start_ok host2 t1
	expect "t1 running on host2" t1@host2=ex
	check_case "before the crash: t1 on host2 (host1's view)" host1 0 -
	kill -KILL "$(qemu_pid host2)" || fail "no QEMU for host2"
	local t0=$SECONDS
	log "  host2 crashed (its QEMU killed with SIGKILL) while running t1"
	(
		# shellcheck disable=SC2034,SC2207 # expect reads it: host2 answers nothing now
		HOSTS=($(hosts_but host2))
		start_refused host1 t1 "lvhook: refusing to start"
		expect "t1 refused on host1: host2's lease holds" t1@host1=none
		wait_until "lvhook check on host1 reports host2 not renewing" 150 check_json host1 t1 \
			'.problems[] | select(.code == "host-not-renewing" and .domain == "t1")' ||
			fail "lvhook check never reported host2 as not renewing"
		log "  host1: lvhook check reports host2 not renewing $((SECONDS - t0)) s after the crash"
		# With --all the problem names no domain: tslow uses t1's LV too.
		check_case "host2 crashed, t1's lease held by host2 (from sanlock)" host1 1 host-not-renewing
		check_json host1 t1 '[.domains[0].lvs[0].others | select(.source == "sanlock") | .holders[] | select(.host == "host2" and .mode == "ex")] | length == 1' ||
			fail "lvhook check does not name host2 as t1's holder from sanlock"
		wait_until "host2 dead for sanlock (lvhook check)" 200 check_json host1 t1 \
			'.lockspaces[0].hosts[] | select(.host_id == 2 and .state == "dead")' ||
			fail "lvhook check never reported host2 dead"
		log "  host1: lvhook check reports host2 dead $((SECONDS - t0)) s after the crash"
		check_case "host2 dead for sanlock" host1 1 host-not-renewing
		start_ok host1 t1
		record "crash-to-start-elsewhere-s" $((SECONDS - t0))
		log "  t1 started on host1 $((SECONDS - t0)) s after host2 crashed"
		expect "t1 running on host1 after host2's crash" t1@host1=ex
		destroy host1 t1
		expect "t1 destroyed on host1"
	)
	restart_host host2
	expect "host2 back: nothing active anywhere"
	# host1's sanlock reads host2's renewed lease at its own next renewal (up to about
	# 20 s after the join): until then it still shows host2 failing or dead.
	wait_until "host1 sees host2 renewing again (lvhook check)" 90 check_json host1 t1 \
		'.lockspaces[] | select(.vg == "vg0") | any(.hosts[]; .host_id == 2 and .state == "live")' ||
		fail "host1's sanlock never saw host2 renewing again"
	log "  host1: lvhook check sees host2 live again $((SECONDS - t0)) s after the crash"
	check_case "host2 back (host2's view)" host2 0 -
	check_case "host2 back (host1's view)" host1 0 -
}

# ---------------------------------------------------------------------------------
# The package: upgraded over itself while a domain runs.

scenario_package_upgrade() {
	local deb=$DEB_DIR/lvhook-upgrade.deb v pid1 pid2 h
	[[ -f $deb ]] || fail "no $deb (build_debs)"
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	pid1=$(hrun host1 pgrep -f 'qemu-system-x86_64 -name guest=t1') || fail "no QEMU for t1"
	for h in host1 host2; do
		v=$(install_deb "$h" "$deb") || fail "$h: upgrade to $(basename "$deb") failed"
		log "  $h: lvhook upgraded to $v (dpkg -i)"
		[[ $v == *+e2e ]] || fail "$h: lvhook version after the upgrade is '$v'"
		hsh "$h" -t 60 'systemctl is-active -q lvhook.service && cmp -s /etc/lvhook/lvhook.toml /mnt/ctl/pki/lvhook.toml' ||
			fail "$h: after the upgrade lvhook.service is not running or lvhook.toml was replaced"
	done
	pid2=$(hrun host1 pgrep -f 'qemu-system-x86_64 -name guest=t1') || fail "t1's QEMU is gone after the upgrade"
	[[ $pid1 == "$pid2" ]] || fail "t1's QEMU changed across the upgrade ($pid1 -> $pid2)"
	expect "upgraded on both hosts: t1 untouched, ex on host1" t1@host1=ex
	start_refused host2 t1 "lvhook: refusing to start"
	start_ok host2 t3
	expect "the upgraded hook works: t3 started on host2" t1@host1=ex t3a@host2=ex t3b@host2=ex t3c@host2=ex
	local ms
	ms=$(migrate host1 host2 t1)
	wait_modes 90 "t1 ex on host2" host2:t1:ex
	expect "t1 migrated to host2 with the upgraded package (${ms} ms)" t1@host2=ex t3a@host2=ex t3b@host2=ex t3c@host2=ex
	destroy host2 t1
	destroy host2 t3
	expect "all destroyed"
}

# migration_summary: the figures of the live migrations (not asserted), the hook calls
# of the first one, and the lvhook check reports, from the results file.
migration_summary() {
	if results_q -e 'any(.[]; .kind == "migration")' >/dev/null; then
		echo "==== live migrations with plain virsh migrate --live (lvhook handover)"
		results_q -r '
			def stats: map(floor) | sort
				| if length == 0 then "none"
				  else "min \(.[0]), median \(.[(length - 1) / 2 | floor]), max \(.[-1]) (n=\(length))" end;
			map(select(.kind == "migration")) as $m
			| map(select(.kind == "timing" and (.name | test("^migrate-manual-locks-[0-9]+-ms$"))) | .value | numbers) as $manual
			| "  migrations done: \($m | length) (\($m | map(select(.domain == "t1")) | length) of t1, \($m | map(select(.domain == "t3")) | length) of t3)",
			  "  wall time ms: \($m | map(.wall_ms | numbers) | stats)",
			  "  shared window on the source (downgrade granted -> release end done) ms: \($m | map(.window_ms | numbers) | stats)",
			  "  RESUMED_MIGRATED -> ex on the destination (lock helper took=) ms: \($m | map(.to_ex_ms | numbers) | stats)",
			  (if ($manual | length) > 0 then "  wall time ms with locks set by hand (toptout, no lvhook): \($manual | stats)" else empty end),
			  "  per migration (domain n src dst wall_ms window_ms to_ex_ms):",
			  ($m[] | "    \(.domain) \(.n) \(.src) \(.dst) \(.wall_ms // "?") \(.window_ms // "?") \(.to_ex_ms // "?")"),
			  (map(select(.kind == "hook-order")) | first // empty
				| "  hook calls during the first live migration, both hosts by time:", (.lines[] | "    \(.)"))'
	fi
	if results_q -e 'any(.[]; .kind == "check")' >/dev/null; then
		echo "==== lvhook check on the cluster"
		results_q -r '.[] | select(.kind == "check")
			| "==== \(.step): lvhook check --all on \(.host) (exit \(.rc // "?"))",
			  (.table | split("\n")[]),
			  "==== \(.step): lvhook check --all --json on \(.host) (exit \(.json_rc // "?")): summary and problems",
			  (if .report != null then (.report | tojson) else (.json_text // "" | split("\n")[]) end),
			  ((.problems // [])[] | tojson)' | sed 's/^/  /'
	fi
}
