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
mkdir -p "$RESULTS_DIR"

# lane_env K: the settings that give lane K its own cluster.
lane_env() {
	if (($1 == 1)); then
		echo "LVHOOK_RUN_DIR=$RUN_DIR" "LVHOOK_NET_PORT=$NET_PORT"
	else
		echo "LVHOOK_RUN_DIR=$RUN_DIR-lane$1" "LVHOOK_NET_PORT=$((NET_PORT + $1 - 1))"
	fi
}

# start_run I K: run I (1-based, of "$@") in the background on lane K; its pid in
# run_pid[I]. The run's own exit status is written to its .rc file.
bases=()
declare -A run_pid=() run_lane=() run_rc=() run_t0=()
start_run() {
	local i=$1 k=$2 words debian hosts base dir prefix
	read -r -a words <<<"${runs[i - 1]}"
	debian=${words[0]} hosts=${words[1]}
	dir=$RESULTS_DIR/run$i
	base=$dir/e2e-debian$debian-${hosts}hosts
	bases[i]=$base
	# Never an older run's results: e2e.sh empties its file only once it starts.
	rm -rf "$dir"
	mkdir -p "$dir"
	prefix=""
	((lanes == 1)) || prefix="[run$i] "
	log "==== CI run $i (lane $k): Debian $debian, $hosts hosts${words[2]:+ (${words[*]:2})}"
	# shellcheck disable=SC2046 # lane_env's words are NAME=VALUE pairs without spaces
	(
		env $(lane_env "$k") LVHOOK_RESULTS_DIR="$dir" DEBIAN="$debian" HOSTS="$hosts" HOST_COUNT="$hosts" \
			"$HARNESS_DIR/e2e.sh" "${words[@]:2}" 2>&1 | tee "$base.log" | sed -u "s/^/$prefix/"
		echo "${PIPESTATUS[0]}" >"$base.rc"
	) &
	run_pid[$i]=$!
	run_lane[$i]=$k
	run_t0[$i]=$SECONDS
}

runs=("$@")
next=1
free=()
for ((k = 1; k <= lanes; k++)); do free+=("$k"); done
while ((next <= ${#runs[@]} || ${#run_pid[@]} > 0)); do
	while ((next <= ${#runs[@]} && ${#free[@]} > 0)); do
		start_run "$next" "${free[0]}"
		free=("${free[@]:1}")
		next=$((next + 1))
	done
	wait -n -p done_pid "${run_pid[@]}"
	for i in "${!run_pid[@]}"; do
		[[ ${run_pid[$i]} == "$done_pid" ]] || continue
		unset "run_pid[$i]"
		run_rc[$i]=$(cat "${bases[i]}.rc" 2>/dev/null || echo 255)
		log "==== CI run $i (lane ${run_lane[$i]}) ended: exit ${run_rc[$i]} after $((SECONDS - run_t0[$i])) s"
		free+=("${run_lane[$i]}")
	done
done
rc=0
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
	recap "$i"
done
echo "e2e-ci: $( ((rc == 0)) && echo passed || echo FAILED)"
exit $rc
