//! The automated-cleaning scenario: a loop disk with real metadata on it, a node that goes
//! `manageable -> provide -> clean wait -> (agent) -> available`, and the checks that the
//! agent erased exactly what IPA's `erase_devices_metadata` erases.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::agent::AgentOptions;
use crate::harness::Harness;
use crate::ironic_api::{Node, NodeSpec, Provision};
use crate::loopdev::{Fill, PartitionSpec, SECTOR};
use crate::probe;
use crate::regions::{self, Filesystem, Layout, EXT4_MAGIC};

/// 64 MiB: big enough for GPT + ext4, small enough to compare byte for byte.
pub const DISK_SIZE: u64 = 64 << 20;

/// How long a working agent may take to clean the node (a dead one fails at ~150 s, see
/// `IronicConfig::callback_timeout`).
pub const CLEAN_TIMEOUT: Duration = Duration::from_secs(240);

/// A disk prepared for cleaning, with its layout and its bytes before the agent ran.
pub struct PreparedDisk {
    pub index: usize,
    pub layout: Layout,
    pub before: Vec<u8>,
}

/// A 64 MiB loop disk full of random bytes, a GPT with one partition of type `type_guid`
/// from 1 MiB to 1 MiB before the end, and ext4 on it.
pub fn prepare_disk(h: &mut Harness, type_guid: &str) -> Result<PreparedDisk> {
    let index = h.add_disk(DISK_SIZE, Fill::Random)?;
    let sectors = DISK_SIZE / SECTOR;
    let part = PartitionSpec {
        first_lba: 2048,
        last_lba: sectors - 2048 - 1,
        type_guid: type_guid.to_string(),
    };
    let disk = h.disk_mut(index);
    disk.partition(std::slice::from_ref(&part))?;
    disk.mkfs_ext4(1)?;
    let layout = Layout {
        disk_bytes: DISK_SIZE,
        partitions: vec![part.clone()],
        filesystems: vec![Filesystem {
            partition: 1,
            magic: EXT4_MAGIC,
        }],
    };
    let before = disk.read_all()?;

    // The model of what is on the disk must match what util-linux sees, or the byte checks
    // below would prove nothing.
    let sigs = probe::wipefs_signatures(disk.device())?;
    let kinds: Vec<&str> = sigs.iter().map(|s| s.kind.as_str()).collect();
    ensure!(
        kinds.contains(&"gpt") && kinds.contains(&"PMBR"),
        "expected GPT and PMBR signatures on the new disk, wipefs saw {sigs:?}"
    );
    let fs = probe::blkid_probe(
        disk.device(),
        Some(part.byte_offset()),
        Some(part.byte_len()),
    )?;
    ensure!(
        fs.as_deref().is_some_and(|f| f.contains("TYPE=ext4")),
        "expected ext4 in the partition, blkid saw {fs:?}"
    );
    let fs_sigs = probe::wipefs_signatures(&disk.partition_path(1))?;
    let allowed = layout.wipe_regions();
    for (base, s) in sigs
        .iter()
        .map(|s| (0, s))
        .chain(fs_sigs.iter().map(|s| (part.byte_offset(), s)))
    {
        let at = base + s.offset;
        ensure!(
            allowed.iter().any(|r| r.contains(&at)),
            "signature {s:?} at disk byte {at} lies outside the computed wipe regions"
        );
    }
    h.progress(&format!(
        "disk prepared: GPT, partition 1 sectors {}..={} type {}, ext4",
        part.first_lba, part.last_lba, part.type_guid
    ));
    Ok(PreparedDisk {
        index,
        layout,
        before,
    })
}

/// Timings of one cleaning run.
#[derive(Debug, Clone, Copy)]
pub struct CleaningTimes {
    pub provide_to_clean_wait: Duration,
    pub agent_to_verdict: Duration,
}

/// Enrolls the node, `manage`, `provide` (automated cleaning), boots the agent and waits
/// for `verdict` (`available`, or `clean failed` when failure is expected).
pub fn run_automated_cleaning(h: &mut Harness, verdict: &str) -> Result<(Node, CleaningTimes)> {
    run_automated_cleaning_of(h, &NodeSpec::default(), verdict)
}

