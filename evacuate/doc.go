// Package evacuate is `lvhook evacuate`: it live-migrates every running
// domain of this host to its peers with libvirt's own migration (peer to
// peer, as virsh migrate --live --p2p), which lvhook's handover covers like
// any other, and gives each domain that cannot move its fallback
// (managedsave, shutdown then destroy, or leave, never with a shared lock).
//
//	plan.go      Plan: the order and a peer for each domain, without I/O
//	read.go      what the evacuation reads: the domains, the peers' capacity
//	run.go       Run: the migrations, parallel, in the plan's order
//	fallback.go  the fallbacks, after the migrations, lowest priority first
//	report.go    the report: a table, or JSON (version 1)
package evacuate
