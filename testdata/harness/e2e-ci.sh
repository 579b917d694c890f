#!/bin/bash
# What CI runs (make e2e-ci, from .ci/run): the platform runs given, up to LANES of them
# at once (each lane a cluster of its own), whatever the others give; then a recap of
# every run from its results file, so CI's tail shows what failed on which run and why,
# with the failed scenarios' own log.
#
#   e2e-ci.sh [-j LANES] "DEBIAN HOSTS [SCENARIO...]"...   one argument per run
#
# The runs start in the order given, each on the first lane free. Lane 1 is the
# harness's usual cluster ($LVHOOK_RUN_DIR, UDP port $LVHOOK_NET_PORT); lane K > 1 has
# its own directory ($RUN_DIR-laneK) and port (+K-1), so clusters never share a disk,
# a network or a console. With more than one lane, every line a run prints is prefixed
# with its name (runN). Each run's results and output are kept apart:
# $RESULTS_DIR/runN/e2e-debianD-Hhosts.{jsonl,log}.
set -uo pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HARNESS_DIR/lib.sh"
# shellcheck source=results.sh
source "$HARNESS_DIR/results.sh" # RESULTS_DIR, results_base, results_q
# Lines of a failed scenario's own log repeated in the recap (its end: the failed
# assertion and the diagnostics of every host).
RECAP_LINES=${LVHOOK_RECAP_LINES:-80}

lanes=1
if [[ ${1:-} == -j ]]; then
	[[ ${2:-} =~ ^[1-4]$ ]] || die "e2e-ci.sh: -j takes 1 to 4 lanes, not '${2:-}'"
	lanes=$2
	shift 2
