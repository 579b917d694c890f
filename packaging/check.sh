#!/bin/bash
# check.sh VERSION DEB RPM: lintian and rpmlint on the packages, then their
# contents, modes, conffiles, dependencies and maintainer scripts against
# what lvhook must ship. Needs Debian's lintian, rpmlint and rpm packages.
set -uo pipefail
version=$1 deb=$(realpath "$2") rpm=$(realpath "$3")
here=$(cd "$(dirname "$0")" && pwd)
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ $# -lt 2 ] || printf '%s\n' "$2" | sed 's/^/     /'; }
same() { # NAME WANT GOT
	if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "$(diff <(printf '%s\n' "$2") <(printf '%s\n' "$3"))"; fi
}

# lintian: no error (the overrides are justified in packaging/lintian-overrides).
echo "== lintian $deb"
lintian_out=$(lintian --info --display-info --fail-on error "$deb" 2>&1)
lintian_rc=$?
printf '%s\n' "$lintian_out"
if [ $lintian_rc -eq 0 ]; then ok "lintian: no error"; else fail "lintian: errors (exit $lintian_rc)"; fi

# rpmlint: no error (settings and filters justified in packaging/rpmlint.toml).
# nfpm names the files of the rpm payload by absolute path, and rpmlint
# extracts it with `rpm2cpio | cpio -id`, which would write them into / (as
# root: over the host's files). A cpio first in PATH that refuses absolute
# names keeps them in rpmlint's temporary directory.
echo "== rpmlint $rpm"
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
printf '#!/bin/sh\nexec /usr/bin/cpio --no-absolute-filenames "$@"\n' >"$shim/cpio"
chmod 755 "$shim/cpio"
rpmlint_out=$(cd "$shim" && PATH=$shim:$PATH rpmlint --config "$here/rpmlint.toml" "$rpm" 2>&1)
rpmlint_rc=$?
printf '%s\n' "$rpmlint_out"
if [ $rpmlint_rc -eq 0 ]; then ok "rpmlint: no error"; else fail "rpmlint: errors (exit $rpmlint_rc)"; fi

echo "== contents"
# Never /etc/libvirt/hooks/qemu: an operator's own hook there stays theirs.
want_deb="-rwxr-xr-x root/root ./etc/libvirt/hooks/qemu.d/lvhook
-rw-r--r-- root/root ./etc/lvhook/lvhook.toml
-rw-r--r-- root/root ./lib/systemd/system/lvhook-evacuate.service
-rw-r--r-- root/root ./lib/systemd/system/lvhook-lockspaces.service
-rw-r--r-- root/root ./lib/systemd/system/lvhook.service
-rwxr-xr-x root/root ./usr/sbin/lvhook
-rw-r--r-- root/root ./usr/share/bash-completion/completions/lvhook
-rw-r--r-- root/root ./usr/share/doc/lvhook/changelog.gz
-rw-r--r-- root/root ./usr/share/doc/lvhook/copyright
-rw-r--r-- root/root ./usr/share/doc/lvhook/third-party-notices.gz
-rw-r--r-- root/root ./usr/share/lintian/overrides/lvhook
-rw-r--r-- root/root ./usr/share/man/man8/lvhook.8.gz"
same "deb files, modes and owners" "$want_deb" "$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $1, $2, $6 }' | LC_ALL=C sort -k3)"
same "deb conffiles" "/etc/libvirt/hooks/qemu.d/lvhook
/etc/lvhook/lvhook.toml" "$(dpkg-deb --info "$deb" conffiles | sort)"
same "deb version" "$version" "$(dpkg-deb --field "$deb" Version)"
same "deb depends" "lvm2, lvm2-lockd, sanlock, dmsetup, libvirt-daemon-system (>= 6.5), init-system-helpers (>= 1.52)" \
	"$(dpkg-deb --field "$deb" Depends)"
same "deb suggests" "libvirt-daemon-driver-storage-logical" "$(dpkg-deb --field "$deb" Suggests)"

