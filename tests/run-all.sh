#!/usr/bin/env bash
# Everything a change must pass, from a fresh Debian 12 machine, as root:
# setup, formatting, clippy, the agent build the end-to-end tests run, all tests, and a short
# run of every fuzz target (a crash fails).
#
#   tests/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh
export IRONIC_VENV=${IRONIC_VENV:-/opt/ironic-agent-test/ironic-venv}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build -p ironic-agent (the binary the end-to-end tests run)"
cargo build -p ironic-agent
echo "== cargo build --release: the ramdisk's static agent and init (musl), and its builder"
cargo build --release --target x86_64-unknown-linux-musl -p ironic-agent -p ironic-agent-init
cargo build --release -p ironic-agent-build
echo "== cargo test"
cargo test --workspace
echo "== fuzz smoke: every target for 5 s (tests/fuzz.sh)"
bash tests/fuzz.sh --seconds 5
