#!/usr/bin/env bash
# The ramdisk's figures on this machine, as root: sizes of what ironic-agent-build writes, and
# over several runs of the QEMU job (IPMI power-on, iPXE network boot, cleaning, deploy),
# power-on → first heartbeat accepted by Ironic and the agent's memory. Prints a table.
# About three minutes per run.
#
#   tests/bench-ramdisk.sh [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
export IRONIC_VENV=${IRONIC_VENV:-/opt/ironic-agent-test/ironic-venv}
cargo build -q -p e2e --bins
exec cargo run -q -p e2e --bin ramdisk-bench -- "$@"