want_rpm="-rwxr-xr-x root /etc/libvirt/hooks/qemu.d/lvhook
-rw-r--r-- root /etc/lvhook/lvhook.toml
-rw-r--r-- root /usr/lib/systemd/system/lvhook-evacuate.service
-rw-r--r-- root /usr/lib/systemd/system/lvhook-lockspaces.service
-rw-r--r-- root /usr/lib/systemd/system/lvhook.service
-rwxr-xr-x root /usr/sbin/lvhook
-rw-r--r-- root /usr/share/bash-completion/completions/lvhook
-rw-r--r-- root /usr/share/doc/lvhook/third-party-notices.gz
-rw-r--r-- root /usr/share/licenses/lvhook/LICENSE
-rw-r--r-- root /usr/share/man/man8/lvhook.8.gz"
same "rpm files, modes and owners" "$want_rpm" \
	"$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILENAMES}\n]' "$rpm" 2>/dev/null | grep -v '^d' | LC_ALL=C sort -k3)"
same "rpm config files" "/etc/libvirt/hooks/qemu.d/lvhook
/etc/lvhook/lvhook.toml" "$(rpm -qcp "$rpm" 2>/dev/null | sort)"
same "rpm version" "$version" "$(rpm -qp --qf '%{VERSION}' "$rpm" 2>/dev/null)"
rpm_requires=$(rpm -qp --requires "$rpm" 2>/dev/null | grep -v '^rpmlib(' | sort)
same "rpm requires" "bash
device-mapper
libvirt-daemon-driver-qemu >= 6.5
lvm2
lvm2-lockd
sanlock" "$(printf '%s\n' "$rpm_requires" | grep -v '^/bin/sh$')"
same "rpm suggests" "libvirt-daemon-driver-storage-logical" "$(rpm -qp --suggests "$rpm" 2>/dev/null)"

echo "== installed files"
root=$(mktemp -d)
trap 'rm -rf "$root" "$shim"' EXIT
dpkg-deb -x "$deb" "$root"
same "binary reports the package version" "lvhook version $version" "$("$root/usr/sbin/lvhook" --version)"
if file "$root/usr/sbin/lvhook" | grep -q 'statically linked'; then ok "binary is static"; else fail "binary is static" "$(file "$root/usr/sbin/lvhook")"; fi
man_warnings=$(MANWIDTH=80 man --warnings -l "$root/usr/share/man/man8/lvhook.8.gz" 2>&1 >/dev/null)
same "man page renders without warnings" "" "$man_warnings"
if zcat "$root/usr/share/man/man8/lvhook.8.gz" | grep -q '^\.SH CHECK'; then ok "man page documents check"; else fail "man page documents check"; fi
if zcat "$root/usr/share/man/man8/lvhook.8.gz" | grep -q '^\.SH EVACUATE'; then ok "man page documents evacuate"; else fail "man page documents evacuate"; fi
# lvhook-evacuate.service: the evacuation runs at shutdown only, before
# libvirt-guests and libvirtd stop, with the network up, within its bound.
unit=$root/lib/systemd/system/lvhook-evacuate.service
for line in 'Type=oneshot' 'RemainAfterExit=yes' 'ExecStart=/bin/true' \
	'ExecStop=/bin/sh -c '"'"'[ "$$(systemctl is-system-running)" = stopping ] || exit 0; exec /usr/sbin/lvhook evacuate --at-shutdown'"'" \
	'Wants=network-online.target virt-guest-shutdown.target' \
	'After=network-online.target network.target virt-guest-shutdown.target libvirt-guests.service' \
	'After=libvirtd.service virtqemud.service lvhook.service lvhook-lockspaces.service' \
	'TimeoutStopSec=15min' 'WantedBy=multi-user.target'; do
	if grep -qxF -- "$line" "$unit"; then ok "lvhook-evacuate.service: $line"; else fail "lvhook-evacuate.service lacks: $line"; fi
done
if command -v systemd-analyze >/dev/null; then
	# man:lvhook(8) is not installed here: that one complaint is expected.
	verify=$(systemd-analyze verify "$unit" 2>&1 | grep -v "Command 'man lvhook(8)' failed")
	same "lvhook-evacuate.service passes systemd-analyze verify" "" "$verify"
