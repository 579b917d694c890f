# host1, LVM version: 2.03.16(2) (2022-05-18), Debian 12.15, LC_ALL=C
lvchange --reportformat json -aey vg0/nosuchlv
exit status 5
