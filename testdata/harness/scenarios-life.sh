# shellcheck shell=bash
# lvhook e2e: a host's whole life. Sourced by e2e.sh after scenarios-check.sh, whose
# check_json and check_case it uses, and assert.sh's assertions.
#
#   boot_autostart  a host reboots with two domains set to autostart, one free and one
#                   running on the other host: lvhook-lockspaces.service joins the
#                   lockspace before libvirtd starts, the free one runs, the other is
#                   refused with lvhook's line and lvhook check reports it.
#   poweroff_evacuate  `systemctl poweroff` of a host running three domains: lvhook
#                   evacuate moves them to the peer before libvirt-guests stops, the
#                   host powers off by itself; then it boots again (the checks of
#                   boot_autostart, which CI leaves out for this one).
#   evacuate_fallback  the same with the peer's libvirtd down: managedsave and
#                   shutdown-then-destroy, nothing active anywhere, the saved domain
#                   restored after the boot.
#   storage_loss    the shared disk cut under one host (disk_cut: EIO): sanlock's kill
#                   path runs lvhook kill-vg, the domain is stopped and its LV put on
#                   the error target, the host is not reset; the peer starts the domain
#                   once the host is dead; the host recovers (kill-vg --recover).
#
# The image disables sanlock, lvmlockd and lvm2's lvmlocks (the harness starts them by
# hand); a scenario that reboots a host enables them there as an operator's host has
# them, and disables them again when it is done.

# host_units_boot HOST on|off: the lock daemons and lvmlocks.service started at boot, as
# Debian enables them by default; "on" also starts lvmlocks.service now (its start is a
# no-op with the lockspace joined), so that its stop leaves the lockspace at shutdown:
# lvmlockd's unit never SIGKILLs, and a poweroff with a lockspace up would hang.
host_units_boot() {
	if [[ $2 == on ]]; then
		hsh "$1" -t 120 'systemctl enable -q sanlock lvmlockd lvmlocks && systemctl start lvmlocks'
	else
		hsh "$1" -t 60 'systemctl disable -q sanlock lvmlockd lvmlocks'
	fi
}

# reboot_host HOST: `systemctl reboot` in HOST, wait for its QEMU to exit (-no-reboot),
# boot it again on its own root disk and wait for its agent. Bounded; the whole
# console stays in console.log.
reboot_host() {
	local host=$1 t0=$SECONDS
	hsh "$host" -t 30 'systemctl --no-block reboot' >/dev/null 2>&1 || true
	kill_host "$host" 240
	log "  $host: shut down for the reboot in $((SECONDS - t0)) s"
	BOOT_KEEP_DISK=1 boot_host "$host"
	wait_agent "$host" 400
	log "  $host: agent ready $((SECONDS - t0)) s after the reboot"
}

# unit_mono HOST UNIT PROPERTY: a unit's monotonic timestamp property in seconds.
unit_mono() {
	local v
	v=$(hrun "$1" systemctl show -P "$3" "$2" | tr -d '\r\n')
	[[ $v =~ ^[0-9]+$ ]] || v=0
	echo $((v / 1000000))
}

