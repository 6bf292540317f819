#!/usr/bin/env bash
# Regenerates the seed corpus (fuzz/corpus/<target>/) from the operators' real tools:
# qemu-img, gzip/zstd/xz, sgdisk/sfdisk, mkfs.vfat, genisoimage, and the agent's own
# encoders (examples/seeds.rs). Every file stays a few KiB; the whole corpus well under 1 MiB.
# Targets whose input starts with a control byte (see each target's doc) get one prepended.
#
#   fuzz/make-corpus.sh
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/sbin:/sbin"
corpus=$PWD/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

rm -rf "$corpus"
mkdir -p "$corpus"
seed() { # seed <target> <name> <control byte in octal or ""> <file>
  mkdir -p "$corpus/$1"
  if [[ -n "$3" ]]; then printf "\\$3" > "$corpus/$1/$2"; else : > "$corpus/$1/$2"; fi
  cat "$4" >> "$corpus/$1/$2"
}

# --- a small raw disk: data, zeros, data (64 KiB) --------------------------------------
raw=$tmp/disk.raw
python3 - "$raw" <<'PY'
import random, sys
random.seed(7)
disk = bytearray(65536)
head = b"ironic-agent fuzz seed: the first sector"
disk[:len(head)] = head
disk[9000:12000] = bytes(random.getrandbits(8) for _ in range(3000))
text = b"a line of text that compresses well\n" * 120
disk[40000:40000 + len(text)] = text
open(sys.argv[1], "wb").write(disk)
PY

# --- qcow2: small clusters keep the files small -------------------------------------------
q=$tmp/q
qemu-img convert -q -f raw -O qcow2 -o cluster_size=512 "$raw" "$q-512.qcow2"
qemu-img convert -q -f raw -O qcow2 -c -o cluster_size=4096 "$raw" "$q-deflate.qcow2"
qemu-img convert -q -f raw -O qcow2 -c -o cluster_size=4096,compression_type=zstd "$raw" "$q-zstd.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512 "$q-empty.qcow2" 1M
qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 "$q-v2.qcow2" 64K
for f in "$q"-*.qcow2; do
  n=$(basename "$f")
  seed qcow2_stream "$n" '000' "$f"       # whole, file size unknown
done
seed qcow2_stream q-512-chunked '213' "$q-512.qcow2" # chunking 11, file size known
seed image_decode q-deflate.qcow2 '062' "$q-deflate.qcow2" # disk_format qcow2, deep

# --- compressed raw, and raw ------------------------------------------------------------
gzip -9 -c "$raw" > "$tmp/disk.raw.gz"
zstd -q -19 -c "$raw" > "$tmp/disk.raw.zst"
xz -9 -c "$raw" > "$tmp/disk.raw.xz"
head -c 2048 "$raw" > "$tmp/head.raw"
for f in "$tmp"/disk.raw.gz "$tmp"/disk.raw.zst "$tmp"/disk.raw.xz "$tmp/head.raw"; do
  seed image_decode "$(basename "$f")" '071' "$f" # disk_format raw, deep, chunked
  seed image_decode "$(basename "$f")-plain" '000' "$f"
done

# --- partition tables and filesystems ------------------------------------------------------
gpt=$tmp/gpt.img
truncate -s 48K "$gpt"
sgdisk -q -o -n 1:34:+4K -t 1:ef00 -c 1:EFI -n 2:0:0 -t 2:8300 "$gpt" >/dev/null
mbr=$tmp/mbr.img
truncate -s 16K "$mbr"
printf 'label: dos\nstart=1, size=8, type=83, bootable\nstart=9, size=20, type=ef\n' \
  | sfdisk -q "$mbr" >/dev/null
