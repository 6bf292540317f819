//! The `log` extension: a tarball of what an operator needs to debug a failed deploy or
//! clean, gathered natively (no shelling out): the agent log, the kernel log and system facts.

use std::sync::Arc;

use base64::Engine;
use ironic_protocol::CommandError;
use serde_json::json;

use crate::agent::Agent;
use crate::commands::NoParams;
use crate::commands::{CommandDef, CommandValue, Mode};

pub fn commands() -> Vec<CommandDef> {
    vec![CommandDef::new(
        "collect_system_logs",
        Mode::Sync,
        |agent, _: NoParams| collect_system_logs(agent),
    )]
}

/// `{"system_logs": "<base64 of a gzipped tar>"}`, as the conductor stores it.
async fn collect_system_logs(agent: Arc<Agent>) -> Result<CommandValue, CommandError> {
    let bundle = tokio::task::spawn_blocking(move || build_bundle(&agent))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| CommandError::execution_failed(format!("collecting logs: {e}")))?;
    Ok(CommandValue::Json(json!({
        "system_logs": base64::engine::general_purpose::STANDARD.encode(bundle)
    })))
}

pub(crate) fn build_bundle(agent: &Agent) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, data: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_cksum();
        tar.append_data(&mut header, name, data)
    };
    add("agent.log", &agent.logs().contents())?;
    // The kernel logs its command line, which carries a pre-shared agent token.
    let dmesg = String::from_utf8_lossy(&kernel_log()).into_owned();
    add(
        "dmesg",
        ramdisk_contract::cmdline::redact(&dmesg).as_bytes(),
    )?;
    for (name, path) in [
        ("mount", "/proc/self/mounts"),
        ("meminfo", "/proc/meminfo"),
        ("cpuinfo", "/proc/cpuinfo"),
        ("modules", "/proc/modules"),
        ("partitions", "/proc/partitions"),
        ("mdstat", "/proc/mdstat"),
    ] {
        if let Ok(data) = std::fs::read(path) {
            add(name, &data)?;
        }
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    add(
        "cmdline",
        crate::config::redact_cmdline(&cmdline).as_bytes(),
    )?;
    add("uname", uname().as_bytes())?;
    add("ps", processes().as_bytes())?;
    add("df", filesystems().as_bytes())?;
    let managers = agent.managers();
    let facts = json!({
        "in_ramdisk": agent.guard().in_ramdisk(),
        "hardware_managers": managers.names(),
        "hardware_manager_versions": managers.versions(),
        "block_devices": managers.list_block_devices(true).map_err(|e| e.to_string()),
        "network_interfaces": managers.list_network_interfaces().map_err(|e| e.to_string()),
        // Results echo what the conductor sent; scrubbed again in case a command's result
        // carries something its own code did not mask.
        "commands": crate::redact::scrub(&json!(agent.history().snapshot())),
    });
    add(
        "agent-facts.json",
        serde_json::to_string_pretty(&facts)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    tar.into_inner()?.finish()
}

/// The kernel ring buffer (what `dmesg` prints), read with syslog(2).
fn kernel_log() -> Vec<u8> {
    use nix::libc;
    // SAFETY: SYSLOG_ACTION_SIZE_BUFFER (10) takes no buffer; SYSLOG_ACTION_READ_ALL (3) writes
    // at most `len` bytes into the buffer we own.
    unsafe {
        let size = libc::klogctl(10, std::ptr::null_mut(), 0);
        if size <= 0 {
            return b"(kernel log unavailable)\n".to_vec();
        }
        let mut buf = vec![0u8; size as usize];
        let n = libc::klogctl(3, buf.as_mut_ptr().cast(), size);
        if n < 0 {
            return format!(
                "(kernel log unavailable: {})\n",
                std::io::Error::last_os_error()
            )
            .into_bytes();
        }
        buf.truncate(n as usize);
        buf
    }
}

fn uname() -> String {
    match nix::sys::utsname::uname() {
        Ok(u) => format!(
            "{} {} {} {} {}\n",
            u.sysname().to_string_lossy(),
            u.nodename().to_string_lossy(),
            u.release().to_string_lossy(),
            u.version().to_string_lossy(),
            u.machine().to_string_lossy()
        ),
        Err(e) => format!("uname failed: {e}\n"),
    }
}

/// PID, command name and arguments of every process (what `ps -ef` shows that matters).
/// Arguments of the agent itself are left out: they can carry a token on the command line.
fn processes() -> String {
    let mut out = String::from("PID\tCOMMAND\n");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let me = std::process::id();
    for pid in pids {
        let args = if pid == me {
            "ironic-agent".to_string()
        } else {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default()
        };
        let args = crate::config::redact_cmdline(&args);
        out.push_str(&format!("{pid}\t{args}\n"));
    }
    out
}

/// Size and free space of each mounted filesystem (what `df` shows).
fn filesystems() -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut out = String::from("FILESYSTEM\tTYPE\tSIZE\tFREE\tMOUNTPOINT\n");
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if let Ok(s) = nix::sys::statvfs::statvfs(f[1]) {
            let frag = s.fragment_size();
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                f[0],
                f[2],
                s.blocks() * frag,
                s.blocks_available() * frag,
                f[1]
            ));
        }
    }
    out
}
