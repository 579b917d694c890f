# host1, lvm2 2.03.16 (Debian 12), LC_ALL=C
lvextend -L +4m vg0/share1
exit status 5
