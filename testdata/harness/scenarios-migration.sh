# shellcheck shell=bash
# lvhook e2e: live migration with plain `virsh migrate --live` (no manual step): its
# helpers (migrate, wait_modes, the figures read from lvhook's journal), the migrations
# back and forth, the same with the locks set by hand, and the summary of the migration
# figures and `lvhook check` tables. Sourced by e2e.sh after results.sh and assert.sh,
# whose results lines and assertions (expect, expect_dom, ...) it uses. Its helpers are
# used by scenarios-migration-failures.sh, scenarios-package.sh and scenarios-three.sh.

other_host() { [[ $1 == host1 ]] && echo host2 || echo host1; }

# migrate_cmd SRC DST DOM [ARGS...]: the operator's plain live migration command.
migrate_cmd() {
	local src=$1 dst=$2 dom=$3 n
	shift 3
	n=$(host_num "$dst")
	hrun "$src" -t 300 timeout 280 virsh migrate --live "$dom" "qemu+tcp://$dst/system" \
		--migrateuri "tcp://10.0.0.$n" "$@"
}

# migrate SRC DST DOM [ARGS...]: must succeed; prints its wall time in ms on stdout
# (and writes a "migrate" line of the results, host SRC, expected "migrated to DST").
migrate() {
	local src=$1 dst=$2 dom=$3 t0 ms out
	t0=$(now_us)
	out=$(migrate_cmd "$@" 2>&1) || {
		result_assert migrate "virsh migrate --live $dom" "$src" "migrated to $dst" failed false "$(since_s "$t0")" \
			--arg domain "$dom" --arg dst "$dst" --arg message "$out"
		fail "virsh migrate --live $dom $src -> $dst failed: $out"
	}
	ms=$((($(now_us) - t0) / 1000))
	result_assert migrate "virsh migrate --live $dom" "$src" "migrated to $dst" "migrated to $dst" true "$(since_s "$t0")" \
		--arg domain "$dom" --arg dst "$dst"
	echo "$ms"
}

# lv_mode HOST LV: ex, sh or none.
lv_mode() {
	lvm_state "$1" | awk -v lv="$2" '$1 == lv { print ($2 == "yes" ? $3 : "none") }'
}
lv_mode_is() { [[ $(lv_mode "$1" "$2") == "$3" ]]; }

# wait_modes TIMEOUT DESC HOST:LV:MODE...: wait until every LV has its mode.
modes_are() {
	local s
	for s in "$@"; do
		IFS=: read -r h lv m <<<"$s"
		lv_mode_is "$h" "$lv" "$m" || return 1
	done
}
# Each wait is a "wait" line of the results (expected: the HOST:LV:MODEs; observed
# "reached" or "not reached within TIMEOUT s"; duration_s: how long it waited).
wait_modes() {
	local timeout=$1 desc=$2 t0
	shift 2
	t0=$(now_us)
	if ! wait_until "$desc" "$timeout" modes_are "$@"; then
		result_assert wait "$desc" "" "$*" "not reached within ${timeout} s" false "$(since_s "$t0")"
		fail "$desc: not reached within ${timeout}s"
	fi
	result_assert wait "$desc" "" "$*" reached true "$(since_s "$t0")"
}

# journal_mark HOST: remember (in the guest) the end of lvhook's journal there;
# journal_since HOST: lvhook's journal records since the mark, as `journalctl -o json`
# lines: lvhook logs through zerolog's journald writer, which makes each zerolog field
# an upper-case journal field (op -> OP, took -> TOOK, ...; cmd/lvhook/logging.go).
journal_mark() { hsh "$1" -t 30 'journalctl -q -n 0 --show-cursor -t lvhook | sed -n "s/^-- cursor: //p" >/root/journal.cursor'; }
journal_since() {
	hsh "$1" -t 60 'journalctl -q --no-pager -o json -t lvhook --after-cursor "$(cat /root/journal.cursor)"'
}

# The time of a journal record in µs: when journald received it (the
# _SOURCE_REALTIME_TIMESTAMP journald adds to a native-protocol record, which
# `journalctl -o short-unix` shows), else __REALTIME_TIMESTAMP.
JQ_JOURNAL_TS='def ts: (._SOURCE_REALTIME_TIMESTAMP // .__REALTIME_TIMESTAMP) | tonumber;'