fi
# Its guard, run as the shell runs it: nothing happens unless the system is
# stopping (a package removal stops the unit too).
stopcmd=$(sed -n 's/^ExecStop=\/bin\/sh -c '"'"'\(.*\)'"'"'$/\1/p' "$unit" | sed 's/\$\$/$/g')
mkdir -p "$root/shim"
printf '#!/bin/sh\necho running\n' >"$root/shim/systemctl"
chmod 755 "$root/shim/systemctl"
guard_out=$(PATH=$root/shim:$PATH sh -c "${stopcmd%%; exec *}; echo ran" 2>&1)
same "lvhook-evacuate.service does nothing unless the system is stopping" "" "$guard_out"
printf '#!/bin/sh\necho stopping\n' >"$root/shim/systemctl"
guard_out=$(PATH=$root/shim:$PATH sh -c "${stopcmd%%; exec *}; echo ran" 2>&1)
same "lvhook-evacuate.service evacuates when the system is stopping" "ran" "$guard_out"
if bash -n "$root/usr/share/bash-completion/completions/lvhook"; then ok "bash completion parses"; else fail "bash completion parses"; fi
completions=$(bash -c '. "$1"; COMP_WORDS=(lvhook ch); COMP_CWORD=1; _lvhook; echo "${COMPREPLY[*]}"' _ "$root/usr/share/bash-completion/completions/lvhook")
same "bash completion completes commands" "check" "$completions"
# The qemu.d entry reaches the binary in its hook role (argv[0] in qemu.d),
# and does nothing once the package is removed and the binary gone. Copies
# point it at the extracted binary and at a missing one.
entry=$root/etc/libvirt/hooks/qemu.d/lvhook
sed "s|/usr/sbin/lvhook|$root/usr/sbin/lvhook|g" "$entry" >"$entry-here"
sed "s|/usr/sbin/lvhook|$root/nonexistent/lvhook|g" "$entry" >"$entry-gone"
chmod 755 "$entry-here" "$entry-gone"
hook_out=$(env -i PATH=/nonexistent "$entry-here" vm1 2>&1)
same "qemu.d entry runs lvhook as the hook" "lvhook: hook needs DOMAIN OP SUBOP [EXTRA], got 1 argument(s)" "$hook_out"
gone_out=$(env -i "$entry-gone" vm1 prepare begin - </dev/null 2>&1)
gone_rc=$?
same "qemu.d entry does nothing once the binary is gone" "0:" "$gone_rc:$gone_out"

echo "== maintainer scripts"
ctrl=$(mktemp -d)
dpkg-deb -e "$deb" "$ctrl"
rpm -qp --scripts "$rpm" >"$ctrl/rpm-scripts" 2>/dev/null
for s in "$ctrl"/postinst "$ctrl"/prerm "$ctrl"/postrm "$ctrl/rpm-scripts"; do
	name=$(basename "$s")
	code=$(sed 's/#.*//' "$s")
	# Install, upgrade and removal leave running domains and their locks alone.
	bad=$(printf '%s\n' "$code" | grep -En 'lvchange|vgchange|lvremove|lvmlockctl|sanlock|virsh')
	same "$name runs no lvm, sanlock or virsh command" "" "$bad"
	# "restart" only ever for lvhook's own service, never libvirtd or virtqemud,
	# never lvhook-evacuate.service (a restart runs its ExecStop).
	bad=$(printf '%s\n' "$code" | grep -n 'restart' | grep -Ev '[ "]lvhook\.service|action=restart')
	same "$name restarts nothing but lvhook.service" "" "$bad"
	if [ "$name" = postinst ] || [ "$name" = rpm-scripts ]; then
		# Named in an enable, or in the rpm's loop over the units it enables once.
		if printf '%s\n' "$code" | grep -Eq '(enable|deb-systemd-helper enable) .*lvhook-evacuate\.service|enable --now lvhook-evacuate\.service' ||
			{ printf '%s\n' "$code" | grep -Eq 'for unit in .*lvhook-evacuate\.service' &&
				printf '%s\n' "$code" | grep -Eq 'systemctl enable "\$unit"'; }; then
			ok "$name enables lvhook-evacuate.service"
		else
			fail "$name enables lvhook-evacuate.service"
		fi
	fi
	if printf '%s\n' "$code" | grep -Eq 'systemctl[^;&|]*reload[^;&|]*"?\$unit|reload-or-restart'; then
		[ "$name" = prerm ] || ok "$name reloads libvirtd"
	fi
	if [ "$name" != rpm-scripts ]; then
		if sh -n "$s"; then ok "$name parses"; else fail "$name parses"; fi
	fi
done
rm -rf "$ctrl"

echo "package-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
