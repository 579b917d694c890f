#!/bin/sh
# third-party.sh BINARY: the license text of every Go module linked into
# BINARY (from `go version -m`) and of the Go standard library, read from the
# module cache the build just used.
set -e
bin=$1
go=${GO:-go}
modcache=$($go env GOMODCACHE)
license_of() { # DIR: print the first license file found in DIR
	for f in "$1"/LICENSE "$1"/LICENSE.md "$1"/LICENSE.txt "$1"/COPYING "$1"/LICENCE; do
		if [ -f "$f" ]; then
			cat "$f"
			return 0
		fi
	done
	echo "lvhook: no license file in $1" >&2
	return 1
}
echo "Third-party software linked into /usr/sbin/lvhook, with its license."
echo
echo "== Go standard library $($go env GOVERSION)"
echo
license_of "$($go env GOROOT)"
$go version -m "$bin" | awk '$1 == "dep" { print $2, $3 } $1 == "=>" { print $2, $3 }' |
	while read -r mod ver; do
		# the module cache escapes capitals: BurntSushi -> !burnt!sushi
		dir=$modcache/$(printf '%s' "$mod" | sed 's/[A-Z]/!\L&/g')@$ver
		echo
		echo "== $mod $ver"
		echo
		license_of "$dir"
	done
