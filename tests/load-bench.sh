#!/usr/bin/env bash
# Load benchmark (root): real Ironic deploys a raw image through the release agent three
# times: unloaded, under --pollers concurrent authenticated status polls, and under a flood of
# unauthenticated junk (idle connections, slow headers, oversize bodies, HTTP/2 stream
# floods), the load coming over TLS from a network namespace of its own. Prints the write
# throughput and its drop, the agent's peak RSS and open fds, and the heartbeats. A few
# minutes. Not a test: no figure here is asserted.
#
#   tests/load-bench.sh [--size-mib 2048] [--pollers 1000] [--poll-interval-ms 1000] [--runs 1]
#
# Environment: LOAD_JUNK_PAUSE_MS (default 10), the pause of each junk thread between
# connections.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh >/dev/null
# One package per build: `--bin` would apply to both and skip the agent binary.
cargo build -q --release -p ironic-agent
cargo build -q --release -p e2e --bin load-bench
export IRONIC_AGENT_BIN=${IRONIC_AGENT_BIN:-$PWD/target/release/ironic-agent}
# The attackers: up to --pollers threads and their sockets in one process.
ulimit -n 65536 2>/dev/null || true
exec target/release/load-bench "$@"
