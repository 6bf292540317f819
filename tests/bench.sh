#!/usr/bin/env bash
# Image-writing benchmark: ironic-agent vs ironic-python-agent 13.0.0 on this machine (root).
# Installs what it needs (tests/setup.sh, IPA 13.0.0 from PyPI in a virtualenv), builds the
# release agent, then runs the comparison and prints a table. Takes several minutes.
#
#   tests/bench.sh [--size-mib 2048] [--sparse-gib 8] [--runs 3] [--skip-ipa] [--conn-limit-mbs 100 | --skip-scaling]
#                  [--agent-arg ipa-x=y ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
IPA_VENV=${IPA_VENV:-/opt/ironic-agent-test/ipa-venv}
export IPA_VENV
if ! "$IPA_VENV/bin/python" -c 'import ironic_python_agent' 2>/dev/null; then
  echo "bench: creating $IPA_VENV with ironic-python-agent==13.0.0 (about a minute)"
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
  rm -rf "$IPA_VENV"
  "$PY" -m venv "$IPA_VENV"
  "$IPA_VENV/bin/python" -m pip install -q --upgrade pip
  "$IPA_VENV/bin/python" -m pip install -q "ironic-python-agent==13.0.0"
fi
# IPA shells out to these on its image path.
for tool in parted sgdisk qemu-img; do
  command -v "$tool" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q parted gdisk qemu-utils
done
cargo build -q --release -p ironic-agent
exec cargo run -q --release -p e2e --bin bench -- "$@"
