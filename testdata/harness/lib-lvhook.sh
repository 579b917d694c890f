# shellcheck shell=bash
# lvhook harness: lvhook installed the way an operator installs it. Sourced by lib.sh.
#
#  - the .deb of `make package` (dpkg -i in each guest: they have no network, and its
#    Depends are already in the image), and an upgrade over itself (a second build with
#    a higher version);
#  - the lock helper's peers and mutual TLS: a CA and per-host server and client
#    certificates made here with openssl, copied into libvirt's PKI paths in the
#    guests, and /etc/lvhook/lvhook.toml naming every host; then lvhook.service restarted.
#
# Without a built .deb (LVHOOK_DEB unset and none in $RUN_DIR/debs) install_lvhook in
# lib-cluster.sh falls back to the plain binary install.

PEER_PORT=16520
# Packages built by build_debs; outside RUN_DIR, which cluster_boot empties.
DEB_DIR=${LVHOOK_DEB_DIR:-$RUN_DIR-debs}
HOST_TOOLS+=(openssl:openssl make:make)

# build_debs: the two packages the harness installs, built by `make package` into
# $DEB_DIR: lvhook.deb (the checkout's version) and lvhook-upgrade.deb (the same code
# with a higher version, to upgrade over the first). Leaves dist/ with the first.
# Clusters run side by side (e2e-ci.sh -j) build one at a time: both use the
# checkout's dist/.
build_debs() {
	local v lock ok=1
	mkdir -p "$DEB_DIR"
	v=$("$REPO_DIR/packaging/version.sh") || die "packaging/version.sh failed"
	exec {lock}>/run/lvhook-harness-package.lock
	flock -w 1800 "$lock" || die "timed out waiting for another harness's make package"
	log "make package (lvhook $v, and $v+e2e to upgrade over it)"
	make_debs "$v" || ok=0
	exec {lock}>&-
	((ok)) || die "make package failed (its errors above)"
}

# make_debs VERSION: build_debs's work, the lock held.
make_debs() {
	make -s -C "$REPO_DIR" package PKG_VERSION="$1+e2e" >/dev/null || return 1
	cp "$REPO_DIR"/dist/lvhook_*.deb "$DEB_DIR/lvhook-upgrade.deb" || return 1
	make -s -C "$REPO_DIR" package PKG_VERSION="$1" >/dev/null || return 1
	cp "$REPO_DIR"/dist/lvhook_*.deb "$DEB_DIR/lvhook.deb" || return 1
	echo "$1" >"$DEB_DIR/version"
}

lvhook_deb() {
	if [[ -n ${LVHOOK_DEB:-} ]]; then
		echo "$LVHOOK_DEB"
	elif [[ -f $DEB_DIR/lvhook.deb ]]; then
		echo "$DEB_DIR/lvhook.deb"
	else
		return 1
	fi
}

# install_deb HOST DEB: dpkg -i in HOST (a first install or an upgrade). The postinst
# reloads libvirtd and (re)starts lvhook.service. Conffiles the harness changed
# (/etc/lvhook/lvhook.toml) are kept.
install_deb() {
	local host=$1 deb=$2 out
	cp "$deb" "$(host_dir "$host")/share/lvhook.deb"
	# A plain install left a symlink where the package's hook entry goes.
	out=$(hsh "$host" -t 240 '
		set -e
		[ -L /etc/libvirt/hooks/qemu.d/lvhook ] && rm -f /etc/libvirt/hooks/qemu.d/lvhook
		DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold /mnt/ctl/lvhook.deb >/root/dpkg.log 2>&1 ||
			{ cat /root/dpkg.log >&2; exit 1; }
		dpkg-query -W -f "\${Version}\n" lvhook' 2>&1) || {
		printf '%s\n' "$out" >&2
		return 1
	}
	printf '%s\n' "$out" | tail -n1
}

