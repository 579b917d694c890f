# shellcheck shell=bash
# lvhook e2e: the results file and the helpers that write and read it (result,
# result_assert, results_q, now_us, since_s, jnum, ...). Sourced by e2e.sh, and by
# e2e-ci.sh for its recap, after lib.sh (RUN_DIR, DEBIAN, HOST_COUNT, log).

# Results: $RESULTS_DIR/e2e-debianN-Mhosts.jsonl (outside RUN_DIR, which the next
# cluster boot empties, so runs of several platforms keep theirs), one JSON object a
# line, each written by jq (never pasted together): what every assertion expected and
# observed, each scenario's result, the timings and the migration figures. e2e.sh
# prints its summary from this file alone; README.md lists the kinds of line and
# their fields.

RESULTS_DIR=${LVHOOK_RESULTS_DIR:-$RUN_DIR-results}

# results_base DEBIAN HOSTS [DIR]: a platform's results path without its extension
# (.jsonl: the results; .log: e2e-ci.sh's copy of the run's output), in DIR (default
# $RESULTS_DIR).
results_base() { echo "${3:-$RESULTS_DIR}/e2e-debian$1-$2hosts"; }

RESULTS_FILE=$(results_base "$DEBIAN" "$HOST_COUNT").jsonl

# now_us: the time in microseconds since the epoch (bash's EPOCHREALTIME, whatever the
# locale's decimal separator; date if bash has none).
now_us() {
	local t=${EPOCHREALTIME:-}
	[[ -n $t ]] || t=$(date +%s.%6N)
	echo "${t/[.,]/}"
}

# since_s T0_US: the seconds since T0_US (from now_us), with milliseconds: a JSON number.
since_s() {
	local d=$(($(now_us) - $1))
	((d >= 0)) || d=0
	printf '%d.%03d\n' $((d / 1000000)) $((d % 1000000 / 1000))
}

# jnum VALUE: VALUE if it is a plain decimal number, else null ("?", "-", empty).
jnum() {
	if [[ $1 =~ ^-?[0-9]+([.][0-9]+)?$ ]]; then echo "$1"; else echo null; fi
}

# jbool CMD...: true if CMD succeeds, else false (for jq's --argjson).
jbool() { if "$@"; then echo true; else echo false; fi; }
same() { [[ $1 == "$2" ]]; }

# result KIND [JQ_ARG...]: append to $RESULTS_FILE {"kind": KIND, "scenario": the
# scenario running (SCENARIO, set by e2e.sh's run_scenario; null outside one), the
# fields given as jq options --arg NAME TEXT / --argjson NAME JSON, "t": unix time}.
# An empty "host" is null too. A line jq cannot write is logged, not fatal.
result() {
	local kind=$1 t
	shift
	t=$(now_us)
	jq -cn --arg kind "$kind" --arg scenario "${SCENARIO:-}" "$@" \
		--argjson t "$((t / 1000000)).$(printf %03d $((t % 1000000 / 1000)))" \
		'$ARGS.named | with_entries(if (.key == "scenario" or .key == "host") and .value == "" then .value = null else . end)' \
		>>"$RESULTS_FILE" || log "could not write a '$kind' line to $RESULTS_FILE"
}

# result_assert KIND STEP HOST EXPECTED OBSERVED OK DURATION_S [JQ_ARG...]: the line of
# one assertion: what STEP expected and observed on HOST (may be empty), OK (true or
# false), and the seconds the step took (DURATION_S, or null).
result_assert() {
	local kind=$1 step=$2 host=$3 want=$4 got=$5 ok=$6 took=$7
	shift 7
	result "$kind" --arg step "$step" --arg host "$host" --arg expected "$want" --arg observed "$got" \
		--argjson ok "$ok" --argjson duration_s "$(jnum "$took")" "$@"
}

# results_q [JQ_OPTION...] FILTER: jq's FILTER applied to the array of the lines of
# $RESULTS_FILE (a line that is not a JSON object is skipped).
results_q() {
	local filter=${!#}
	jq -nR "${@:1:$#-1}" "[inputs | fromjson? | objects] | $filter" "$RESULTS_FILE"
}
