# shellcheck shell=bash
# lvhook demo: the live-migration chapter (sourced by demo.sh after lib.sh).

# demo_live_migration SRC DST: t1 runs on SRC; a plain `virsh migrate --live` moves it
# to DST while the lock state of both hosts is shown before, during and after.
demo_live_migration() {
	local src=$1 dst=$2 n last='' now
	n=$(host_num "$dst")
	say "Live-migrating t1 from $src to $dst with plain virsh, no manual step"
	echo "    libvirt runs no hook on $src before a migration. lvhook's lock helper on $src"
	echo "    (lvhook.service) agrees to share the LV only because its libvirt shows t1 migrating"
	echo "    out live and $dst's migrate begin reserved that migration; both hosts hold it"
	echo "    shared while memory is copied, then $dst alone, exclusively."
	echo "    Before:"
	show_locks
	printf '    %s# virsh migrate --live t1 qemu+tcp://%s/system --migrateuri tcp://10.0.0.%s\n' "$src" "$dst" "$n"
	rm -f "$RUN_DIR/demo-migrate".*
	(
		hrun "$src" -t 300 timeout 280 virsh migrate --live t1 "qemu+tcp://$dst/system" \
			--migrateuri "tcp://10.0.0.$n" >"$RUN_DIR/demo-migrate.out" 2>&1
		echo $? >"$RUN_DIR/demo-migrate.rc"
	) &
	local pid=$! start=$SECONDS
	echo "    During (lock state whenever it changes):"
	while [[ ! -f $RUN_DIR/demo-migrate.rc ]] && ((SECONDS - start < 300)); do
		now=$(show_locks)
		if [[ $now != "$last" ]]; then
			printf '      [%3ds]\n%s\n' $((SECONDS - start)) "$now"
			last=$now
		fi
	done
	wait "$pid" || true
	sed 's/^/      /' "$RUN_DIR/demo-migrate.out"
	[[ $(cat "$RUN_DIR/demo-migrate.rc" 2>/dev/null) == 0 ]] || die "the live migration failed"
	echo "    Migrated in $((SECONDS - start)) s. The lock helper on $dst now turns its shared lock"
	echo "    into an exclusive one, as soon as $src has released the LV:"
	wait_until "t1 exclusive on $dst" 90 demo_mode_is "$dst" ex || die "t1 did not become exclusive on $dst"
	echo "    After:"
	show_locks
	hsh "$dst" -t 30 'journalctl -q -o cat -t lvhook | grep -F "exclusive again" | tail -n1' 2>/dev/null |
		sed 's/^/    lock helper on '"$dst"': /'
}

demo_mode_is() {
	local h=$1 want=$2 name active mode
	while read -r name active mode; do
		[[ $name == t1 && $active == yes && $mode == "$want" ]] && return 0
	done < <(lvm_state "$h")
	return 1
}
