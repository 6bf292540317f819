//! The deploy scenario: a node with `instance_info` pointing at an image on a real HTTP
//! server, `active` requested, the agent booted, and the checks of what reached the loop disk
//! (byte for byte, against the image and the changes a deploy legitimately makes).

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::agent::AgentOptions;
use crate::gpt::{self, Table};
use crate::harness::Harness;
use crate::images::{self, Digests};
use crate::ironic_api::{Node, NodeSpec, Provision};
use crate::loopdev::{Fill, SECTOR};
use crate::probe;

/// The default disk: a 5 GiB sparse loop device, the smallest disk of at least 4 GiB, which
/// is the one the agent picks without root device hints.
pub const DISK_SIZE: u64 = 5 << 30;

/// How long a working agent may take from its start to the verdict (a silent one makes
/// Ironic fail the node at ~150 s, see `IronicConfig::callback_timeout`).
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(240);

/// Ironic's knobs for deploy tests: no automated cleaning, so `provide` is immediate.
pub fn ironic_config(c: &mut crate::ironic::IronicConfig) {
    c.automated_clean = false;
}

/// A node as a deploy needs it: realistic memory (Ironic compares some images with it),
/// Lenovo (see [`NodeSpec::to_json`]), optional root device hints.
pub fn node_spec(name: &str, root_device: Option<Value>) -> NodeSpec {
    NodeSpec {
        name: name.to_string(),
        memory_mb: 4096,
        local_gb: 5,
        root_device,
        ..NodeSpec::default()
    }
}

/// A Swift-style temporary URL query with a fake signature. The signature is a secret in
/// real life: it must never show up in a log or an error message.
#[derive(Debug, Clone)]
pub struct TempUrl {
    pub sig: String,
    pub expires: u64,
}

impl TempUrl {
    pub fn fake() -> Result<TempUrl> {
        // 40 hex digits like an HMAC-SHA1, recognisable when it leaks.
        let tail: String = images::random_bytes(16)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(TempUrl {
            sig: format!("e2e0fake{tail}"),
            expires: 4102444800,
        })
    }

    /// `url?temp_url_sig=...&temp_url_expires=...`.
    pub fn apply(&self, url: &str) -> String {
        format!(
            "{url}?temp_url_sig={}&temp_url_expires={}",
            self.sig, self.expires
        )
    }
}

/// The image checksum fields of `instance_info`.
#[derive(Debug, Clone)]
pub enum ImageChecksum {
    /// `image_os_hash_algo` + `image_os_hash_value`.
    OsHash { algo: String, value: String },
    /// The legacy `image_checksum` (an MD5, which the agent may refuse by policy).
    Legacy(String),
}

impl ImageChecksum {
    pub fn sha256(d: &Digests) -> ImageChecksum {
        ImageChecksum::OsHash {
            algo: "sha256".into(),
            value: d.sha256.clone(),
        }
    }
    pub fn sha512(d: &Digests) -> ImageChecksum {
        ImageChecksum::OsHash {
            algo: "sha512".into(),
            value: d.sha512.clone(),
        }
    }
}

/// What the operator puts into `instance_info`.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub image_source: String,
    pub checksum: ImageChecksum,
    pub root_gb: u64,
    /// `image_disk_format` (`raw`, `qcow2`): handed to the agent as `disk_format`.
    pub disk_format: Option<String>,
    /// `image_type = partition`: the agent lays out partitions and writes the image into
    /// the root partition (no kernel/ramdisk needed: local boot is Ironic 39's only option).
    pub partition: bool,
}

impl InstanceInfo {
    pub fn whole_disk(image_source: String, checksum: ImageChecksum) -> InstanceInfo {
        InstanceInfo {
            image_source,
            checksum,
            root_gb: 1,
            disk_format: None,
            partition: false,
        }
    }

