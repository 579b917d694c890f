#!/bin/bash
# lvhook end-to-end tests on the real two-host cluster (run by `make e2e`, as root).
#
# Boots the cluster (cluster.sh up), installs bin/lvhook as libvirt's qemu hook on both
# hosts, then runs the scenarios. After every step the safety invariant is asserted on
# BOTH hosts: each test LV is ex/sh/inactive exactly where expected (mode read from
# `lvmlockctl -i`, activity from `lvs`), every other test LV inactive everywhere.
#
#   e2e.sh [SCENARIO...]    default: all scenarios, in order
#   KEEP=1 e2e.sh           leave the cluster running at the end (cluster.sh down stops it)
#   REUSE=1 e2e.sh          run on the cluster already up (cluster.sh up), leave it up
#   CAPTURE=1 e2e.sh        also capture real outputs into testdata/real (capture.sh)
#   E2E_SKIP="A B" e2e.sh   the default list without scenarios A and B
set -euo pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HARNESS_DIR/lib.sh"
# shellcheck source=results.sh
source "$HARNESS_DIR/results.sh"
# shellcheck source=assert.sh
source "$HARNESS_DIR/assert.sh"
# shellcheck source=scenarios.sh
source "$HARNESS_DIR/scenarios.sh"
# shellcheck source=scenarios-check.sh
source "$HARNESS_DIR/scenarios-check.sh"
# shellcheck source=scenarios-migration.sh
source "$HARNESS_DIR/scenarios-migration.sh"
# shellcheck source=scenarios-migration-failures.sh
source "$HARNESS_DIR/scenarios-migration-failures.sh"
# shellcheck source=scenarios-package.sh
source "$HARNESS_DIR/scenarios-package.sh"
# shellcheck source=scenarios-crash.sh
source "$HARNESS_DIR/scenarios-crash.sh"
# shellcheck source=scenarios-life.sh
source "$HARNESS_DIR/scenarios-life.sh"
# shellcheck source=scenarios-three.sh
source "$HARNESS_DIR/scenarios-three.sh"

ALL_SCENARIOS=(start_refuse_stop save_restore managedsave libvirtd_restart multidisk_refuse
	lockspace_stopped optout pool mixed shareable
	migrate_live migrate_manual_locks migrate_abort migrate_dest_killed migrate_src_helper_down
	migrate_dest_helper_down migrate_dest_libvirtd_restart migrate_offline forged_request check
	package_upgrade host_crash boot_autostart poweroff_evacuate evacuate_fallback storage_loss)
# With HOSTS=3 (scenarios-three.sh): run after the two-host ones.
THREE_SCENARIOS=(three_offline_two_starts three_stale_marker three_check_holder
	three_migrate_peer_off three_migrate_peer_crash three_evacuate_spread)

# Counted here as well as in $RESULTS_FILE (results.sh): what ran, what failed.
RAN=0
FAILED=0
# Where die() records why the run stopped, to print it again last (CI shows the tail).
HARNESS_FATAL=$(mktemp)
export HARNESS_FATAL

finish() {
	local rc=$?
	# The cleanup runs to its end: a second Ctrl-C, or a reader of our output gone
	# (e2e-ci.sh's tee), would leave the guests running.
	trap '' INT TERM HUP PIPE
	if ((rc != 0 || FAILED != 0)); then
		log "e2e FAILED; what the hosts saw:"
		diagnostics || true
	fi
	if [[ ${KEEP:-0} == 1 ]]; then
		log "KEEP=1: cluster left running ($HARNESS_DIR/cluster.sh down stops it)"
	else
		cluster_down || true
	fi
	if [[ -s $HARNESS_FATAL ]]; then
		log "e2e stopped: $(paste -sd';' "$HARNESS_FATAL")"
	elif ((FAILED != 0)); then
		log "e2e FAILED: $(results_q -r '.[] | select(.kind == "scenario" and .result == "fail") | .scenario' 2>/dev/null | paste -sd',')"
	fi
	rm -f "$HARNESS_FATAL"
}

