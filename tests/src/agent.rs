//! The agent under test (`ironic-agent`), run inside the test's network namespace as the
//! ramdisk would run it: a kernel command line, and only the test's loop disk allowed.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::cmd;
use crate::netns::NetNs;

/// What a test adds to the agent's start.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Extra kernel command line tokens, e.g. `ipa-lookup-timeout=60`.
    pub extra_cmdline: Vec<String>,
    /// Block devices the agent may touch (`--allow-device`).
    pub allow_devices: Vec<PathBuf>,
    /// External hardware manager manifests (`--managers-dir`).
    pub managers_dir: Option<PathBuf>,
    /// Run ironic-python-agent instead (benchmarks only): see [`ReferenceIpa`].
    pub reference_ipa: Option<ReferenceIpa>,
}

/// IPA 13 as the reference agent of `deploy-bench`: `python tests/bench/ipa_agent.py`,
/// confined to the first allowed device by its bench hardware manager (see that file).
#[derive(Debug, Clone)]
pub struct ReferenceIpa {
    /// The venv's interpreter (`$IPA_VENV/bin/python`).
    pub python: PathBuf,
}

pub struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Agent {
    /// Starts `ip netns exec <ns> ironic-agent --cmdline-file ... --allow-device ...
    /// --state-dir ... --log-file ...` with its files under `dir`.
    pub fn start(dir: &Path, netns: &NetNs, api_url: &str, opts: &AgentOptions) -> Result<Agent> {
        std::fs::create_dir_all(dir)?;
        let cmdline = kernel_cmdline(netns, api_url, &opts.extra_cmdline);
        let cmdline_file = dir.join("cmdline");
        std::fs::write(&cmdline_file, format!("{cmdline}\n"))?;
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir)?;

        let out = File::create(dir.join("agent.stdout.log"))?;
        let mut c = match &opts.reference_ipa {
            None => {
                let mut c = netns.command(binary()?);
                c.arg("--cmdline-file").arg(&cmdline_file);
                for dev in &opts.allow_devices {
                    c.arg("--allow-device").arg(dev);
                }
                if let Some(dir) = &opts.managers_dir {
                    c.arg("--managers-dir").arg(dir);
                }
                c
            }
            Some(ipa) => {
                let [device] = opts.allow_devices.as_slice() else {
                    bail!("the reference IPA is given exactly one device");
                };
                let mut c = netns.command(&ipa.python);
                c.arg(workspace_root().join("tests/bench/ipa_agent.py"))
                    .arg("--api-url")
                    .arg(api_url)
                    .arg("--device")
                    .arg(device);
                c
            }
        };
        c.arg("--state-dir")
            .arg(&state_dir)
            .arg("--log-file")
            .arg(dir.join("agent.log"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        std::fs::write(dir.join("command"), format!("{}\n", cmd::display(&c)))?;
        // SAFETY: only async-signal-safe calls (setpgid, prctl) between fork and exec.
        unsafe {
            c.pre_exec(|| {
                nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                Ok(())
            });
        }
        let child = c
            .spawn()
            .with_context(|| format!("starting `{}`", cmd::display(&c)))?;
        Ok(Agent {
            child,
            dir: dir.to_path_buf(),
        })
    }

    /// The agent's pid (`ip netns exec` execs it, so the child is the agent).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the agent has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join("agent.stdout.log")
    }

    /// The agent's log file and its captured stdout/stderr, concatenated.
    pub fn log(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(self.log_path()), read(self.stdout_path()))
    }

    /// The agent's working files (cmdline, logs, state).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        crate::ironic::stop_group(&mut self.child, Duration::from_secs(5));
    }
}

/// The kernel command line a PXE boot by Ironic would give the ramdisk.
pub fn kernel_cmdline(netns: &NetNs, api_url: &str, extra: &[String]) -> String {
    let mut parts = vec![
        "BOOT_IMAGE=/ironic-agent.kernel".to_string(),
        format!("ipa-api-url={api_url}"),
        "ipa-lookup-timeout=300".to_string(),
        format!("BOOTIF={}", netns.bootif()),
        "ipa-debug=1".to_string(),
    ];
    parts.extend(extra.iter().cloned());
    parts.join(" ")
}

/// The agent binary: `IRONIC_AGENT_BIN`, else `<target>/debug/ironic-agent`, built with
/// `cargo build -p ironic-agent` when missing or older than its sources (cargo releases its
/// build lock before running tests, so this works from inside `cargo test`).
pub fn binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IRONIC_AGENT_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("IRONIC_AGENT_BIN={} does not exist", p.display());
        }
        return Ok(p);
    }
    let workspace = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| workspace.join(t))
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target.join("debug/ironic-agent");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let sources = newest_source(&workspace);
    match (built, sources) {
        (Some(b), Some(s)) if b >= s => return Ok(bin),
        (Some(_), None) => return Ok(bin),
        _ => {}
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "{} is {}: running `cargo build -p ironic-agent`",
        bin.display(),
        if built.is_some() {
            "older than its sources"
        } else {
            "missing"
        }
    );
    let status = Command::new(&cargo)
        .args(["build", "-p", "ironic-agent"])
        .current_dir(&workspace)
        .status()
        .context("running cargo build -p ironic-agent")?;
    if !status.success() || !bin.is_file() {
        bail!(
            "could not build the agent (`cargo build -p ironic-agent` {status}, {} {}); build it \
             first or set IRONIC_AGENT_BIN",
            bin.display(),
            if bin.is_file() { "exists" } else { "missing" }
        );
    }
    Ok(bin)
}

/// The newest modification time among the agent's sources: its crate and the workspace
/// crates it links, and the lock file.
fn newest_source(workspace: &Path) -> Option<std::time::SystemTime> {
    fn walk(path: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(Some(m));
        }
    }
    let mut newest = None;
    for krate in [
        "agent",
        "hardware-managers",
        "protocol",
        "image-pipeline",
        "disk-layout",
    ] {
        walk(&workspace.join(krate).join("src"), &mut newest);
        walk(&workspace.join(krate).join("Cargo.toml"), &mut newest);
    }
    walk(&workspace.join("Cargo.lock"), &mut newest);
    newest
}

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
