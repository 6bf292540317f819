//! End-to-end harness for the `ironic-agent`: a real Ironic, a network namespace standing in
//! for the machine, loop devices standing in for its disks, and the real agent binary.
//!
//! Every test gets its own temp dir, namespace, subnet (10.251.N.0/24), Ironic and loop
//! disks, so tests run in parallel. Everything is torn down on Drop, also on panic; a failing
//! test prints the Ironic and agent logs and the node's state (see [`harness::Harness`]).
//!
//! Safety: the only block devices written are loop devices over temp files created here,
//! and Ironic binds only to the host end of a veth created here.

pub mod agent;
pub mod architecture;
pub mod cleaning;
pub mod cmd;
pub mod deploy;
pub mod diagnostics;
pub mod gpt;
pub mod harness;
pub mod http;
pub mod images;
pub mod inspection;
pub mod ironic;
pub mod ironic_api;
pub mod loopdev;
pub mod netns;
pub mod nginx;
pub mod probe;
pub mod qemu;
pub mod qemu_deploy;
pub mod ramdisk;
pub mod regions;
pub mod stats;
pub mod testdir;
