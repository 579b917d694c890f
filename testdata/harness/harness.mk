# lvhook real-cluster harness targets; included by the top-level Makefile, which
# defines `build` (bin/lvhook). All of these need root; see testdata/harness/README.md.
#
#   DEBIAN=13 (default) or 12: the guests' Debian release
#   HOSTS=2 (default) or 3: how many hosts share the disk
HARNESS := testdata/harness
DEBIAN  ?= 13
HOSTS   ?= 2
export DEBIAN HOSTS

# A Debian 12 set on two hosts (make e2e-smoke): where the two releases differ
# (lvm's texts, libvirt's hook arguments, the package's install), one migration
# and its failure paths.
E2E_SMOKE := start_refuse_stop migrate_live migrate_abort migrate_offline package_upgrade
# The scenarios that need a third host (scenarios-three.sh).
E2E_THREE := three_offline_two_starts three_stale_marker three_check_holder \
	three_migrate_peer_off three_migrate_peer_crash three_evacuate_spread

.PHONY: demo e2e e2e-smoke e2e-three e2e-ci e2e-all harness-image harness-images harness-up harness-down

# The newcomer's first command: boots the two-host cluster and tells the story.
demo: build
	$(HARNESS)/demo.sh

# End-to-end scenarios on the real cluster (every scenario; with HOSTS=3 the
# three-host ones too); CAPTURE=1 also refreshes testdata/real/debian$(DEBIAN).
e2e: build
	CAPTURE=$(CAPTURE) $(HARNESS)/e2e.sh

# The two-host Debian 12 set.
e2e-smoke: build
	DEBIAN=12 HOSTS=2 $(HARNESS)/e2e.sh $(E2E_SMOKE)

# The three-host set (Debian 13 unless DEBIAN=12).
e2e-three: build
	HOSTS=3 $(HARNESS)/e2e.sh $(E2E_THREE)

# What CI runs (.ci/run), sized to its 70 minutes from the per-scenario times of
# one full run on this machine kind (2 cores): Debian 13 in full on two hosts, and
# the three-host set on Debian 12 guests, which is also Debian 12's named set
# (starts and refusals, offline and live migrations, a host off, a host crash,
# lvhook check, the package installed). Fewer back-and-forth live migrations (4
# instead of 20; LVHOOK_MIGRATIONS).
# Two clusters run side by side (e2e-ci.sh -j 2; the guests mostly wait on
# sanlock's and the tests' timers, and each guest is one TCG thread): Debian 13's
# scenarios on one; on the other, poweroff_evacuate on Debian 13 (E2E_CI_BESIDE, so
# that both end about together) then the three-host set on Debian 12.
# Every run goes on whatever the others give; e2e-ci.sh ends with a recap of all
# (counts, failures and the failed scenarios' logs) for CI's tail.
# Left out of CI's Debian 13 run for time, each covered by another scenario:
# boot_autostart by poweroff_evacuate (which boots the host again with the
# same autostart checks), host_crash by storage_loss (a host's lease dies, the
# survivor starts its domain once it is dead) and three_migrate_peer_crash.
E2E_CI_SKIP := boot_autostart host_crash
E2E_CI_BESIDE := poweroff_evacuate
e2e-ci: build
	E2E_SKIP="$(E2E_CI_SKIP) $(E2E_CI_BESIDE)" LVHOOK_MIGRATIONS=4 $(HARNESS)/e2e-ci.sh -j 2 \
		"13 2" "13 2 $(E2E_CI_BESIDE)" "12 3 $(E2E_THREE)"

# Everything: Debian 13 and Debian 12 in full on two hosts, and the three-host set.
e2e-all: build
	DEBIAN=13 HOSTS=2 $(HARNESS)/e2e.sh
	DEBIAN=12 HOSTS=2 $(HARNESS)/e2e.sh
	DEBIAN=13 HOSTS=3 $(HARNESS)/e2e.sh $(E2E_THREE)

harness-image:
	$(HARNESS)/build-image.sh

# Both releases' images, built side by side (cached afterwards); each
# build's log is printed when both are done.
harness-images:
	@set -e; log=$$(mktemp -d); \
	DEBIAN=13 $(HARNESS)/build-image.sh >$$log/13 2>&1 & p13=$$!; \
	DEBIAN=12 $(HARNESS)/build-image.sh >$$log/12 2>&1 & p12=$$!; \
	rc=0; wait $$p13 || rc=1; wait $$p12 || rc=1; \
	cat $$log/13 $$log/12; rm -rf $$log; exit $$rc

harness-up:
	$(HARNESS)/cluster.sh up

harness-down:
	$(HARNESS)/cluster.sh down
