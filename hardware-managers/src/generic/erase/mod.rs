//! The erase steps: `erase_devices` (every disk completely) and `erase_devices_express`
//! (hardware erase where it is fast, metadata elsewhere), with IPA's method order and knobs.
//!
//! # `erase_devices`
//! Every disk passes the checks first (not in the node's `skip_block_devices`, see
//! [`super::skip_list`]; allowed by the guard, not virtual media, not a RAID
//! member, not read-only unless `agent_erase_skip_read_only`, no shared cluster filesystem),
//! so a refusal leaves every disk untouched. Then each disk is handed, on its own thread (at
//! most `disk_erasure_concurrency` at once), to the best manager's
//! [`crate::HardwareManager::erase_block_device`], as IPA dispatches `erase_block_device`:
//! a vendor manager erases the devices it knows and the generic manager the others.
//!
//! The generic manager's erase of one disk ([`erase_disk`]) tries, in IPA's order:
//! 1. on NVMe (`agent_enable_nvme_secure_erase`, default on): [`nvme`] Sanitize, else Format
//!    NVM with a secure erase setting;
//! 2. on anything else (`agent_enable_ata_secure_erase`, default on): [`ata`] SECURITY ERASE
//!    UNIT; on drives that are not ATA, [`scsi`] SANITIZE;
//! 3. with `agent_enable_discard_erase` (or `ipa-enable-discard-erase`): [`discard`];
//! 4. the [`overwrite`]: `agent_erase_devices_iterations` random passes, then zeros.
//!
//! A method the device does not support is skipped and noted in the report. A method that is
//! supported but fails (a frozen ATA drive, a failed sanitize) stops the erase with its error
//! unless the node allows the fallback (`agent_continue_if_secure_erase_failed`, or the older
//! `agent_continue_if_ata_erase_failed`); discard, when enabled, is tried before that
//! decision, as in IPA. Unlike IPA, discard is also tried when no hardware erase is
//! supported at all (IPA only tries it after a failure): an operator who enabled it accepts a
//! verified discard in place of hours of overwriting.
//!
//! Every hardware method is verified by [`verify::Markers`]: markers are written at sampled
//! positions before the erase and must be gone (or zeros, where the method guarantees
//! zeros) afterwards. The overwrite verifies its own pattern. Each device's report names the
//! method used, the verification, and why faster methods were not used.

pub mod ata;
pub mod discard;
pub mod io;
pub mod nvme;
mod outcome;
pub mod overwrite;
pub mod scsi;
mod settings;
pub mod sg;
pub mod verify;

use std::fs::File;
use std::io as stdio;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use blockdev::progress;
use ironic_protocol::Node;
use serde_json::{json, Map, Value};

use super::options::GenericOptions;
use super::{metadata_erase, protected, skip_list};
use crate::HardwareError;
use crate::{Disk, DiskRegion};
use blockdev::partition_table::PartitionTables;
use blockdev::region::Region;
use blockdev::signatures::{self, LINUX_RAID_MEMBER};
use blockdev::{rescan, DeviceGuard, WritableDisk};

pub use outcome::{Attempt, EraseError, Refusal, Stage};
pub use settings::EraseSettings;
use settings::ACTION;
pub use verify::Expect;

/// Whether the disk is an NVMe namespace (IPA: the name starts with `/dev/nvme`).
pub fn is_nvme(disk: &Disk) -> bool {
    disk.kname.starts_with("nvme")
}

/// The erase methods as [`erase_disk`] uses them; [`DeviceMethods`] on real devices.
pub trait Methods: Sync {
    fn nvme(&self, disk: &Disk) -> Attempt;
    fn ata(&self, disk: &Disk) -> Attempt;
    fn scsi(&self, disk: &Disk) -> Attempt;
    fn discard(&self, disk: &Disk) -> Attempt;
    fn overwrite(
        &self,
        disk: &Disk,
        settings: &EraseSettings,
    ) -> Result<Map<String, Value>, String>;
}

/// The methods on the device nodes the guard allows, with sysfs at the guard's `sys_root`.
#[derive(Debug, Clone)]
pub struct DeviceMethods {
    pub guard: DeviceGuard,
    pub sys_root: PathBuf,
    pub nvme: nvme::Options,
    /// Between progress polls of a SCSI sanitize.
    pub scsi_poll: Duration,
}

impl DeviceMethods {
    pub fn new(guard: &DeviceGuard) -> Self {
        DeviceMethods {
            guard: guard.clone(),
            sys_root: guard.sys_root().to_path_buf(),
            nvme: nvme::Options::default(),
            scsi_poll: Duration::from_secs(5),
        }
    }
}