# run_scenario NAME: run scenario_NAME in a subshell with errexit (SCENARIO=NAME there,
# for the lines it writes to the results), time it, write its "scenario" line, and
# put the cluster back to a clean state whatever happened.
run_scenario() {
	local name=$1 t0=$SECONDS t0us rc
	log "==== scenario $name"
	t0us=$(now_us)
	set +e
	(
		export SCENARIO=$name
		set -e
		"scenario_$name"
	)
	rc=$?
	set -e
	RAN=$((RAN + 1))
	if ((rc == 0)); then
		scenario_result "$name" pass "$(since_s "$t0us")"
		log "==== PASS $name ($((SECONDS - t0)) s)"
	else
		FAILED=$((FAILED + 1))
		scenario_result "$name" fail "$(since_s "$t0us")"
		log "==== FAIL $name ($((SECONDS - t0)) s)"
		diagnostics || true
		reset_cluster
	fi
}

# scenario_result NAME pass|fail SECONDS: the "scenario" line of the results, with the
# guests' Debian release (DEBIAN) and the number of hosts.
scenario_result() {
	local debian=$DEBIAN darg=--argjson
	[[ $debian =~ ^[0-9]+$ ]] || darg=--arg
	# shellcheck disable=SC2031 # a scenario's subshell narrowing HOSTS does not reach here
	SCENARIO=$1 result scenario --arg result "$2" --argjson duration_s "$(jnum "$3")" \
		"$darg" debian "$debian" --argjson hosts "${#HOSTS[@]}"
}

# cluster_timing NAME SECONDS: a "timing" line outside any scenario (cluster bring-up,
# total); "-" (REUSE=1: not measured) writes nothing.
cluster_timing() {
	[[ $2 == - ]] || result timing --arg name "$1" --argjson value "$(jnum "$2")"
}

# hook_call_results: lvhook's hook calls as each host's journal saw them, as one
# "hook-calls" line per host and op (calls, mean_ms, max_ms). Read from `journalctl -o
# json` fields: zerolog's journald writer makes each field of the hook's "hook done"
# record (hook/hook.go) an upper-case journal field; ACTION is only in that record,
# OP is libvirt's "op subop", TOOK the call's self-time in ms.
hook_call_results() {
	local h prog
	printf -v prog %q 'fromjson? | objects | select(has("ACTION")) | {op: .OP, took: ((.TOOK | tonumber?) // null)}'
	# shellcheck disable=SC2031 # a scenario's subshell narrowing HOSTS does not reach here
	for h in "${HOSTS[@]}"; do
		if ! qemu_running "$h" || ! agent_ready "$h"; then
			continue
		fi
		hsh "$h" -t 60 "journalctl -q --no-pager -o json -t lvhook | jq -cR $prog" 2>/dev/null |
			hook_call_stats |
			while IFS=$'\t' read -r op calls mean max; do
				result hook-calls --arg host "$h" --arg op "$op" --argjson calls "$calls" \
					--argjson mean_ms "$(jnum "$mean")" --argjson max_ms "$(jnum "$max")"
			done
	done
}

