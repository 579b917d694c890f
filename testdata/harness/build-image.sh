#!/bin/bash
# Build (or reuse) the Debian guest image of the lvhook test cluster: Debian 13
# "trixie" (DEBIAN=13, the default) or Debian 12 "bookworm" (DEBIAN=12).
#
# The image is cached outside the checkout in $LVHOOK_IMAGE_CACHE/<hash>, where <hash>
# is a sha256 of the release, this script and guest/: a second run with unchanged
# scripts skips debootstrap. Prints the image directory (base.raw, vmlinuz, initrd.img) on stdout.
#
# Needs root and Debian's package mirror; installs its own build tools with apt-get.
set -euo pipefail

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HARNESS_DIR/lib.sh"

SUITE=$(debian_suite)
IMAGE_SIZE=${LVHOOK_IMAGE_SIZE:-3G}

# Packages debootstrap installs (the first stage), then the libvirt stack installed in
# the chroot with services kept from starting.
BASE_PACKAGES=systemd-sysv,udev,kmod,iproute2,lvm2,lvm2-lockd,sanlock,linux-image-amd64,initramfs-tools,jq,procps,iputils-ping,util-linux
CHROOT_PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
	qemu-system-x86 qemu-utils seabios)
# Debian 13 ships libvirt's storage backends as packages of their own: without this one
# a logical pool (and so a <disk type='volume'> on an LV) fails to start with "missing
# backend for pool type 3 (logical)". Debian 12 has it in libvirt-daemon.
if [[ $DEBIAN == 13 ]]; then
	CHROOT_PACKAGES+=(libvirt-daemon-driver-storage-logical)
fi

# debian_mirror prints the mirror this machine's apt uses (so the guest comes from the
# same place), or LVHOOK_MIRROR when set.
debian_mirror() {
	if [[ -n ${LVHOOK_MIRROR:-} ]]; then
		echo "$LVHOOK_MIRROR"
		return
	fi
	local m
	m=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
		/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
		grep -oE 'https?://[^ ]+' | head -n1 || true)
	echo "${m:-http://deb.debian.org/debian}"
}

# configure_rootfs writes the guest configuration into ROOTFS.
configure_rootfs() {
	local root=$1

	# Agent, identity and their units.
	install -m 0755 "$HARNESS_DIR/guest/agent" "$root/usr/local/sbin/lvhook-harness-agent"
	install -m 0755 "$HARNESS_DIR/guest/identity" "$root/usr/local/sbin/lvhook-harness-identity"
	install -m 0644 "$HARNESS_DIR/guest/lvhook-harness-agent.service" \
		"$HARNESS_DIR/guest/lvhook-harness-identity.service" "$root/etc/systemd/system/"
	mkdir -p "$root/mnt/ctl"
	cat >"$root/etc/fstab" <<-'EOF'
		/dev/vda / ext4 rw,relatime 0 0
		ctl /mnt/ctl 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
	EOF
	mkdir -p "$root/etc/modules-load.d"
	printf '9p\n9pnet_virtio\n' >"$root/etc/modules-load.d/lvhook-harness.conf"
	cat >"$root/etc/hosts" <<-'EOF'
		127.0.0.1 localhost
		10.0.0.1 host1
		10.0.0.2 host2
		10.0.0.3 host3
	EOF
	echo host0 >"$root/etc/hostname"
	chroot "$root" passwd -d root >/dev/null
	mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
	cat >"$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<-'EOF'
		[Service]
		ExecStart=
		ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
	EOF

	# LVM: lvmlockd on, no devices file (the shared disk is found by scanning).
	sed -i -E 's/^(\s*)#\s*use_lvmlockd = [01]\s*$/\1use_lvmlockd = 1/' "$root/etc/lvm/lvm.conf"
	sed -i -E 's/^(\s*)#\s*use_devicesfile = [01]\s*$/\1use_devicesfile = 0/' "$root/etc/lvm/lvm.conf"
	grep -qE '^\s*use_lvmlockd = 1$' "$root/etc/lvm/lvm.conf" || die "lvm.conf: use_lvmlockd was not set"
	grep -qE '^\s*use_devicesfile = 0$' "$root/etc/lvm/lvm.conf" || die "lvm.conf: use_devicesfile was not set"

	# sanlock without a hardware watchdog; wdmd is then not needed.
	mkdir -p "$root/etc/sanlock"
	echo 'use_watchdog = 0' >>"$root/etc/sanlock/sanlock.conf"

	# libvirtd: always running (no idle exit), TCP socket without auth for migration
	# over the private link (the guests have no other network).
	echo 'LIBVIRTD_ARGS=""' >"$root/etc/default/libvirtd"
	echo 'auth_tcp = "none"' >>"$root/etc/libvirt/libvirtd.conf"
	rm -f "$root/etc/libvirt/qemu/networks/autostart/default.xml"
	mkdir -p "$root/etc/libvirt/hooks/qemu.d"

	chroot "$root" systemctl enable lvhook-harness-identity.service lvhook-harness-agent.service \
		libvirtd.service libvirtd-tcp.socket
	chroot "$root" systemctl mask wdmd.service
	# The harness starts sanlock and lvmlockd itself and joins lockspaces explicitly.
	local unit
	for unit in sanlock.service lvmlockd.service lvmlocks.service lvm2-monitor.service \
		e2scrub_all.timer e2scrub_reap.service fstrim.timer apt-daily.timer apt-daily-upgrade.timer; do
		if [[ -e $root/lib/systemd/system/$unit ]]; then
			chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
		fi
	done
}

