#!/usr/bin/env bash
# The main job end to end, from a fresh Debian 12 machine, as root: installs what it needs,
# builds the ramdisk (static agent and init, a Debian kernel, the common server drivers),
# starts a real Ironic 39, and lets it provision a QEMU machine through its IPMI BMC: network
# boot over iPXE, automated cleaning, a direct deploy to `active`, the disk checked on the
# host. Prints progress as it goes. About four minutes the first time, two after.
#
#   tests/demo.sh               the QEMU machine (the main command)
#   tests/demo.sh --namespace   the agent run directly in a network namespace with loop-device
#                               disks (cleaning, then a deploy with a config drive), ~35 s
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
export IRONIC_VENV=${IRONIC_VENV:-/opt/ironic-agent-test/ironic-venv}
if [[ "${1:-}" == "--namespace" ]]; then
  cargo build -q -p ironic-agent
  exec cargo run -q -p e2e --bin demo
fi
# The chassis program the BMC runs sits next to the demo binary.
cargo build -q -p e2e --bins
exec cargo run -q -p e2e --bin qemu-demo
