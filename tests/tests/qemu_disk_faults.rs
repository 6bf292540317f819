//! Failing disks under real Ironic, in QEMU (the host has no device-mapper): QEMU's
//! `blkdebug` fails writes with EIO, then write throttling stalls the disk. An erase fails
//! naming the disk, a deploy fails with the device and the errno and leaves no partition
//! table, the agent keeps serving, and a stalled disk fails the deploy, and then an erase,
//! within the agent's stall limit instead of hanging them. Needs root, tests/setup.sh, and a few minutes of TCG.

use e2e::qemu_deploy::{self, STALL_TIMEOUT_S};

#[test]
fn failing_and_stalled_disks_fail_the_steps_clearly_and_never_hang() {
    let o = qemu_deploy::run_disk_faults("qemu-disk-faults").unwrap_or_else(|e| panic!("{e:#}"));
    println!("erase on EIO:  {}", o.erase_error);
    println!("write on EIO:  {}", o.write_error);
    println!(
        "stalled disk:  {} (deploy -> deploy failed {:.1}s, limit {STALL_TIMEOUT_S} s)",
        o.stall_error, o.stall_seconds
    );
    println!(
        "erase, stalled: {} (clean -> clean failed {:.1}s)",
        o.erase_stall_error, o.erase_stall_seconds
    );
    println!("whole run {:.1}s", o.total_seconds);
    assert_eq!(o.agent_status_after_failure, 200);
}