scenario_boot_autostart() {
	start_ok host2 t3
	expect "t3 running on host2" t3a@host2=ex t3b@host2=ex t3c@host2=ex
	virsh_on host1 autostart t1 >/dev/null
	virsh_on host1 autostart t3 >/dev/null
	host_units_boot host1 on
	local t0=$SECONDS
	reboot_host host1
	wait_until "host1: t1 autostarted" 400 sh_domstate_is host1 t1 running ||
		fail "t1 was not autostarted on host1 within 400 s of the reboot"
	record boot-to-running-s $((SECONDS - t0))
	log "  host1: t1 running $((SECONDS - t0)) s after the reboot"
	expect "t1 autostarted on host1, t3 still on host2" t1@host1=ex t3a@host2=ex t3b@host2=ex t3c@host2=ex

	# The order at boot: the lockspaces joined, then libvirtd.
	local ls_start ls_exit libvirtd
	ls_start=$(unit_mono host1 lvhook-lockspaces.service ExecMainStartTimestampMonotonic)
	ls_exit=$(unit_mono host1 lvhook-lockspaces.service ExecMainExitTimestampMonotonic)
	libvirtd=$(unit_mono host1 libvirtd.service ExecMainStartTimestampMonotonic)
	log "  host1: lvhook-lockspaces ran from ${ls_start} s to ${ls_exit} s of the boot, libvirtd started at ${libvirtd} s"
	hrun host1 journalctl -q --no-pager -b -u lvhook-lockspaces | sed 's/^/      | /' >&2 || true
	((ls_exit > 0 && libvirtd >= ls_exit)) || fail "libvirtd started at ${libvirtd} s, before lvhook-lockspaces ended (${ls_exit} s)"
	record boot-lockspaces-s $((ls_exit - ls_start))
	record boot-libvirtd-start-s "$libvirtd"

	# t3: refused with lvhook's line (libvirtd's journal), reported by lvhook check.
	local refused
	refused=$(hrun host1 journalctl -q --no-pager -b -u libvirtd -g 'refusing to start t3' | tail -n1)
	log "  host1: libvirtd's journal on t3: ${refused:-nothing}"
	[[ $refused == *"is active on host2"* ]] || fail "no refusal of t3's autostart naming host2 in libvirtd's journal"
	expect_dom t3 "shut off" running
	wait_until "lvhook check on host1 reports t3's refused autostart" 60 check_json host1 t3 \
		'.problems[] | select(.code == "autostart-refused" and .domain == "t3")' ||
		fail "lvhook check does not report t3's refused autostart"
	check_case "t3's autostart refused (host1)" host1 1 autostart-refused

	virsh_on host1 autostart --disable t1 >/dev/null
	virsh_on host1 autostart --disable t3 >/dev/null
	host_units_boot host1 off
	destroy host1 t1
	destroy host2 t3
	expect "after boot_autostart: nothing active anywhere"
}

# kill_command HOST on|off: lvm.conf's global/lvmlockctl_kill_command set to lvhook
# kill-vg (as the operator's guide says), or removed; verified with lvmconfig.
kill_command() {
	if [[ $2 == on ]]; then
		hsh "$1" -t 60 '
			grep -q "^[[:space:]]*lvmlockctl_kill_command" /etc/lvm/lvm.conf ||
				sed -i "0,/^global {/s//global {\n\tlvmlockctl_kill_command = \"\/usr\/sbin\/lvhook kill-vg\"/" /etc/lvm/lvm.conf
			lvmconfig --typeconfig full global/lvmlockctl_kill_command | grep -qF "/usr/sbin/lvhook kill-vg"'
	else
		hsh "$1" -t 60 'sed -i "/^[[:space:]]*lvmlockctl_kill_command = /d" /etc/lvm/lvm.conf'
	fi
}

# sanlock_has_vg HOST: sanlock on HOST still has vg0's lockspace (joined or leaving).
sanlock_has_vg() { hrun "$1" -t 30 sanlock client status 2>/dev/null | grep -q "^s lvm_$VG:"; }

sanlock_left() { ! sanlock_has_vg "$1"; }

# killed_verified HOST: lvhook kill-vg recorded vg0 killed and verified on HOST.
killed_verified() { hrun "$1" -t 30 cat "/run/lvhook/killed/$VG.json" 2>/dev/null | jq -e '.verified == true' >/dev/null; }

