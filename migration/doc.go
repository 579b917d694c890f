// Package migration is lvhook's lock helper (`lvhook daemon`): the part that
// libvirt's hooks cannot do, because no hook runs on the source before a live
// migration, none on the destination after it, and none on the source when it
// is cancelled (the operator guide's "Live migration" chapter).
//
//   - Helper.Reserve and Helper.Downgrade (reserve.go, helper.go) answer the
//     destination's requests on the source, sent by package peer's Handover
//     from the destination's hooks: yes only when the local libvirt shows the
//     domain running with an outgoing migration job reserved for that
//     destination, and the LVs are the domain's own.
//   - Helper.Holds (holds.go) tells `lvhook check` on a peer which LVs this
//     host holds.
//   - The reconciler (reconcile.go) brings LVs back from sh to ex once a
//     migration has finished or failed, retries failed deactivations, and
//     reports what it cannot repair (state.Problems). It never activates an
//     LV and never downgrades one.
//   - Run (run.go) keeps the libvirtd connection and the reconciler going.
//
// Helper implements peer.Service; the channel itself (TLS, the server, its
// bounds) is package peer's. libvirt is reached through the small Libvirt
// interface (libvirt.go); golibvirt.go implements it with go-libvirt.
package migration
