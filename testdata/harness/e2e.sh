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
set -euo pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HARNESS_DIR/lib.sh"
# shellcheck source=scenarios.sh
source "$HARNESS_DIR/scenarios.sh"
# shellcheck source=scenarios-migration.sh
source "$HARNESS_DIR/scenarios-migration.sh"
# shellcheck source=scenarios-three.sh
source "$HARNESS_DIR/scenarios-three.sh"

ALL_SCENARIOS=(start_refuse_stop save_restore managedsave libvirtd_restart multidisk_refuse
	lockspace_stopped optout pool mixed shareable
	migrate_live migrate_manual_locks migrate_abort migrate_dest_killed migrate_src_helper_down
	migrate_dest_helper_down migrate_dest_libvirtd_restart migrate_offline forged_request check
	package_upgrade host_crash)
# With HOSTS=3 (scenarios-three.sh): run after the two-host ones.
THREE_SCENARIOS=(three_offline_two_starts three_stale_marker three_check_holder
	three_migrate_peer_off three_migrate_peer_crash)

RESULTS=()
FAILED=0
# Where die() records why the run stopped, to print it again last (CI shows the tail).
HARNESS_FATAL=$(mktemp)
export HARNESS_FATAL

finish() {
	local rc=$?
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
		log "e2e FAILED: $(printf '%s\n' "${RESULTS[@]}" | grep '^FAIL' | paste -sd',')"
	fi
	rm -f "$HARNESS_FATAL"
}

# run_scenario NAME: run scenario_NAME in a subshell with errexit, time it, and put the
# cluster back to a clean state whatever happened.
run_scenario() {
	local name=$1 t0=$SECONDS rc
	log "==== scenario $name"
	set +e
	(
		set -e
		"scenario_$name"
	)
	rc=$?
	set -e
	if ((rc == 0)); then
		RESULTS+=("PASS $name $((SECONDS - t0))s")
		log "==== PASS $name ($((SECONDS - t0)) s)"
	else
		FAILED=$((FAILED + 1))
		RESULTS+=("FAIL $name $((SECONDS - t0))s")
		log "==== FAIL $name ($((SECONDS - t0)) s)"
		diagnostics || true
		reset_cluster
	fi
}

main() {
	need_root
	local scenarios=("$@") s
	if ((${#scenarios[@]} == 0)); then
		scenarios=("${ALL_SCENARIOS[@]}")
		((HOST_COUNT < 3)) || scenarios+=("${THREE_SCENARIOS[@]}")
	fi
	for s in "${scenarios[@]}"; do
		declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s' (known: ${ALL_SCENARIOS[*]} ${THREE_SCENARIOS[*]})"
	done
	lvhook_available || die "no $LVHOOK_BIN: run 'make build' (or 'make e2e')"
	if [[ ${REUSE:-0} != 1 ]] && { qemu_running host1 || qemu_running host2; }; then
		die "the cluster is already up: stop it (cluster.sh down) or reuse it (REUSE=1)"
	fi
	trap finish EXIT
	trap 'exit 130' INT TERM HUP
	if [[ ${REUSE:-0} == 1 ]] && qemu_running host1 && qemu_running host2; then
		log "REUSE=1: running the scenarios on the cluster already up (and leaving it up)"
		KEEP=1
		TIME_IMAGE=- TIME_BOOT=- TIME_VGCREATE=- TIME_LOCKSTART=- TIME_UP=-
		build_debs
		on_all install_hooks >/dev/null || die "installing the hooks failed"
	else
		cluster_up
	fi
	rm -f "$RUN_DIR/timings" "$RUN_DIR/migrations" "$RUN_DIR/migrations-manual" "$RUN_DIR/hook-order" "$RUN_DIR/check-report"
	for s in "${scenarios[@]}"; do
		run_scenario "$s"
	done
	if [[ ${CAPTURE:-0} == 1 ]]; then
		"$HARNESS_DIR/capture.sh" || { FAILED=$((FAILED + 1)) && RESULTS+=("FAIL capture"); }
	fi

	echo
	echo "==== lvhook e2e summary"
	printf '  %s\n' "${RESULTS[@]}"
	echo "==== timings (seconds; not asserted)"
	printf '  image (build or cache) %s, boot both %s, vgcreate --shared %s, lock-start host2 %s, cluster up %s\n' \
		"$TIME_IMAGE" "$TIME_BOOT" "$TIME_VGCREATE" "$TIME_LOCKSTART" "$TIME_UP"
	if [[ -f $RUN_DIR/timings ]]; then
		sed 's/^/  /' "$RUN_DIR/timings"
	fi
	if [[ -f $RUN_DIR/timings ]]; then
		awk '$1 ~ /^start-t1-on-host[12]-ms$/ { h += $2; nh++ } $1 ~ /^start-toptout-on-host[12]-ms$/ { o += $2; no++ }
			END { if (nh && no) printf "  virsh start latency: %d ms with lvhook (t1, mean of %d) vs %d ms opted out with the LV activated by hand (toptout, mean of %d); the hook adds about %d ms\n", h/nh, nh, o/no, no, h/nh - o/no }' \
			"$RUN_DIR/timings"
	fi
	echo "  total $((SECONDS - HARNESS_T0))"
	migration_summary
	echo "==== lvhook calls as journald saw them (op: count, mean and max self-time in ms)"
	local h
	# shellcheck disable=SC2031 # a scenario's subshell narrowing HOSTS does not reach here
	for h in "${HOSTS[@]}"; do
		hsh "$h" -t 60 'journalctl -q -o cat -t lvhook | grep "^hook done"' 2>/dev/null |
			awk -v host="$h" '{ op = ""; took = 0
				for (i = 1; i <= NF; i++) {
					if ($i ~ /^op=/) { op = substr($i, 4) " " $(i + 1) }
					if ($i ~ /^took=/) { took = substr($i, 6) + 0 }
				}
				n[op]++; sum[op] += took; if (took > max[op]) max[op] = took }
				END { for (o in n) printf "  %s %-16s %3d calls, mean %5.0f ms, max %5.0f ms\n", host, o, n[o], sum[o] / n[o], max[o] }' |
			sort || true
	done
	local passed=$((${#RESULTS[@]} - FAILED))
	echo "e2e: $passed passed, $FAILED failed"
	((FAILED == 0))
}

main "$@"
