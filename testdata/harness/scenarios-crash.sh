# shellcheck shell=bash
# lvhook e2e: a host crash. Sourced by e2e.sh after scenarios-check.sh, whose check_case
# and check_json it uses, and assert.sh's assertions.
#
# A host crashes while it runs a domain. Its lease keeps the domain's LV locked until
# sanlock takes the host for dead (about 140 s after its last renewal): a start
# elsewhere is refused until then. lvhook check on the survivor names the holder from
# sanlock's leases (the crashed host's lock helper cannot answer) and says how long
# the lock holds; once the host is dead the domain starts on the survivor. The crashed
# host then boots again and rejoins.

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
