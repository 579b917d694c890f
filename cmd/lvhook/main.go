// Command lvhook keeps a libvirt domain's LVs locked by lvmlockd on the one
// host that runs it. Installed in /etc/libvirt/hooks/qemu.d/ (or as
// /etc/libvirt/hooks/qemu) it is libvirt's qemu hook; run as lvhook it is the
// command line (see lvhook --help).
package main

import "os"

func main() {
	os.Exit(Run(os.Args, Streams{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
}