fn open_for_commands(disk: &Disk) -> Result<File, Attempt> {
    // Read-only suffices for passthrough commands (they need CAP_SYS_ADMIN/RAWIO, not a
    // writable descriptor); O_NONBLOCK would be needed only for removable media.
    File::open(&disk.path)
        .map_err(|e| Attempt::Unsupported(format!("opening {}: {e}", disk.path.display())))
}

impl Methods for DeviceMethods {
    fn nvme(&self, disk: &Disk) -> Attempt {
        let file = match open_for_commands(disk) {
            Ok(f) => f,
            Err(a) => return a,
        };
        let t = nvme::NvmeDevice::new(&file);
        let siblings = nvme::sibling_namespaces(&self.sys_root, &disk.kname);
        let name = disk.path.display().to_string();
        hardware_erase(
            &self.guard,
            disk,
            || nvme::plan(&t, &siblings, &self.nvme),
            |p| p.expect(),
            |p| nvme::run(&t, &name, p, &self.nvme),
        )
    }

    fn ata(&self, disk: &Disk) -> Attempt {
        let file = match open_for_commands(disk) {
            Ok(f) => f,
            Err(a) => return a,
        };
        let t = sg::SgDevice::new(&file);
        let name = disk.path.display().to_string();
        hardware_erase(
            &self.guard,
            disk,
            || ata::plan(&t, &name),
            |p| p.expect(),
            |p| ata::run(&t, &name, p),
        )
    }

    fn scsi(&self, disk: &Disk) -> Attempt {
        let file = match open_for_commands(disk) {
            Ok(f) => f,
            Err(a) => return a,
        };
        let t = sg::SgDevice::new(&file);
        let name = disk.path.display().to_string();
        hardware_erase(
            &self.guard,
            disk,
            || scsi::plan(&t),
            |p| p.expect(),
            |p| scsi::run(&t, &name, p, self.scsi_poll),
        )
    }

    fn discard(&self, disk: &Disk) -> Attempt {
        hardware_erase(
            &self.guard,
            disk,
            || discard::plan(&self.sys_root, &disk.kname),
            |_| Expect::Zeros,
            |max| {
                let target = WritableDisk::open(&disk.path, &self.guard, ACTION)
                    .map_err(|e| format!("opening for discard: {e}"))?;
                discard::run(&target, disk.size, *max)
            },
        )
    }

    fn overwrite(
        &self,
        disk: &Disk,
        settings: &EraseSettings,
    ) -> Result<Map<String, Value>, String> {
        overwrite::overwrite(&self.guard, disk, settings)
    }
}

/// One verified hardware erase: plan (nothing written), plant the markers, run, make the
/// kernel forget what it cached, check the markers.
pub fn hardware_erase<P>(
    guard: &DeviceGuard,
    disk: &Disk,
    plan: impl FnOnce() -> Result<P, Refusal>,
    expect: impl Fn(&P) -> Expect,
    run: impl FnOnce(&P) -> Result<Map<String, Value>, String>,
) -> Attempt {
    let plan = match plan() {
        Ok(p) => p,
        Err(Refusal::Unsupported(why)) => return Attempt::Unsupported(why),
        Err(Refusal::Failed(why)) => return Attempt::Failed(EraseError::at(Stage::Plan, why)),
    };
    if let Err(e) = flush_disk(disk) {
        return Attempt::Failed(EraseError::at(Stage::Flush, e));
    }
    let markers = match WritableDisk::open(&disk.path, guard, ACTION)
        .map_err(|e| e.to_string())
        .and_then(|target| verify::Markers::plant(target).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => return Attempt::Failed(EraseError::at(Stage::Markers, e)),
    };
    let mut report = match run(&plan) {
        Ok(r) => r,
        Err(e) => return Attempt::Failed(EraseError::at(Stage::Run, e)),
    };
    if let Err(e) = flush_disk(disk) {
        return Attempt::Failed(EraseError::at(Stage::Flush, e));
    }
    match markers.check(expect(&plan)) {
        Ok(v) => {
            report.insert("verification".into(), v);
            if let Err(e) = forget_partitions(disk) {
                return Attempt::Failed(EraseError::at(Stage::Rescan, e));
            }
            Attempt::Done(report)
        }
        Err(e) => Attempt::Failed(EraseError::at(Stage::Verify, e)),
    }
}

/// Drops the page cache of the disk and its partitions (writing back anything dirty).
fn flush_disk(disk: &Disk) -> Result<(), String> {
    for p in disk
        .partitions
        .iter()
        .map(|p| p.path.as_path())
        .chain([disk.path.as_path()])
    {
        rescan::flush_buffers(p).map_err(|e| format!("flushing {}: {e}", p.display()))?;
    }
    Ok(())
}