# shared_window_ms DOMAIN: from the source's records of one migration (journal_since on
# stdin), the ms from its grant of the downgrade (the peer server's "answer sent":
# REQUEST=/v1/downgrade, GRANTED=true; peer/server.go) to the end of the
# hook's release end ("hook done", the only record with ACTION, OP="release end";
# hook/hook.go). Prints nothing when either is missing.
shared_window_ms() {
	jq -rnR --arg dom "$1" "$JQ_JOURNAL_TS"'
		[inputs | fromjson? | objects | select(.DOMAIN == $dom)] as $r
		| first($r[] | select(.REQUEST == "/v1/downgrade" and .GRANTED == "true") | ts) as $g
		| first($r[] | select(has("ACTION") and .OP == "release end") | ts | select(. >= $g)) as $e
		| ($e - $g) / 1000 | floor'
}

# to_ex_ms DOMAIN: from the destination's records of one migration (journal_since on
# stdin), the lock helper's TOOK (ms) of its last "exclusive again" (the record with
# LVS, FROM=sh and TO=ex; migration/repair.go; lvm's own "converted" records
# carry LV, not LVS). Prints nothing when there is none.
to_ex_ms() {
	jq -rnR --arg dom "$1" '
		[inputs | fromjson? | objects
			| select(.DOMAIN == $dom and has("LVS") and .FROM == "sh" and .TO == "ex") | .TOOK | tonumber?]
		| last // empty | floor'
}

# migration_figures SRC DST DOMAIN: from the journals of one migration of DOMAIN: the
# shared window on the source (downgrade granted -> release end done) and
# RESUMED_MIGRATED -> ex on the destination (the lock helper's TOOK), in ms, "?" when
# a journal does not show it.
migration_figures() {
	local src=$1 dst=$2 dom=$3 win took
	win=$(journal_since "$src" | shared_window_ms "$dom") || true
	took=$(journal_since "$dst" | to_ex_ms "$dom") || true
	echo "${win:-?} ${took:-?}"
}

# migration_result DOMAIN N SRC DST WALL_MS FIGURES: a "migration" line of the results
# (FIGURES: migration_figures' output).
migration_result() {
	local win toex
	read -r win toex <<<"$6"
	result migration --arg domain "$1" --argjson n "$2" --arg src "$3" --arg dst "$4" \
		--argjson wall_ms "$(jnum "$5")" --argjson window_ms "$(jnum "$win")" --argjson to_ex_ms "$(jnum "$toex")"
}

# ---------------------------------------------------------------------------------

# (a) live migrations back and forth, plain virsh, no manual step.
scenario_migrate_live() {
	local count=${LVHOOK_MIGRATIONS:-20} i src=host1 dst=host2 ms fig order
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	for ((i = 1; i <= count; i++)); do
		journal_mark "$src"
		journal_mark "$dst"
		if ((i == 1)); then
			clear_hook_calls host1
			clear_hook_calls host2
		fi
		ms=$(migrate "$src" "$dst" t1)
		expect_dom t1 "$([[ $dst == host1 ]] && echo running || echo "shut off")" \
			"$([[ $dst == host2 ]] && echo running || echo "shut off")"
		wait_modes 90 "t1 ex on $dst after migration $i" "$dst:t1:ex"
		expect "migration $i: t1 $src -> $dst (${ms} ms), ex on $dst only" "t1@$dst=ex"
		fig=$(migration_figures "$src" "$dst" t1)
		migration_result t1 "$i" "$src" "$dst" "$ms" "$fig"
		record "migrate-t1-$i-ms" "$ms"
		if ((i == 1)); then
			log "  hook calls seen during migration 1 ($src -> $dst), both hosts by time:"
			order=$({
				hook_calls host1
				hook_calls host2
			} | sort)
			printf '%s\n' "$order" | sed 's/^/      | /' >&2
			result hook-order --arg src "$src" --arg dst "$dst" \
				--argjson lines "$(jq -Rsc 'split("\n") | map(select(. != ""))' <<<"$order")"
		fi
		src=$dst
		dst=$(other_host "$src")
	done
	destroy "$src" t1
	expect "t1 destroyed on $src"

	# The three-disk domain, there and back.
	start_ok host1 t3
	expect "t3 started on host1" t3a@host1=ex t3b@host1=ex t3c@host1=ex
	src=host1 dst=host2
	for i in 1 2; do
		journal_mark "$src"
		journal_mark "$dst"
		ms=$(migrate "$src" "$dst" t3)
		wait_modes 90 "t3 ex on $dst" "$dst:t3a:ex" "$dst:t3b:ex" "$dst:t3c:ex"
		expect "t3 migrated $src -> $dst (${ms} ms)" "t3a@$dst=ex" "t3b@$dst=ex" "t3c@$dst=ex"
		fig=$(migration_figures "$src" "$dst" t3)
		migration_result t3 "$i" "$src" "$dst" "$ms" "$fig"
		src=$dst
		dst=$(other_host "$src")
	done
	destroy "$src" t3
	expect "t3 destroyed"
}