/// [`run_automated_cleaning`] of a node enrolled as `spec`.
pub fn run_automated_cleaning_of(
    h: &mut Harness,
    spec: &NodeSpec,
    verdict: &str,
) -> Result<(Node, CleaningTimes)> {
    h.enroll_node(spec)?;
    h.provision(Provision::Manage)?;
    h.wait_for("manageable", Duration::from_secs(30))?;
    let t = std::time::Instant::now();
    h.provision(Provision::Provide)?;
    h.wait_for("clean wait", Duration::from_secs(30))?;
    let provide_to_clean_wait = t.elapsed();
    let t = std::time::Instant::now();
    h.start_agent(AgentOptions::default())?;
    let node = h.wait_for(verdict, CLEAN_TIMEOUT)?;
    Ok((
        node,
        CleaningTimes {
            provide_to_clean_wait,
            agent_to_verdict: t.elapsed(),
        },
    ))
}

/// The conductor asked the agent for its clean steps, ran `erase_devices_metadata` and saw
/// it succeed, and (with `erase_devices_priority = 0`) never ran the shredding
/// `erase_devices`. Read from Ironic's debug log, whose wording is pinned by Ironic 39.0.0.
pub fn verify_steps_ran(h: &Harness) -> Result<()> {
    let log = h.ironic_log();
    let has = |needle: &str| log.lines().any(|l| l.contains(needle));
    ensure!(
        has("Executing agent command clean.get_clean_steps"),
        "the Ironic log shows no clean.get_clean_steps call to the agent"
    );
    ensure!(
        log.lines().any(
            |l| l.contains("Clean step {'step': 'erase_devices_metadata'")
                && l.contains("being executed")
        ),
        "the conductor never started erase_devices_metadata on the agent"
    );
    ensure!(
        has("returned clean command success"),
        "the Ironic log shows no clean step reported successful by the agent"
    );
    ensure!(
        !has("Clean step {'step': 'erase_devices',"),
        "the conductor ran the shredding erase_devices step (erase_devices_priority = 0?)"
    );
    Ok(())
}

/// After cleaning: no signature left anywhere IPA looks, the wiped regions are zero, and
/// every other byte is as before.
pub fn verify_metadata_erased(h: &Harness, disk: &PreparedDisk) -> Result<()> {
    let d = h.disk(disk.index);
    let after = d.read_all()?;
    let allowed = disk.layout.wipe_regions();

    let outside = regions::changes_outside(&disk.before, &after, &allowed);
    if !outside.is_empty() {
        bail!(
            "the agent changed bytes outside the metadata regions IPA wipes:\n{}",
            regions::describe(&outside, 10)
        );
    }
    let leftovers = regions::nonzero_within(&after, &allowed);
    if !leftovers.is_empty() {
        bail!(
            "metadata regions not zeroed (IPA writes zeros over the first {} and last {} sectors \
             of the disk and of each partition):\n{}",
            regions::HEAD_SECTORS,
            regions::TAIL_SECTORS,
            regions::describe(&leftovers, 10)
        );
    }

    let sigs = probe::wipefs_signatures(d.device())?;
    ensure!(sigs.is_empty(), "wipefs still finds signatures: {sigs:?}");
    let whole = probe::blkid_probe(d.device(), None, None)?;
    ensure!(
        whole.is_none(),
        "blkid -p still recognises the disk: {whole:?}"
    );
    for p in &disk.layout.partitions {
        let found = probe::blkid_probe(d.device(), Some(p.byte_offset()), Some(p.byte_len()))?;
        ensure!(
            found.is_none(),
            "blkid -p still recognises the partition area at sector {}: {found:?}",
            p.first_lba
        );
    }
    h.progress("disk checked: no signatures, metadata regions zeroed, all other bytes unchanged");
    Ok(())
}

/// After a refused cleaning: the disk is bit-for-bit what it was.
pub fn verify_untouched(h: &Harness, disk: &PreparedDisk) -> Result<()> {
    let after = h.disk(disk.index).read_all()?;
    let changed = regions::changes_outside(&disk.before, &after, &[]);
    if !changed.is_empty() {
        bail!(
            "the disk was modified although cleaning must refuse it:\n{}",
            regions::describe(&changed, 10)
        );
    }
    h.progress("disk checked: unchanged");
    Ok(())
}

