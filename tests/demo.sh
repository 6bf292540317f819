#!/usr/bin/env bash
# The main job end to end on an embedded default, from a fresh Debian 12 machine, as root:
# installs what it needs, builds the agent, starts a real Ironic 39 and lets it drive the
# agent through automated cleaning of a loop-device disk, then a direct deploy of a raw image
# with a config drive to `active`, checking the disks and printing progress as it goes.
#
#   tests/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
export IRONIC_VENV=${IRONIC_VENV:-/opt/ironic-agent-test/ironic-venv}
cargo build -q -p ironic-agent
exec cargo run -q -p e2e --bin demo
