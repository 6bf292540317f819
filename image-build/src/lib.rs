//! `ironic-agent-build`: builds the ironic-agent ramdisk without root and without network
//! (beyond fetching a kernel package): a kernel, a reproducible initramfs holding the static
//! agent, the init (crate `initramfs/`), the kernel modules the chosen drivers need with
//! their dependency closure and firmware, the operator's files and external hardware
//! managers; an iPXE script; a checksum manifest. One TOML file describes a ramdisk (see
//! `image-build/examples/`).

#![forbid(unsafe_code)]

pub mod build;
pub mod config;
pub mod cpio;
pub mod elf;
pub mod kernel;
