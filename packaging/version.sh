#!/bin/sh
# Prints the package version: the tag vX.Y.Z on HEAD without its v, else a
# snapshot that sorts before 0.1.0 for dpkg and rpm alike:
# 0.1.0~gitYYYYMMDDHHMMSS.HASH (the commit's date, UTC); outside a git
# checkout, 0.1.0~dev.
cd "$(dirname "$0")/.." || exit 1
if ! git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	echo "0.1.0~dev"
	exit 0
fi
if tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null); then
	echo "${tag#v}"
	exit 0
fi
when=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S)
echo "0.1.0~git$when.$(git rev-parse --short=7 HEAD)"
