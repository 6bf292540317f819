#!/usr/bin/env bash
# The ramdisk's figures on this machine, as root: sizes of what ironic-agent-build writes, and
# over several runs of the QEMU job (IPMI power-on, iPXE network boot, cleaning, deploy),
# power-on → first heartbeat accepted by Ironic and the agent's memory. Prints a table.
# About three minutes per run.
#
#   tests/bench-ramdisk.sh [--runs 3]
#   tests/bench-ramdisk.sh --boot-floor [--runs 3]   # power-on → first request, ours beside a
#                                                    # minimal busybox ramdisk (boot-bench.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
export IRONIC_VENV=${IRONIC_VENV:-/opt/ironic-agent-test/ironic-venv}
cargo build -q -p e2e --bins
if [ "${1:-}" = --boot-floor ]; then
  shift
  # Debian's cloud kernel flavour beside the generic one (fetched, never installed).
  cloud=/var/cache/ironic-agent-test/kernel-cloud
  if ! ls "$cloud"/linux-image-*-cloud-amd64_*.deb >/dev/null 2>&1; then
    generic=$(ls /var/cache/ironic-agent-test/kernel/linux-image-*-amd64_*.deb | sort | tail -1)
    version=$(basename "$generic" | sed -E 's/^linux-image-(.*)-amd64_.*/\1/')
    mkdir -p "$cloud"
    (cd "$cloud" && apt-get download -q "linux-image-$version-cloud-amd64" 2>&1 \
      | grep -v '^W: Download is performed unsandboxed' || true)
  fi
  exec cargo run -q -p e2e --bin boot-bench -- "$@"
fi
exec cargo run -q -p e2e --bin ramdisk-bench -- "$@"
