# shellcheck shell=bash
# lvhook e2e: the assertions (expect, expect_dom, start_ok, start_refused, destroy,
# lvchange_on, fail, record) and the scenarios' other helpers (virsh_on, hosts_but,
# hook_calls, reset_cluster). Sourced by e2e.sh after lib.sh (hrun, lvm_state,
# restart_host, ...) and results.sh, whose result lines they write.

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
