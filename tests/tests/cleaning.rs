//! Automated cleaning against a real Ironic: the agent must erase disk metadata exactly as
//! IPA does, and refuse to touch a disk holding a protected (VMFS) partition.
//!
//! Needs root, the Ironic venv (tests/setup.sh) and the agent binary; see tests/README.md.

use e2e::cleaning::{self, prepare_disk, run_automated_cleaning, run_automated_cleaning_of};
use e2e::harness::Harness;
use e2e::ironic_api::NodeSpec;
use e2e::loopdev::{Fill, LINUX_FS, VMFS};
use serde_json::json;

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

/// `properties.skip_block_devices` protects disks from every erase step of automated
/// cleaning (`erase_devices_metadata`, then the shredding `erase_devices`), as in IPA: four
/// loop disks, one listed by name and one matched by a size hint (the only disk of at least
/// 1 GiB); the node becomes `available`, the two listed disks are byte-for-byte unchanged, the
/// two others read back as zeros, and each step's result, as the conductor recorded it, names
/// the skipped disks and the reason.
#[test]
fn skip_listed_disks_survive_automated_cleaning() {
    let mut h = Harness::start("clean-skip", "52:54:00:e2:00:04", |c| {
        c.erase_devices_priority = 10;
    })
    .expect("harness");
    let by_name = prepare_disk(&mut h, LINUX_FS).expect("the disk listed by name");
    // Sparse, with random data at the head (its GPT would be wiped), the middle and the end.
    let big = h
        .add_disk((1 << 30) + (8 << 20), Fill::Zeros)
        .expect("the disk matched by size");
    let size = h.disk(big).size();
    for at in [0, size / 2, size - (1 << 20)] {
        let mut chunk = vec![0u8; 1 << 20];
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = (i as u64 ^ at)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .to_le_bytes()[7]
                | 1;
        }
        h.disk(big)
            .write_at(at, &chunk)
            .expect("writing the big disk");
    }
    let big_before = h.disk(big).read_all().expect("reading the big disk");
    let erased = prepare_disk(&mut h, LINUX_FS).expect("the disk to erase");
    let plain = h.add_disk(24 << 20, Fill::Random).expect("the plain disk");

    let listed = h.disk(by_name.index).device().display().to_string();
    let spec = NodeSpec {
        skip_block_devices: Some(json!([{"name": listed}, {"size": ">= 1"}])),
        ..NodeSpec::default()
    };
    let (node, times) =
        run_automated_cleaning_of(&mut h, &spec, "available").expect("automated cleaning");
    assert_eq!(node.provision_state, "available");
    println!("timings: {times:?}");

    cleaning::verify_full_cleaning_order(&h).expect("clean steps");
    cleaning::verify_unchanged(&h, by_name.index, &by_name.before).expect("disk listed by name");
    cleaning::verify_unchanged(&h, big, &big_before).expect("disk matched by the size hint");
    drop(big_before);
    cleaning::verify_zeroed(&h, erased.index).expect("the erased GPT disk");
    cleaning::verify_zeroed(&h, plain).expect("the erased plain disk");
    let big_dev = h.disk(big).device().display().to_string();
    for step in ["erase_devices_metadata", "erase_devices"] {
        for device in [&listed, &big_dev] {
            cleaning::verify_skip_reported(&h, step, device).expect("the step's result");
        }
    }
}