fi
(($# > 0)) || die "usage: e2e-ci.sh [-j LANES] \"DEBIAN HOSTS [SCENARIO...]\"..."
for run in "$@"; do
	read -r -a words <<<"$run"
	[[ ${#words[@]} -ge 2 && ${words[0]} =~ ^(12|13)$ && ${words[1]} =~ ^[23]$ ]] ||
		die "e2e-ci.sh: '$run' is not \"DEBIAN HOSTS [SCENARIO...]\" (DEBIAN 12 or 13, HOSTS 2 or 3)"
done
# Two runs of one release would refresh the same testdata/real directory at once.
((lanes == 1)) || [[ ${CAPTURE:-0} != 1 ]] || die "e2e-ci.sh: CAPTURE=1 needs -j 1"
mkdir -p "$RESULTS_DIR"

# lane_env K: lane_vars becomes the settings that give lane K a cluster of its own
# (directory, packages, network).
lane_env() {
	local dir=$RUN_DIR port=$NET_PORT
	if (($1 > 1)); then
		dir=$RUN_DIR-lane$1 port=$((NET_PORT + $1 - 1))
	fi
	lane_vars=(LVHOOK_RUN_DIR="$dir" LVHOOK_DEB_DIR="$dir-debs" LVHOOK_NET_PORT="$port")
}

# start_run I K: run I (1-based, of "$@") in the background on lane K; run_pid[I] is
# the subshell whose exit status is the run's (e2e.sh's). Its output goes to its .log
# and, prefixed with its name when lanes run side by side, to ours; the tee outlives a
# Ctrl-C so that e2e.sh's cleanup still has somewhere to write.
bases=()
declare -A run_pid=() run_lane=() run_hosts=() run_rc=() run_t0=()
start_run() {
	local i=$1 k=$2 words debian hosts base dir prefix=""
	read -r -a words <<<"${runs[i - 1]}"
	debian=${words[0]} hosts=${words[1]}
	dir=$RESULTS_DIR/run$i
	base=$(results_base "$debian" "$hosts" "$dir")
	bases[i]=$base
	# Never an older run's results: e2e.sh empties its file only once it starts.
	rm -rf "$dir"
	mkdir -p "$dir"
	((lanes == 1)) || prefix="[run$i] "
	lane_env "$k"
	log "==== CI run $i (lane $k): Debian $debian, $hosts hosts${words[2]:+ (${words[*]:2})}"
	(
		env "${lane_vars[@]}" LVHOOK_RESULTS_DIR="$dir" DEBIAN="$debian" HOSTS="$hosts" HOST_COUNT="$hosts" \
			"$HARNESS_DIR/e2e.sh" "${words[@]:2}" 2>&1 |
			(
				trap '' INT TERM HUP
				tee "$base.log" | sed -u "s/^/$prefix/"
			)
		exit "${PIPESTATUS[0]}"
	) &
	run_pid[$i]=$!
	run_lane[$i]=$k
	run_hosts[$i]=$hosts
	run_t0[$i]=$SECONDS
}

# run_ended I STATUS: records run I's exit status and frees its lane. A run that
# failed may have been killed before its own cleanup: its lane's cluster is shut
# down before another run boots there.
run_ended() {
	local i=$1 k=${run_lane[$1]}
	unset "run_pid[$i]"
	run_rc[$i]=$2
	log "==== CI run $i (lane $k) ended: exit $2 after $((SECONDS - run_t0[$i])) s"
	if (($2 != 0)); then
		lane_env "$k"
		env "${lane_vars[@]}" HOSTS="${run_hosts[$i]}" HOST_COUNT="${run_hosts[$i]}" \
			"$HARNESS_DIR/cluster.sh" down >/dev/null 2>&1 ||
			log "lane $k: cluster.sh down failed after run $i"
	fi
	free+=("$k")
}

# A signal stops the runs (each e2e.sh shuts its cluster down), starts no other and
# still recaps: the signal goes to each run's e2e.sh (the subshell's child; the tee
# beside it ignores it).
stopping=0
# shellcheck disable=SC2317 # run by the trap
stop_runs() {
	((stopping == 0)) || return 0
	stopping=1
	log "e2e-ci: stopped by a signal: the runs shut their clusters down, no other starts"
	local pid
	for pid in "${run_pid[@]}"; do
		pkill -TERM -P "$pid" 2>/dev/null || true
	done
}
trap stop_runs INT TERM HUP

runs=("$@")
next=1
free=()
for ((k = 1; k <= lanes; k++)); do free+=("$k"); done
while ((${#run_pid[@]} > 0 || (stopping == 0 && next <= ${#runs[@]}))); do
	while ((stopping == 0 && next <= ${#runs[@]} && ${#free[@]} > 0)); do
		start_run "$next" "${free[0]}"
		free=("${free[@]:1}")
		next=$((next + 1))
	done
	# wait -n returns early on a signal (done_pid empty), and bash can drop from its
	# job table a job that ended while it was not waiting: every run no longer alive is
	# collected by its pid.
	done_pid=""
	wait -n -p done_pid "${run_pid[@]}"
	status=$?
	for i in "${!run_pid[@]}"; do
		pid=${run_pid[$i]}
		if [[ $pid == "${done_pid:-}" ]]; then
			run_ended "$i" "$status"
		elif ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			run_ended "$i" $?
		fi
	done
done
rc=$stopping
for i in "${!run_rc[@]}"; do
	((run_rc[$i] == 0)) || rc=1
done

# section LOG SCENARIO: SCENARIO's lines of LOG, from its "==== scenario" line to the
# next scenario's or the summary.
section() {
	awk -v s="$2" '$0 ~ "==== scenario " s "$" { on = 1; print; next }
		on && (/==== scenario / || /==== lvhook e2e summary/) { exit }
		on' "$1"
}

# recap I: run I's exit status and count and, for each failed scenario, its failures
# and the end of its log.
recap() {
	local base=${bases[$1]} s failed
	local name="run$1 ${base##*/e2e-}" log=$base.log
	local RESULTS_FILE=$base.jsonl # what results_q reads
	local status="exit ${run_rc[$1]}"
	((run_rc[$1] == 0)) || status+=", FAILED"
	if [[ ! -s $RESULTS_FILE ]]; then
		echo "  $name: $status, no results (the run stopped before its cluster was up):"
		grep -h 'FATAL' "$log" 2>/dev/null | tail -n 5 | sed 's/^/    /'
		return
	fi
	failed=$(results_q -r '.[] | select(.kind == "scenario" and .result != "pass") | .scenario')
	results_q -r --arg name "$name" --arg status "$status" 'map(select(.kind == "scenario")) as $s
		| ($s | map(select(.result != "pass") | .scenario)) as $failed
		| "  \($name): \($status); \($s | length - ($failed | length)) passed, \($failed | length) failed"
		  + (if ($failed | length) > 0 then " (" + ($failed | join(", ")) + ")" else "" end)'
	results_q -r '.[] | select(.kind == "failure") | "    \(.scenario // "(outside a scenario)"): \(.message)"'
	for s in $failed; do
		echo "  ---- $name: $s, the end of its run"
		section "$log" "$s" | awk '/==== FAIL / { exit } { print }' | tail -n "$RECAP_LINES" | sed 's/^/    /'
		echo "  ---- $name: $s, the end of what the hosts saw"
		section "$log" "$s" | awk 'on { print } /==== FAIL / { on = 1 }' | tail -n "$RECAP_LINES" | sed 's/^/    /'
	done
	# A run that stopped inside a scenario (killed, or a fatal error) has no line for it.
	if ((run_rc[$1] != 0)) && [[ -z $failed ]]; then
		echo "  ---- $name: the end of its log (no scenario recorded a failure)"
		tail -n "$RECAP_LINES" "$log" | sed 's/^/    /'
	fi
}

echo
echo "==== e2e-ci recap (results in $RESULTS_DIR)"
for ((i = 1; i <= ${#runs[@]}; i++)); do
	if [[ -n ${run_rc[$i]:-} ]]; then
		recap "$i"
	else
		echo "  run$i (${runs[i - 1]}): not started"
	fi
done
echo "e2e-ci: $( ((rc == 0)) && echo passed || echo FAILED)"
exit $rc
