//! What the agent writes on a disk besides the image itself, natively and without mounting:
//! the things IPA does with `sgdisk`, `parted`, `dd`, `mkfs.vfat`, `mkswap`, `blkid`, `mount`
//! and `efibootmgr` after (or before) streaming an image.
//!
//! * [`gpt_write`], [`mbr_write`]: create partition tables, add partitions, and move a GPT's
//!   backup to the real end of a disk larger than the image ([`gpt_write::fix_gpt`], IPA's
//!   `sgdisk -e`).
//! * [`configdrive`]: decode the `configdrive` Ironic sends and write it on a whole-disk
//!   image, into the `config-2` partition or a new one at the end of the disk.
//! * [`partition_image`]: IPA's `work_on_disk` layout for partition images: the plan (where
//!   the root partition is, for the image writer) and its application.
//! * [`partition_uuids`]: what `standby.get_partition_uuids` returns.
//! * [`esp`], [`load_option`], [`efivarfs`], [`uefi_boot`]: IPA's `manage_uefi`: find the
//!   boot loaders on the EFI system partition from its raw bytes and register them in the
//!   firmware's boot entries; [`uefi_boot::install_bootloader`] is `image.install_bootloader`.
//!
//! # Safety
//! Nothing here opens a device by name except [`DiskTarget::open`], which asks the
//! [`DeviceGuard`](blockdev::DeviceGuard) first; everything else works on an opened
//! [`DiskTarget`] at byte offsets, so tests run on temporary files. EFI variables are written
//! only when the guard says the agent runs in a ramdisk; elsewhere the writes are logged and
//! reported as a dry run.

pub mod configdrive;
pub mod efivarfs;
pub mod esp;
mod fat_guard;
pub mod fs_id;
pub mod gpt_write;
pub mod load_option;
pub mod mbr_write;
pub mod partition_image;
pub mod partition_uuids;
mod slice;
pub mod swap;
mod target;
pub mod uefi_boot;

pub use slice::PartitionIo;
pub use target::DiskTarget;

/// One mebibyte: partitions are aligned to it, as parted's `optimal` alignment and sgdisk do.
pub const MIB: u64 = 1 << 20;

#[cfg(test)]
pub(crate) mod testutil;