/// `last_error` contains `needle`.
pub fn verify_last_error(node: &Node, needle: &str) -> Result<()> {
    let err = node
        .last_error
        .as_deref()
        .context("the node has no last_error")?;
    ensure!(
        err.contains(needle),
        "last_error {err:?} does not contain {needle:?}"
    );
    Ok(())
}

/// With `erase_devices_priority` set, the conductor ran `erase_devices_metadata` (99) and then
/// `erase_devices` (10), in that order, both reported successful. From Ironic's debug log.
pub fn verify_full_cleaning_order(h: &Harness) -> Result<()> {
    let log = h.ironic_log();
    let started = |step: &str| {
        log.lines().position(|l| {
            l.contains(&format!("Clean step {{'step': '{step}'")) && l.contains("being executed")
        })
    };
    let metadata = started("erase_devices_metadata")
        .context("the conductor never started erase_devices_metadata")?;
    let erase = started("erase_devices").context("the conductor never started erase_devices")?;
    ensure!(
        metadata < erase,
        "erase_devices (priority 10) started before erase_devices_metadata (priority 99)"
    );
    let successes = log
        .lines()
        .filter(|l| l.contains("returned clean command success"))
        .count();
    ensure!(
        successes >= 2,
        "the Ironic log shows {successes} successful clean steps, expected both erase steps"
    );
    Ok(())
}

/// Every byte of the disk is zero.
pub fn verify_zeroed(h: &Harness, index: usize) -> Result<()> {
    let after = h.disk(index).read_all()?;
    if let Some(at) = after.iter().position(|b| *b != 0) {
        bail!(
            "disk {index} is not all zeros: byte {at} is 0x{:02x}",
            after[at]
        );
    }
    h.progress(&format!(
        "disk {index} checked: all {} bytes zero",
        after.len()
    ));
    Ok(())
}

/// The conductor's record of `step`'s result (its debug line "clean command status for node
/// ... on step {'step': '<step>' ...}: {...}", the agent's answer as Ironic parsed it) lists
/// `device` as skipped because of `properties.skip_block_devices`.
pub fn verify_skip_reported(h: &Harness, step: &str, device: &str) -> Result<()> {
    let log = h.ironic_log();
    let line = log
        .lines()
        .rfind(|l| {
            l.contains("clean command status for node")
                && l.contains(&format!("on step {{'step': '{step}'"))
                && l.contains("'command_status': 'SUCCEEDED'")
        })
        .with_context(|| format!("the Ironic log has no successful command status of {step}"))?;
    let key = format!("'{device}': {{");
    let at = line
        .find(&key)
        .with_context(|| format!("{step}'s result does not mention {device}: {line}"))?;
    // The device's entry: up to the brace that closes it (the matching hint is nested).
    let entry = &line[at + key.len()..];
    let mut depth = 1;
    let end = entry
        .char_indices()
        .find_map(|(i, c)| {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            (depth == 0).then_some(i)
        })
        .unwrap_or(entry.len());
    let entry = &entry[..end];
    ensure!(
        entry.contains("'skipped': 'listed in properties.skip_block_devices'")
            && entry.contains("'skip_block_devices': {"),
        "{step}'s result does not say {device} was skipped for the skip list: {{{entry}}}"
    );
    h.progress(&format!(
        "{step}: {device} reported skipped (skip_block_devices)"
    ));
    Ok(())
}

/// The disk's bytes are exactly `before`.
pub fn verify_unchanged(h: &Harness, index: usize, before: &[u8]) -> Result<()> {
    let after = h.disk(index).read_all()?;
    let changed = regions::changes_outside(before, &after, &[]);
    if !changed.is_empty() {
        bail!(
            "disk {index} ({}) was modified although it is in skip_block_devices:\n{}",
            h.disk(index).device().display(),
            regions::describe(&changed, 10)
        );
    }
    h.progress(&format!("disk {index} checked: byte for byte unchanged"));
    Ok(())
}
