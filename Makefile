# lvhook: `make build`, `make test`, `make bench`; the two-host harness
# (`make demo`, `make e2e`) is in testdata/harness/harness.mk.
GO      ?= go
# The Go that builds lvhook: go.mod's toolchain line, which a machine's own Go
# ignores when its GOTOOLCHAIN is local. go1.27.3 has the net/http (HTTP/2)
# and crypto/x509 fixes that go1.26.8 lacks; the go command fetches it from
# the module proxy.
GOTOOLCHAIN ?= go1.27.3
export GOTOOLCHAIN
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test bench fuzz clean
all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/lvhook ./cmd/lvhook

# Unit tests: no root, no network, no lvm.
test:
	$(GO) vet ./...
	$(GO) test -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# A short run of every fuzz target (go test -fuzz takes one at a time).
FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseDomain$$' -fuzztime $(FUZZTIME) ./hook
	$(GO) test -run '^$$' -fuzz '^FuzzHookArgs$$' -fuzztime $(FUZZTIME) ./cmd/lvhook

clean:
	rm -rf bin dist

-include testdata/harness/harness.mk
-include packaging/packaging.mk