scenario_storage_loss() {
	kill_command host1 on
	start_ok host1 t1
	expect "t1 running on host1" t1@host1=ex
	local t0=$SECONDS cut_at
	cut_at=$(date +%s.%N)
	disk_cut host1
	log "  host1: the shared disk cut (every read and write fails with EIO) while t1 runs"
	(
		# host1's lvm cannot read the disk now: the invariant is read on host2 only.
		# shellcheck disable=SC2034,SC2207
		HOSTS=($(hosts_but host1))
		wait_until "host1: t1 stopped by lvhook kill-vg" 240 sh_domstate_is host1 t1 "shut off" ||
			fail "t1 still runs on host1 $((SECONDS - t0)) s after its storage was cut"
		record loss-to-stopped-s $((SECONDS - t0))
		log "  host1: t1 stopped $((SECONDS - t0)) s after the cut"
		wait_until "host1: kill-vg's record verified" 60 killed_verified host1 ||
			fail "no verified /run/lvhook/killed/$VG.json on host1"
		hsh host1 -t 60 "cat /run/lvhook/killed/$VG.json; echo; dmsetup table | grep '^$VG-'" | sed 's/^/      | /' >&2 || true
		# To the second, from kill-vg's own record (the polls above see it late).
		local started finished
		started=$(hrun host1 -t 30 cat "/run/lvhook/killed/$VG.json" | jq -r '.started | sub("\\.[0-9]+"; "") | fromdate')
		finished=$(hrun host1 -t 30 cat "/run/lvhook/killed/$VG.json" | jq -r '.finished | sub("\\.[0-9]+"; "") | fromdate')
		record loss-to-kill-vg-s "$(awk -v a="$started" -v b="$cut_at" 'BEGIN { printf "%.0f", a - b }')"
		record loss-to-domains-stopped-s "$(awk -v a="$finished" -v b="$cut_at" 'BEGIN { printf "%.0f", a - b }')"
		record kill-vg-run-s $((finished - started))
		hsh host1 -t 30 "dmsetup table $VG-t1 | grep -qw error" || fail "vg0-t1 on host1 does not have the error table"
		wait_until "host1: sanlock left lockspace lvm_$VG" 120 sanlock_left host1 ||
			fail "sanlock on host1 still has lvm_$VG $((SECONDS - t0)) s after the cut"
		record loss-to-lockspace-dropped-s $((SECONDS - t0))
		hrun host1 -t 30 sanlock client log_dump 2>/dev/null | grep -E "kill|all pids clear|lvm_$VG" | tail -n 12 | sed 's/^/      | /' >&2 || true
		qemu_running host1 || fail "host1 was reset"
		agent_ready host1 || fail "host1's agent is gone"
		check_case "vg0 killed on host1 (host1's view)" host1 1 vg-killed
		start_refused host2 t1 "lvhook: refusing to start"
		wait_until "host1 dead for sanlock (lvhook check on host2)" 240 check_json host2 t1 \
			'.lockspaces[0].hosts[] | select(.host_id == 1 and .state == "dead")' ||
			fail "host2 never saw host1 dead"
		start_ok host2 t1
		record loss-to-start-elsewhere-s $((SECONDS - t0))
		log "  t1 started on host2 $((SECONDS - t0)) s after host1's storage was cut"
		expect "t1 running on host2 after host1 lost its storage" t1@host2=ex
		destroy host2 t1
	)
	disk_restore host1
	local t1=$SECONDS out
	out=$(hrun host1 -t 420 lvhook kill-vg --recover "$VG" 2>&1) || fail "lvhook kill-vg --recover $VG failed on host1: $out"
	printf '%s\n' "$out" | sed 's/^/      | /' >&2
	record recover-s $((SECONDS - t1))
	kill_command host1 off
	expect "host1 recovered: nothing active anywhere"
	check_case "host1 recovered (host1's view)" host1 0 -
}

# evacuate_config HOST on|off: [evacuate] at_shutdown = true in HOST's lvhook.toml (the
# one key that makes lvhook-evacuate.service act at shutdown), or the section removed.
evacuate_config() {
	if [[ $2 == on ]]; then
		hsh "$1" -t 60 'grep -q "^\[evacuate\]" /etc/lvhook/lvhook.toml ||
			printf "\n[evacuate]\nat_shutdown = true\nshutdown_timeout = \"20s\"\n" >>/etc/lvhook/lvhook.toml
			lvhook check --all >/dev/null 2>&1; [ $? -ne 2 ]'
	else
		hsh "$1" -t 60 'sed -i "/^\[evacuate\]/,\$d" /etc/lvhook/lvhook.toml'
	fi
}

