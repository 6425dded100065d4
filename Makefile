# pvesnap — build, test, benchmark, demo and package.
#
#   make demo    pvesnap against the built-in simulators, in the lab guest, on https://127.0.0.1:8009
#   make test    everything CI runs: unit, simulator, lab (real kernel), browser and package tests
#
# Both set up what they need on a fresh Debian 12 machine (as root): apt packages, the lab
# image, npm packages. Each step is idempotent and cached.

SHELL      := /bin/bash
GO         ?= go
VERSION    ?= $(shell dpkg-parsechangelog -S Version 2>/dev/null || echo 0.1.0)
LDFLAGS    := -s -w -X github.com/pvesnap/pvesnap/daemon/server.Version=$(VERSION)
export CGO_ENABLED := 0
export LAB_DIR     ?= /var/tmp/pvesnap-lab
BIN        := bin/pvesnap
GOTEST     := $(GO) test -count=1

.PHONY: all build test unit perl-test lint lab lab-test deps bench demo deb fuzz docs docs-check clean browser-test package-test

all: build

build: $(BIN)

$(BIN): $(shell find cmd daemon ioctl lvm pvehook sim www -name '*.go' -o -name '*.js' -o -name '*.css' 2>/dev/null) go.mod go.sum
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/pvesnap

deps:
	lab/deps.sh

lab:
	lab/setup.sh

# Unit, simulator and integration tests that run on the host.
unit: export PVESNAP_REQUIRE_BROWSER=1
unit: export PVESNAP_REQUIRE_PERL=1
unit:
	$(GOTEST) -timeout 15m ./...

# The PVE storage plugin (perl/) against stand-ins of PVE's Perl libraries (perl/t/lib).
perl-test:
	prove -r perl/t

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...
	# the lab's tests build only with the tag; vetting them here finds a broken one in seconds
	# instead of after the lab's images are made
	$(GO) vet -tags lab ./lab/...
	$(GOTEST) -run 'TestBoundaries' ./daemon/

# Tests that need a real kernel (LIO, NVMe, device-mapper, LVM, ZFS) run inside the lab guest.
lab-test: lab build
	lab/run-tests.sh

# The Debian package: build, lintian, install/upgrade-while-a-task-runs/remove/purge in a chroot.
package-test: deps
	lab/package-test.sh

test: deps lab lint docs-check unit perl-test package-test lab-test

bench: deps lab build
	lab/bench.sh

demo: deps lab build
	lab/demo.sh

deb:
	dpkg-buildpackage -us -uc -b

fuzz:
	lab/fuzz.sh $(FUZZTIME)

docs: build
	$(BIN) docs --out docs

docs-check: build
	$(BIN) docs --check docs

clean:
	rm -rf bin lab/work
