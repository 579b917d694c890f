# shellcheck shell=bash
# lvhook e2e scenarios and their assertion helpers; sourced by e2e.sh after lib.sh.
# Each scenario_NAME runs in a subshell with errexit; a failed assertion exits it.

# ---------------------------------------------------------------------------------
# Results: $RESULTS_DIR/e2e-debianN-Mhosts.jsonl (outside RUN_DIR, which the next
# cluster boot empties, so runs of several platforms keep theirs), one JSON object a
# line, each written by jq (never pasted together): what every assertion expected and
# observed, each scenario's result, the timings and the migration figures. e2e.sh
# prints its summary from this file alone; README.md lists the kinds of line and
# their fields.

RESULTS_DIR=${LVHOOK_RESULTS_DIR:-$RUN_DIR-results}

# results_base DEBIAN HOSTS: a platform's results path without its extension (.jsonl:
# the results; .log: e2e-ci.sh's copy of the run's output).
results_base() { echo "$RESULTS_DIR/e2e-debian$1-$2hosts"; }

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

# ---------------------------------------------------------------------------------
# Assertions

fail() {
	log "ASSERTION FAILED: $*"
	result failure --arg message "$*"
	exit 1
}

# record NAME VALUE: a timing for the summary (seconds, or ms when NAME ends in -ms).
record() { result timing --arg name "$1" --argjson value "$(jnum "$2")"; }

# hosts_but HOST: the hosts other than HOST (for `HOSTS=($(hosts_but host2))` while
# HOST is down and answers nothing).
hosts_but() {
	local h
	for h in "${HOSTS[@]}"; do
		[[ $h == "$1" ]] || echo "$h"
	done
}

# virsh_on HOST ARGS...: virsh on HOST (bounded), output and status passed through.
virsh_on() {
	local host=$1
	shift
	hrun "$host" -t 180 timeout 170 virsh "$@"
}

# expect STEP SPEC...: assert the lock state of every test LV on both hosts. SPEC is
# LV@HOST=ex|sh; every test LV/host pair not named must be inactive with no lock. Each
# host's state is a "state" line of the results: expected and observed as "LV=MODE ..."
# (sorted by LV; "none": nothing active), and how long the read took.
expect() {
	local step=$1 h name active mode got want bad=0 hbad line took
	shift
	declare -A wants=() expected=()
	local s
	for s in "$@"; do wants[${s%%=*}]=${s#*=}; done
	# Per host, the "LV=MODE" words expected there (for the results).
	for s in "${!wants[@]}"; do
		[[ ${wants[$s]} == none ]] || expected[${s#*@}]+=" ${s%@*}=${wants[$s]}"
	done
	local tmp
	tmp=$(mktemp -d)
	local pids=()
	for h in "${HOSTS[@]}"; do
		(
			t0=$(now_us)
			lvm_state "$h" >"$tmp/$h" 2>"$tmp/$h.err"
			since_s "$t0" >"$tmp/$h.took"
		) &
		pids+=($!)
	done
	# Only these reads: a scenario may have other jobs in the background.
	wait "${pids[@]}" || true
	local summary=() observed
	for h in "${HOSTS[@]}"; do
		took=$(cat "$tmp/$h.took" 2>/dev/null) || took=null
		[[ -s $tmp/$h ]] || {
			cat "$tmp/$h.err" >&2
			rm -rf "$tmp"
			# shellcheck disable=SC2086 # the words of expected
			result_assert state "$step" "$h" "$(sorted_words ${expected[$h]:-})" unreadable false "$took"
			fail "$step: could not read the lock state of $h"
		}
		line=
		observed=()
		hbad=0
		while read -r name active mode; do
			case $active/$mode in
			no/-) got=none ;;
			yes/ex | yes/sh) got=$mode ;;
			*) got="BROKEN(active=$active,lock=$mode)" ;;
			esac
			want=${wants[$name@$h]:-none}
			if [[ $got != "$want" ]]; then
				log "  $step: $name on $h is $got, expected $want"
				hbad=1
			fi
			[[ $got != none ]] && line+=" $name=$got" && observed+=("$name=$got")
			unset "wants[$name@$h]"
		done <"$tmp/$h"
		# An LV expected here that lvm_state did not list.
		for s in "${!wants[@]}"; do
			[[ $s == *@"$h" ]] || continue
			log "  $step: $s expected ${wants[$s]} but no such LV was reported"
			hbad=1
			unset "wants[$s]"
		done
		# shellcheck disable=SC2086 # the words of expected
		result_assert state "$step" "$h" "$(sorted_words ${expected[$h]:-})" "$(sorted_words "${observed[@]}")" \
			"$(jbool test "$hbad" = 0)" "$took"
		bad=$((bad | hbad))
		summary+=("$h:${line:- (nothing active)}")
	done
	rm -rf "$tmp"
	# Expected on a host that was not read (a scenario's narrowed HOSTS).
	for s in "${!wants[@]}"; do
		log "  $step: $s expected ${wants[$s]} but no such LV was reported"
		bad=1
	done
	((bad == 0)) || fail "$step: lock state differs from the invariant (${summary[*]})"
	log "  ok   $step: ${summary[*]}"
}