    fn patches(&self) -> Vec<(String, Value)> {
        let mut v = vec![
            (
                "/instance_info/image_source".to_string(),
                json!(self.image_source),
            ),
            (
                "/instance_info/root_gb".into(),
                json!(self.root_gb.to_string()),
            ),
        ];
        match &self.checksum {
            ImageChecksum::OsHash { algo, value } => {
                v.push(("/instance_info/image_os_hash_algo".into(), json!(algo)));
                v.push(("/instance_info/image_os_hash_value".into(), json!(value)));
            }
            ImageChecksum::Legacy(value) => {
                v.push(("/instance_info/image_checksum".into(), json!(value)));
            }
        }
        if let Some(f) = &self.disk_format {
            v.push(("/instance_info/image_disk_format".into(), json!(f)));
        }
        v.push((
            "/instance_info/image_type".into(),
            json!(if self.partition {
                "partition"
            } else {
                "whole-disk"
            }),
        ));
        v
    }
}

/// Enrolls the node, `manage`, `provide` (no cleaning: `available` at once).
pub fn enroll_available(h: &mut Harness, spec: &NodeSpec) -> Result<Node> {
    h.enroll_node(spec)?;
    h.provision(Provision::Manage)?;
    h.wait_for("manageable", Duration::from_secs(30))?;
    h.provision(Provision::Provide)?;
    h.wait_for("available", Duration::from_secs(30))
}

/// Sets the node's `instance_info`.
pub fn set_instance_info(h: &Harness, info: &InstanceInfo) -> Result<Node> {
    let patches = info.patches();
    let adds: Vec<(&str, Value)> = patches
        .iter()
        .map(|(p, v)| (p.as_str(), v.clone()))
        .collect();
    h.client().patch_node(h.node_uuid()?, &adds)
}

/// Timings of one deploy.
#[derive(Debug, Clone, Copy)]
pub struct DeployTimes {
    /// From the `active` request to the agent's start (Ironic waiting for the ramdisk).
    pub request_to_wait_callback: Duration,
    /// From the agent's start to the verdict.
    pub agent_to_verdict: Duration,
}

/// Requests `active` (with `configdrive` if given), "boots the ramdisk" once the node waits
/// for it, and waits for `verdict` (`active`, or `deploy failed` when failure is expected).
pub fn run_deploy(
    h: &mut Harness,
    configdrive: Option<&str>,
    opts: AgentOptions,
    verdict: &str,
) -> Result<(Node, DeployTimes)> {
    let t = Instant::now();
    h.provision(match configdrive {
        Some(cd) => Provision::DeployWithConfigdrive(json!(cd)),
        None => Provision::Deploy,
    })?;
    h.wait_for("wait call-back", Duration::from_secs(60))?;
    let request_to_wait_callback = t.elapsed();
    let t = Instant::now();
    h.start_agent(opts)?;
    let node = h.wait_for(verdict, DEPLOY_TIMEOUT)?;
    Ok((
        node,
        DeployTimes {
            request_to_wait_callback,
            agent_to_verdict: t.elapsed(),
        },
    ))
}

/// Undeploys an `active` node back to `available` (`deleted`). The agent is stopped first,
/// as the machine reboots; with automated cleaning off (see [`ironic_config`]) Ironic needs
/// no agent on the way back.
pub fn undeploy(h: &mut Harness) -> Result<Node> {
    h.stop_agent();
    h.provision(Provision::Undeploy)?;
    h.wait_for("available", Duration::from_secs(60))
}

/// Ironic's messages about the deploy, from its log and `last_error`, for assertions.
pub fn last_error(node: &Node) -> Result<&str> {
    node.last_error
        .as_deref()
        .filter(|e| !e.is_empty())
        .context("the node has no last_error")
}

/// `last_error` contains every one of `needles` (case-insensitive).
pub fn verify_last_error(node: &Node, needles: &[&str]) -> Result<()> {
    let err = last_error(node)?;
    let lower = err.to_lowercase();
    for n in needles {
        ensure!(
            lower.contains(&n.to_lowercase()),
            "last_error {err:?} does not mention {n:?}"
        );
    }
    Ok(())
}

/// `secret` appears neither in any agent log nor in the node's `last_error`.
pub fn verify_secret_kept(h: &Harness, secret: &str) -> Result<()> {
    let logs = h.agent_logs();
    ensure!(!logs.is_empty(), "the agent wrote no log");
    if let Some(line) = logs.lines().find(|l| l.contains(secret)) {
        bail!("the temp URL signature leaked into the agent log: {line}");
    }
    let node = h.node()?;
    if let Some(e) = node.last_error.as_deref() {
        ensure!(
            !e.contains(secret),
            "the temp URL signature leaked into last_error: {e}"
        );
    }
    Ok(())
}

