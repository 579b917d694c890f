# host2, lvm2 2.03.16 (Debian 12), LC_ALL=C
lvchange -aey vg0/t1
exit status 5
