//! Automated cleaning against a real Ironic: the agent must erase disk metadata exactly as
//! IPA does, and refuse to touch a disk holding a protected (VMFS) partition.
//!
//! Needs root, the Ironic venv (tests/setup.sh) and the agent binary; see tests/README.md.

use e2e::cleaning::{self, prepare_disk, run_automated_cleaning};
use e2e::harness::Harness;
use e2e::loopdev::{LINUX_FS, VMFS};

#[test]
fn automated_cleaning_wipes_metadata() {
    let mut h = Harness::start("clean-wipe", "52:54:00:e2:00:01", |_| {}).expect("harness");
    let disk = prepare_disk(&mut h, LINUX_FS).expect("preparing the disk");

    let (node, times) = run_automated_cleaning(&mut h, "available").expect("automated cleaning");
    assert_eq!(node.provision_state, "available");
    println!("timings: {times:?}");

    cleaning::verify_steps_ran(&h).expect("clean steps");
    cleaning::verify_metadata_erased(&h, &disk).expect("disk after cleaning");
}

#[test]
fn protected_partition_fails_cleaning() {
    let mut h = Harness::start("clean-vmfs", "52:54:00:e2:00:02", |_| {}).expect("harness");
    let disk = prepare_disk(&mut h, VMFS).expect("preparing the disk");

    let (node, _) = run_automated_cleaning(&mut h, "clean failed").expect("automated cleaning");
    cleaning::verify_last_error(
        &node,
        "Protected VMware VMFS Partition (GPT) located on device",
    )
    .expect("last_error");
    cleaning::verify_untouched(&h, &disk).expect("disk after refused cleaning");
}

/// Full automated cleaning (`erase_devices` enabled, the conductor's default of one random
/// pass and zeroize): on two loop disks, metadata erase and then `erase_devices` in the
/// conductor's priority order, the node reaches `available` and both disks read back as
/// zeros. Loop devices take neither NVMe, ATA nor SCSI commands, so the agent overwrites them.
#[test]
fn full_automated_cleaning_erases_every_disk() {
    let mut h = Harness::start("clean-full", "52:54:00:e2:00:03", |c| {
        c.erase_devices_priority = 10;
    })
    .expect("harness");
    let first = prepare_disk(&mut h, LINUX_FS).expect("preparing the first disk");
    let second = h
        .add_disk(24 << 20, e2e::loopdev::Fill::Random)
        .expect("the second disk");

    let (node, times) = run_automated_cleaning(&mut h, "available").expect("automated cleaning");
    assert_eq!(node.provision_state, "available");
    println!("timings: {times:?}");

    cleaning::verify_full_cleaning_order(&h).expect("clean steps");
    cleaning::verify_zeroed(&h, first.index).expect("first disk");
    cleaning::verify_zeroed(&h, second).expect("second disk");
    let log = h.agent_logs();
    assert!(
        log.contains("pass=1 of=2 pattern=\"random\"")
            || log.contains("pass=1 of=2 pattern=random"),
        "the agent did not log one random pass then zeros:\n{log}"
    );
}
