#!/usr/bin/env bash
# Deploy-latency benchmark (root): real Ironic deploys raw, qcow2 and sparse qcow2 images
# through the release agent, each run in a fresh harness, and prints `agent → active`,
# write_image as the conductor sees it beside the agent's own image time, and the waits the
# conductor spent on the agent (heartbeats skipped because the node was locked, polls that
# found a command still running). A few minutes. Not a test: no figure here is asserted.
#
#   tests/deploy-bench.sh [--size-mib 2048] [--runs 3] [--kinds raw,qcow2,sparse]
#                         [--agents ours,ipa] [--agent-arg ipa-x=y ...] [--log-dir DIR]
# IPA 13 runs beside ours unless `--agents ours` (tests/bench/ipa_agent.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh >/dev/null
export IPA_VENV=${IPA_VENV:-/opt/ironic-agent-test/ipa-venv}
case " $* " in
  *" --agents ours "*) ;;
  *) bash tests/bench/ipa-venv.sh ;;
esac
# One package per build: `--bin` would apply to both and skip the agent binary.
cargo build -q --release -p ironic-agent
cargo build -q --release -p e2e --bin deploy-bench
export IRONIC_AGENT_BIN=${IRONIC_AGENT_BIN:-$PWD/target/release/ironic-agent}
exec target/release/deploy-bench "$@"
