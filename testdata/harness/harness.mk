# lvhook real-cluster harness targets; included by the top-level Makefile, which
# defines `build` (bin/lvhook). All of these need root; see testdata/harness/README.md.
HARNESS := testdata/harness

.PHONY: demo e2e harness-up harness-down harness-image

# The newcomer's first command: boots the two-host cluster and tells the story.
demo: build
	$(HARNESS)/demo.sh

# End-to-end scenarios on the real cluster; CAPTURE=1 also refreshes testdata/real.
e2e: build
	CAPTURE=$(CAPTURE) $(HARNESS)/e2e.sh

harness-image:
	$(HARNESS)/build-image.sh

harness-up:
	$(HARNESS)/cluster.sh up

harness-down:
	$(HARNESS)/cluster.sh down
