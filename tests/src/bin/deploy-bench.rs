//! `deploy-bench`: deploy latency as the conductor sees it (issue "deploy latency"). Real
//! Ironic (the e2e harness: Ironic on the host end of the agent's namespace, fake power, a
//! 5 GiB loop disk) deploys through the release agent, each run in a fresh harness, the kinds
//! interleaved run by run: a raw GPT image of random data, the same image as qcow2, and a
//! sparse qcow2 (a 4 GiB disk whose first `--size-mib / 8` MiB hold data). Prints, per kind,
//! the median of `--runs`:
//!
//! - `agent → active`: from the ramdisk's start (the agent process) to `active`;
//! - `write_image (Ironic)`: from the conductor's "Executing write_image" to its next step;
//! - `image time (agent)`: what the agent logged for writing and verifying the image;
//! - the waits the conductor spent on the agent: heartbeats skipped because the node was
//!   locked, and `install_bootloader` polls that found the command still running (each costs
//!   `[agent] command_wait_interval`, 6 s).
//!
//! ```text
//! tests/deploy-bench.sh [--size-mib 2048] [--runs 3] [--kinds raw,qcow2,sparse]
//!                       [--agents ours,ipa (the default)]
//! ```
//!
//! (also --agent-arg ipa-foo=bar, repeatable: extra kernel parameters for our agent;
//!   --log-dir DIR: keep each run's conductor and agent logs in DIR/run<N>-<agent>-<kind>/)
//!
//! `--agents ours,ipa` runs ironic-python-agent 13 itself beside ours, through the same
//! Ironic and the same steps (`tests/bench/ipa_agent.py`, from the venv in `$IPA_VENV`;
//! `tests/deploy-bench.sh` creates it). Every node has `deploy_forces_oob_reboot`, for
//! both agents: Ironic syncs and powers off through its fake power interface instead of
//! asking the agent to power the machine off (IPA would run `poweroff` on this host).
//!
//! Not a test: no figure here is asserted.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use e2e::agent::{AgentOptions, ReferenceIpa};
use e2e::deploy::{self, enroll_available, node_spec, set_instance_info, InstanceInfo};
use e2e::harness::Harness;
use e2e::images;
use e2e::loopdev::Fill;
use e2e::stats::median;

const MAC: &str = "52:54:00:4c:0b:01";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Raw,
    Qcow2,
    Sparse,
}

impl Kind {
    fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "raw" => Kind::Raw,
            "qcow2" => Kind::Qcow2,
            "sparse" => Kind::Sparse,
            other => bail!("unknown kind {other} (raw, qcow2, sparse)"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Qcow2 => "qcow2",
            Kind::Sparse => "sparse qcow2",
        }
    }
}

struct Image {
    kind: Kind,
    path: std::path::PathBuf,
    digests: images::Digests,
    describe: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Ours,
    Ipa,
}

