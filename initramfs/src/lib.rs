//! `ironic-agent-init`, the ramdisk's PID 1 (this directory, `initramfs/`, is the program
//! that runs *inside* the initramfs; the archive itself is written by `image-build`), and
//! the formats it shares with the builder (`ironic-agent-build`).
//!
//! The init (`src/main.rs`, PID 1) mounts the kernel filesystems, loads the kernel modules
//! the machine's devices ask for (udev-style, from `modules.alias`), brings the NICs up and
//! runs DHCP on the boot NIC (`BOOTIF`) or on all NICs in parallel, sets the hostname, then
//! starts `ironic-agent`, restarts it when it dies, reaps orphans and logs to the console.
//! Once rescue is finalised (`/etc/.rescued`) it stops restarting the agent and starts the
//! operator's rescue service instead.

pub mod cmdline;
pub mod config;
pub mod dhcp;
pub mod modules;
pub mod net;