fn forget_partitions(disk: &Disk) -> Result<(), String> {
    let file = File::open(&disk.path).map_err(|e| format!("opening: {e}"))?;
    rescan::reread_partition_table(&file)
        .map_err(|e| format!("re-reading the partition table (is a partition in use?): {e}"))
}

/// What [`erase_disk`] learned on its way down the list of methods.
#[derive(Default)]
struct Trail {
    /// `{method, reason}` of each method not used.
    not_used: Vec<Value>,
    /// The error of a secure erase that was supported but failed.
    secure_error: Option<EraseError>,
}

impl Trail {
    fn note(&mut self, device: &str, method: &str, why: String) {
        tracing::info!(device, method, reason = %why, "erase method not used");
        self.not_used.push(json!({"method": method, "reason": why}));
    }

    /// Records an attempt; returns its report when it erased the device.
    fn record(
        &mut self,
        device: &str,
        method: &str,
        attempt: Attempt,
    ) -> Option<Map<String, Value>> {
        match attempt {
            Attempt::Done(r) => return Some(r),
            Attempt::Unsupported(why) => self.note(device, method, why),
            Attempt::Failed(e) => {
                tracing::warn!(device, method, stage = ?e.stage, error = %e, "secure erase failed");
                self.note(device, method, format!("failed: {e}"));
                self.secure_error = Some(e);
            }
        }
        None
    }

    fn finish(self, mut report: Map<String, Value>) -> Value {
        if !self.not_used.is_empty() {
            report.insert("methods_not_used".into(), Value::Array(self.not_used));
        }
        if let Some(e) = self.secure_error {
            report.insert("secure_erase_error".into(), json!(e.to_string()));
        }
        Value::Object(report)
    }
}

/// IPA's `erase_block_device` of the generic manager: the best method for `disk`, with the
/// fallbacks the settings allow. The error is the operator's message.
pub fn erase_disk(
    disk: &Disk,
    settings: &EraseSettings,
    methods: &dyn Methods,
) -> Result<Value, String> {
    let name = disk.path.display().to_string();
    let mut trail = Trail::default();
    let method = |m: &str| {
        if let Some(p) = progress::current() {
            p.set_method(m);
        }
    };
    let erased = if is_nvme(disk) {
        if settings.nvme_secure_erase {
            method("nvme_secure_erase");
            trail.record(&name, "nvme_secure_erase", methods.nvme(disk))
        } else {
            let why = "disabled (agent_enable_nvme_secure_erase)".to_string();
            trail.note(&name, "nvme_secure_erase", why);
            None
        }
    } else if settings.ata_secure_erase {
        method("ata_security_erase");
        let ata = methods.ata(disk);
        let not_ata = matches!(ata, Attempt::Unsupported(_));
        let erased = trail.record(&name, "ata_security_erase", ata);
        if not_ata {
            method("scsi_sanitize");
            trail.record(&name, "scsi_sanitize", methods.scsi(disk))
        } else {
            erased
        }
    } else {
        let why = "disabled (agent_enable_ata_secure_erase)".to_string();
        trail.note(&name, "ata_security_erase", why);
        None
    };
    if let Some(r) = erased {
        return Ok(trail.finish(r));
    }
    if settings.discard {
        method("discard");
        match methods.discard(disk) {
            Attempt::Done(r) => {
                tracing::info!(
                    device = name,
                    "erased by discard, as secure erase was not available"
                );
                return Ok(trail.finish(r));
            }
            other => {
                let why = other.reason().unwrap_or_default();
                trail.note(&name, "discard", why)
            }
        }
    }
    if let Some(e) = &trail.secure_error {
        if !settings.continue_if_secure_erase_failed {
            return Err(format!(
                "Failed to invoke secure erase, fallback to overwrite is not enabled \
                 (agent_continue_if_secure_erase_failed): {e}"
            ));
        }
        tracing::warn!(device = name, error = %e, "secure erase failed, falling back to overwrite");
    }
    method("overwrite");
    let r = methods.overwrite(disk, settings)?;
    Ok(trail.finish(r))
}

