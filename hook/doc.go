// Package hook is lvhook's libvirt qemu hook: it reads the domain XML libvirt
// passes on stdin, finds the domain's LVs, and applies the action that the
// event table (events.go) gives for libvirt's operation. It never calls
// libvirtd (a hook that does deadlocks it) and never writes to stdout (libvirt
// takes hook output on migrate and restore as a replacement domain XML).
//
// See https://libvirt.org/hooks.html for the calling convention.
package hook
