# host1, lvm2 2.03.16 (Debian 12), LC_ALL=C
lvchange -aey nosuchvg/nosuchlv
exit status 5