/// The checks of both erase steps, on every disk before anything is written; returns the
/// disks to erase and records the skipped ones (first the node's `skip_block_devices`) in
/// `report`. `read_only_fails`: a read-only
/// disk fails the step unless the node allows skipping it (`erase_devices`); otherwise it is
/// skipped (`erase_devices_express`, like IPA's `_list_erasable_devices`).
fn erasable<'a>(
    guard: &DeviceGuard,
    disks: &'a [Disk],
    node: &Node,
    options: &GenericOptions,
    settings: &EraseSettings,
    read_only_fails: bool,
    report: &mut Map<String, Value>,
) -> Result<Vec<&'a Disk>, HardwareError> {
    let mut candidates = Vec::new();
    for disk in skip_list::apply(node, disks, report)? {
        let name = disk.path.display().to_string();
        if disk.virtual_media {
            tracing::info!(device = name, "skipping erase of virtual media device");
            report.insert(name, json!({"skipped": "virtual media device"}));
            continue;
        }
        if disk.read_only {
            if read_only_fails && !settings.skip_read_only {
                return Err(HardwareError::BlockDeviceErase(format!(
                    "Failed to invoke erase of device {name} as the device is flagged \
                     read-only, and the conductor has not signaled this is a permitted case."
                )));
            }
            tracing::info!(device = name, "skipping erase of read-only device");
            report.insert(name, json!({"skipped": "read-only device"}));
            continue;
        }
        guard.check(&disk.path, ACTION)?;
        if is_raid_member(disk)? {
            tracing::info!(device = name, "skipping erase of RAID member device");
            report.insert(name, json!({"skipped": "Linux RAID member"}));
            continue;
        }
        candidates.push(disk);
    }
    protected::check_disks(&candidates, node, options)?;
    Ok(candidates)
}

