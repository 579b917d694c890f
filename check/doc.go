// Package check is `lvhook check`, the operator's view of what lvhook guards
// on this host. It runs from the command line, never from a hook call (a hook
// must not call libvirtd), and changes nothing. It reports per domain and LV
// what lock each should hold, what it holds, who else holds it, and the
// problems that would break a start or a live migration.
//
// One way through:
//
//	gather.go    every read: libvirt's domains (virt), one lvs and one
//	             lvmlockctl -i, lvhook's records, sanlock's hosts, the other
//	             holders (the peers, else the LV leases), the lock helper's
//	             problems files
//	evaluate.go  the rules, on what was read alone (no I/O); hosts.go and
//	             helper.go are the rules about other hosts and the lock helper
//	render.go    the table and the JSON
//	report.go    the report's schema (JSON version 1)
//	problems.go  the one table of problem codes, worst first, from which the
//	             help text is generated and the guide's table is checked
package check
