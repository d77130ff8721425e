# ftpproxy: build, test, and check against real FTP peers.
GO      ?= go
BIN     := bin/ftpproxy
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
FUZZTIME ?= 10s

.PHONY: all build test race lint fuzz interop faults forward kernel soak bench demo peers clean

all: lint test build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/ftpproxy

# The fast in-process suite: parsers, fuzz seeds, sessions against a fake server.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Each fuzz target for FUZZTIME (a duration, or a count such as 200000x);
# new crashers land in testdata/fuzz.
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

# Real servers (vsftpd, pure-ftpd, proftpd) and clients (curl, lftp,
# python3 ftplib) in network namespaces where only the proxy can reach
# them; then HAProxy in front (PROXY protocol, two instances, drain, chain);
# then NAT topologies (masquerade, the kernel's FTP helper, split horizon,
# IPv6, a small passive range).
interop: peers
	bash interop/run.sh
	bash interop/haproxy/run.sh
	bash interop/nat/run.sh
	bash interop/probe/run.sh

# Faults with real peers (killed servers and clients, resets, silent
# upstreams, 2000 sessions, brute force, graceful drain); then the soak:
# 200 clients with random faults, SOAK (default 150s) long.
SOAK ?= 150s
faults: peers
	bash interop/faults/run.sh

# Forward mode with real peers: lftp (every ftp:proxy-auth-type), curl and
# ftplib naming vsftpd or proftpd at login, passive and active; and every
# refused destination, client and proxy login (530, nothing dialled).
forward: peers
	bash interop/forward/run.sh

# The kernel data path (--data-path kernel) with real peers: the forward
# guard, stolen and second data connections, killed clients and servers,
# 200 transfers at once, the fallbacks to the relay, an unprivileged proxy,
# the table's lifecycle, and throughput against direct and splice.
kernel: peers
	bash interop/kernel/run.sh

soak: peers
	bash interop/faults/soak.sh -soak-duration $(SOAK)

peers:
	bash interop/install-peers.sh

bench: peers build
	bash interop/bench.sh
	bash interop/kernel/run.sh -bench

# Start vsftpd on 127.0.0.1:2100 behind ftpproxy on 127.0.0.1:2121.
demo: peers build
	bash scripts/demo.sh

clean:
	rm -rf bin
