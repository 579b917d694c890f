# lvhook: `make build`, `make test`, `make bench`, `make vulncheck`; the
# two-host harness (`make demo`, `make e2e`) is in testdata/harness/harness.mk.
GO      ?= go
# The Go that builds lvhook: go.mod's toolchain line, which a machine's own Go
# ignores when its GOTOOLCHAIN is local. go1.27.3 has the net/http (HTTP/2)
# and crypto/x509 fixes that go1.26.8 lacks; the go command fetches it from
# the module proxy.
GOTOOLCHAIN ?= go1.27.3
export GOTOOLCHAIN
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test bench fuzz vulncheck vulndb clean
all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/lvhook ./cmd/lvhook

# Unit tests: no root, no network, no lvm. The hook and the lock helper run
# goroutines against each other (handover fan-out, the model test), as do the
# evacuation's workers: they run again under the race detector, the model
# with its short seed set.
test:
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(GO) test -race -short -count=1 ./hook/ ./migration/ ./peer/ ./virt/ ./check/ ./evacuate/

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# A short run of every fuzz target (go test -fuzz takes one at a time).
FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseDomain$$' -fuzztime $(FUZZTIME) ./domxml
	$(GO) test -run '^$$' -fuzz '^FuzzHookArgs$$' -fuzztime $(FUZZTIME) ./cmd/lvhook

# govulncheck against a database built here (CI reaches no vuln.go.dev): the
# OSV entries of the golang.org/x/vulndb module, from the module proxy, turned
# into the layout govulncheck reads by .ci/vulndb. Exit 0: no reachable
# advisory. Bump VULNDB_VERSION for newer advisories.
GOVULNCHECK_VERSION ?= v1.9.0
VULNDB_VERSION      ?= v0.0.0-20261105234957-e22db6528018
# govulncheck built by the toolchain it scans with (an older one cannot load
# a newer standard library).
GOVULNCHECK := bin/tools/govulncheck-$(GOVULNCHECK_VERSION)-$(GOTOOLCHAIN)/govulncheck
VULNDB      := bin/vulndb/$(VULNDB_VERSION)

vulncheck: $(GOVULNCHECK) $(VULNDB)/index/db.json
	$(GOVULNCHECK) -db file://$(CURDIR)/$(VULNDB) ./...

vulndb: $(VULNDB)/index/db.json

$(GOVULNCHECK):
	GOBIN=$(CURDIR)/$(@D) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)

$(VULNDB)/index/db.json: .ci/vulndb/main.go
	$(GO) mod download golang.org/x/vulndb@$(VULNDB_VERSION)
	$(GO) run ./.ci/vulndb -out $(VULNDB) \
		-src "$$($(GO) list -m -f '{{.Dir}}' golang.org/x/vulndb@$(VULNDB_VERSION))/data/osv" \
		-modified "$$($(GO) list -m -f '{{.Time.Format "2006-01-02T15:04:05Z07:00"}}' golang.org/x/vulndb@$(VULNDB_VERSION))"

clean:
	rm -rf bin dist

-include testdata/harness/harness.mk
-include packaging/packaging.mk
