#!/usr/bin/env bash
# Makes sure $IPA_VENV (default /opt/ironic-agent-test/ipa-venv) holds ironic-python-agent
# 13.0.0 from PyPI, and that the tools IPA shells out to are installed. Used by bench.sh and
# deploy-bench.sh (root). About a minute the first time.
set -euo pipefail
IPA_VENV=${IPA_VENV:-/opt/ironic-agent-test/ipa-venv}
if ! "$IPA_VENV/bin/python" -c 'import ironic_python_agent' 2>/dev/null; then
  echo "bench: creating $IPA_VENV with ironic-python-agent==13.0.0 (about a minute)"
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
  rm -rf "$IPA_VENV"
  "$PY" -m venv "$IPA_VENV"
  "$IPA_VENV/bin/python" -m pip install -q --upgrade pip
  "$IPA_VENV/bin/python" -m pip install -q "ironic-python-agent==13.0.0"
fi
# IPA's image path (parted, sgdisk, qemu-img) and its inventory (lshw: IPA 13 exits at
# start without it).
for tool in parted sgdisk qemu-img lshw; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q parted gdisk qemu-utils lshw >/dev/null
    break
  fi
done
