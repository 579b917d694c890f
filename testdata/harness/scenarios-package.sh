# shellcheck shell=bash
# lvhook e2e: the package (lib-lvhook.sh's DEB_DIR and install_deb): upgraded over itself
# while a domain runs. Sourced by e2e.sh after scenarios-migration.sh, whose migrate and
# wait_modes it uses, and assert.sh's assertions.

scenario_package_upgrade() {
	local deb=$DEB_DIR/lvhook-upgrade.deb v pid1 pid2 h
	[[ -f $deb ]] || fail "no $deb (build_debs)"
	start_ok host1 t1
	expect "t1 started on host1" t1@host1=ex
	pid1=$(hrun host1 pgrep -f 'qemu-system-x86_64 -name guest=t1') || fail "no QEMU for t1"
	for h in host1 host2; do
		v=$(install_deb "$h" "$deb") || fail "$h: upgrade to $(basename "$deb") failed"
		log "  $h: lvhook upgraded to $v (dpkg -i)"
		[[ $v == *+e2e ]] || fail "$h: lvhook version after the upgrade is '$v'"
		hsh "$h" -t 60 'systemctl is-active -q lvhook.service && cmp -s /etc/lvhook/lvhook.toml /mnt/ctl/pki/lvhook.toml' ||
			fail "$h: after the upgrade lvhook.service is not running or lvhook.toml was replaced"
	done
	pid2=$(hrun host1 pgrep -f 'qemu-system-x86_64 -name guest=t1') || fail "t1's QEMU is gone after the upgrade"
	[[ $pid1 == "$pid2" ]] || fail "t1's QEMU changed across the upgrade ($pid1 -> $pid2)"
	expect "upgraded on both hosts: t1 untouched, ex on host1" t1@host1=ex
	start_refused host2 t1 "lvhook: refusing to start"
	start_ok host2 t3
	expect "the upgraded hook works: t3 started on host2" t1@host1=ex t3a@host2=ex t3b@host2=ex t3c@host2=ex
	local ms
	ms=$(migrate host1 host2 t1)
	wait_modes 90 "t1 ex on host2" host2:t1:ex
	expect "t1 migrated to host2 with the upgraded package (${ms} ms)" t1@host2=ex t3a@host2=ex t3b@host2=ex t3c@host2=ex
	destroy host2 t1
	destroy host2 t3
	expect "all destroyed"
}