# set_priority HOST DOMAIN N [FALLBACK]: lvhook's metadata element of the (shut off)
# domain on HOST, as an operator sets it.
set_priority() {
	local attrs="priority=\"$3\""
	[[ -z ${4:-} ]] || attrs+=" fallback=\"$4\""
	virsh_on "$1" metadata "$2" https://lvhook.dev/xmlns/domain/1 --key lvhook --set "<domain $attrs/>" --config >/dev/null
}

# powered_off HOST T0 NAME: wait (600 s from T0, when `systemctl poweroff` was sent)
# for HOST's QEMU to exit by itself, a clean poweroff, else kill it and fail; record
# NAME, the seconds it took, and show lvhook evacuate's lines from its console.
powered_off() {
	local host=$1 t0=$2
	while qemu_running "$host" && ((SECONDS - t0 < 600)); do sleep 1; done
	if qemu_running "$host"; then
		tail -n 30 "$(host_dir "$host")/console.log" | tr -d '\r' | sed 's/^/      | /' >&2
		kill_host "$host" 0
		fail "$host did not power off by itself within 600 s"
	fi
	record "$3" $((SECONDS - t0))
	log "  $host: powered off by itself $((SECONDS - t0)) s after systemctl poweroff; lvhook evacuate on its console:"
	tr -d '\r' <"$(host_dir "$host")/console.log" | grep -E 'sh\[[0-9]+\]: ' | tail -n 15 | sed 's/^/      | /' >&2
}

# poweroff_evacuate: host1 runs t3, tmixed and tshare1 (priorities 10, 0, 5) with
# at_shutdown on, and t1 and t3 set to autostart there. `systemctl poweroff`: the three
# are live-migrated to host2 before libvirt-guests and libvirtd stop, and host1 powers
# off cleanly. Then host1 boots again: the lockspace is joined before libvirtd starts,
# t1 (free) autostarts, t3 (now on host2) is refused and lvhook check reports it.
scenario_poweroff_evacuate() {
	set_priority host1 t3 10
	set_priority host1 tshare1 5
	evacuate_config host1 on
	virsh_on host1 autostart t1 >/dev/null
	virsh_on host1 autostart t3 >/dev/null
	host_units_boot host1 on
	local d
	for d in t3 tmixed tshare1; do start_ok host1 "$d"; done
	expect "three domains on host1" t3a@host1=ex t3b@host1=ex t3c@host1=ex mixed1@host1=ex share1@host1=sh
	local t0=$SECONDS
	(
		# shellcheck disable=SC2034,SC2207
		HOSTS=($(hosts_but host1))
		hsh host1 -t 30 'systemctl --no-block poweroff' >/dev/null 2>&1 || true
		for d in t3 tshare1 tmixed; do
			wait_until "$d running on host2" 600 sh_domstate_is host2 "$d" running ||
				fail "$d does not run on host2 $((SECONDS - t0)) s after host1's poweroff"
		done
		record evacuate-3-s $((SECONDS - t0))
		log "  host2: t3, tshare1 and tmixed run there $((SECONDS - t0)) s after host1's poweroff"
		powered_off host1 "$t0" poweroff-total-s
		expect "evacuated to host2" t3a@host2=ex t3b@host2=ex t3c@host2=ex mixed1@host2=ex share1@host2=sh
	)
	t0=$SECONDS
	BOOT_KEEP_DISK=1 boot_host host1
	wait_agent host1 400
	wait_until "host1: t1 autostarted" 400 sh_domstate_is host1 t1 running ||
		fail "t1 was not autostarted on host1 within 400 s of its boot"
	record boot-to-running-s $((SECONDS - t0))
	log "  host1: t1 autostarted $((SECONDS - t0)) s after QEMU started"
	local ls_start ls_exit libvirtd
	ls_start=$(unit_mono host1 lvhook-lockspaces.service ExecMainStartTimestampMonotonic)
	ls_exit=$(unit_mono host1 lvhook-lockspaces.service ExecMainExitTimestampMonotonic)
	libvirtd=$(unit_mono host1 libvirtd.service ExecMainStartTimestampMonotonic)
	log "  host1: lvhook-lockspaces ran from ${ls_start} s to ${ls_exit} s of the boot, libvirtd started at ${libvirtd} s"
	((ls_exit > 0 && libvirtd >= ls_exit)) || fail "libvirtd started at ${libvirtd} s, before lvhook-lockspaces ended (${ls_exit} s)"
	record boot-lockspaces-s $((ls_exit - ls_start))
	expect "t1 autostarted on host1, the rest on host2" t1@host1=ex t3a@host2=ex t3b@host2=ex t3c@host2=ex mixed1@host2=ex share1@host2=sh
	wait_until "lvhook check on host1 reports t3's refused autostart" 60 check_json host1 t3 \
		'.problems[] | select(.code == "autostart-refused" and .domain == "t3")' ||
		fail "lvhook check does not report t3's refused autostart"

	virsh_on host1 autostart --disable t1 >/dev/null
	virsh_on host1 autostart --disable t3 >/dev/null
	host_units_boot host1 off
	evacuate_config host1 off
	destroy host1 t1
	for d in t3 tmixed tshare1; do destroy host2 "$d"; done
	clear_metadata host1 t3
	clear_metadata host1 tshare1
	expect "after poweroff_evacuate: nothing active anywhere"
}

