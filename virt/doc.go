// Package virt is lvhook's one way to the local libvirtd: the Libvirt
// interface and its types (virt.go), Conn, its implementation over
// github.com/digitalocean/go-libvirt with every call bounded (conn.go), what
// `lvhook evacuate` does to domains (control.go: memory, live migration on a
// connection of its own, managed save, shutdown, destroy), and the job flags
// of libvirt's status files (jobflags.go). The lock helper, `lvhook check`
// and `lvhook evacuate` use it; the hook never does (a hook that calls libvirtd
// deadlocks it), which the layering test enforces. virttest holds its fake.
package virt
