# host1, lvm2 2.03.16 (Debian 12), LC_ALL=C
sleep 60 </dev/vg0/t1 & pid=$!; sleep 1; lvchange -an vg0/t1; rc=$?; kill $pid; exit $rc
exit status 5
