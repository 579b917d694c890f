#!/bin/bash
# What CI runs (make e2e-ci, from .ci/run): each platform's e2e run in turn, whatever the
# one before gave, then a recap of every platform from its results file, so CI's tail
# shows what failed on which platform and why, with the failed scenarios' own log.
#
#   e2e-ci.sh "DEBIAN HOSTS [SCENARIO...]"...   one argument per platform run
# Each run's output is also kept in $RESULTS_DIR/e2e-debianN-Mhosts.log.
set -uo pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HARNESS_DIR/lib.sh"
# shellcheck source=results.sh
source "$HARNESS_DIR/results.sh" # RESULTS_DIR, results_base, results_q
# Lines of a failed scenario's own log repeated in the recap (its end: the failed
# assertion and the diagnostics of every host).
RECAP_LINES=${LVHOOK_RECAP_LINES:-80}

(($# > 0)) || die "usage: e2e-ci.sh \"DEBIAN HOSTS [SCENARIO...]\"..."
mkdir -p "$RESULTS_DIR"
rc=0
runs=()
declare -A run_rc=()
for run in "$@"; do
	read -r -a words <<<"$run"
	[[ ${#words[@]} -ge 2 && ${words[0]} =~ ^(12|13)$ && ${words[1]} =~ ^[23]$ ]] ||
		die "e2e-ci.sh: '$run' is not \"DEBIAN HOSTS [SCENARIO...]\" (DEBIAN 12 or 13, HOSTS 2 or 3)"
done
for run in "$@"; do
	read -r -a words <<<"$run"
	debian=${words[0]} hosts=${words[1]}
	base=$(results_base "$debian" "$hosts")
	runs+=("$base")
	# Never an older run's results: e2e.sh empties its file only once it starts.
	rm -f "$base.jsonl" "$base.log"
	log "==== CI platform: Debian $debian, $hosts hosts${words[2]:+ (${words[*]:2})}"
	DEBIAN=$debian HOSTS=$hosts HOST_COUNT=$hosts "$HARNESS_DIR/e2e.sh" "${words[@]:2}" 2>&1 |
		tee "$base.log"
	run_rc[$base]=${PIPESTATUS[0]}
	((run_rc[$base] == 0)) || rc=1
done

# section LOG SCENARIO: SCENARIO's lines of LOG, from its "==== scenario" line to the
# next scenario's or the summary.
section() {
	awk -v s="$2" '$0 ~ "==== scenario " s "$" { on = 1; print; next }
		on && (/==== scenario / || /==== lvhook e2e summary/) { exit }
		on' "$1"
}

# recap BASE: the platform's exit status and count and, for each failed scenario, its
# failures and the end of its log (BASE: its results_base).
recap() {
	local base=$1 name=${1##*/} log=$1.log s failed
	local RESULTS_FILE=$1.jsonl # what results_q reads
	local status="exit ${run_rc[$base]}"
	((run_rc[$base] == 0)) || status+=", FAILED"
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
	if ((run_rc[$base] != 0)) && [[ -z $failed ]]; then
		echo "  ---- $name: the end of its log (no scenario recorded a failure)"
		tail -n "$RECAP_LINES" "$log" | sed 's/^/    /'
	fi
}

echo
echo "==== e2e-ci recap (results in $RESULTS_DIR)"
for base in "${runs[@]}"; do
	recap "$base"
done
echo "e2e-ci: $( ((rc == 0)) && echo passed || echo FAILED)"
exit $rc
