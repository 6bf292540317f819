#!/usr/bin/env bash
# What the ramdisk's build and QEMU tests need on a Debian 12 machine, as root (called by
# tests/setup.sh). Idempotent: a second run changes nothing and takes about a second.
#
#   - QEMU (software emulation) with the iPXE ROMs, OpenIPMI's ipmi_sim and ipmitool: the
#     machine, its network boot firmware and its BMC;
#   - musl-tools and the Rust musl target: the agent and the init are static binaries;
#   - file(1): the "statically linked" budget check; cpio(1): cross-checks the cpio writer;
#   - a Debian kernel package, fetched with `apt-get download` into a cache directory and
#     never installed (the host's /boot and /lib/modules are not touched): the generic
#     flavour, whose modules cover real servers' NICs and storage controllers.
#
# Environment:
#   IRONIC_AGENT_KERNEL_DIR  where the kernel package goes (default
#                            /var/cache/ironic-agent-test/kernel; the tests read the same)
set -euo pipefail

KERNEL_DIR=${IRONIC_AGENT_KERNEL_DIR:-/var/cache/ironic-agent-test/kernel}

log() { echo "setup-ramdisk: $*"; }

declare -A PACKAGE_OF=(
  [qemu-system-x86_64]=qemu-system-x86
  [ipmi_sim]=openipmi
  [ipmitool]=ipmitool
  [musl-gcc]=musl-tools
  [file]=file
  [sgdisk]=gdisk
  [cpio]=cpio
)
missing=()
for cmd in "${!PACKAGE_OF[@]}"; do
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
    missing+=("${PACKAGE_OF[$cmd]}")
  fi
done
# The iPXE ROM QEMU's virtio NIC boots from.
[[ -e /usr/lib/ipxe/qemu/efi-virtio.rom ]] || missing+=(ipxe-qemu)
# qemu-img and qemu-io come from qemu-utils, which must match qemu-system's version. A machine
# may carry a newer qemu-utils (from backports, no longer in its sources) that Breaks the
# distribution's qemu-system-common, so apt refuses the install: pin qemu-utils to the version
# qemu-system-x86 will be installed at (a downgrade there).
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -q
  qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2; exit}')
  [[ -n "$qemu_version" && "$qemu_version" != "(none)" ]] \
    || { log "apt has no candidate for qemu-system-x86"; exit 1; }
  missing+=("qemu-utils=$qemu_version")
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades "${missing[@]}"
else
  log "QEMU, iPXE, ipmi_sim, ipmitool, musl-tools present"
fi

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed 2>/dev/null | grep -qx 'x86_64-unknown-linux-musl'; then
    log "rustup target add x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl
  fi
fi

# The kernel package that linux-image-amd64 currently depends on.
if compgen -G "$KERNEL_DIR/linux-image-*-amd64_*_amd64.deb" >/dev/null; then
  log "kernel package present: $(cd "$KERNEL_DIR" && ls linux-image-*-amd64_*_amd64.deb | tail -1)"
else
  pkg() { apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
  name=$(pkg)
  if [[ -z "$name" ]]; then apt-get update -q; name=$(pkg); fi
  [[ -n "$name" ]] || { log "cannot find the package linux-image-amd64 depends on"; exit 1; }
  log "apt-get download $name into $KERNEL_DIR (not installed)"
  mkdir -p "$KERNEL_DIR"
  tmp=$(mktemp -d "$KERNEL_DIR/.download.XXXXXX")
  # apt-get download as root warns that _apt cannot write the directory; harmless.
  (cd "$tmp" && apt-get download -q "$name" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  mv "$tmp"/linux-image-*.deb "$KERNEL_DIR"/
  rmdir "$tmp"
fi
log "done"
