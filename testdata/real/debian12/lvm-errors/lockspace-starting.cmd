# host2, LVM version: 2.03.16(2) (2022-05-18), Debian 12.15, LC_ALL=C
vgchange --lock-start vg0 >/dev/null 2>&1 & sleep 2; lvchange -aey vg0/t3a; rc=$?; wait; exit $rc
exit status 5
