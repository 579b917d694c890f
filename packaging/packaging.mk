# lvhook packages; included by the top-level Makefile (GO and LDFLAGS there).
#   make package        dist/lvhook_VERSION_ARCH.deb and dist/lvhook-VERSION.ARCH.rpm
#   make package-check  lintian, rpmlint and the contents test on them
# package-check needs Debian's lintian, rpmlint and rpm packages.
NFPM_VERSION ?= v2.45.0
NFPM         ?= $(shell $(GO) env GOPATH)/bin/nfpm
PKG_VERSION  ?= $(shell packaging/version.sh)
PKG_ARCH     ?= $(shell $(GO) env GOARCH)
# nfpm.yaml reads the generated files from dist/build too.
PKG_BUILD    := dist/build

.PHONY: package package-check nfpm

# nfpm, pinned; v2.46 and later need modules the Go proxy here refuses.
nfpm:
	@$(GO) version -m $(NFPM) 2>/dev/null | grep -q 'mod[[:space:]]*github.com/goreleaser/nfpm/v2[[:space:]]*$(NFPM_VERSION)[[:space:]]' || \
		$(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

package: nfpm
	rm -rf $(PKG_BUILD) dist/lvhook_*.deb dist/lvhook-*.rpm
	mkdir -p $(PKG_BUILD)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(PKG_VERSION)' -o $(PKG_BUILD)/lvhook ./cmd/lvhook
	$(PKG_BUILD)/lvhook __man >$(PKG_BUILD)/lvhook.8
	$(PKG_BUILD)/lvhook __completion bash >$(PKG_BUILD)/lvhook.bash
	packaging/changelog.sh '$(PKG_VERSION)' >$(PKG_BUILD)/changelog
	GO=$(GO) packaging/third-party.sh $(PKG_BUILD)/lvhook >$(PKG_BUILD)/third-party-notices
	gzip -9n $(PKG_BUILD)/lvhook.8 $(PKG_BUILD)/changelog $(PKG_BUILD)/third-party-notices
	for p in deb rpm; do \
		LVHOOK_VERSION='$(PKG_VERSION)' LVHOOK_ARCH=$(PKG_ARCH) \
			$(NFPM) package --config packaging/nfpm.yaml --packager $$p --target dist/ || exit 1; \
	done
	@ls -l dist/*.deb dist/*.rpm

package-check: package
	packaging/check.sh '$(PKG_VERSION)' dist/lvhook_*.deb dist/lvhook-*.rpm
