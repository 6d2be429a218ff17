# The two set-up commands are `make up` and `make test`; see README.md.
SHELL := /bin/bash

# Development defaults; override any of them in the environment.
export REELAY_JWT_SECRET ?= reelay-dev-secret
# Development only: the Ed25519 seed firmware is signed with (base64 of
# "reelay-development-firmware-key!"); production sets its own.
export REELAY_FLEET_SIGNING_KEY ?= cmVlbGF5LWRldmVsb3BtZW50LWZpcm13YXJlLWtleSE=
export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/reelay
export REELAY_LOG_FORMAT ?= pretty

.PHONY: up test services build web token wrk chaos bench bench-concurrency bench-api bench-encode bench-fleet bench-engagement rebuild-projections lint

## Start (or install) every service, build, and run the api plus two
## workers in the foreground. Ctrl-C stops them.
up: services build web
	./scripts/run.sh

## The same set-up, then every test of the workspace. The short chaos run
## goes last, on its own: it loads both cores with its eight processes.
test: services build web
	@if command -v cargo-nextest >/dev/null; then \
		cargo nextest run --workspace --no-fail-fast -E 'not test(/^chaos::/)' && \
		cargo nextest run -p reelay-tests --test integration -E 'test(/^chaos::/)'; \
	else \
		cargo test --workspace --no-fail-fast -- --skip chaos:: && \
		cargo test -p reelay-tests --test integration -- chaos::; \
	fi

services:
	./scripts/services.sh

build:
	cargo build --bins

## The browser code (web/), bundled from npm with esbuild; rebuilt when
## its sources or the lockfile change.
web: web/dist/player.js
web/dist/player.js: web/package-lock.json web/build.mjs $(wildcard web/src/* web/src/console/*)
	cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

## A bearer token: make token USER=<uuid> [ROLE=user|service|admin]
## (a new user id if USER is not one).
token:
	@cargo build -q -p reelay-api --bin reelay-api
	@user='$(USER)'; \
	if ! [[ $$user =~ ^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$$ ]]; then \
		user=$$(cat /proc/sys/kernel/random/uuid); echo "# user $$user" >&2; \
	fi; \
	./target/debug/reelay-api token --user $$user --role $(or $(ROLE),user)

## Upload benchmark (reelay vs direct multipart to Garage); see BENCHMARKS.md.
bench: services
	cargo build --release --bins
	./target/release/reelay-bench $(BENCH_ARGS)

## Many uploads at once through 1, 2 and 4 workers: throughput, each
## worker's share of the chunks, peak and after-load memory; see BENCHMARKS.md.
bench-concurrency: services
	cargo build --release --bins
	./target/release/reelay-concurrency-bench $(BENCH_ARGS)

## wrk, the HTTP load generator of the benches (Debian's package).
wrk:
	@command -v wrk >/dev/null || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; $$sudo apt-get update -qq && $$sudo apt-get install -y -qq wrk; }

## Read-path load (batch links, status polling) with wrk; see BENCHMARKS.md.
bench-api: services wrk
	cargo build --release --bins
	./target/release/reelay-api-bench $(BENCH_ARGS)

## Time to playable through reelay against ffmpeg alone; see BENCHMARKS.md.
bench-encode: services
	cargo build --release --bins
	./target/release/reelay-encode-bench $(BENCH_ARGS)

## Fleet: reports and queries under load (wrk), and a 10,000-device
## rollout at 500/s against its ideal time; see BENCHMARKS.md.
bench-fleet: services wrk
	cargo build --release --bins
	./target/release/reelay-fleet-bench $(BENCH_ARGS)

## Engagement: player events and reactions under load (wrk), and the lag
## from 202 to ClickHouse at a steady 3,000 requests/s; see BENCHMARKS.md.
bench-engagement: services wrk
	cargo build --release --bins
	./target/release/reelay-engagement-bench $(BENCH_ARGS)

## The chaos run: uploads from tuspy and tus-js-client under killed
## processes and services taken away, every byte checked; see
## RELIABILITY.md. CHAOS_UPLOADS, CHAOS_FAULTS, CHAOS_SEED from the
## environment.
chaos: services web
	cargo build --release --bins
	./target/release/reelay-chaos

rebuild-projections: build
	./target/debug/reelay-worker rebuild-projections

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
