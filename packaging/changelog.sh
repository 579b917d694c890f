#!/bin/sh
# changelog.sh VERSION: the Debian changelog of a package built from HEAD,
# dated like the commit so that the package is reproducible. The changes
# themselves are in the project's git history.
cd "$(dirname "$0")/.." || exit 1
if git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	what="lvhook commit $(git rev-parse --short=12 HEAD)"
	when=$(git log -1 --format=%cD)
else
	what="an lvhook source tree outside git"
	when=$(LC_ALL=C date -R -u ${SOURCE_DATE_EPOCH:+-d @$SOURCE_DATE_EPOCH})
fi
cat <<END
lvhook ($1) unstable; urgency=medium

  * Package built from $what;
    the changes are in the project's git history.

 -- lvhook maintainers <lvhook@users.noreply.github.com>  $when
END
