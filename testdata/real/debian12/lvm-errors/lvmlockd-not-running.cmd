# host2, LVM version: 2.03.16(2) (2022-05-18), Debian 12.15, LC_ALL=C
lvchange -aey vg0/t3a
exit status 5