seed partition_tables gpt-512 '000' "$gpt"
seed partition_tables mbr '000' "$mbr"
vfat=$tmp/esp-fat12.img
mkfs.vfat -C -n EFI-PART "$vfat" 64 >/dev/null
iso=$tmp/config-2.iso
mkdir -p "$tmp/cd/openstack/latest"
echo '{"uuid": "8a1e1a1e-0000-4000-8000-000000000000"}' > "$tmp/cd/openstack/latest/meta_data.json"
genisoimage -quiet -o "$iso" -ldots -allow-lowercase -allow-multidot -l -V config-2 -J -r "$tmp/cd"
# The volume descriptors end by 36 KiB; the rest of the ISO is directories and files.
head -c 36864 "$iso" > "$tmp/config-2-head.iso"
head -c 8192 "$vfat" > "$tmp/vfat-head.img"
seed partition_tables iso-head '000' "$tmp/config-2-head.iso"
seed partition_tables vfat-head '000' "$tmp/vfat-head.img"

# --- the ESP walk: mkfs.vfat, then the agent's own writer fills in a boot loader tree ----
cargo run -q --example seeds -- "$corpus" "$vfat"

# --- config drives: as Ironic sends them (gzip, base64), and downloaded raw ---------------
gzip -9 -c "$iso" | base64 -w 0 > "$tmp/configdrive.b64"
seed configdrive inline '000' "$tmp/configdrive.b64"
seed configdrive downloaded-b64 '001' "$tmp/configdrive.b64"
seed configdrive downloaded-raw '001' "$tmp/head.raw"

# --- text formats ------------------------------------------------------------------------
# --- external manager output: flag byte (1 = failed), stdout, NUL, stderr --------------
mkdir -p "$corpus/external_output"
printf '\x00{"erased": ["/dev/sda"], "seconds": 12.5}\n\x00' > "$corpus/external_output/ok-json"
printf '\x01{"error": "ddcli: card 2 is busy"}\x00ddcli: busy\nretry later\n' \
  > "$corpus/external_output/failed-error"
printf '\x00done.\n\x00warning: slow\n' > "$corpus/external_output/not-json"
printf '\x00   \n\x00' > "$corpus/external_output/blank"
printf '\x01\x00\xff\xfe partial line\nlast line\n' > "$corpus/external_output/failed-stderr"

mkdir -p "$corpus/checksum_file" "$corpus/cmdline" "$corpus/ini" "$corpus/api_json"
sha=$(sha256sum "$raw" | cut -d' ' -f1)
printf 'http://images.example/disk.raw?temp_url_sig=abc&temp_url_expires=1\n%s  disk.raw\n%s *other.raw\n' \
  "$sha" "$sha" > "$corpus/checksum_file/gnu"
printf 'https://images.example/CentOS-9.qcow2\n# comment\nSHA256 (CentOS-9.qcow2) = %s\n' "$sha" \
  > "$corpus/checksum_file/bsd"
printf 'http://images.example/a%%20b.raw\n%s\n' "$(md5sum "$raw" | cut -d' ' -f1)" > "$corpus/checksum_file/bare-md5"
printf 'BOOT_IMAGE=/vmlinuz ipa-api-url=http://10.0.0.1:6385 ipa-agent-token=s3cr3t BOOTIF=01-52-54-00-12-34-56 ipa-inspection-collectors="default,logs" quiet\n' \
  > "$corpus/cmdline/ironic"
printf '[0.000000] Kernel command line: ipa-agent-token="a b" x="ipa-agent-token=c d"\n[0.1] next\n' \
  > "$corpus/cmdline/kernel-log"
cat > "$corpus/ini/ipa.conf" <<'INI'
[DEFAULT]
api_url = http://10.0.0.1:6385
# a comment
enable-auto-tls: true
inspection_collectors = "default,logs"
standby_command_timeout=30

[disk_erasure]
continuation = first
  second line
; another comment
INI
cat > "$corpus/api_json/prepare_image.json" <<JSON
{"name": "standby.prepare_image", "params": {"image_info": {"id": "8a1e", "urls": ["https://swift.example/v1/AUTH_x/images/8a1e?temp_url_sig=s1g&temp_url_expires=9", "http://user:pw@mirror.example/img#frag"], "checksum": "$sha", "os_hash_algo": "sha256", "os_hash_value": "$sha", "disk_format": "qcow2", "container_format": "bare", "image_type": "partition", "root_mb": "1024", "swap_mb": 0, "ephemeral_mb": null, "preserve_ephemeral": "True", "stream_raw_images": true}, "configdrive": "H4sI"}}
JSON
printf '{"name": "clean.execute_clean_step", "params": {"step": {"step": "erase_devices_metadata", "interface": "deploy", "priority": 99}, "node": {"uuid": "u"}, "ports": [], "clean_version": {"generic": "1.2"}}}\n' \
  > "$corpus/api_json/execute_clean_step.json"