/// None of `secrets` appears in what the agent hands out: its logs, the node's `last_error`,
/// the results of its commands as the conductor logged them (`... command status for node
/// ...: {...}`, from `'command_result'` on: the step the conductor itself logs before is
/// Ironic's business), and every file of every log bundle Ironic collected from it (with
/// `[agent] deploy_logs_collect = always`; at least one must exist).
pub fn verify_secrets_absent(h: &Harness, secrets: &[&str]) -> Result<()> {
    let logs = h.agent_logs();
    ensure!(!logs.is_empty(), "the agent wrote no log");
    let node = h.node()?;
    let conductor_log = h.ironic_log();
    let results: Vec<&str> = conductor_log
        .lines()
        .filter(|l| l.contains("command status for node"))
        .filter_map(|l| l.find("'command_result'").map(|at| &l[at..]))
        .collect();
    ensure!(
        !results.is_empty(),
        "the Ironic log shows no agent command result"
    );
    let bundles_dir = crate::ironic::IronicConfig::deploy_logs_dir(
        h.ironic()
            .config_path()
            .parent()
            .context("Ironic's directory")?,
    );
    let mut bundles = Vec::new();
    for entry in std::fs::read_dir(&bundles_dir)
        .with_context(|| format!("no log bundle: {} unreadable", bundles_dir.display()))?
    {
        let path = entry?.path();
        let out = std::process::Command::new("tar")
            .arg("-xzOf")
            .arg(&path)
            .output()
            .context("running tar")?;
        ensure!(out.status.success(), "tar -xzOf {} failed", path.display());
        bundles.push((path, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    ensure!(
        !bundles.is_empty(),
        "Ironic collected no log bundle in {}",
        bundles_dir.display()
    );
    for secret in secrets {
        if let Some(line) = logs.lines().find(|l| l.contains(secret)) {
            bail!("a secret leaked into the agent log: {line}");
        }
        if let Some(e) = node.last_error.as_deref().filter(|e| e.contains(secret)) {
            bail!("a secret leaked into last_error: {e}");
        }
        if let Some(r) = results.iter().find(|r| r.contains(secret)) {
            bail!("a secret leaked into a command result the conductor logged: {r}");
        }
        for (path, text) in &bundles {
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                bail!(
                    "a secret leaked into the log bundle {}: {line}",
                    path.display()
                );
            }
        }
    }
    h.progress(&format!(
        "{} secrets absent from the agent log, last_error, {} command results and {} log bundles",
        secrets.len(),
        results.len(),
        bundles.len()
    ));
    Ok(())
}

/// The agent ran each of `commands` (e.g. `standby.get_partition_uuids`) for the conductor,
/// in this order, according to its log.
pub fn verify_agent_commands(h: &Harness, commands: &[&str]) -> Result<()> {
    let logs = h.agent_logs();
    let executed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("executing command"))
        .collect();
    let mut from = 0;
    for c in commands {
        let needle = format!("command={c}");
        let needle_quoted = format!("command=\"{c}\"");
        match executed[from..]
            .iter()
            .position(|l| l.contains(&needle) || l.contains(&needle_quoted))
        {
            Some(i) => from += i + 1,
            None => bail!(
                "the agent log shows no {c} after the commands before it; commands run:\n{}",
                executed.join("\n")
            ),
        }
    }
    Ok(())
}

/// The conductor ran the whole `write_image` deploy step on the agent, asked for the
/// partition UUIDs, had the boot loader installed and powered the agent off.
pub fn verify_deploy_calls(h: &Harness) -> Result<()> {
    verify_agent_commands(
        h,
        &[
            "deploy.get_deploy_steps",
            "deploy.execute_deploy_step",
            "standby.get_partition_uuids",
            "image.install_bootloader",
            "standby.power_off",
        ],
    )?;
    let log = h.ironic_log();
    ensure!(
        log.contains("'step': 'write_image'"),
        "the Ironic log never mentions the write_image step"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The disk after a deploy

/// Compares `disk[offset..offset+len]` with `file[file_offset..]`, chunk by chunk; returns
/// the differing byte ranges (disk offsets), merged.
fn diff_file(
    h: &Harness,
    disk: usize,
    offset: u64,
    file: &Path,
    file_offset: u64,
    len: u64,
) -> Result<Vec<Range<u64>>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let d = h.disk(disk);
    let mut diffs: Vec<Range<u64>> = Vec::new();
    let chunk = 8u64 << 20;
    let mut at = 0;
    let mut want = vec![0u8; chunk as usize];
    while at < len {
        let n = chunk.min(len - at);
        let got = d.read_at(offset + at, n)?;
        f.read_exact_at(&mut want[..n as usize], file_offset + at)?;
        if got[..] != want[..n as usize] {
            for (i, (a, b)) in got.iter().zip(&want[..n as usize]).enumerate() {
                if a != b {
                    let pos = offset + at + i as u64;
                    match diffs.last_mut() {
                        Some(r) if r.end == pos => r.end = pos + 1,
                        _ => diffs.push(pos..pos + 1),
                    }
                }
            }
        }
        at += n;
    }
    Ok(diffs)
}

fn describe(ranges: &[Range<u64>]) -> String {
    let mut s: Vec<String> = ranges
        .iter()
        .take(12)
        .map(|r| format!("  bytes {}..{} ({} bytes)", r.start, r.end, r.end - r.start))
        .collect();
    if ranges.len() > 12 {
        s.push(format!("  ... and {} more ranges", ranges.len() - 12));
    }
    s.join("\n")
}

/// Non-zero bytes of the disk in `range`, looking only where the backing file holds data.
fn nonzero_in(h: &Harness, disk: usize, range: Range<u64>) -> Result<Vec<Range<u64>>> {
    let d = h.disk(disk);
    let mut found = Vec::new();
    for ext in d.data_extents()? {
        let start = ext.start.max(range.start);
        let end = ext.end.min(range.end);
        let mut at = start;
        while at < end {
            let n = (8u64 << 20).min(end - at);
            let bytes = d.read_at(at, n)?;
            if let Some(i) = bytes.iter().position(|b| *b != 0) {
                let last = bytes.iter().rposition(|b| *b != 0).unwrap_or(i);
                found.push(at + i as u64..at + last as u64 + 1);
            }
            at += n;
        }
    }
    Ok(found)
}

/// What a whole-disk deploy must have left on the disk.
pub struct WholeDiskExpectation<'a> {
    /// The raw image (for a qcow2 or compressed image: its raw form).
    pub raw: &'a Path,
    /// The config drive's bytes, when one was deployed: it must be in a new partition after
    /// the image's.
    pub configdrive: Option<&'a [u8]>,
}

/// [`verify_whole_disk`] of the raw image at `raw`, without a config drive.
pub fn verify_raw_image(h: &Harness, disk: usize, raw: &std::path::Path) -> Result<()> {
    verify_whole_disk(
        h,
        disk,
        &WholeDiskExpectation {
            raw,
            configdrive: None,
        },
    )
}

/// Checks a whole-disk deploy byte for byte:
/// - the image's bytes are on the disk, except what moving the backup GPT to the disk's end
///   legitimately changes: the protective MBR's size field (and its
///   last-sector CHS, which `sgdisk -e` rewrites), the primary header's alternate
///   and last usable LBAs and CRCs, and the old backup GPT at the image's end;
/// - the partition entries are the image's (plus the config drive's, if any), in both the
///   primary and the backup table, and `sgdisk -v` is clean;
/// - everything after the image is zero, except the config drive partition and the new
///   backup GPT.
pub fn verify_whole_disk(h: &Harness, disk: usize, want: &WholeDiskExpectation) -> Result<()> {
    let d = h.disk(disk);
    let image_len = std::fs::metadata(want.raw)?.len();
    let disk_sectors = d.sectors();
    let image_head = {
        use std::os::unix::fs::FileExt;
        let mut b = vec![0u8; 34 * SECTOR as usize];
        std::fs::File::open(want.raw)?.read_exact_at(&mut b, 0)?;
        b
    };
    let image_table = Table::from_head(&image_head).context("the image's own GPT")?;
    let disk_head = d.read_at(0, 34 * SECTOR)?;
    let disk_table = Table::from_head(&disk_head).context("the disk's primary GPT")?;

    // The headers: only the fields that depend on the disk's size changed.
    let hdr = &disk_table.header;
    ensure!(
        hdr.alternate_lba == disk_sectors - 1,
        "the primary GPT header's alternate LBA is {}, not the disk's last sector {}",
        hdr.alternate_lba,
        disk_sectors - 1
    );
    ensure!(
        hdr.last_usable == disk_sectors - 34,
        "the primary GPT header's last usable LBA is {}, expected {}",
        hdr.last_usable,
        disk_sectors - 34
    );
    ensure!(
        hdr.first_usable == image_table.header.first_usable && hdr.my_lba == 1,
        "the primary GPT header moved: {hdr:?} (image: {:?})",
        image_table.header
    );

    // The entries: the image's, and the config drive's after them.
    let n = image_table.entries.len();
    ensure!(
        disk_table.entries.len() >= n && disk_table.entries[..n] == image_table.entries[..],
        "the disk's partition entries differ from the image's:\ndisk:  {:?}\nimage: {:?}",
        disk_table.entries,
        image_table.entries
    );
    let configdrive_part = match want.configdrive {
        None => {
            ensure!(
                disk_table.entries.len() == n,
                "the disk has partitions the image does not: {:?}",
                &disk_table.entries[n..]
            );
            None
        }
        Some(cd) => {
            ensure!(
                disk_table.entries.len() == n + 1,
                "expected exactly one new partition (the config drive), found {:?}",
                &disk_table.entries[n..]
            );
            let p = disk_table.entries[n].clone();
            let last_image_lba = image_table
                .entries
                .iter()
                .map(|e| e.last_lba)
                .max()
                .unwrap_or(0);
            ensure!(
                p.first_lba > last_image_lba && p.len() >= cd.len() as u64,
                "the config drive partition {p:?} does not follow the image's partitions or is \
                 too small for {} bytes",
                cd.len()
            );
            let on_disk = d.read_at(p.offset(), cd.len() as u64)?;
            ensure!(
                on_disk == cd,
                "the config drive partition {} does not hold the config drive's bytes",
                p.number
            );
            Some(p)
        }
    };
    // Byte 0..image_len against the image.
    let entries_bytes = |t: &Table| -> Range<u64> {
        let used = t.entries.iter().map(|e| e.number).max().unwrap_or(0) as u64;
        2 * SECTOR..2 * SECTOR + used * 128
    };
    let mut allowed: Vec<Range<u64>> = vec![
        gpt::PMBR_SIZE_FIELD.start as u64..gpt::PMBR_SIZE_FIELD.end as u64,
        gpt::PMBR_END_CHS.start as u64..gpt::PMBR_END_CHS.end as u64,
        SECTOR + gpt::field::HEADER_CRC.start as u64..SECTOR + gpt::field::HEADER_CRC.end as u64,
        SECTOR + gpt::field::ALTERNATE_LBA.start as u64
            ..SECTOR + gpt::field::ALTERNATE_LBA.end as u64,
        SECTOR + gpt::field::LAST_USABLE.start as u64..SECTOR + gpt::field::LAST_USABLE.end as u64,
        // The image's backup GPT (header and entries), no longer at the disk's end.
        image_len - 33 * SECTOR..image_len,
    ];
    if configdrive_part.is_some() {
        // A new entry, hence a new entries CRC.
        allowed.push(
            SECTOR + gpt::field::ENTRIES_CRC.start as u64
                ..SECTOR + gpt::field::ENTRIES_CRC.end as u64,
        );
        allowed.push(entries_bytes(&image_table).end..entries_bytes(&disk_table).end);
    }
    let diffs = diff_file(h, disk, 0, want.raw, 0, image_len)?;
    let unexpected: Vec<Range<u64>> = diffs
        .iter()
        .filter(|r| !allowed.iter().any(|a| a.start <= r.start && r.end <= a.end))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        bail!(
            "the disk differs from the image outside the GPT fields a deploy may change:\n{}",
            describe(&unexpected)
        );
    }

    // The backup GPT at the disk's end: same entries as the primary, header pointing back.
    let backup_at = (disk_sectors - 33) * SECTOR;
    let tail = d.read_at(backup_at, 33 * SECTOR)?;
    let backup_hdr = gpt::Header::parse(&tail[32 * SECTOR as usize..])
        .context("no backup GPT header in the disk's last sector")?;
    ensure!(
        backup_hdr.my_lba == disk_sectors - 1
            && backup_hdr.alternate_lba == 1
            && backup_hdr.entries_lba == disk_sectors - 33,
        "the backup GPT header is wrong: {backup_hdr:?}"
    );
    ensure!(
        tail[..32 * SECTOR as usize] == disk_head[2 * SECTOR as usize..],
        "the backup partition entries differ from the primary ones"
    );
    images::verify_gpt(d.device())?;

    // Nothing else was written after the image.
    let rest: Vec<Range<u64>> = match &configdrive_part {
        Some(p) => {
            let cd_len = want.configdrive.map(|c| c.len() as u64).unwrap_or(0);
            vec![image_len..p.offset(), p.offset() + cd_len..backup_at]
        }
        None => std::iter::once(image_len..backup_at).collect(),
    };
    for r in rest {
        let found = nonzero_in(h, disk, r.clone())?;
        ensure!(
            found.is_empty(),
            "non-zero bytes after the image (in {r:?}):\n{}",
            describe(&found)
        );
    }
    h.progress(&format!(
        "disk checked: {image_len} image bytes in place, {} partition entries kept{}, backup GPT \
         at the disk's end, sgdisk -v clean, zeros elsewhere",
        n,
        if configdrive_part.is_some() {
            ", config drive partition added"
        } else {
            ""
        }
    ));
    Ok(())
}

