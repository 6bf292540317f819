#!/usr/bin/env bash
# Installs what the end-to-end tests (crate e2e, tests/) need on a Debian 12 machine, as root.
# Idempotent: a second run changes nothing and takes about a second.
#
#   tests/setup.sh
#
# Environment:
#   IRONIC_VENV     where the Ironic virtualenv goes (default /opt/ironic-agent-test/ironic-venv;
#                   the tests read the same variable with the same default)
#   PIP_FIND_LINKS  honoured by pip as usual (e.g. a local wheel directory)
set -euo pipefail

IRONIC_VENV=${IRONIC_VENV:-/opt/ironic-agent-test/ironic-venv}
IRONIC_VERSION=39.0.0

log() { echo "setup: $*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: must run as root (apt-get, network namespaces, loop devices)" >&2
  exit 1
fi

# --- Debian packages: command -> package -------------------------------------------------
declare -A PACKAGE_OF=(
  [ip]=iproute2 [ss]=iproute2
  [losetup]=mount
  [partx]=util-linux [wipefs]=util-linux [blkid]=util-linux [lsblk]=util-linux
  [blockdev]=util-linux [setsid]=util-linux
  [sgdisk]=gdisk
  [mkfs.ext4]=e2fsprogs
  [mkfs.vfat]=dosfstools
  [curl]=curl
  [openssl]=openssl
  [python3]=python3
  [nginx]=nginx
  [sfdisk]=fdisk
  [qemu-img]=qemu-utils
  [zstd]=zstd
  [xz]=xz-utils
  [genisoimage]=genisoimage
  [sha256sum]=coreutils
  # The erase VM test's dd (flash-card-agent/tests/qemu_erase.rs); QEMU, the musl target and
  # the kernel package come from setup-ramdisk.sh.
  [busybox]=busybox-static
)
missing=()
for cmd in "${!PACKAGE_OF[@]}"; do
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
    missing+=("${PACKAGE_OF[$cmd]}")
  fi
done
# Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip).
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "system packages present"
fi

# --- Ironic virtualenv ------------------------------------------------------------------------
installed=$("$IRONIC_VENV/bin/python" -m pip show ironic 2>/dev/null | sed -n 's/^Version: //p' || true)
if [[ "$installed" == "$IRONIC_VERSION" && -x "$IRONIC_VENV/bin/ironic" \
      && -x "$IRONIC_VENV/bin/ironic-dbsync" ]]; then
  log "Ironic $IRONIC_VERSION present in $IRONIC_VENV"
else
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
  log "creating $IRONIC_VENV with $PY and installing ironic==$IRONIC_VERSION (about a minute)"
  mkdir -p "$(dirname "$IRONIC_VENV")"
  rm -rf "$IRONIC_VENV"
  "$PY" -m venv "$IRONIC_VENV"
  "$IRONIC_VENV/bin/python" -m pip install -q --upgrade pip
  "$IRONIC_VENV/bin/python" -m pip install -q "ironic==$IRONIC_VERSION" python-ironicclient
  "$IRONIC_VENV/bin/ironic" --version >/dev/null 2>&1
fi

# --- Rust components used by tests/run-all.sh -------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
  for component in clippy rustfmt; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
      log "rustup component add $component"
      rustup component add "$component"
    fi
  done
fi
# cargo-fuzz for tests/fuzz.sh (the fuzz smoke of run-all.sh); from crates.io, once.
if command -v cargo >/dev/null 2>&1 && ! command -v cargo-fuzz >/dev/null 2>&1; then
  log "cargo install cargo-fuzz --locked (about 2 min)"
  cargo install -q cargo-fuzz --locked
fi
# The ramdisk: QEMU, iPXE, ipmi_sim, musl, a Debian kernel package (tests/setup-ramdisk.sh).
bash "$(dirname "$0")/setup-ramdisk.sh"
log "done"