impl Who {
    fn parse(s: &str) -> Result<Who> {
        Ok(match s {
            "ours" => Who::Ours,
            "ipa" => Who::Ipa,
            other => bail!("unknown agent {other} (ours, ipa)"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Who::Ours => "ours",
            Who::Ipa => "ipa",
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    agent_to_active: f64,
    request_to_active: f64,
    write_image_ironic: Option<f64>,
    image_seconds: Option<f64>,
    locked_heartbeats: usize,
    running_polls: usize,
    heartbeats: usize,
    /// Raw images only: the disk checked byte for byte ([`deploy::verify_raw_image`]).
    disk_check: Option<Result<(), String>>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut size_mib = 2048u64;
    let mut runs = 3usize;
    let mut kinds = vec![Kind::Raw, Kind::Qcow2, Kind::Sparse];
    let mut agent_args = Vec::new();
    let mut log_dir: Option<std::path::PathBuf> = None;
    let mut agents = vec![Who::Ours, Who::Ipa];
    let mut i = 1;
    while i < args.len() {
        let value = args
            .get(i + 1)
            .with_context(|| format!("{} needs a value", args[i]));
        match args[i].as_str() {
            "--size-mib" => size_mib = value?.parse()?,
            "--runs" => runs = value?.parse()?,
            "--kinds" => kinds = value?.split(',').map(Kind::parse).collect::<Result<_>>()?,
            "--agent-arg" => agent_args.push(value?.clone()),
            "--log-dir" => log_dir = Some(value?.into()),
            "--agents" => agents = value?.split(',').map(Who::parse).collect::<Result<_>>()?,
            other => bail!(
                "unknown argument {other} (--size-mib N, --runs N, --kinds raw,qcow2,sparse, \
                 --agents ours,ipa, --agent-arg ipa-x=y, --log-dir DIR)"
            ),
        }
        i += 2;
    }
    e2e::cmd::check_prerequisites(&["nginx", "sgdisk", "losetup", "qemu-img", "ip"])?;
    let work = e2e::testdir::TestDir::new("deploy-bench")?;
    let images = kinds
        .iter()
        .map(|k| build_image(work.path(), *k, size_mib))
        .collect::<Result<Vec<_>>>()?;
    let ipa = if agents.contains(&Who::Ipa) {
        let venv = std::env::var_os("IPA_VENV")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/opt/ironic-agent-test/ipa-venv".into());
        let python = venv.join("bin/python");
        if !python.exists() {
            bail!(
                "{} does not exist: tests/deploy-bench.sh creates IPA's venv",
                python.display()
            );
        }
        Some(ReferenceIpa { python })
    } else {
        None
    };
    let cases: Vec<(usize, Who)> = (0..images.len())
        .flat_map(|k| agents.iter().map(move |w| (k, *w)))
        .collect();
    let mut all: Vec<Vec<Row>> = cases.iter().map(|_| Vec::new()).collect();
    for run in 1..=runs {
        for (c, (k, who)) in cases.iter().enumerate() {
            let image = &images[*k];
            println!(
                "== run {run}/{runs}: {} agent, {}",
                who.name(),
                image.describe
            );
            let logs = log_dir.as_ref().map(|d| {
                d.join(format!(
                    "run{run}-{}-{}",
                    who.name(),
                    image.kind.name().replace(' ', "-")
                ))
            });
            let reference = match who {
                Who::Ours => None,
                Who::Ipa => ipa.clone(),
            };
            let row = run_one(image, &agent_args, reference, logs.as_deref())
                .with_context(|| format!("{} agent, {}", who.name(), image.describe))?;
            println!(
                "   agent → active {:.2}s, write_image (Ironic) {}, image time {}, locked \
                 heartbeats {}, polls finding RUNNING {}",
                row.agent_to_active,
                opt(row.write_image_ironic),
                opt(row.image_seconds),
                row.locked_heartbeats,
                row.running_polls
            );
            if let Some(Err(e)) = &row.disk_check {
                println!(
                    "   the disk does not hold the image: {}",
                    e.replace('\n', "; ")
                );
            }
            all[c].push(row);
        }
    }
    println!(
        "\n{:<40} {:>5} {:>15} {:>17} {:>20} {:>16} {:>9} {:>10} {:>10} {:>6}",
        format!("image (median of {runs})"),
        "agent",
        "agent → active",
        "request → active",
        "write_image (Ironic)",
        "image (agent)",
        "locked hb",
        "RUNNING polls",
        "heartbeats",
        "disk"
    );
    let mut to_active = Vec::new();
    for ((k, who), rows) in cases.iter().zip(&all) {
        let image = &images[*k];
        let med = |f: &dyn Fn(&Row) -> Option<f64>| median(rows.iter().filter_map(f).collect());
        let range = |f: &dyn Fn(&Row) -> f64| {
            let v: Vec<f64> = rows.iter().map(f).collect();
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.1}-{hi:.1}")
        };
        let agent_to_active = med(&|r| Some(r.agent_to_active)).unwrap_or(f64::NAN);
        to_active.push((*k, *who, agent_to_active));
        println!(
            "{:<40} {:>5} {:>6.2}s ({:>7}) {:>16.2}s {:>19}s {:>15}s {:>9} {:>10} {:>10} {:>6}",
            image.describe,
            who.name(),
            agent_to_active,
            range(&|r| r.agent_to_active),
            med(&|r| Some(r.request_to_active)).unwrap_or(f64::NAN),
            opt(med(&|r| r.write_image_ironic)).trim_end_matches('s'),
            opt(med(&|r| r.image_seconds)).trim_end_matches('s'),
            rows.iter().map(|r| r.locked_heartbeats).sum::<usize>(),
            rows.iter().map(|r| r.running_polls).sum::<usize>(),
            rows.iter().map(|r| r.heartbeats).sum::<usize>(),
            disk_verdict(rows),
        );
    }
    println!(
        "(locked hb, RUNNING polls and heartbeats are totals over the runs; `locked hb` = \
         Ironic's \"currently locked, skipping heartbeat processing\"; image (agent) is what \
         each agent logged for downloading, writing and verifying; disk: raw images checked \
         byte for byte after each deploy, `ok` or how many runs failed)"
    );
    for (k, image) in images.iter().enumerate() {
        let find = |w: Who| {
            to_active
                .iter()
                .find(|(i, who, _)| *i == k && *who == w)
                .map(|t| t.2)
        };
        if let (Some(ours), Some(ipa)) = (find(Who::Ours), find(Who::Ipa)) {
            println!(
                "{}: agent → active ours/IPA = {:.2}x ({ours:.2} s vs {ipa:.2} s)",
                image.describe,
                ours / ipa
            );
        }
    }
    Ok(())
}

fn disk_verdict(rows: &[Row]) -> String {
    let checked: Vec<_> = rows.iter().filter_map(|r| r.disk_check.as_ref()).collect();
    let failed = checked.iter().filter(|c| c.is_err()).count();
    match (checked.len(), failed) {
        (0, _) => "-".into(),
        (_, 0) => "ok".into(),
        (n, f) => format!("{f}/{n} bad"),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}s")).unwrap_or_else(|| "-".into())
}

fn build_image(dir: &Path, kind: Kind, size_mib: u64) -> Result<Image> {
    let raw = dir.join(format!("{}.raw", kind.name().replace(' ', "-")));
    let (path, describe) = match kind {
        Kind::Raw | Kind::Qcow2 => {
            images::write_random(&raw, size_mib << 20)?;
            partition(&raw)?;
            if kind == Kind::Raw {
                (raw.clone(), format!("raw, {size_mib} MiB random"))
            } else {
                let q = dir.join("image.qcow2");
                images::qemu_img_convert(&raw, "raw", &q, "qcow2", &[])?;
                std::fs::remove_file(&raw)?;
                (q, format!("qcow2, {size_mib} MiB random"))
            }
        }
        Kind::Sparse => {
            let data = (size_mib / 8).max(1);
            images::write_random(&raw, data << 20)?;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&raw)?
                .set_len(4 << 30)?;
            partition(&raw)?;
            let q = dir.join("sparse.qcow2");
            images::qemu_img_convert(&raw, "raw", &q, "qcow2", &[])?;
            std::fs::remove_file(&raw)?;
            (q, format!("sparse qcow2, 4 GiB with {data} MiB data"))
        }
    };
    println!("built {describe}: {}", path.display());
    let digests = images::digests(&path)?;
    Ok(Image {
        kind,
        path,
        digests,
        describe,
    })
}

/// One partition over the image, so that the agent accepts the written disk (IPA's
/// `_validate_partitioning`).
fn partition(raw: &Path) -> Result<()> {
    e2e::cmd::run(
        Command::new("sgdisk")
            .args(["-n", "1:2048:0", "-t", "1:8300"])
            .arg(raw),
    )?;
    Ok(())
}

fn run_one(
    image: &Image,
    agent_args: &[String],
    reference_ipa: Option<ReferenceIpa>,
    log_dir: Option<&Path>,
) -> Result<Row> {
    let mut h = Harness::start("deploy-bench", MAC, deploy::ironic_config)?;
    h.add_disk(deploy::DISK_SIZE, Fill::Zeros)?;
    let nginx = h.start_nginx()?;
    let name = image.path.file_name().context("image name")?;
    let published = nginx.root().join(name);
    std::fs::hard_link(&image.path, &published)
        .or_else(|_| std::fs::copy(&image.path, &published).map(drop))?;
    let url = nginx.url(&name.to_string_lossy());
    enroll_available(&mut h, &node_spec("deploy-bench", None))?;
    // Both agents alike: Ironic powers off out of band (see the module doc).
    h.client().patch_node(
        h.node_uuid()?,
        &[(
            "/driver_info/deploy_forces_oob_reboot",
            serde_json::json!(true),
        )],
    )?;
    let mut info = InstanceInfo::whole_disk(url, deploy::ImageChecksum::sha256(&image.digests));
    // As Glance would give it: IPA 13 streams a raw image only when told it is raw (else it
    // caches it and sniffs a GPT disk as format "gpt", which qemu-img has no driver for).
    info.disk_format = Some(
        if image.kind == Kind::Raw {
            "raw"
        } else {
            "qcow2"
        }
        .into(),
    );
    set_instance_info(&h, &info)?;
    let ipa = reference_ipa.is_some();
    let opts = AgentOptions {
        extra_cmdline: agent_args.to_vec(),
        reference_ipa,
        ..AgentOptions::default()
    };
    let t0 = Instant::now();
    let (_, times) = deploy::run_deploy(&mut h, None, opts, "active")?;
    let request_to_active = t0.elapsed().as_secs_f64();
    let disk_check = (image.kind == Kind::Raw)
        .then(|| deploy::verify_raw_image(&h, 0, &image.path).map_err(|e| format!("{e:#}")));
    // Let the last conductor lines reach the log.
    std::thread::sleep(Duration::from_millis(300));
    let ironic = h.ironic_log();
    let agent = h.agent_logs();
    if let Some(dir) = log_dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ironic.log"), &ironic)?;
        std::fs::write(dir.join("agent.log"), &agent)?;
    }
    Ok(Row {
        agent_to_active: times.agent_to_verdict.as_secs_f64(),
        request_to_active,
        write_image_ironic: step_seconds(&ironic, "write_image"),
        image_seconds: if ipa {
            ipa_image_seconds(&agent)
        } else {
            image_seconds(&agent)
        },
        locked_heartbeats: ironic
            .matches("is currently locked, skipping heartbeat")
            .count(),
        running_polls: ironic.matches("has not finished yet for node").count(),
        disk_check,
        heartbeats: if ipa {
            agent.matches("heartbeat successful").count()
        } else {
            agent.matches("heartbeat accepted").count()
        },
    })
}

/// Seconds from the conductor's "Executing {... 'step': '<step>' ...}" to the next
/// "Executing" line (the next deploy step) or the node's arrival in `active`.
fn step_seconds(log: &str, step: &str) -> Option<f64> {
    let mut start = None;
    for line in log.lines() {
        let t = oslo_time(line);
        match start {
            None if line.contains("Executing {") && line.contains(&format!("'{step}'")) => {
                start = t
            }
            Some(s)
                if line.contains("Executing {")
                    || line.contains("Successfully deployed")
                    || line.contains("deploy failed") =>
            {
                return t.map(|t| t - s);
            }
            _ => {}
        }
    }
    None
}

/// Seconds of the day of an oslo.log line (`2026-12-02 10:40:01.123 PID LEVEL ...`).
fn oslo_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().nth(1)?;
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// `seconds` of the agent's "image written and verified" line.
fn image_seconds(log: &str) -> Option<f64> {
    let line = log
        .lines()
        .find(|l| l.contains("image written and verified"))?;
    let rest = line.split("seconds=").nth(1)?;
    rest.trim_start_matches('"')
        .split(|c: char| c == '"' || c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

/// The sum of what IPA logged for the image: "Image downloaded from ... in X seconds" and
/// "Image ... written to device ... in X seconds" (a cached image: download, then
/// `qemu-img convert`), or "Image streamed onto device ... in X seconds" (raw, streamed).
fn ipa_image_seconds(log: &str) -> Option<f64> {
    let mut total = None;
    for line in log.lines() {
        let relevant = line.contains("Image downloaded from")
            || line.contains("streamed onto device")
            || (line.contains("written to device") && line.contains("Image "));
        if !relevant {
            continue;
        }
        let secs = line
            .split(" in ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(secs) = secs {
            *total.get_or_insert(0.0) += secs;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_time_spans_to_the_next_step() {
        let log = "2026-12-02 10:00:01.500 1 INFO ironic.conductor.deployments [-] Executing {'step': 'write_image', 'priority': 80} on node x\n\
                   2026-12-02 10:00:02.000 1 DEBUG x heartbeat\n\
                   2026-12-02 10:00:07.250 1 INFO ironic.conductor.deployments [-] Executing {'step': 'prepare_instance_boot'} on node x\n";
        assert_eq!(step_seconds(log, "write_image"), Some(5.75));
        assert_eq!(step_seconds(log, "nope"), None);
    }

    #[test]
    fn ipa_image_time_adds_download_and_convert() {
        let log = "2026-12-02 1 INFO standby [-] Image downloaded from /tmp/x in 2.5 seconds. Transferred 10 bytes.\n\
                   2026-12-02 1 INFO standby [-] Image x written to device /dev/loop3 in 1.25 seconds\n";
        assert_eq!(ipa_image_seconds(log), Some(3.75));
        let raw = "INFO [-] Image streamed onto device /dev/loop3 in 4.0 seconds for 5 bytes.\n";
        assert_eq!(ipa_image_seconds(raw), Some(4.0));
        assert_eq!(ipa_image_seconds("nothing"), None);
    }
}