/// What a partition-image deploy must have left on the disk.
pub struct PartitionExpectation<'a> {
    /// The filesystem image written into the root partition.
    pub root_image: &'a Path,
    pub root_fs_uuid: &'a str,
    pub configdrive: &'a [u8],
    /// Expected size of the root partition (`root_gb`).
    pub root_bytes: u64,
}

/// The partitions found on a disk after a partition-image deploy.
#[derive(Debug)]
pub struct PartitionLayout {
    pub root: gpt::Entry,
    pub esp: gpt::Entry,
    pub configdrive: gpt::Entry,
    pub all: Vec<gpt::Entry>,
}

/// Checks a partition-image deploy: a GPT (UEFI), an ESP with a FAT filesystem, a config
/// drive partition holding the config drive, a root partition of `root_gb` holding the image
/// bytes, `sgdisk -v` clean.
pub fn verify_partition_disk(
    h: &Harness,
    disk: usize,
    want: &PartitionExpectation,
) -> Result<PartitionLayout> {
    let d = h.disk(disk);
    images::verify_gpt(d.device())?;
    let table = Table::from_head(&d.read_at(0, 34 * SECTOR)?).context("the disk's GPT")?;
    let esp = table
        .entries
        .iter()
        .find(|e| e.type_guid == images::ESP_TYPE)
        .cloned()
        .with_context(|| format!("no EFI system partition in {:?}", table.entries))?;
    let esp_fs = probe::blkid_probe(d.device(), Some(esp.offset()), Some(esp.len()))?;
    ensure!(
        esp_fs.as_deref().is_some_and(|s| s.contains("TYPE=vfat")),
        "the ESP (partition {}) holds no FAT filesystem: blkid says {esp_fs:?}",
        esp.number
    );

    let image_len = std::fs::metadata(want.root_image)?.len();
    let mut root = None;
    let mut configdrive = None;
    for e in &table.entries {
        if e.len() >= image_len
            && diff_file(h, disk, e.offset(), want.root_image, 0, 4096)?.is_empty()
        {
            root = Some(e.clone());
        }
        if e.len() >= want.configdrive.len() as u64
            && d.read_at(e.offset(), want.configdrive.len() as u64)? == want.configdrive
        {
            configdrive = Some(e.clone());
        }
    }
    let root = root.with_context(|| {
        format!(
            "no partition starts with the root image's bytes: {:?}",
            table.entries
        )
    })?;
    let configdrive = configdrive
        .with_context(|| format!("no partition holds the config drive: {:?}", table.entries))?;
    let diffs = diff_file(h, disk, root.offset(), want.root_image, 0, image_len)?;
    ensure!(
        diffs.is_empty(),
        "the root partition differs from the image:\n{}",
        describe(&diffs)
    );
    ensure!(
        root.len() == want.root_bytes,
        "the root partition has {} bytes, root_gb asks for {}",
        root.len(),
        want.root_bytes
    );
    let fs = probe::blkid_probe(d.device(), Some(root.offset()), Some(root.len()))?;
    ensure!(
        fs.as_deref()
            .is_some_and(|s| s.contains(&format!("UUID={}", want.root_fs_uuid))),
        "the root partition's filesystem is not the image's (UUID {}): blkid says {fs:?}",
        want.root_fs_uuid
    );
    h.progress(&format!(
        "disk checked: ESP partition {} (vfat), config drive partition {}, root partition {} \
         ({} MiB) holding the {image_len}-byte image, sgdisk -v clean",
        esp.number,
        configdrive.number,
        root.number,
        root.len() >> 20
    ));
    Ok(PartitionLayout {
        root,
        esp,
        configdrive,
        all: table.entries,
    })
}

