# host1, LVM version: 2.03.31(2) (2025-02-27), Debian 13.8, LC_ALL=C
lvchange -aey nosuchvg/nosuchlv
exit status 5