# hook_call_stats: per op of the {op, took} records on stdin, a tab-separated line: op,
# calls, mean and max of took (ms; empty when no record has one).
hook_call_stats() {
	jq -rnR '[inputs | fromjson? | objects] | group_by(.op)[]
		| map(.took | numbers) as $t
		| [(.[0].op // "?"), length, (if ($t | length) > 0 then ($t | add / length) else "" end), ($t | max // "")]
		| @tsv'
}

# print_summary: the e2e summary, from $RESULTS_FILE alone.
print_summary() {
	echo
	echo "==== lvhook e2e summary"
	results_q -r '.[] | select(.kind == "scenario") | "  \(.result | ascii_upcase) \(.scenario) \(.duration_s | floor)s"'
	echo "==== timings (seconds; not asserted)"
	results_q -r '
		def cluster($t; $n): ($t | map(select(.scenario == null and .name == $n)) | last | .value) // "-";
		def timed($t; $re): $t | map(select(.name | test($re)) | .value | numbers);
		map(select(.kind == "timing")) as $t
		| "  image (build or cache) \(cluster($t; "image")), boot \(cluster($t; "boot")), vgcreate --shared \(cluster($t; "vgcreate")), lock starts \(cluster($t; "lock-start")), cluster up \(cluster($t; "cluster-up"))",
		($t[] | select(.scenario != null) | "  \(.name) \(.value)"),
		(timed($t; "^start-t1-on-host[12]-ms$") as $h | timed($t; "^start-toptout-on-host[12]-ms$") as $o
			| select(($h | length) > 0 and ($o | length) > 0)
			| ($h | add / length) as $hm | ($o | add / length) as $om
			| "  virsh start latency: \($hm | floor) ms with lvhook (t1, mean of \($h | length)) vs \($om | floor) ms opted out with the LV activated by hand (toptout, mean of \($o | length)); the hook adds about \($hm - $om | trunc) ms"),
		"  total \(cluster($t; "total"))"'
	migration_summary
	echo "==== lvhook calls as journald saw them (op: count, mean and max self-time in ms)"
	results_q -r '.[] | select(.kind == "hook-calls") | [.host, .op, .calls, (.mean_ms // 0 | round), (.max_ms // 0 | round)] | @tsv' |
		while IFS=$'\t' read -r h op calls mean max; do
			printf '  %s %-16s %3d calls, mean %5d ms, max %5d ms\n' "$h" "$op" "$calls" "$mean" "$max"
		done | sort
}

main() {
	need_root
	local scenarios=("$@") s
	if ((${#scenarios[@]} == 0)); then
		# E2E_SKIP: scenarios the default list leaves out (CI's, for time).
		for s in "${ALL_SCENARIOS[@]}"; do
			[[ " ${E2E_SKIP:-} " == *" $s "* ]] || scenarios+=("$s")
		done
		((HOST_COUNT < 3)) || scenarios+=("${THREE_SCENARIOS[@]}")
	fi
	for s in "${scenarios[@]}"; do
		declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s' (known: ${ALL_SCENARIOS[*]} ${THREE_SCENARIOS[*]})"
	done
	lvhook_available || die "no $LVHOOK_BIN: run 'make build' (or 'make e2e')"
	install_host_packages
	command -v jq >/dev/null || die "no jq: the results are written with it (apt-get install jq)"
	local up=() h
	# shellcheck disable=SC2031 # a scenario's subshell narrowing HOSTS does not reach here
	for h in "${HOSTS[@]}"; do
		qemu_running "$h" && up+=("$h")
	done
	if [[ ${REUSE:-0} != 1 ]] && ((${#up[@]} > 0)); then
		die "the cluster is already up (${up[*]}): stop it (cluster.sh down) or reuse it (REUSE=1)"
	fi
	# Emptied first: a run that dies while the cluster comes up leaves no older
	# run's lines behind.
	mkdir -p "$RESULTS_DIR"
	: >"$RESULTS_FILE"
	RESULTS_STARTED=1
	trap finish EXIT
	trap 'exit 130' INT TERM HUP
	# shellcheck disable=SC2031 # as above
	if [[ ${REUSE:-0} == 1 ]] && ((${#up[@]} == ${#HOSTS[@]})); then
		log "REUSE=1: running the scenarios on the cluster already up (and leaving it up)"
		KEEP=1
		TIME_IMAGE=- TIME_BOOT=- TIME_VGCREATE=- TIME_LOCKSTART=- TIME_UP=-
		build_debs
		on_all install_hooks >/dev/null || die "installing the hooks failed"
	else
		cluster_up
	fi
	cluster_timing image "$TIME_IMAGE"
	cluster_timing boot "$TIME_BOOT"
	cluster_timing vgcreate "$TIME_VGCREATE"
	cluster_timing lock-start "$TIME_LOCKSTART"
	cluster_timing cluster-up "$TIME_UP"
	for s in "${scenarios[@]}"; do
		run_scenario "$s"
	done
	if [[ ${CAPTURE:-0} == 1 ]]; then
		local t0
		t0=$(now_us)
		RAN=$((RAN + 1))
		if "$HARNESS_DIR/capture.sh"; then
			scenario_result capture pass "$(since_s "$t0")"
		else
			FAILED=$((FAILED + 1))
			scenario_result capture fail "$(since_s "$t0")"
		fi
	fi
	# Neither may stop the run before its count.
	hook_call_results || log "reading lvhook's calls from the journals failed"
	cluster_timing total $((SECONDS - HARNESS_T0))
	print_summary || log "printing the summary from $RESULTS_FILE failed"

	# The count is the file's: a scenario without its "pass" line counts as failed.
	local passed failed
	passed=$(results_q '[.[] | select(.kind == "scenario" and .result == "pass")] | length') || passed=0
	failed=$((RAN - passed))
	if ((failed != FAILED)); then
		log "$RESULTS_FILE records $passed passes of $RAN scenarios run, $FAILED of which failed here"
	fi
	echo "e2e: $passed passed, $failed failed"
	((failed == 0))
}

main "$@"
