//! `cargo run -p e2e --bin demo`: the agent's main job end to end on an embedded default.
//!
//! A real Ironic, a network namespace as the machine, a 64 MiB loop disk as its disk, and
//! the real `ironic-agent`. Today: enroll, automated cleaning (erase_devices_metadata) and
//! a check of the disk. Each phase is a function returning its summary line, so later
//! phases (deploy, undeploy) slot in after it.
//!
//! Needs root and the Ironic venv (tests/setup.sh). Exits non-zero on failure, after
//! printing the Ironic and agent logs.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use e2e::cleaning::{self, prepare_disk, run_automated_cleaning};
use e2e::harness::Harness;
use e2e::loopdev::LINUX_FS;

const MAC: &str = "52:54:00:de:30:01";

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
    let phases: &[(&str, Phase)] = &[("automated cleaning", phase_cleaning)];
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
