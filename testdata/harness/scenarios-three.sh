# shellcheck shell=bash
# lvhook e2e scenarios that need a third host (HOSTS=3): the two double-run paths a
# third host opens, migrations between two hosts while the third is powered off or
# crashes, and `lvhook check` naming the holder from every host. Sourced by e2e.sh
# after scenarios-migration.sh (migrate, wait_modes), scenarios-migration-failures.sh
# (the tslow helpers), scenarios-check.sh (check_json) and scenarios-life.sh (evacuate_config,
# host_units_boot, powered_off); every `expect` checks the
# invariant on all three.

need_three() { ((HOST_COUNT >= 3)) || fail "this scenario needs three hosts (HOSTS=3)"; }

# offline_migrate SRC DST DOM: virsh migrate --offline --persistent (must succeed).
offline_migrate() {
	local out
	out=$(hrun "$1" -t 200 timeout 180 virsh migrate --offline --persistent "$3" "qemu+tcp://$2/system" 2>&1) ||
		fail "virsh migrate --offline $3 $1 -> $2 failed: $out"
	log "  $1: virsh migrate --offline --persistent $3 -> $2"
}

# holder_is HOST DOM HOLDER: `lvhook check --json DOM` on HOST names HOLDER as the ex
# holder of DOM's first LV (HOST itself: its own ex lock).
holder_is() {
	local host=$1 dom=$2 holder=$3
	if [[ $host == "$holder" ]]; then
		check_json "$host" "$dom" '.domains[0].lvs[0] | select(.actual == "ex")'
	else
		check_json "$host" "$dom" "[.domains[0].lvs[0].others.holders[] | select(.host == \"$holder\" and .mode == \"ex\")] | length == 1"
	fi
}

# (1) Offline migrations of t1 to host2 and host3, then starts on both: while t1 runs
# on host1 both starts are refused; once it stops, the first start wins and the
# second is refused. An offline migration never hands a lock over.
scenario_three_offline_two_starts() {
	need_three
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	offline_migrate host1 host2 t1
	offline_migrate host1 host3 t1
	start_refused host2 t1 "is active on host1"
	start_refused host3 t1 "is active on host1"
	expect "both starts after offline migrations refused: t1 ex on host1 only" t1@host1=ex
	destroy host1 t1
	expect "t1 stopped on host1"
	start_ok host2 t1
	start_refused host3 t1 "is active on host2"
	expect "t1 runs on host2, host3's start refused" t1@host2=ex
	destroy host2 t1
	expect "t1 destroyed"
}

# (2) host3 holds a fresh incoming-migration marker naming host1 (what a migrate
# begin leaves when the Prepare that follows fails), and starts tslow while tslow
# live-migrates from host1 to host2. host3's prepare asks host1 for the handover;
# host1 refuses (host2 reserved this migration), so host3's start is an ordinary
# one, refused by lvmlockd. The migration completes: ex on host2 only.
scenario_three_stale_marker() {
	need_three
	tslow_migrating host1 host2
	hsh host3 -t 30 'mkdir -p /run/lvhook/incoming &&
		printf "{\"at\":\"%s\",\"source\":\"host1\"}\n" "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" >/run/lvhook/incoming/'"$TSLOW_UUID" ||
		fail "host3: writing the marker failed"
	log "  host3: an incoming-migration marker of tslow naming host1, written now"
	# host3's prepare cannot tell this start from the migration its marker names:
	# lvhook refuses "to accept the incoming migration", saying host1 keeps the
	# handover for host2, and lvmlockd refused the ex lock anyway.
	start_refused host3 tslow "is reserved for host2"
	expect "host3's start refused during the migration" t1@host1=sh t1@host2=sh
	virsh_on host1 migrate-setspeed tslow 8192 >/dev/null || fail "virsh migrate-setspeed failed"
	local r
	r=$(finish_slow_migration)
	[[ $r == rc=0* ]] || fail "the migration failed: $r"
	wait_modes 90 "t1 ex on host2 after the migration" host2:t1:ex host1:t1:none host3:t1:none
	expect "migrated to host2 despite host3's start: ex on host2 only" t1@host2=ex
	expect_dom tslow "shut off" running
	destroy host2 tslow
	expect "tslow destroyed"
}

# migrate_there_and_back A B: t1 live-migrates A -> B -> A with the invariant checked
# after each; the wall times are recorded.
migrate_there_and_back() {
	local a=$1 b=$2 why=$3 ms
	start_ok "$a" t1
	expect "t1 started on $a" "t1@$a=ex"
	ms=$(migrate "$a" "$b" t1)
	wait_modes 90 "t1 ex on $b" "$b:t1:ex" "$a:t1:none"
	expect "t1 live-migrated $a -> $b ($ms ms) $why" "t1@$b=ex"
	record "three-migrate-$why-ms" "$ms"
	ms=$(migrate "$b" "$a" t1)
	wait_modes 90 "t1 ex on $a" "$a:t1:ex" "$b:t1:none"
	expect "t1 live-migrated $b -> $a ($ms ms) $why" "t1@$a=ex"
	record "three-migrate-$why-ms" "$ms"
	destroy "$a" t1
	expect "t1 destroyed"
}

