# host2, LVM version: 2.03.31(2) (2025-02-27), Debian 13.8, LC_ALL=C
vgchange --lock-start vg0 >/dev/null 2>&1 & sleep 2; lvchange -aey vg0/t3a; rc=$?; wait; exit $rc
exit status 5
