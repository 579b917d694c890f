# shellcheck shell=bash
# lvhook e2e scenarios of a domain's lifecycle: starts and refusals, save and restore,
# managedsave, libvirtd restart, multi-disk, lockspace stopped, opt-out, pool, mixed,
# shareable, and the migration with the source downgraded by hand (not run by default).
# Sourced by e2e.sh after assert.sh, whose assertions they use.
# Each scenario_NAME runs in a subshell with errexit; a failed assertion exits it.

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