# (3) host3 powered off cleanly: live migrations between host1 and host2 work (the
# handover's fan-out meets a peer that does not answer), then host3 comes back.
scenario_three_migrate_peer_off() {
	need_three
	# A clean poweroff: host3 leaves the lockspace first (its lease released), so
	# nothing waits for it to expire.
	hrun host3 -t 120 vgchange --lock-stop "$VG" >/dev/null || fail "host3: vgchange --lock-stop failed"
	wait_until "host3 out of lockspace $VG" 60 lockspace_stopped host3 || fail "host3 still in the lockspace"
	guest_shutdown host3
	kill_host host3 120
	log "  host3 left the lockspace and powered off"
	(
		# shellcheck disable=SC2207,SC2030 # host names have no spaces; expect reads it
		HOSTS=($(hosts_but host3))
		migrate_there_and_back host1 host2 host3-off
	)
	restart_host host3
	expect "host3 back: nothing active anywhere"
}

# (4) host3 crashes (QEMU SIGKILL) in the middle of a live migration host1 -> host2,
# then tslow migrates back while host3 is dead: both complete, ex where it runs.
scenario_three_migrate_peer_crash() {
	need_three
	define_tslow
	start_ok host1 tslow
	expect "tslow started on host1" t1@host1=ex
	start_slow_migration host1 host2
	kill -KILL "$(qemu_pid host3)" || fail "no QEMU for host3"
	log "  host3 crashed (its QEMU killed with SIGKILL) during the migration host1 -> host2"
	(
		# shellcheck disable=SC2207,SC2030 # host names have no spaces; expect reads it
		HOSTS=($(hosts_but host3))
		virsh_on host1 migrate-setspeed tslow 8192 >/dev/null || fail "virsh migrate-setspeed failed"
		local r ms
		r=$(finish_slow_migration)
		[[ $r == rc=0* ]] || fail "the migration failed: $r"
		wait_modes 90 "t1 ex on host2" host2:t1:ex host1:t1:none
		expect "migrated to host2 while host3 crashed" t1@host2=ex
		ms=$(migrate host2 host1 tslow)
		wait_modes 90 "t1 ex on host1" host1:t1:ex host2:t1:none
		expect "tslow back on host1 ($ms ms) with host3 dead" t1@host1=ex
		record "three-migrate-host3-dead-ms" "$ms"
		destroy host1 tslow
		expect "tslow destroyed"
	)
	restart_host host3
	expect "host3 back: nothing active anywhere"
}

# (5) `lvhook check` on each of the three hosts names the host that runs t1.
scenario_three_check_holder() {
	need_three
	local runner h
	# shellcheck disable=SC2031 # the narrowed HOSTS of other scenarios stay in their subshells
	for runner in host2 host3; do
		start_ok "$runner" t1
		expect "t1 running on $runner" "t1@$runner=ex"
		for h in "${HOSTS[@]}"; do
			holder_is "$h" t1 "$runner" || fail "lvhook check on $h does not name $runner as t1's holder"
			log "  ok   lvhook check on $h names $runner as t1's holder"
		done
		destroy "$runner" t1
		expect "t1 destroyed"
	done
}

# (6) host1 powers off with three domains running and at_shutdown on: lvhook evacuate
# spreads them over host2 and host3 (the peer with the fewest domains of this run
# first, then the most free memory), all ex there, and host1 powers off cleanly.
# host1 stays off: this is the last three-host scenario (cluster_down skips it).
scenario_three_evacuate_spread() {
	need_three
	evacuate_config host1 on
	host_units_boot host1 on
	local d
	for d in t1 t3 tmixed; do start_ok host1 "$d"; done
	expect "three domains on host1" t1@host1=ex t3a@host1=ex t3b@host1=ex t3c@host1=ex mixed1@host1=ex
	local t0=$SECONDS
	# shellcheck disable=SC2034,SC2207
	HOSTS=($(hosts_but host1))
	hsh host1 -t 30 'systemctl --no-block poweroff' >/dev/null 2>&1 || true
	local where=() h found
	for d in t1 t3 tmixed; do
		wait_until "$d running on host2 or host3" 600 running_on_any "$d" host2 host3 ||
			fail "$d runs on neither host2 nor host3 $((SECONDS - t0)) s after host1's poweroff"
	done
	record evacuate-3-spread-s $((SECONDS - t0))
	for d in t1 t3 tmixed; do
		found=
		for h in host2 host3; do sh_domstate_is "$h" "$d" running && found=$h; done
		where+=("$d@$found")
	done
	log "  evacuated $((SECONDS - t0)) s after host1's poweroff: ${where[*]}"
	local on2 on3
	on2=$(printf '%s\n' "${where[@]}" | grep -c '@host2$' || true)
	on3=$(printf '%s\n' "${where[@]}" | grep -c '@host3$' || true)
	((on2 >= 1 && on3 >= 1)) || fail "not spread over host2 and host3: ${where[*]}"
	local spec=() lv
	for d in "${where[@]}"; do
		h=${d#*@}
		case ${d%@*} in
		t1) spec+=("t1@$h=ex") ;;
		t3) for lv in t3a t3b t3c; do spec+=("$lv@$h=ex"); done ;;
		tmixed) spec+=("mixed1@$h=ex") ;;
		esac
	done
	expect "evacuated: each domain ex where it runs" "${spec[@]}"
	powered_off host1 "$t0" poweroff-total-s
	for d in "${where[@]}"; do destroy "${d#*@}" "${d%@*}"; done
	expect "after three_evacuate_spread: nothing active on host2 and host3"
}

# running_on_any DOMAIN HOST...: the domain runs on one of the hosts.
running_on_any() {
	local d=$1 h
	shift
	for h in "$@"; do sh_domstate_is "$h" "$d" running && return 0; done
	return 1
}
