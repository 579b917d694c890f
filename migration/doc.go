// Package migration is lvhook's lock helper (`lvhook daemon`): the part that
// libvirt's hooks cannot do, because no hook runs on the source before a live
// migration, none on the destination after it, and none on the source when it
// is cancelled (docs/libvirt-hooks.md).
//
//   - Handover (handover.go) runs in the destination's prepare hook: it asks
//     the peers' lock helpers to downgrade the domain's LVs from ex to sh.
//   - Helper.Downgrade (helper.go) answers that request on the source: yes
//     only when the local libvirt shows the domain running with an outgoing
//     migration job and the LVs are the domain's own (design.md, invariant 4).
//   - The reconciler (reconcile.go) brings LVs back from sh to ex once a
//     migration has finished or failed, retries failed deactivations, and
//     reports what it cannot repair. It never activates an LV and never
//     downgrades one.
//   - The peer channel (transport.go) is JSON over HTTPS with mutual TLS; only
//     the hosts named in the configuration may ask.
//
// libvirt is reached through the small Libvirt interface (libvirt.go);
// golibvirt.go implements it with github.com/digitalocean/go-libvirt.
package migration
