#!/bin/bash
# lvhook test cluster: two (HOSTS=3: three) Debian QEMU guests (host1, host2, ...) on this machine sharing
# one disk, with lvm2 + lvmlockd + sanlock + libvirtd inside.
#
#   cluster.sh up                 build/reuse the image, boot, shared VG, LVs, domains, lvhook
#   cluster.sh down               clean bounded shutdown; never leaves QEMU behind
#   cluster.sh run HOST CMD...    run CMD in HOST (host1|host2); its output and exit status
#   cluster.sh sh HOST SCRIPT     same for a bash script
#   cluster.sh state              lock state of the test LVs on every host
#   cluster.sh install            (re)install bin/lvhook and the 00-trace hook in both guests
#   cluster.sh diag               what each host saw (journal, console, locks, lvs)
#   cluster.sh console HOST       attach to HOST's serial console (needs socat)
#
# Environment: LVHOOK_RUN_DIR (default /var/tmp/lvhook-harness/run), LVHOOK_IMAGE_CACHE
# (default /var/cache/lvhook-harness), LVHOOK_BIN (default bin/lvhook of this checkout).
set -euo pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HARNESS_DIR/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

on_failure() {
	local rc=$?
	((rc == 0)) && return
	log "cluster up failed; what the hosts saw:"
	diagnostics || true
	cluster_down || true
}

main() {
	local cmd=${1:-}
	shift || true
	case $cmd in
	up)
		trap on_failure EXIT
		trap 'exit 130' INT TERM HUP
		cluster_up
		trap - EXIT
		;;
	down) cluster_down ;;
	run)
		(($# >= 2)) || usage
		hrun "$@"
		;;
	sh)
		(($# == 2)) || usage
		hsh "$@"
		;;
	state)
		local h
		for h in "${HOSTS[@]}"; do
			echo "== $h"
			lvm_state "$h"
		done
		;;
	install) on_all install_hooks ;;
	diag) diagnostics ;;
	console)
		(($# == 1)) || usage
		exec socat -,raw,echo=0 "UNIX-CONNECT:$(host_dir "$1")/console.sock"
		;;
	*) usage ;;
	esac
}

main "$@"