# clear_metadata HOST DOMAIN: lvhook's metadata element removed from the domain.
clear_metadata() {
	virsh_on "$1" metadata "$2" https://lvhook.dev/xmlns/domain/1 --remove --config >/dev/null 2>&1 || true
}

# libvirtd_units HOST stop|start: libvirtd and its sockets (a stopped daemon would
# otherwise be started again by its socket).
libvirtd_units() {
	hsh "$1" -t 120 "systemctl $2 libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirtd-tcp.socket libvirtd.service"
}

# evacuate_fallback: host1 powers off with t1 (fallback managedsave) and t3 (fallback
# shutdown, the default) running while host2's libvirtd is down: no peer can take
# them, so t1 is saved and t3 shut down (the tiny domains have no OS: destroyed after
# shutdown_timeout), host1 powers off cleanly, nothing is active anywhere, and after
# host1 boots again `virsh start t1` restores it from its managed save.
scenario_evacuate_fallback() {
	set_priority host1 t1 0 managedsave
	evacuate_config host1 on
	host_units_boot host1 on
	start_ok host1 t1
	start_ok host1 t3
	expect "t1 and t3 on host1" t1@host1=ex t3a@host1=ex t3b@host1=ex t3c@host1=ex
	libvirtd_units host2 stop
	log "  host2: libvirtd stopped (its domains would keep running): no peer can take host1's domains"
	local t0=$SECONDS
	(
		# shellcheck disable=SC2034,SC2207
		HOSTS=($(hosts_but host1))
		hsh host1 -t 30 'systemctl --no-block poweroff' >/dev/null 2>&1 || true
		powered_off host1 "$t0" fallback-poweroff-s
		expect "host1 off: nothing active on host2"
	)
	libvirtd_units host2 start
	BOOT_KEEP_DISK=1 boot_host host1
	wait_agent host1 400
	wait_until "host1: lockspace $VG joined at boot" 300 lockspace_started host1 ||
		fail "host1 did not join $VG at boot"
	wait_until "host1: libvirtd active" 120 hrun host1 -t 30 systemctl is-active -q libvirtd ||
		fail "libvirtd not active on host1 after its boot"
	local reason
	reason=$(virsh_on host1 domstate --reason t1 2>&1 | head -n1)
	log "  host1: t1 after the boot: $reason; managed save image: $(virsh_on host1 dominfo t1 | grep -i 'managed save' | tr -s ' ')"
	start_ok host1 t1
	reason=$(virsh_on host1 domstate --reason t1 2>&1 | head -n1)
	[[ $reason == *restored* ]] || fail "t1 was not restored from its managed save: $reason"
	log "  host1: t1 $reason"
	expect "t1 restored on host1" t1@host1=ex
	destroy host1 t1
	clear_metadata host1 t1
	host_units_boot host1 off
	evacuate_config host1 off
	expect "after evacuate_fallback: nothing active anywhere"
}
