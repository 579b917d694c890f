# shellcheck shell=bash
# lvhook e2e: `lvhook check` on the cluster (issue 5): its helpers (lvhook_check,
# check_case, check_json) and its scenario (healthy, stale activation, LV missing,
# lockspace not started). Sourced by e2e.sh after results.sh and assert.sh, whose
# results lines and assertions it uses. Its helpers are used by
# scenarios-migration-failures.sh, scenarios-crash.sh and scenarios-three.sh.

# lvhook_check HOST ARGS...: `lvhook check` in HOST; its output, then "rc=N" last.
lvhook_check() {
	local host=$1
	shift
	local q
	printf -v q '%q ' "$@"
	hsh "$host" -t 120 "timeout 100 lvhook check $q; echo rc=\$?" 2>&1
}

# check_case DESC HOST WANT_RC CODE [DOMAIN]: `lvhook check --all` and `--all --json`
# on HOST: exit status WANT_RC, and (unless CODE is -) a problem CODE (of DOMAIN). The
# table and the JSON problems are printed, and kept in a "check" line of the results
# (table, report: the JSON's version, host, healthy and summary, problems; json_text
# instead when the JSON does not parse).
check_case() {
	local desc=$1 host=$2 want=$3 code=$4 dom=${5:-} table json rc jrc t0 report problems found=true ok got
	t0=$(now_us)
	table=$(lvhook_check "$host" --all)
	rc=${table##*rc=}
	table=${table%rc=*}
	json=$(lvhook_check "$host" --all --json)
	jrc=${json##*rc=}
	json=${json%rc=*}
	report=$(jq -c '{version, host, healthy, summary}' <<<"$json" 2>/dev/null) || report=
	problems=$(jq -c '[.problems[]]' <<<"$json" 2>/dev/null) || problems=
	{
		echo "==== $desc: lvhook check --all on $host (exit $rc)"
		printf '%s\n' "$table"
		echo "==== $desc: lvhook check --all --json on $host (exit $jrc): summary and problems"
		if [[ -n $report ]]; then printf '%s\n' "$report"; else printf '%s\n' "$json"; fi
		jq -c '.[]' <<<"${problems:-[]}"
	} | sed 's/^/      | /' >&2
	if [[ $code != - ]]; then
		found=$(jq --arg c "$code" --arg d "$dom" '[.[] | select(.code == $c and ($d == "" or .domain == $d))] | length > 0' \
			<<<"${problems:-[]}")
	fi
	ok=false
	[[ $rc == "$want" && $jrc == "$want" && $found == true ]] && ok=true
	got="exit $rc (--json: exit $jrc), problems: $(jq -r 'map(.code) | unique | join(" ") | if . == "" then "none" else . end' <<<"${problems:-[]}" 2>/dev/null)"
	local extra=(--argjson rc "$(jnum "$rc")" --argjson json_rc "$(jnum "$jrc")" --arg table "${table%$'\n'}"
		--argjson report "${report:-null}" --argjson problems "${problems:-null}")
	[[ -n $report ]] || extra+=(--arg json_text "${json%$'\n'}")
	local expected="exit $want"
	[[ $code == - ]] || expected+=", problem $code${dom:+ of $dom}"
	result_assert check "$desc" "$host" "$expected" "$got" "$ok" "$(since_s "$t0")" "${extra[@]}"
	[[ $rc == "$want" && $jrc == "$want" ]] ||
		fail "$desc: lvhook check on $host exited $rc (json $jrc), expected $want"
	[[ $code == - ]] && return 0
	[[ $found == true ]] || fail "$desc: no problem '$code' ${dom:+of $dom }in lvhook check --json on $host"
	log "  ok   $desc: lvhook check on $host exits $rc, reports $code"
}

# check_json HOST DOMAIN JQ: lvhook check --json DOMAIN on HOST ran (exit 0 or 1) and its
# report satisfies JQ (jq -e: some output, the last neither false nor null).
check_json() {
	local out rc json
	out=$(lvhook_check "$1" --json "$2")
	rc=${out##*rc=}
	json=${out%rc=*}
	[[ ($rc == 0 || $rc == 1) && $json == *'"version"'* ]] || return 1
	[[ $(jq "$3" <<<"$json") =~ ^.+$ ]] || return 1
	jq -e "$3" <<<"$json" >/dev/null
}

TMISSING_UUID=6c76686b-0000-4000-8000-0000000000bb

scenario_check() {
	start_ok host1 t1
	expect "t1 running on host1" t1@host1=ex
	check_case "healthy: t1 running on host1" host1 0 -
	check_case "healthy: t1 running on host1" host2 0 -

	lvchange_on host2 -aey "$VG/t3a"
	expect "t3a activated by hand on host2, t3 stopped" t1@host1=ex t3a@host2=ex
	check_case "stale activation (t3a active, t3 stopped)" host2 1 stale-activation t3
	lvchange_on host2 -an "$VG/t3a"

	local h
	for h in host1 host2; do
		sed -e "s/<name>t1</<name>tmissing</" -e "s/<uuid>[^<]*</<uuid>$TMISSING_UUID</" \
			-e "s|/dev/$VG/t1|/dev/$VG/nosuch|" "$HARNESS_DIR/domains/t1.xml" >"$(host_dir "$h")/share/tmissing.xml"
		hrun "$h" virsh -q define /mnt/ctl/tmissing.xml >/dev/null || fail "$h: define tmissing failed"
	done
	check_case "LV missing (tmissing names $VG/nosuch)" host1 1 lv-missing tmissing
	for h in host1 host2; do hrun "$h" virsh -q undefine tmissing >/dev/null || true; done

	destroy host1 t1
	expect "t1 destroyed"
	hrun host1 -t 120 vgchange --lock-stop "$VG" >/dev/null || fail "vgchange --lock-stop failed"
	wait_until "host1 out of lockspace $VG" 60 lockspace_stopped host1 || fail "host1 still in the lockspace"
	check_case "lockspace not started on host1" host1 1 lockspace-not-started
	lock_start host1
	check_case "healthy again" host1 0 -
}