// ---------------------------------------------------------------------------------------------
// The disk after a failed deploy

/// A disk's recorded contents before a deploy that must not write to it.
pub struct Snapshot {
    pub disk: usize,
    pub regions: Vec<(Range<u64>, Vec<u8>)>,
    pub extents: Vec<Range<u64>>,
}

/// Adds a sparse disk of `size` whose first and last 2 MiB hold random bytes (an earlier
/// tenant's data: any write by the agent to the places it touches first changes them), and
/// records it.
pub fn add_prefilled_disk(h: &mut Harness, size: u64) -> Result<Snapshot> {
    let index = h.add_disk(size, Fill::Zeros)?;
    let d = h.disk(index);
    let span = (2u64 << 20).min(size / 2);
    let mut regions = Vec::new();
    for at in [0, size - span] {
        let bytes = images::random_bytes(span as usize)?;
        d.write_at(at, &bytes)?;
        regions.push((at..at + span, bytes));
    }
    Ok(Snapshot {
        disk: index,
        regions,
        extents: d.data_extents()?,
    })
}

/// The disk is exactly as recorded: the same bytes in the recorded regions and no data
/// anywhere else in its backing file.
pub fn verify_untouched(h: &Harness, snap: &Snapshot) -> Result<()> {
    let d = h.disk(snap.disk);
    for (r, before) in &snap.regions {
        let now = d.read_at(r.start, r.end - r.start)?;
        if &now != before {
            let first = now
                .iter()
                .zip(before)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!(
                "the disk was written although the deploy had to fail before writing: bytes \
                 changed in {r:?}, first at byte {}",
                r.start + first as u64
            );
        }
    }
    let extents = d.data_extents()?;
    ensure!(
        extents == snap.extents,
        "the disk's backing file gained data although nothing may be written: before \
         {:?}, after {extents:?}",
        snap.extents
    );
    h.progress("disk checked: byte-identical to before the deploy");
    Ok(())
}

