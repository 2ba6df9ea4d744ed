# The two commands of the quick start (README.md). Everything else lives in scripts/.
.PHONY: up test test-docker lint bench fuzz-smoke

## Build everything, install Envoy if needed, start the demo gateway (Ctrl-C stops it).
up:
	scripts/up

## Run every test: unit, translation, protocol, and end-to-end against a real Envoy.
test:
	scripts/test

## Build the images and run docker-compose.yml for real, then test the running stack and remove it
## (installs and starts a Docker engine if needed; see README, Tested in containers).
test-docker:
	scripts/test-docker

## Check formatting and lints (cargo fmt --check, clippy with warnings as errors).
lint:
	scripts/lint

## Print control-plane benchmark figures.
bench:
	scripts/bench

## Run every fuzz target for 30 s (fails on any crash, leak, OOM or hang; see README, Fuzzing).
fuzz-smoke:
	scripts/fuzz --smoke