/// The `erase_devices` step: `erase_one` erases a disk (the managers' `erase_block_device`).
pub(crate) fn erase_devices(
    guard: &DeviceGuard,
    disks: &[Disk],
    node: &Node,
    options: &GenericOptions,
    erase_one: &(dyn Fn(&Disk) -> Result<Value, HardwareError> + Sync),
) -> Result<Value, HardwareError> {
    let settings = EraseSettings::from_node(node, options)?;
    let mut report = Map::new();
    let candidates = erasable(guard, disks, node, options, &settings, true, &mut report)?;
    // Each disk's erase is a progress task of the thread that runs it; the methods report
    // into it (`blockdev::progress::current`), whichever manager erases the disk.
    let results = run_parallel(&candidates, settings.concurrency, |disk| {
        let _progress = progress::start("erase", &disk.path.display().to_string(), Some(disk.size));
        erase_one(disk)
    });
    let mut errors = Vec::new();
    for (disk, result) in candidates.iter().zip(results) {
        let name = disk.path.display().to_string();
        match result {
            Ok(r) => {
                tracing::info!(device = name, report = %r, "erased");
                report.insert(name, r);
            }
            Err(e) => {
                tracing::error!(device = name, error = %e, "erase failed");
                errors.push(format!("\"{name}\": {e}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(report))
    } else {
        Err(HardwareError::BlockDeviceErase(format!(
            "Failed to erase the device(s): {}",
            errors.join("; ")
        )))
    }
}

/// The `erase_devices_express` step (IPA's): NVMe secure erase where it works, the
/// metadata erase of `erase_devices_metadata` everywhere else. Disks one after the other.
pub(crate) fn erase_devices_express(
    guard: &DeviceGuard,
    disks: &[Disk],
    node: &Node,
    options: &GenericOptions,
    methods: &dyn Methods,
) -> Result<Value, HardwareError> {
    let settings = EraseSettings::from_node(node, options)?;
    let mut report = Map::new();
    let candidates = erasable(guard, disks, node, options, &settings, false, &mut report)?;
    let mut errors = Vec::new();
    for disk in candidates {
        let name = disk.path.display().to_string();
        let mut secure_error = None;
        if is_nvme(disk) && settings.nvme_secure_erase {
            match methods.nvme(disk) {
                Attempt::Done(r) => {
                    tracing::info!(device = name, report = ?r, "erased");
                    report.insert(name, Value::Object(r));
                    continue;
                }
                other => {
                    let why = other.reason().unwrap_or_default();
                    tracing::warn!(device = name, error = %why,
                        "NVMe secure erase not possible, erasing the metadata");
                    secure_error = Some(why);
                }
            }
        }
        let outcome = WritableDisk::open(&disk.path, guard, ACTION)
            .map(|target| metadata_erase::erase_disk(target.file(), disk));
        match outcome {
            Ok(outcome) => {
                for r in &outcome.regions {
                    let mut v = r.to_json(disk);
                    if r.whole_disk {
                        v["method"] = json!("metadata");
                        if let Some(e) = &secure_error {
                            v["nvme_secure_erase_error"] = json!(e);
                        }
                    }
                    report.insert(r.name.clone(), v);
                }
                for (device, e) in outcome.errors {
                    errors.push(match &secure_error {
                        Some(s) => format!(
                            "\"{device}\": Secure erase failed: {s}. Fallback to metadata \
                             erase also failed: {e}."
                        ),
                        None => format!("\"{device}\": {e}"),
                    });
                }
            }
            Err(e) => errors.push(format!("\"{name}\": {e}")),
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(report))
    } else {
        Err(HardwareError::BlockDeviceErase(format!(
            "Failed to conduct an express erase on the device(s): {}",
            errors.join("\n")
        )))
    }
}

/// Calls `work` on every item on at most `concurrency` threads; results in item order.
pub(crate) fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    concurrency: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..concurrency.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = work(item);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect()
}

/// Whether the disk or one of its partitions carries an MD RAID superblock or is held by an
/// MD array.
fn is_raid_member(disk: &Disk) -> Result<bool, HardwareError> {
    let io = |e| HardwareError::io(format!("reading {}", disk.path.display()), e);
    let file = File::open(&disk.path).map_err(io)?;
    let tables = PartitionTables::read(&file, disk.size, disk.logical_sector_size).map_err(io)?;
    for region in disk.regions(&tables) {
        if region_is_raid_member(&file, &region).map_err(io)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn region_is_raid_member(file: &File, region: &DiskRegion) -> stdio::Result<bool> {
    if region.holders.iter().any(|h| h.starts_with("md")) {
        return Ok(true);
    }
    let found = signatures::probe(&Region::new(file, region.extent))?;
    Ok(found.iter().any(|s| s.kind == LINUX_RAID_MEMBER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generic::protected::tests::disk;
    use std::path::Path;
    use std::sync::Mutex as StdMutex;

    fn node(info: Value) -> Node {
        serde_json::from_value(json!({ "driver_internal_info": info })).unwrap()
    }

    fn settings(info: Value) -> EraseSettings {
        EraseSettings::from_node(&node(info), &GenericOptions::default()).unwrap()
    }

    #[test]
    fn settings_from_driver_internal_info() {
        let s = EraseSettings::from_node(&Node::default(), &GenericOptions::default()).unwrap();
        assert_eq!(
            s,
            EraseSettings {
                random_passes: 1,
                zeroize: true,
                concurrency: 4,
                skip_read_only: false,
                nvme_secure_erase: true,
                ata_secure_erase: true,
                continue_if_secure_erase_failed: false,
                discard: false,
            }
        );
        let s = settings(json!({
            "agent_erase_devices_iterations": "3",
            "agent_erase_devices_zeroize": false,
            "disk_erasure_concurrency": 0,
            "agent_erase_skip_read_only": true,
            "agent_enable_nvme_secure_erase": false,
            "agent_enable_ata_secure_erase": "False",
            "agent_continue_if_ata_erase_failed": true,
            "agent_enable_discard_erase": true,
        }));
        assert_eq!(
            (s.random_passes, s.zeroize, s.concurrency, s.skip_read_only),
            (3, false, 1, true)
        );
        assert!(!s.nvme_secure_erase && !s.ata_secure_erase);
        assert!(
            s.continue_if_secure_erase_failed,
            "the deprecated name still counts"
        );
        assert!(s.discard);
        // The new name wins over the deprecated one, as in IPA.
        let s = settings(json!({
            "agent_continue_if_secure_erase_failed": false,
            "agent_continue_if_ata_erase_failed": true,
        }));
        assert!(!s.continue_if_secure_erase_failed);
        // The agent's option is the default of the node's discard flag.
        let on = GenericOptions {
            enable_discard_erase: true,
            ..GenericOptions::default()
        };
        assert!(
            EraseSettings::from_node(&Node::default(), &on)
                .unwrap()
                .discard
        );
        assert!(
            !EraseSettings::from_node(&node(json!({"agent_enable_discard_erase": false})), &on)
                .unwrap()
                .discard
        );
        assert!(EraseSettings::from_node(
            &node(json!({"agent_erase_devices_iterations": -1})),
            &GenericOptions::default()
        )
        .is_err());
    }

    /// Methods answering from a script, recording the order of calls.
    struct Script {
        nvme: Attempt,
        ata: Attempt,
        scsi: Attempt,
        discard: Attempt,
        calls: StdMutex<Vec<&'static str>>,
        /// The progress method the thread's task showed at each call.
        shown: StdMutex<Vec<String>>,
    }

    fn unsupported() -> Attempt {
        Attempt::Unsupported("no".into())
    }

    fn done(method: &str) -> Attempt {
        let mut m = Map::new();
        m.insert("method".into(), json!(method));
        Attempt::Done(m)
    }

    impl Script {
        fn new() -> Script {
            Script {
                nvme: unsupported(),
                ata: unsupported(),
                scsi: unsupported(),
                discard: unsupported(),
                calls: StdMutex::new(Vec::new()),
                shown: StdMutex::new(Vec::new()),
            }
        }
        fn note_shown(&self) {
            let m = progress::current().and_then(|t| t.snapshot().method);
            self.shown.lock().unwrap().push(m.unwrap_or_default());
        }
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }
        fn call(&self, name: &'static str, a: &Attempt) -> Attempt {
            self.calls.lock().unwrap().push(name);
            self.note_shown();
            a.clone()
        }
    }

    impl Methods for Script {
        fn nvme(&self, _: &Disk) -> Attempt {
            self.call("nvme", &self.nvme)
        }
        fn ata(&self, _: &Disk) -> Attempt {
            self.call("ata", &self.ata)
        }
        fn scsi(&self, _: &Disk) -> Attempt {
            self.call("scsi", &self.scsi)
        }
        fn discard(&self, _: &Disk) -> Attempt {
            self.call("discard", &self.discard)
        }
        fn overwrite(&self, _: &Disk, _: &EraseSettings) -> Result<Map<String, Value>, String> {
            self.calls.lock().unwrap().push("overwrite");
            self.note_shown();
            let mut m = Map::new();
            m.insert("method".into(), json!("overwrite"));
            Ok(m)
        }
    }

    fn named(kname: &str) -> Disk {
        let mut d = disk(1 << 30, &[]);
        d.kname = kname.into();
        d.path = format!("/dev/{kname}").into();
        d
    }

    fn method(v: &Value) -> &str {
        v["method"].as_str().unwrap()
    }

    #[test]
    fn nvme_secure_erase_first_on_nvme() {
        let mut m = Script::new();
        m.nvme = done("nvme_format_user_data_erase");
        let r = erase_disk(&named("nvme0n1"), &settings(json!({})), &m).unwrap();
        assert_eq!(method(&r), "nvme_format_user_data_erase");
        assert_eq!(m.calls(), ["nvme"]);
        assert!(r.get("methods_not_used").is_none());
    }

    #[test]
    fn the_progress_task_names_each_method_as_it_is_tried() {
        let m = Script::new();
        let _task = progress::start("erase", "/dev/sda", Some(1 << 30));
        erase_disk(&named("sda"), &settings(json!({})), &m).unwrap();
        assert_eq!(
            *m.shown.lock().unwrap(),
            ["ata_security_erase", "scsi_sanitize", "overwrite"]
        );
    }

    #[test]
    fn ata_then_scsi_then_overwrite_on_other_disks() {
        let m = Script::new();
        let r = erase_disk(&named("sda"), &settings(json!({})), &m).unwrap();
        assert_eq!(method(&r), "overwrite");
        assert_eq!(m.calls(), ["ata", "scsi", "overwrite"]);
        let not_used: Vec<&str> = r["methods_not_used"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["method"].as_str().unwrap())
            .collect();
        assert_eq!(not_used, ["ata_security_erase", "scsi_sanitize"]);
        // A SAS drive: ATA unsupported, SCSI sanitize works.
        let mut m = Script::new();
        m.scsi = done("scsi_sanitize_crypto_erase");
        let r = erase_disk(&named("sdb"), &settings(json!({})), &m).unwrap();
        assert_eq!(method(&r), "scsi_sanitize_crypto_erase");
        assert_eq!(m.calls(), ["ata", "scsi"]);
        // An NVMe disk is never sent ATA or SCSI commands.
        let m = Script::new();
        erase_disk(&named("nvme1n1"), &settings(json!({})), &m).unwrap();
        assert_eq!(m.calls(), ["nvme", "overwrite"]);
    }

    #[test]
    fn knobs_disable_hardware_erase() {
        let mut m = Script::new();
        m.nvme = done("nvme");
        m.ata = done("ata");
        let s = settings(json!({
            "agent_enable_nvme_secure_erase": false,
            "agent_enable_ata_secure_erase": false,
        }));
        assert_eq!(
            method(&erase_disk(&named("nvme0n1"), &s, &m).unwrap()),
            "overwrite"
        );
        assert_eq!(
            method(&erase_disk(&named("sda"), &s, &m).unwrap()),
            "overwrite"
        );
        assert_eq!(m.calls(), ["overwrite", "overwrite"]);
    }

    #[test]
    fn discard_only_when_enabled() {
        let mut m = Script::new();
        m.discard = done("discard");
        erase_disk(&named("vda"), &settings(json!({})), &m).unwrap();
        assert_eq!(m.calls(), ["ata", "scsi", "overwrite"]);
        let m2 = Script {
            discard: done("secure_discard"),
            ..Script::new()
        };
        let r = erase_disk(
            &named("vda"),
            &settings(json!({"agent_enable_discard_erase": true})),
            &m2,
        )
        .unwrap();
        assert_eq!(method(&r), "secure_discard");
        assert_eq!(m2.calls(), ["ata", "scsi", "discard"]);
        // A discard that fails verification falls through to the overwrite.
        let m3 = Script {
            discard: Attempt::Failed(EraseError::at(Stage::Verify, "verification failed")),
            ..Script::new()
        };
        let r = erase_disk(
            &named("vda"),
            &settings(json!({"agent_enable_discard_erase": true})),
            &m3,
        )
        .unwrap();
        assert_eq!(method(&r), "overwrite");
    }

    #[test]
    fn failed_secure_erase_stops_unless_fallback_is_allowed() {
        let frozen = || Attempt::Failed(EraseError::at(Stage::Plan, "/dev/sda is security-frozen"));
        let m = Script {
            ata: frozen(),
            ..Script::new()
        };
        let err = erase_disk(&named("sda"), &settings(json!({})), &m).unwrap_err();
        assert!(
            err.contains("fallback to overwrite is not enabled"),
            "{err}"
        );
        assert!(err.contains("security-frozen"), "{err}");
        assert_eq!(
            m.calls(),
            ["ata"],
            "no SCSI sanitize on an ATA drive, no overwrite"
        );
        // Allowed: overwrite, and the report keeps the reason.
        let m = Script {
            ata: frozen(),
            ..Script::new()
        };
        let r = erase_disk(
            &named("sda"),
            &settings(json!({"agent_continue_if_secure_erase_failed": true})),
            &m,
        )
        .unwrap();
        assert_eq!(method(&r), "overwrite");
        assert_eq!(r["secure_erase_error"], "/dev/sda is security-frozen");
        // Discard, when enabled, comes before the decision.
        let m = Script {
            nvme: Attempt::Failed(EraseError::at(Stage::Run, "Format NVM failed")),
            discard: done("discard"),
            ..Script::new()
        };
        let r = erase_disk(
            &named("nvme0n1"),
            &settings(json!({"agent_enable_discard_erase": true})),
            &m,
        )
        .unwrap();
        assert_eq!(method(&r), "discard");
        assert_eq!(r["secure_erase_error"], "Format NVM failed");
    }

    #[test]
    fn parallel_keeps_order_and_bounds_threads() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<u32> = (0..10).collect();
        let out = run_parallel(&items, 3, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    fn file_disk(dir: &Path, kname: &str, len: usize) -> Disk {
        let path = dir.join(kname);
        std::fs::write(&path, vec![0x5au8; len]).unwrap();
        let mut d = disk(len as u64, &[]);
        d.kname = kname.into();
        d.info.name = path.display().to_string();
        d.path = path;
        d
    }

    #[test]
    fn skip_listed_disks_are_never_erased_by_any_step() {
        let dir = tempfile::tempdir().unwrap();
        let kept = file_disk(dir.path(), "sda", 4 << 20);
        let erased = file_disk(dir.path(), "sdb", 4 << 20);
        let guard = DeviceGuard::new(true, vec![], dir.path());
        let node: Node = serde_json::from_value(json!({"properties": {"skip_block_devices": [
            {"name": kept.info.name}]}}))
        .unwrap();
        let disks = vec![kept.clone(), erased.clone()];
        let options = GenericOptions::default();
        let untouched = || {
            let data = std::fs::read(&kept.path).unwrap();
            assert!(
                data.iter().all(|b| *b == 0x5a),
                "the listed disk was written"
            );
        };
        let skipped = |r: &Value| {
            let why = r[kept.info.name.as_str()]["skipped"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(why, "listed in properties.skip_block_devices", "{r}");
        };

        let calls = StdMutex::new(Vec::new());
        let r = erase_devices(&guard, &disks, &node, &options, &|d| {
            calls.lock().unwrap().push(d.kname.clone());
            Ok(json!({"method": "test"}))
        })
        .unwrap();
        assert_eq!(*calls.lock().unwrap(), ["sdb"]);
        skipped(&r);
        untouched();

        let r = erase_devices_express(&guard, &disks, &node, &options, &Script::new()).unwrap();
        skipped(&r);
        assert_eq!(r[erased.info.name.as_str()]["method"], "metadata");
        untouched();

        let r = metadata_erase::erase_devices_metadata(&guard, &disks, &node, &options).unwrap();
        skipped(&r);
        assert!(r[erased.info.name.as_str()]["zeroed"].is_array(), "{r}");
        untouched();
        let head = std::fs::read(&erased.path).unwrap();
        assert!(head[..34 * 512].iter().all(|b| *b == 0));

        // A protected (here: unparsable) list fails each step before anything is written.
        std::fs::write(&erased.path, vec![0x5au8; 4 << 20]).unwrap();
        let bad: Node =
            serde_json::from_value(json!({"properties": {"skip_block_devices": "sda"}})).unwrap();
        let no_erase = |_: &Disk| -> Result<Value, HardwareError> { unreachable!() };
        assert!(erase_devices(&guard, &disks, &bad, &options, &no_erase).is_err());
        assert!(erase_devices_express(&guard, &disks, &bad, &options, &Script::new()).is_err());
        assert!(metadata_erase::erase_devices_metadata(&guard, &disks, &bad, &options).is_err());
        let data = std::fs::read(&erased.path).unwrap();
        assert!(data.iter().all(|b| *b == 0x5a));
    }

    #[test]
    fn hardware_erase_plants_and_checks_markers() {
        let dir = tempfile::tempdir().unwrap();
        let d = file_disk(dir.path(), "nvme0n1", 8 << 20);
        let guard = DeviceGuard::new(true, vec![], dir.path());
        // A method that erases: zeros everywhere.
        let a = hardware_erase(
            &guard,
            &d,
            || Ok(()),
            |_| Expect::Zeros,
            |_| {
                std::fs::write(&d.path, vec![0u8; 8 << 20]).unwrap();
                Ok(Map::new())
            },
        );
        match a {
            Attempt::Done(r) => assert_eq!(r["verification"]["ok"], true),
            other => panic!("{other:?}"),
        }
        // A method that claims success and does nothing: caught.
        let a = hardware_erase(
            &guard,
            &d,
            || Ok(()),
            |_| Expect::MarkersGone,
            |_| Ok(Map::new()),
        );
        match a {
            Attempt::Failed(e) => {
                assert_eq!(e.stage, Stage::Verify);
                assert!(e.reason.contains("still hold the data"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // Refusals write nothing.
        let before = std::fs::read(&d.path).unwrap();
        let a = hardware_erase(
            &guard,
            &d,
            || Err::<(), _>(Refusal::Unsupported("nope".into())),
            |_| Expect::Zeros,
            |_| unreachable!(),
        );
        assert_eq!(a, Attempt::Unsupported("nope".into()));
        assert_eq!(std::fs::read(&d.path).unwrap(), before);
        // Outside a ramdisk, a device the guard does not allow gets no markers and no erase.
        let workstation = DeviceGuard::new(false, vec![], dir.path());
        let a = hardware_erase(
            &workstation,
            &d,
            || Ok(()),
            |_| Expect::Zeros,
            |_| unreachable!(),
        );
        match a {
            Attempt::Failed(e) => {
                assert_eq!(e.stage, Stage::Markers);
                assert!(e
                    .to_string()
                    .starts_with("writing the verification markers: "));
                assert!(e.reason.contains("--allow-device"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&d.path).unwrap(), before);
    }

    #[test]
    fn express_uses_nvme_erase_or_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let nvme = file_disk(dir.path(), "nvme0n1", 4 << 20);
        let sata = file_disk(dir.path(), "sda", 4 << 20);
        let guard = DeviceGuard::new(true, vec![], dir.path());
        let m = Script {
            nvme: done("nvme_format_user_data_erase"),
            ..Script::new()
        };
        let disks = vec![nvme.clone(), sata.clone()];
        let r = erase_devices_express(
            &guard,
            &disks,
            &Node::default(),
            &GenericOptions::default(),
            &m,
        )
        .unwrap();
        assert_eq!(m.calls(), ["nvme"]);
        assert_eq!(
            r[nvme.path.to_str().unwrap()]["method"],
            "nvme_format_user_data_erase"
        );
        let s = &r[sata.path.to_str().unwrap()];
        assert_eq!(s["method"], "metadata");
        assert_eq!(
            s["zeroed"],
            json!([[0, 34 * 512], [(4 << 20) - 33 * 512, 33 * 512]])
        );
        let data = std::fs::read(&sata.path).unwrap();
        assert!(data[..34 * 512].iter().all(|b| *b == 0));
        assert!(data[34 * 512..(4 << 20) - 33 * 512]
            .iter()
            .all(|b| *b == 0x5a));
        // NVMe erase unavailable: metadata, with the reason.
        let m = Script::new();
        let r = erase_devices_express(
            &guard,
            std::slice::from_ref(&nvme),
            &Node::default(),
            &GenericOptions::default(),
            &m,
        )
        .unwrap();
        let n = &r[nvme.path.to_str().unwrap()];
        assert_eq!(n["method"], "metadata");
        assert_eq!(n["nvme_secure_erase_error"], "no");
    }
}
