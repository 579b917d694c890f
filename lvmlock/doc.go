// Package lvmlock is the only place in lvhook that runs lvm, lvmlockctl and
// sanlock. It turns their output into typed results (reports, lock modes) and
// their failures into typed errors with predicates, batches activations into
// one lvchange per volume group and mode, and rolls back exactly what a failed
// batch changed.
//
// Every command runs through a Runner, the single seam that tests fake, with
// LC_ALL=C so that error texts can be classified (see lvmlockd(8): every
// runtime failure exits with status 5, only stderr tells them apart).
package lvmlock
