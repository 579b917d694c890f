// Package domxml reads what lvhook needs of a libvirt domain XML: its name,
// UUID, opt-out and the LVs of its disks with the lock mode each needs.
// domain.go parses the XML and the storage pools it names; evacuation.go
// reads the priority and fallback `lvhook evacuate` uses; devpath.go maps
// a disk's source path (by name, by UUID, or through sysfs for
// device-mapper paths) to an LV. It runs no command and calls no daemon.
package domxml