# make_pki DIR: a CA, and for every host a server and a client certificate
# (CN=hostN, SAN DNS:hostN,IP:10.0.0.N), as an operator makes them for libvirt's PKI.
# Also a self-signed client certificate no peer trusts (DIR/rogue-*).
make_pki() {
	local dir=$1 tmp n kind usage
	[[ -f $dir/done ]] && return 0
	# The hosts are configured in parallel (on_all): each makes the PKI in its own
	# directory and renames it into place; the first rename wins, so every host gets
	# certificates of the same CA.
	mkdir -p "$(dirname "$dir")"
	tmp=$(mktemp -d "$dir.XXXXXX")
	(
		cd "$tmp" || exit 1
		set -e
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
			-out cacert.pem -days 365 -subj "/CN=lvhook harness CA" 2>/dev/null
		for ((n = 1; n <= HOST_COUNT; n++)); do
			for kind in server client; do
				usage=serverAuth
				[[ $kind == client ]] && usage=clientAuth
				openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
					-keyout "host$n-$kind.key" -out "host$n-$kind.csr" -subj "/CN=host$n" 2>/dev/null
				printf 'subjectAltName=DNS:host%s,IP:10.0.0.%s\nextendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\n' \
					"$n" "$n" "$usage" >"host$n-$kind.ext"
				openssl x509 -req -in "host$n-$kind.csr" -CA cacert.pem -CAkey ca.key -CAcreateserial \
					-days 365 -extfile "host$n-$kind.ext" -out "host$n-$kind.pem" 2>/dev/null
			done
		done
		# A client certificate of the right name that no CA of the cluster signed.
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rogue-client.key \
			-out rogue-client.pem -days 365 -subj "/CN=host2" \
			-addext "subjectAltName=DNS:host2,IP:10.0.0.2" -addext "extendedKeyUsage=clientAuth" 2>/dev/null
		touch ./done
	) || { rm -rf "$tmp"; die "openssl: making the harness PKI failed"; }
	chmod 0755 "$tmp"
	mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
	[[ -f $dir/done ]] || die "the harness PKI is missing from $dir"
}

# The lock helper's configuration on every host (the same file on all).
# libvirt_uri and migrate_uri are how the harness migrates (virsh migrate
# --live DOMAIN qemu+tcp://hostN/system --migrateuri tcp://10.0.0.N), for
# lvhook evacuate.
lvhook_toml() {
	local n
	cat <<EOF
# lvhook harness: every host is a peer; TLS files at libvirt's default PKI paths.
[daemon]
listen = ":$PEER_PORT"
EOF
	for ((n = 1; n <= HOST_COUNT; n++)); do
		printf '[[daemon.peer]]\nname = "host%s"\naddress = "10.0.0.%s:%s"\nhost_id = %s\n' "$n" "$n" "$PEER_PORT" "$n"
		printf 'libvirt_uri = "qemu+tcp://host%s/system"\nmigrate_uri = "tcp://10.0.0.%s"\n' "$n" "$n"
	done
}

# configure_peers HOST: certificates into /etc/pki, lvhook.toml, lvhook.service
# restarted and its peer server listening.
configure_peers() {
	local host=$1 n share
	n=$(host_num "$host")
	share=$(host_dir "$host")/share/pki
	make_pki "$RUN_DIR/pki"
	rm -rf "$share"
	mkdir -p "$share"
	cp "$RUN_DIR/pki/cacert.pem" "$RUN_DIR/pki/host$n-"{server,client}.{pem,key} \
		"$RUN_DIR/pki/rogue-client."{pem,key} "$share/"
	lvhook_toml >"$share/lvhook.toml"
	hsh "$host" -t 120 '
		set -e
		p=/mnt/ctl/pki
		install -D -m 0644 $p/cacert.pem /etc/pki/CA/cacert.pem
		install -D -m 0644 $p/host'"$n"'-server.pem /etc/pki/libvirt/servercert.pem
		install -D -m 0600 $p/host'"$n"'-server.key /etc/pki/libvirt/private/serverkey.pem
		install -D -m 0644 $p/host'"$n"'-client.pem /etc/pki/libvirt/clientcert.pem
		install -D -m 0600 $p/host'"$n"'-client.key /etc/pki/libvirt/private/clientkey.pem
		install -D -m 0600 $p/rogue-client.pem /root/rogue/clientcert.pem
		install -D -m 0600 $p/rogue-client.key /root/rogue/clientkey.pem
		install -D -m 0644 $p/lvhook.toml /etc/lvhook/lvhook.toml
		systemctl restart lvhook.service
		for i in $(seq 60); do
			ss -Hltn "sport = :'"$PEER_PORT"'" | grep -q . && exit 0
			sleep 1
		done
		echo "lvhook.service does not listen on :'"$PEER_PORT"' after 60 s" >&2
		systemctl status --no-pager lvhook.service >&2
		journalctl -q --no-pager -n 20 -u lvhook >&2
		exit 1' || return 1
}

# install_lvhook_pkg HOST: the package, then peers and TLS.
install_lvhook_pkg() {
	local host=$1 deb v
	deb=$(lvhook_deb) || die "no lvhook .deb"
	v=$(install_deb "$host" "$deb") || die "$host: dpkg -i $(basename "$deb") failed"
	log "$host: lvhook $v installed from its .deb"
	configure_peers "$host" || die "$host: configuring lvhook's peers failed"
}
