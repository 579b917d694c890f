# host1, LVM version: 2.03.31(2) (2025-02-27), Debian 13.8, LC_ALL=C
sleep 60 </dev/vg0/t1 & pid=$!; sleep 1; lvchange -an vg0/t1; rc=$?; kill $pid; exit $rc
exit status 5
