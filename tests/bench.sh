#!/usr/bin/env bash
# Image-writing benchmark: ironic-agent vs ironic-python-agent 13.0.0 on this machine (root).
# Installs what it needs (tests/setup.sh, IPA 13.0.0 from PyPI in a virtualenv), builds the
# release agent, then runs the comparison and prints two tables: the image path driven
# directly (throughput against the machine's ceilings, connection scaling, RSS), then the
# deploy driven through real Ironic (tests/deploy-bench.sh: agent → active, write_image as
# the conductor sees it), each with IPA beside us. Takes a quarter of an hour at 2 GiB.
#
#   tests/bench.sh [--size-mib 2048] [--sparse-gib 8] [--runs 3] [--skip-ipa] [--conn-limit-mbs 100 | --skip-scaling]
#                  [--agent-arg ipa-x=y ...] [--skip-deploy]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
IPA_VENV=${IPA_VENV:-/opt/ironic-agent-test/ipa-venv}
export IPA_VENV
bash tests/bench/ipa-venv.sh
cargo build -q --release -p ironic-agent
cargo build -q --release -p e2e --bin bench
cargo build -q --release -p e2e --bin deploy-bench
# What the deploy benchmark shares with this one: size, runs, IPA or not, agent arguments.
bench_args=() deploy_args=() skip_deploy=0 agents=ours,ipa
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-deploy) skip_deploy=1; shift; continue ;;
    --skip-ipa) agents=ours ;;
    --size-mib|--runs|--agent-arg) deploy_args+=("$1" "$2") ;;
  esac
  case "$1" in
    --skip-ipa|--skip-scaling) bench_args+=("$1"); shift ;;
    *) bench_args+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
  esac
done
target/release/bench "${bench_args[@]}"
if [ "$skip_deploy" = 0 ]; then
  echo
  echo "== deploy through real Ironic (tests/deploy-bench.sh)"
  IRONIC_AGENT_BIN=$PWD/target/release/ironic-agent \
    target/release/deploy-bench --agents "$agents" "${deploy_args[@]}"
fi
