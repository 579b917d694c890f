# host1, LVM version: 2.03.16(2) (2022-05-18), Debian 12.15, LC_ALL=C
sleep 60 </dev/vg0/t1 & pid=$!; sleep 1; lvchange -an vg0/t1; rc=$?; kill $pid; exit $rc
exit status 5
