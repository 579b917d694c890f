#!/bin/bash
# lvhook demo (`make demo`, as root): boots two KVM hosts that share one LVM volume
# group, installs lvhook as libvirt's hook on both, and shows it keeping one VM from
# running on two hosts at once. About 10 minutes the first time, less once the guest
# image is cached. Cleans up after itself.
set -euo pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HARNESS_DIR/lib.sh"
# shellcheck source=demo-migration.sh
source "$HARNESS_DIR/demo-migration.sh"

say() { printf '\n\033[1m>>> %s\033[0m\n' "$*"; }

# show_locks prints, for both hosts, which of the VM's LVs are active and how.
show_locks() {
	local h name active mode
	for h in "${HOSTS[@]}"; do
		while read -r name active mode; do
			[[ $name == t1 ]] || continue
			if [[ $active == yes ]]; then
				printf '      %s: LV %s/%s active, lock %s (%s)\n' "$h" "$VG" "$name" "$mode" \
					"$([[ $mode == ex ]] && echo "exclusive: no other host can activate it" || echo shared)"
			else
				printf '      %s: LV %s/%s not active, no lock\n' "$h" "$VG" "$name"
			fi
		done < <(lvm_state "$h")
	done
}

virsh_demo() {
	local host=$1
	shift
	printf '    %s# virsh %s\n' "$host" "$*"
	hrun "$host" -t 180 timeout 170 virsh "$@" 2>&1 | sed 's/^/      /'
	return "${PIPESTATUS[0]}"
}

cleanup() {
	local rc=$?
	if ((rc != 0)); then
		log "the demo failed; what the hosts saw:"
		diagnostics || true
	fi
	say "Cleaning up: stopping both hosts"
	cluster_down || true
}

main() {
	need_root
	lvhook_available || die "no $LVHOOK_BIN: run 'make demo' (it builds it) or 'make build'"
	say "Starting two virtual KVM hosts, host1 and host2, sharing one disk"
	echo "    On the shared disk: volume group $VG, shared between hosts by lvmlockd + sanlock."
	echo "    lvhook is installed on both as /etc/libvirt/hooks/qemu.d/lvhook."
	echo "    The VM 't1' is defined on both hosts; its disk is the LV $VG/t1."
	echo "    (first run: builds a Debian image, ~3 min; booting the hosts takes ~2 min; progress below)"
	trap cleanup EXIT
	trap 'exit 130' INT TERM HUP
	cluster_up

	say "Nothing runs yet: t1's disk is active on no host"
	show_locks

	say "Starting t1 on host1"
	virsh_demo host1 start t1
	echo "    lvhook activated the LV exclusively on host1 before QEMU opened it:"
	show_locks

	say "Starting the SAME VM on host2 (this would corrupt its disk)"
	if virsh_demo host2 start t1; then
		die "host2 started t1 although host1 runs it: lvhook did not protect it"
	fi
	echo "    libvirt refused: lvhook could not get the LV's lock, host1 holds it."
	show_locks

	say "Stopping t1 on host1"
	virsh_demo host1 destroy t1
	echo "    lvhook deactivated the LV and released its lock:"
	show_locks

	say "Now host2 may start t1"
	virsh_demo host2 start t1
	show_locks

	demo_live_migration host2 host1

	say "Stopping t1 on host1"
	virsh_demo host1 destroy t1
	show_locks

	say "Demo done: one VM, two hosts, never running twice."
}

main "$@"