# --- LLDP and SMBIOS: byte layouts of IEEE 802.1AB and DMTF DSP0134 ---------------------------
python3 - "$corpus" <<'PY'
import os, struct, sys
corpus = sys.argv[1]
def tlv(t, v): return struct.pack(">H", (t << 9) | len(v)) + v
eth = bytes.fromhex("0180c200000e") + bytes.fromhex("001122334455") + b"\x88\xcc"
frame = eth + b"".join([
    tlv(1, b"\x04" + bytes.fromhex("001122334455")),
    tlv(2, b"\x05ge-0/0/1"),
    tlv(3, struct.pack(">H", 120)),
    tlv(4, b"ge-0/0/1.0"),
    tlv(5, b"switch-1.example"),
    tlv(6, b"Juniper Networks, Inc. ex4300-48t"),
    tlv(7, struct.pack(">HH", 0x14, 0x14)),
    tlv(8, b"\x05\x01\x0a\x00\x00\x01\x02" + struct.pack(">I", 17) + b"\x00"),
    tlv(127, b"\x00\x80\xc2\x01" + struct.pack(">H", 100)),
    tlv(127, b"\x00\x12\x0f\x04" + struct.pack(">H", 9216)),
    tlv(0, b""),
])
os.makedirs(f"{corpus}/lldp", exist_ok=True)
open(f"{corpus}/lldp/juniper", "wb").write(frame)
open(f"{corpus}/lldp/odd-trailing", "wb").write(frame[:40] + b"\x07")

def structure(kind, handle, body, strings):
    s = bytes([kind, 4 + len(body)]) + struct.pack("<H", handle) + body
    return s + (b"".join(x.encode() + b"\0" for x in strings) + b"\0" if strings else b"\0\0")
table = b"".join([
    structure(0, 0, bytes([1, 2, 0, 0xe8, 3, 0xff]) + bytes(8) + b"\x00\x00\x01\x02", ["SeaBIOS", "1.16.2-debian", "04/01/2014"]),
    structure(1, 0x100, bytes([1, 2, 3, 4]) + bytes(16) + b"\x06\x00\x00", ["QEMU", "Standard PC (Q35 + ICH9, 2009)", "pc-q35-7.2", "serial-1"]),
    structure(4, 0x400, bytes([1, 3, 1, 2]) + bytes(8) + bytes([3, 0x01, 0, 0, 0xd0, 0x07, 0xd0, 0x07, 0x41, 1]) + bytes(6) + bytes([0, 0, 0, 2, 2, 2, 0x02, 0, 0x01, 0]), ["CPU 0", "QEMU", "pc-q35-7.2"]),
    structure(16, 0x1000, bytes([1, 3, 6]) + struct.pack("<I", 8 << 20) + struct.pack("<HH", 0xfffe, 1), []),
    structure(17, 0x1100, struct.pack("<HHHHHBBBBBHB", 0x1000, 0xfffe, 64, 64, 8192, 9, 0, 1, 0, 7, 2, 0), ["DIMM 0"]),
    structure(17, 0x1101, struct.pack("<HHHHHBBBBBHB", 0x1000, 0xfffe, 64, 64, 0x7fff, 9, 0, 1, 0, 7, 2, 0) + bytes(6) + bytes(7) + struct.pack("<I", 65536), ["DIMM 1"]),
    structure(127, 0x7f00, b"", []),
])
os.makedirs(f"{corpus}/smbios", exist_ok=True)
open(f"{corpus}/smbios/qemu-like", "wb").write(table)
PY
du -sh "$corpus"