# cleanup_build unmounts anything left mounted under WORK (debootstrap or our /proc),
# then removes WORK without crossing into another filesystem.
cleanup_build() {
	local work=$1 m
	while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(findmnt -rn -o TARGET | grep -F "$work/" | sort -r)
	rm -rf --one-file-system "$work"
}

build_image() {
	local out=$1 work root mirror t0
	work=$(mktemp -d "$(dirname "$out")/.build.XXXXXX")
	root=$work/rootfs
	# Remove the half-built image on any exit, after unmounting whatever is mounted in it.
	trap 'cleanup_build "'"$work"'"' EXIT
	mirror=$(debian_mirror)

	t0=$SECONDS
	log "debootstrap $SUITE from $mirror (about 2-3 min)"
	debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$root" "$mirror" \
		>"$work/debootstrap.log" 2>&1 || {
		tail -n 30 "$work/debootstrap.log" >&2
		die "debootstrap failed"
	}
	log "debootstrap took $((SECONDS - t0)) s"

	t0=$SECONDS
	log "installing ${CHROOT_PACKAGES[*]} in the chroot"
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 0755 "$root/usr/sbin/policy-rc.d"
	mount -t proc proc "$root/proc"
	chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
		apt-get install -y -q --no-install-recommends "${CHROOT_PACKAGES[@]}" \
		>"$work/chroot-apt.log" 2>&1 || {
		tail -n 30 "$work/chroot-apt.log" >&2
		die "apt-get install in the chroot failed"
	}
	chroot "$root" apt-get clean
	umount "$root/proc"
	rm -f "$root/usr/sbin/policy-rc.d"
	log "chroot installs took $((SECONDS - t0)) s"

	configure_rootfs "$root"

	t0=$SECONDS
	local kernel initrd
	kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
	initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)
	[[ -f $kernel && -f $initrd ]] || die "no kernel or initrd in $root/boot"
	cp "$kernel" "$work/vmlinuz"
	cp "$initrd" "$work/initrd.img"
	truncate -s "$IMAGE_SIZE" "$work/base.raw"
	mkfs.ext4 -q -F -L lvhook-root -d "$root" "$work/base.raw"
	rm -rf "$root"
	log "root image built in $((SECONDS - t0)) s"

	mv "$work" "$out.tmp"
	mv "$out.tmp" "$out"
	trap - EXIT
}

main() {
	need_root
	install_host_packages
	local hash dir lock
	hash=$(image_hash)
	dir=$IMAGE_CACHE/$hash
	mkdir -p "$IMAGE_CACHE"
	# One builder at a time per image (the two releases build side by side).
	exec {lock}>"$IMAGE_CACHE/.lock-$hash"
	flock -w 1800 "$lock" || die "timed out waiting for another build of this image (lock $IMAGE_CACHE/.lock-$hash)"
	if [[ -f $dir/base.raw && -f $dir/vmlinuz && -f $dir/initrd.img ]]; then
		log "guest image cached: $dir"
	else
		local t0=$SECONDS
		log "building guest image $hash"
		build_image "$dir"
		log "guest image built in $((SECONDS - t0)) s: $dir"
	fi
	echo "$dir"
}

main "$@"
