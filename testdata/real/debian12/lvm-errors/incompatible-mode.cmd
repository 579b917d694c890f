# host1, LVM version: 2.03.16(2) (2022-05-18), Debian 12.15, LC_ALL=C
lvextend -L +4m vg0/share1
exit status 5
