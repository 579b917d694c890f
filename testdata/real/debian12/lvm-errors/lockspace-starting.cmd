# host2, lvm2 2.03.16 (Debian 12), LC_ALL=C
vgchange --lock-start vg0 >/dev/null 2>&1 & sleep 2; lvchange -aey vg0/t3a; rc=$?; wait; exit $rc
exit status 5
