//! `cargo run -p e2e --bin demo`: the agent's main job end to end on an embedded default.
//!
//! A real Ironic, a network namespace as the machine, two loop disks as its disks (an empty
//! 5 GiB system disk and a 64 MiB data disk with a filesystem), and the real `ironic-agent`.
//! Phases: enroll and automated cleaning (erase_devices_metadata, checked on the data disk),
//! then a direct deploy of a raw GPT image with a config drive to `active` (the agent
//! restarted in between, as the machine would reboot), checked byte for byte on the system
//! disk. Each phase is a function returning its summary line.
//!
//! Needs root and the Ironic venv (tests/setup.sh). Exits non-zero on failure, after
//! printing the Ironic and agent logs.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use e2e::agent::AgentOptions;
use e2e::cleaning::{self, prepare_disk, run_automated_cleaning};
use e2e::deploy::{
    self, run_deploy, set_instance_info, ImageChecksum, InstanceInfo, TempUrl, WholeDiskExpectation,
};
use e2e::harness::Harness;
use e2e::images::{self, ConfigDrive, WholeDiskImage};
use e2e::loopdev::{Fill, LINUX_FS};

const MAC: &str = "52:54:00:de:30:01";

/// The system disk, added first: the smallest disk of at least 4 GiB, so the agent deploys
/// onto it without root device hints.
const SYSTEM_DISK: usize = 0;

type Phase = fn(&mut Harness) -> Result<String>;

fn main() -> ExitCode {
    println!("ironic-agent end-to-end demo (Ironic {})", ironic_version());
    let start = Instant::now();
    let mut h = match Harness::start("demo", MAC, |_| {}) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("FAILED to set up: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = h.add_disk(deploy::DISK_SIZE, Fill::Zeros) {
        eprintln!("FAILED to add the system disk: {e:#}");
        return ExitCode::FAILURE;
    }
    let phases: &[(&str, Phase)] = &[
        ("automated cleaning", phase_cleaning),
        ("deploy", phase_deploy),
    ];
    let mut summary = Vec::new();
    for (name, phase) in phases {
        h.progress(&format!("== {name} =="));
        match phase(&mut h) {
            Ok(line) => summary.push(format!("  ok   {name}: {line}")),
            Err(e) => {
                summary.push(format!("  FAIL {name}: {e:#}"));
                h.report(&format!("demo failed in phase {name}"));
                print_summary(&summary, start, false);
                return ExitCode::FAILURE;
            }
        }
    }
    print_summary(&summary, start, true);
    ExitCode::SUCCESS
}

/// Enroll, manage, provide -> the agent erases the disk's metadata -> available.
fn phase_cleaning(h: &mut Harness) -> Result<String> {
    let disk = prepare_disk(h, LINUX_FS)?;
    let (_, times) = run_automated_cleaning(h, "available")?;
    cleaning::verify_steps_ran(h)?;
    cleaning::verify_metadata_erased(h, &disk)?;
    Ok(format!(
        "node available; provide -> clean wait {:.1}s, agent start -> available {:.1}s; \
         metadata erased, all other bytes of the disk unchanged",
        times.provide_to_clean_wait.as_secs_f64(),
        times.agent_to_verdict.as_secs_f64()
    ))
}

/// Reboot into the ramdisk (a new agent: the token is single-use), deploy a raw GPT image
/// from nginx (a temp-URL-shaped URL, sha256) with a config drive -> active; check the
/// system disk byte for byte.
fn phase_deploy(h: &mut Harness) -> Result<String> {
    h.stop_agent();
    let dir = h.dir().path().to_path_buf();
    let image = WholeDiskImage::build(&dir, "disk.raw", 16, 16)?;
    let configdrive = ConfigDrive::build(&dir, "e2e-demo")?;
    let digests = images::digests(&image.path)?;
    let temp_url = TempUrl::fake()?;
    let nginx = h.start_nginx()?;
    std::fs::copy(&image.path, nginx.root().join("disk.raw")).context("publishing the image")?;
    let url = temp_url.apply(&nginx.url("disk.raw"));
    h.progress(&format!(
        "image: {} MiB GPT (ESP with {}, root), config drive {} KiB (ISO 9660, config-2)",
        image.len >> 20,
        images::BOOT_LOADER,
        configdrive.iso.len() >> 10
    ));
    set_instance_info(
        h,
        &InstanceInfo::whole_disk(url, ImageChecksum::sha256(&digests)),
    )?;
    let (_, times) = run_deploy(
        h,
        Some(&configdrive.encoded),
        AgentOptions::default(),
        "active",
    )?;
    deploy::verify_deploy_calls(h)?;
    deploy::verify_secret_kept(h, &temp_url.sig)?;
    deploy::verify_whole_disk(
        h,
        SYSTEM_DISK,
        &WholeDiskExpectation {
            raw: &image.path,
            configdrive: Some(&configdrive.iso),
        },
    )?;
    Ok(format!(
        "node active; deploy request -> wait call-back {:.1}s, agent start -> active {:.1}s; \
         image bytes and config drive on the disk, backup GPT at its end, temp URL signature \
         in no log",
        times.request_to_wait_callback.as_secs_f64(),
        times.agent_to_verdict.as_secs_f64()
    ))
}

fn print_summary(lines: &[String], start: Instant, ok: bool) {
    println!();
    println!(
        "{} after {:.1}s",
        if ok { "SUCCESS" } else { "FAILURE" },
        start.elapsed().as_secs_f64()
    );
    for l in lines {
        println!("{l}");
    }
}

fn ironic_version() -> String {
    e2e::ironic::version().unwrap_or_else(|| "version unknown".into())
}
