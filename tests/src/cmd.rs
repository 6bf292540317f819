//! Running helper programs (ip, losetup, sgdisk, ...) with errors that say what was run.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use nix::sys::signal::Signal;

use anyhow::{bail, Context, Result};

/// `program args...` as one display string, for error messages and progress lines.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; a non-zero exit is an error carrying its stdout and stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("running `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\nstdout: {}\nstderr: {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(out)
}

/// Runs `program args...` and returns its stdout as text.
pub fn stdout<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let out = run(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` can be found on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Fails early, with the fix, when the harness cannot work here: not root, or a tool missing.
pub fn check_prerequisites(tools: &[&str]) -> Result<()> {
    // The effective uid owns /proc/self.
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?);
    if euid != 0 {
        bail!("the end-to-end tests need root (network namespaces, loop devices)");
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        bail!(
            "missing tools: {}; run tests/setup.sh as root",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Whether a process with this pid exists (used to recognise leftovers of dead test runs).
pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Starts `cmd` as the leader of a new session, so that its whole process group can be
/// killed, and with SIGTERM when the test process dies, so that a killed test run leaves no
/// daemon behind its Drop.
pub fn own_session(cmd: &mut Command) -> &mut Command {
    // SAFETY: only async-signal-safe calls (setsid, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            Ok(())
        })
    }
}

/// CPU seconds (user + system) a process used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (ticks(11) + ticks(12)) / hz
}