# sorted_words WORD...: the words sorted, on one line; "none" for no word.
sorted_words() {
	(($#)) || {
		echo none
		return
	}
	printf '%s\n' "$@" | LC_ALL=C sort | paste -sd' '
}

# expect_dom DOMAIN STATE1 STATE2: virsh domstate of DOMAIN on host1 and host2 (a
# "domstate" line of the results for each).
expect_dom() {
	local dom=$1 w1=$2 w2=$3 g1 g2 t0 took1 took2
	t0=$(now_us)
	g1=$(virsh_on host1 domstate "$dom" 2>&1 | head -n1) || true
	took1=$(since_s "$t0")
	t0=$(now_us)
	g2=$(virsh_on host2 domstate "$dom" 2>&1 | head -n1) || true
	took2=$(since_s "$t0")
	result_assert domstate "virsh domstate $dom" host1 "$w1" "$g1" "$(jbool same "$g1" "$w1")" "$took1" --arg domain "$dom"
	result_assert domstate "virsh domstate $dom" host2 "$w2" "$g2" "$(jbool same "$g2" "$w2")" "$took2" --arg domain "$dom"
	[[ $g1 == "$w1" && $g2 == "$w2" ]] ||
		fail "$dom: domstate host1='$g1' host2='$g2', expected '$w1' and '$w2'"
	log "  ok   $dom: host1 $g1, host2 $g2"
}

# start_ok HOST DOMAIN: virsh start must succeed; records its latency (and a "start"
# line of the results, expected "started").
start_ok() {
	local host=$1 dom=$2 t0 ms out
	t0=$(now_us)
	out=$(virsh_on "$host" start "$dom" 2>&1) || {
		result_assert start "virsh start $dom" "$host" started failed false "$(since_s "$t0")" \
			--arg domain "$dom" --arg message "$out"
		fail "virsh start $dom on $host failed: $out"
	}
	ms=$((($(now_us) - t0) / 1000))
	result_assert start "virsh start $dom" "$host" started started true "$(since_s "$t0")" --arg domain "$dom"
	log "  $host: virsh start $dom: ok ($ms ms)"
	record "start-$dom-on-$host-ms" "$ms"
}

# start_refused HOST DOMAIN PATTERN: virsh start must fail, and libvirt's error text
# must contain PATTERN (lvhook's line). The text is printed: it is what operators see.
# Its "start" line of the results expects "refused" and keeps the text as "message".
start_refused() {
	local host=$1 dom=$2 pattern=$3 t0=$SECONDS t0us out got
	t0us=$(now_us)
	if out=$(virsh_on "$host" start "$dom" 2>&1); then
		result_assert start "virsh start $dom" "$host" refused started false "$(since_s "$t0us")" \
			--arg domain "$dom" --arg pattern "$pattern"
		fail "virsh start $dom on $host succeeded; it must be refused"
	fi
	got=refused
	[[ $out == *"$pattern"* ]] || got="refused without the pattern"
	result_assert start "virsh start $dom" "$host" refused "$got" "$(jbool same "$got" refused)" "$(since_s "$t0us")" \
		--arg domain "$dom" --arg pattern "$pattern" --arg message "$out"
	log "  $host: virsh start $dom refused after $((SECONDS - t0)) s; libvirt says:"
	printf '%s\n' "$out" | sed 's/^/      | /' >&2
	[[ $got == refused ]] || fail "the error does not contain '$pattern'"
	record "refused-start-$dom-on-$host" $((SECONDS - t0))
}

# destroy HOST DOMAIN: virsh destroy must succeed (a "destroy" line of the results).
destroy() {
	local host=$1 dom=$2 out t0
	t0=$(now_us)
	out=$(virsh_on "$host" destroy "$dom" 2>&1) || {
		result_assert destroy "virsh destroy $dom" "$host" destroyed failed false "$(since_s "$t0")" \
			--arg domain "$dom" --arg message "$out"
		fail "virsh destroy $dom on $host failed: $out"
	}
	result_assert destroy "virsh destroy $dom" "$host" destroyed destroyed true "$(since_s "$t0")" --arg domain "$dom"
	log "  $host: virsh destroy $dom"
}

# lvchange_on HOST ARGS...: an operator's manual lvchange (must succeed; an "lvchange"
# line of the results).
lvchange_on() {
	local host=$1 out t0
	shift
	t0=$(now_us)
	out=$(hrun "$host" -t 120 lvchange "$@" 2>&1) || {
		result_assert lvchange "lvchange $*" "$host" changed failed false "$(since_s "$t0")" --arg message "$out"
		fail "$host: lvchange $* failed: $out"
	}
	result_assert lvchange "lvchange $*" "$host" changed changed true "$(since_s "$t0")"
	log "  $host: lvchange $* (by hand)"
}

# hook_calls HOST: the hook calls recorded by the 00-trace hook since the last clear.
hook_calls() { hrun "$1" cat /var/log/lvhook-trace.log 2>/dev/null || true; }
clear_hook_calls() { hrun "$1" truncate -s 0 /var/log/lvhook-trace.log >/dev/null 2>&1 || true; }

# reset_cluster puts both hosts back to a clean state after a failed scenario: no
# domain running, no test LV active, lockspace started everywhere.
reset_cluster() {
	local h
	log "resetting the cluster after the failure"
	for h in "${HOSTS[@]}"; do
		qemu_running "$h" || (restart_host "$h") || log "$h: restart failed"
	done
	for h in "${HOSTS[@]}"; do
		hsh "$h" -t 200 '
			for d in $(timeout 60 virsh -q list --name); do timeout 60 virsh -q destroy "$d"; done
			for d in $(timeout 60 virsh -q list --all --name --with-managed-save); do
				timeout 60 virsh -q managedsave-remove "$d"
			done
			lvmlockctl -i | grep -q "^VG '"$VG"' " || vgchange --lock-start '"$VG"'
			vgchange -an '"$VG"'' >/dev/null 2>&1 || log "$h: reset failed"
	done
	for h in "${HOSTS[@]}"; do
		wait_until "$h: lockspace $VG" 120 lockspace_started "$h" || log "$h: lockspace not back"
	done
}

# ---------------------------------------------------------------------------------
# Scenarios

scenario_start_refuse_stop() {
	expect "initially" 
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	expect_dom t1 running "shut off"

	start_refused host2 t1 "lvhook: refusing to start"
	expect "t1 refused on host2" t1@host1=ex
	expect_dom t1 running "shut off"

	# The tiny domains have no OS to obey an ACPI shutdown: QEMU is told to quit, which
	# libvirt handles like a guest that powered itself off (reason: shutdown).
	hrun host1 timeout 60 virsh -q qemu-monitor-command t1 --hmp quit >/dev/null 2>&1 || true
	wait_until "t1 shut off on host1" 60 sh_domstate_is host1 t1 "shut off" || fail "t1 did not stop"
	log "  host1: t1 powered off (QEMU quit)"
	expect "t1 powered off" 
	expect_dom t1 "shut off" "shut off"

	start_ok host1 t1
	expect "t1 started again on host1" t1@host1=ex
	destroy host1 t1
	expect "t1 destroyed on host1"

	start_ok host2 t1
	expect "t1 started on host2" t1@host2=ex
	start_refused host1 t1 "lvhook: refusing to start"
	expect "t1 refused on host1" t1@host2=ex
	destroy host2 t1
	expect "t1 destroyed on host2"
}

sh_domstate_is() {
	local out
	out=$(virsh_on "$1" domstate "$2" 2>/dev/null | head -n1) || return 1
	[[ $out == "$3" ]]
}

scenario_save_restore() {
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	virsh_on host1 save t1 /var/lib/libvirt/qemu/save/t1.sav >/dev/null || fail "virsh save failed"
	log "  host1: virsh save t1"
	expect "t1 saved" 
	expect_dom t1 "shut off" "shut off"
	local t0=$SECONDS
	virsh_on host1 restore /var/lib/libvirt/qemu/save/t1.sav >/dev/null || fail "virsh restore failed"
	log "  host1: virsh restore t1 ($((SECONDS - t0)) s)"
	record restore-t1 $((SECONDS - t0))
	expect "t1 restored on host1" t1@host1=ex
	expect_dom t1 running "shut off"
	destroy host1 t1
	hrun host1 rm -f /var/lib/libvirt/qemu/save/t1.sav
	expect "t1 destroyed"
}

scenario_managedsave() {
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	virsh_on host1 managedsave t1 >/dev/null || fail "virsh managedsave failed"
	log "  host1: virsh managedsave t1"
	expect "t1 managed-saved"
	start_ok host1 t1
	expect "t1 started from its managed save" t1@host1=ex
	expect_dom t1 running "shut off"
	destroy host1 t1
	expect "t1 destroyed"
}

scenario_libvirtd_restart() {
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	local pid1 pid2 t0=$SECONDS
	pid1=$(hrun host1 pgrep -f 'qemu-system-x86_64 -name guest=t1') || fail "no QEMU for t1 on host1"
	clear_hook_calls host1
	hrun host1 -t 180 sh -c 'systemctl restart libvirtd && timeout 120 virsh -q version >/dev/null' ||
		fail "libvirtd restart failed"
	log "  host1: libvirtd restarted ($((SECONDS - t0)) s)"
	record libvirtd-restart $((SECONDS - t0))
	expect_dom t1 running "shut off"
	pid2=$(hrun host1 pgrep -f 'qemu-system-x86_64 -name guest=t1') || fail "t1's QEMU is gone"
	[[ $pid1 == "$pid2" ]] || fail "t1's QEMU changed ($pid1 -> $pid2): it was restarted"
	expect "t1 after libvirtd restart" t1@host1=ex
	log "  hook calls during the restart on host1:"
	hook_calls host1 | sed 's/^/      | /' >&2
	destroy host1 t1
	expect "t1 destroyed"
}

scenario_multidisk_refuse() {
	lvchange_on host2 -aey "$VG/t3b"
	expect "t3b held ex on host2 by hand" t3b@host2=ex
	start_refused host1 t3 "lvhook: refusing to start"
	expect "t3 refused on host1: none of its LVs left active there" t3b@host2=ex
	expect_dom t3 "shut off" "shut off"
	lvchange_on host2 -an "$VG/t3b"
	expect "t3b released on host2"
	start_ok host1 t3
	expect "t3 started on host1" t3a@host1=ex t3b@host1=ex t3c@host1=ex
	destroy host1 t3
	expect "t3 destroyed"
}

scenario_lockspace_stopped() {
	hrun host1 -t 120 vgchange --lock-stop "$VG" >/dev/null || fail "vgchange --lock-stop failed"
	log "  host1: vgchange --lock-stop $VG (by hand)"
	# lvmlockd leaves the lockspace asynchronously.
	wait_until "host1 out of lockspace $VG" 60 lockspace_stopped host1 ||
		fail "host1 still in lockspace $VG 60 s after vgchange --lock-stop"
	start_refused host1 t1 "vgchange --lock-start"
	expect "t1 refused on host1 (lockspace stopped)"
	local t0=$SECONDS
	lock_start host1
	log "  host1: lockspace $VG started again ($((SECONDS - t0)) s)"
	record lock-start-again $((SECONDS - t0))
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	destroy host1 t1
	expect "t1 destroyed"
}

scenario_optout() {
	# Opted out: lvhook must neither activate nor deactivate. The operator activates the
	# LV by hand; it must still be active (ex, by hand) after the domain stopped.
	start_refused host1 toptout "optout1"
	expect "toptout not activated by lvhook"
	lvchange_on host1 -aey "$VG/optout1"
	expect "optout1 activated by hand" optout1@host1=ex
	# t1 with hook vs toptout with LVs pre-activated: the hook's added start latency.
	start_ok host1 toptout
	expect "toptout running" optout1@host1=ex
	destroy host1 toptout
	expect "toptout destroyed: optout1 left as it was" optout1@host1=ex
	lvchange_on host1 -an "$VG/optout1"
	expect "optout1 deactivated by hand"
}

scenario_pool() {
	pool_start host1 >/dev/null || fail "host1: pool-start vgpool failed"
	pool_start host2 >/dev/null || fail "host2: pool-start vgpool failed"
	expect "pool vgpool started on both hosts"
	start_ok host1 tpool
	expect "tpool started on host1" pool1@host1=ex
	start_refused host2 tpool "lvhook: refusing to start"
	expect "tpool refused on host2" pool1@host1=ex
	destroy host1 tpool
	expect "tpool destroyed"
}

scenario_mixed() {
	start_ok host1 tmixed
	expect "tmixed started on host1" mixed1@host1=ex
	start_refused host2 tmixed "lvhook: refusing to start"
	destroy host1 tmixed
	expect "tmixed destroyed"
}

scenario_shareable() {
	start_ok host1 tshare1
	expect "tshare1 started on host1" share1@host1=sh
	start_ok host2 tshare2
	expect "tshare2 started on host2" share1@host1=sh share1@host2=sh
	destroy host2 tshare2
	expect "tshare2 destroyed on host2" share1@host1=sh
	start_ok host1 tshare2
	expect "tshare2 started on host1 too" share1@host1=sh
	destroy host1 tshare1
	expect "tshare1 destroyed, tshare2 still running on host1" share1@host1=sh
	destroy host1 tshare2
	expect "both destroyed"
}

scenario_migrate_manual() {
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	clear_hook_calls host1
	clear_hook_calls host2
	# Stand-in for the lock helper's handover: downgrade the source by hand.
	lvchange_on host1 -asy "$VG/t1"
	expect "t1 downgraded to sh on host1 by hand" t1@host1=sh
	local t0=$SECONDS out
	out=$(hrun host1 -t 300 timeout 280 virsh migrate --live t1 qemu+tcp://host2/system \
		--migrateuri tcp://10.0.0.2 2>&1) || fail "virsh migrate failed: $out"
	log "  host1: virsh migrate --live t1 -> host2 ($((SECONDS - t0)) s)"
	record migrate-live-t1 $((SECONDS - t0))
	expect_dom t1 "shut off" running
	# Without the lock helper nothing converts the destination back to ex: sh is what
	# the hook alone can reach (ex if the hook took it ex).
	local mode
	mode=$(lvm_state host2 | awk '$1=="t1" {print $3}')
	case $mode in
	sh) expect "t1 migrated, sh on host2 (no lock helper to convert)" t1@host2=sh ;;
	ex) expect "t1 migrated, ex on host2" t1@host2=ex ;;
	*) fail "t1 on host2 after migration: lock mode '$mode'" ;;
	esac
	log "  hook calls seen during the migration:"
	{
		hook_calls host1
		hook_calls host2
	} | sort | sed 's/^/      | /' >&2
	destroy host2 t1
	expect "t1 destroyed on host2"
}