# The same migration with the locks set by hand (toptout opts out of lvhook): the wall
# time without lvhook's handover.
scenario_migrate_manual_locks() {
	local i ms src=host1 dst=host2
	lvchange_on host1 -aey "$VG/optout1"
	start_ok host1 toptout
	expect "toptout running on host1 (LV ex by hand)" optout1@host1=ex
	for i in 1 2 3 4; do
		lvchange_on "$src" -asy "$VG/optout1"
		lvchange_on "$dst" -asy "$VG/optout1"
		ms=$(migrate "$src" "$dst" toptout)
		lvchange_on "$src" -an "$VG/optout1"
		lvchange_on "$dst" -aey "$VG/optout1"
		expect "toptout migrated $src -> $dst with locks set by hand (${ms} ms)" "optout1@$dst=ex"
		record "migrate-manual-locks-$i-ms" "$ms"
		src=$dst
		dst=$(other_host "$src")
	done
	destroy "$src" toptout
	lvchange_on "$src" -an "$VG/optout1"
	expect "toptout destroyed, optout1 released by hand"
}

# migration_summary: the figures of the live migrations (not asserted), the hook calls
# of the first one, and the lvhook check reports, from the results file.
migration_summary() {
	if results_q -e 'any(.[]; .kind == "migration")' >/dev/null; then
		echo "==== live migrations with plain virsh migrate --live (lvhook handover)"
		results_q -r '
			def stats: map(floor) | sort
				| if length == 0 then "none"
				  else "min \(.[0]), median \(.[(length - 1) / 2 | floor]), max \(.[-1]) (n=\(length))" end;
			map(select(.kind == "migration")) as $m
			| map(select(.kind == "timing" and (.name | test("^migrate-manual-locks-[0-9]+-ms$"))) | .value | numbers) as $manual
			| "  migrations done: \($m | length) (\($m | map(select(.domain == "t1")) | length) of t1, \($m | map(select(.domain == "t3")) | length) of t3)",
			  "  wall time ms: \($m | map(.wall_ms | numbers) | stats)",
			  "  shared window on the source (downgrade granted -> release end done) ms: \($m | map(.window_ms | numbers) | stats)",
			  "  RESUMED_MIGRATED -> ex on the destination (lock helper took=) ms: \($m | map(.to_ex_ms | numbers) | stats)",
			  (if ($manual | length) > 0 then "  wall time ms with locks set by hand (toptout, no lvhook): \($manual | stats)" else empty end),
			  "  per migration (domain n src dst wall_ms window_ms to_ex_ms):",
			  ($m[] | "    \(.domain) \(.n) \(.src) \(.dst) \(.wall_ms // "?") \(.window_ms // "?") \(.to_ex_ms // "?")"),
			  (map(select(.kind == "hook-order")) | first // empty
				| "  hook calls during the first live migration, both hosts by time:", (.lines[] | "    \(.)"))'
	fi
	if results_q -e 'any(.[]; .kind == "check")' >/dev/null; then
		echo "==== lvhook check on the cluster"
		results_q -r '.[] | select(.kind == "check")
			| "==== \(.step): lvhook check --all on \(.host) (exit \(.rc // "?"))",
			  (.table | split("\n")[]),
			  "==== \(.step): lvhook check --all --json on \(.host) (exit \(.json_rc // "?")): summary and problems",
			  (if .report != null then (.report | tojson) else (.json_text // "" | split("\n")[]) end),
			  ((.problems // [])[] | tojson)' | sed 's/^/  /'
	fi
}