/// After a deploy that failed while writing: the first MiB holds no partition table and
/// nothing recognises the disk (a half-written disk must not look bootable).
pub fn verify_no_partition_table(h: &Harness, disk: usize) -> Result<()> {
    let d = h.disk(disk);
    let head = d.read_at(0, 1 << 20)?;
    ensure!(
        &head[510..512] != b"\x55\xaa",
        "the disk's first sector still carries an MBR signature"
    );
    ensure!(
        &head[512..520] != b"EFI PART",
        "the disk's second sector still carries a GPT header"
    );
    let sigs = probe::wipefs_signatures(d.device())?;
    ensure!(sigs.is_empty(), "wipefs finds signatures: {sigs:?}");
    let found = probe::blkid_probe(d.device(), None, None)?;
    ensure!(found.is_none(), "blkid -p recognises the disk: {found:?}");
    h.progress("disk checked: no partition table or signature at its start");
    Ok(())
}

/// Starting point of a deploy test: Ironic, nginx, a 5 GiB disk, a node `available`.
pub fn harness_with_disk(name: &str, mac: &str) -> Result<(Harness, usize)> {
    let mut h = Harness::start(name, mac, ironic_config)?;
    let disk = h.add_disk(DISK_SIZE, Fill::Zeros)?;
    Ok((h, disk))
}
