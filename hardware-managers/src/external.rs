//! External hardware managers: steps implemented by programs in the ramdisk, declared in
//! manifest files, so that an operator can add a step (a vendor firmware tool, a site check)
//! without writing Rust or rebuilding the agent.
//!
//! # Manifest
//! One file per manager in the managers directory (`/etc/ironic-agent/managers.d/` by
//! default), `*.toml` or `*.json`, read once at start-up:
//!
//! ```toml
//! name = "AcmeFirmwareManager"    # key of its steps in step lists
//! version = "1.0"                 # bump whenever the steps change
//! # version_name = "acme_firmware_manager"   # default: name
//! support_level = 3               # 1 generic, 2 mainline, 3 service provider (default)
//! detect = ["/usr/libexec/acme/detect"]      # optional, see below
//! timeout = 3600                  # seconds, default for every step (default 3600)
//! # detect_timeout = 30           # seconds
//! # max_output_bytes = 1048576    # cap on what a command may print on stdout
//!
//! [[steps]]
//! step = "update_firmware"
//! kinds = ["clean", "service"]    # default ["clean"]
//! priority = 0                    # 0: only when asked for (manual cleaning, servicing)
//! interface = "management"        # default "deploy"
//! reboot_requested = false
//! abortable = false
//! command = ["/usr/libexec/acme/update-firmware", "--all"]   # relative: to the manifest
//! # timeout = 1800
//! [steps.argsinfo.url]
//! description = "URL of the firmware bundle"
//! required = true
//! ```
//!
//! # The command protocol
//! * `detect` runs once at start-up with no input. Exit status 0 means the manager applies,
//!   at `support_level`, or at the level it prints on stdout (an integer); exit status 1 means
//!   it does not apply to this machine (it is not loaded). Anything else (another status, a
//!   timeout, a command that cannot run) stops the agent's start-up: a manager that silently
//!   went missing would let the generic manager run a step the operator meant to override.
//! * A step's command gets on stdin one JSON document:
//!   `{"step": name, "node": {...}, "ports": [...], "args": {...}, "in_ramdisk": bool,
//!   "allowed_devices": ["/dev/loop3", ...]}` (`args` are the step's arguments, already checked
//!   against `argsinfo`; outside a ramdisk a command must only touch `allowed_devices`), and
//!   the environment variables `IRONIC_AGENT_MANAGER` and `IRONIC_AGENT_STEP`.
//! * It reports its result as one JSON document on stdout (empty stdout means `null`); that
//!   becomes the step's `*_result`. Exit status 0 is success; anything else fails the step
//!   with the `"error"` string of the JSON on stdout when there is one, else the tail of
//!   stderr. Logs go to stderr; its tail is logged by the agent.
//! * A command that runs past its timeout is killed with its whole process group; one that
//!   prints more than `max_output_bytes` on stdout is killed too. Both fail the step.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ironic_protocol::{Node, Step, StepKind};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use blockdev::DeviceGuard;

use crate::{HardwareError, HardwareManager, StepCall, SupportLevel};

const DEFAULT_STEP_TIMEOUT: f64 = 3600.0;
const DEFAULT_DETECT_TIMEOUT: f64 = 30.0;
const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
/// How much of a command's stderr is kept for error messages and logs.
const STDERR_TAIL: usize = 4096;

/// A manifest that cannot be used, or a detection command that failed. Start-up stops on it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}: support detection failed: {message}", path.display())]
    Detect { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    version: String,
    version_name: Option<String>,
    support_level: Option<u32>,
    detect: Option<Vec<String>>,
    detect_timeout: Option<f64>,
    timeout: Option<f64>,
    max_output_bytes: Option<usize>,
    #[serde(default)]
    steps: Vec<ManifestStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestStep {
    step: String,
    kinds: Option<Vec<String>>,
    priority: i64,
    interface: Option<String>,
    #[serde(default)]
    reboot_requested: bool,
    abortable: Option<bool>,
    argsinfo: Option<Map<String, Value>>,
    command: Vec<String>,
    timeout: Option<f64>,
}

/// One step of an external manager, ready to run.
#[derive(Debug, Clone)]
struct ExternalStep {
    kinds: Vec<StepKind>,
    definition: Step,
    command: Vec<PathBuf>,
    timeout: Duration,
}

/// A manager whose steps are programs, loaded from a manifest.
#[derive(Debug)]
pub struct ExternalManager {
    name: String,
    version_name: String,
    version: String,
    support: SupportLevel,
    steps: Vec<ExternalStep>,
    max_output: usize,
    manifest: PathBuf,
    guard: DeviceGuard,
}

/// Loads every `*.toml` and `*.json` manifest of `dir`, in name order, and runs their
/// detection commands. A missing directory means no external managers; any broken manifest
/// is an error. Managers whose detection says "not this machine" are left out.
pub fn load_dir(dir: &Path, guard: &DeviceGuard) -> Result<Vec<ExternalManager>, LoadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LoadError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("toml" | "json")
            )
        })
        .collect();
    paths.sort();
    let mut managers: Vec<ExternalManager> = Vec::new();
    for path in paths {
        let manager = ExternalManager::load(&path, guard.clone())?;
        if let Some(other) = managers
            .iter()
            .find(|m| m.name == manager.name || m.version_name == manager.version_name)
        {
            return Err(LoadError::Invalid {
                path,
                message: format!(
                    "manager name {:?} (version name {:?}) is already used by {}",
                    manager.name,
                    manager.version_name,
                    other.manifest.display()
                ),
            });
        }
        if manager.support == SupportLevel::NONE {
            tracing::info!(manager = %manager.name, manifest = %manager.manifest.display(),
                "external hardware manager does not apply to this machine");
            continue;
        }
        managers.push(manager);
    }
    Ok(managers)
}

impl ExternalManager {
    /// Parses and checks one manifest and runs its detection command.
    pub fn load(path: &Path, guard: DeviceGuard) -> Result<Self, LoadError> {
        let invalid = |message: String| LoadError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let manifest: Manifest = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?,
            _ => toml::from_str(&text).map_err(|e| invalid(e.to_string().trim().to_string()))?,
        };
        let base = path.parent().unwrap_or(Path::new("/"));
        check_name("name", &manifest.name).map_err(invalid)?;
        let version_name = manifest
            .version_name
            .clone()
            .unwrap_or_else(|| manifest.name.clone());
        check_name("version_name", &version_name).map_err(invalid)?;
        if manifest.version.trim().is_empty() {
            return Err(invalid("version must not be empty".into()));
        }
        let default_timeout =
            seconds("timeout", manifest.timeout, DEFAULT_STEP_TIMEOUT).map_err(invalid)?;
        let mut steps: Vec<ExternalStep> = Vec::new();
        for (i, s) in manifest.steps.iter().enumerate() {
            let at = |m: String| invalid(format!("steps[{i}] ({}): {m}", s.step));
            check_name("step", &s.step).map_err(at)?;
            if s.priority < 0 {
                return Err(at("priority must be 0 or more".into()));
            }
            let kinds = parse_kinds(s.kinds.as_deref()).map_err(at)?;
            if steps
                .iter()
                .any(|o| o.definition.step == s.step && o.kinds.iter().any(|k| kinds.contains(k)))
            {
                return Err(at("step declared twice for the same kind".into()));
            }
            let interface = s.interface.clone().unwrap_or_else(|| "deploy".into());
            check_name("interface", &interface).map_err(at)?;
            if let Some(a) = &s.argsinfo {
                crate::argsinfo::check_argsinfo_shape(a).map_err(at)?;
            }
            let command = resolve_command(base, &s.command).map_err(at)?;
            let timeout = match s.timeout {
                Some(t) => seconds("timeout", Some(t), 0.0).map_err(at)?,
                None => default_timeout,
            };
            let mut definition = Step::new(&s.step, s.priority).interface(&interface);
            definition.reboot_requested = s.reboot_requested;
            definition.abortable = s.abortable;
            definition.argsinfo = s.argsinfo.clone();
            steps.push(ExternalStep {
                kinds,
                definition,
                command,
                timeout,
            });
        }
        let max_output = manifest.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT);
        if max_output == 0 {
            return Err(invalid("max_output_bytes must be more than 0".into()));
        }
        let level = manifest
            .support_level
            .unwrap_or(SupportLevel::SERVICE_PROVIDER.0);
        let support = match &manifest.detect {
            None => SupportLevel(level),
            Some(cmd) => {
                let cmd =
                    resolve_command(base, cmd).map_err(|m| invalid(format!("detect: {m}")))?;
                let timeout = seconds(
                    "detect_timeout",
                    manifest.detect_timeout,
                    DEFAULT_DETECT_TIMEOUT,
                )
                .map_err(invalid)?;
                detect(&cmd, timeout, level).map_err(|message| LoadError::Detect {
                    path: path.to_path_buf(),
                    message,
                })?
            }
        };
        tracing::info!(manager = %manifest.name, version = %manifest.version, support = support.0,
            steps = steps.len(), manifest = %path.display(), "external hardware manager loaded");
        Ok(ExternalManager {
            name: manifest.name,
            version_name,
            version: manifest.version,
            support,
            steps,
            max_output,
            manifest: path.to_path_buf(),
            guard,
        })
    }

    /// The manifest this manager came from.
    pub fn manifest(&self) -> &Path {
        &self.manifest
    }

    fn input(&self, name: &str, call: &StepCall<'_>) -> Value {
        let allowed: Vec<String> = self
            .guard
            .allowed_paths()
            .map(|p| p.display().to_string())
            .collect();
        json!({
            "step": name,
            "node": call.node,
            "ports": call.ports,
            "args": call.args,
            "in_ramdisk": self.guard.in_ramdisk(),
            "allowed_devices": allowed,
        })
    }
}

impl HardwareManager for ExternalManager {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> (String, String) {
        (self.version_name.clone(), self.version.clone())
    }

    fn evaluate_hardware_support(&self) -> SupportLevel {
        self.support
    }

    fn steps(&self, kind: StepKind, _node: &Node, _ports: &[Value]) -> Vec<Step> {
        self.steps
            .iter()
            .filter(|s| s.kinds.contains(&kind))
            .map(|s| s.definition.clone())
            .collect()
    }

    fn execute_step(&self, name: &str, call: &StepCall<'_>) -> Result<Value, HardwareError> {
        let Some(step) = self.steps.iter().find(|s| s.definition.step == name) else {
            return Err(HardwareError::NotHandled);
        };
        let input = serde_json::to_vec(&self.input(name, call))
            .map_err(|e| HardwareError::io("encoding the step input", e.into()))?;
        let fail = |what: String| {
            HardwareError::StepFailed(format!(
                "{} step {name} ({}): {what}",
                self.name,
                display_command(&step.command)
            ))
        };
        tracing::info!(manager = %self.name, step = name, command = %display_command(&step.command),
            timeout_s = step.timeout.as_secs_f64(), "running external step");
        let started = Instant::now();
        let out = run(
            &step.command,
            Some(&input),
            &[
                ("IRONIC_AGENT_MANAGER", &self.name),
                ("IRONIC_AGENT_STEP", name),
            ],
            step.timeout,
            self.max_output,
        )
        .map_err(|e| fail(e.to_string()))?;
        if !out.stderr_tail.is_empty() {
            tracing::info!(manager = %self.name, step = name, stderr = %out.stderr_tail,
                "external step stderr (tail)");
        }
        let exit = (!out.status.success()).then(|| describe_status(out.status));
        let value = step_outcome(exit.as_deref(), &out.stdout, &out.stderr_tail).map_err(fail)?;
        tracing::info!(manager = %self.name, step = name,
            elapsed_s = started.elapsed().as_secs_f64(), "external step succeeded");
        Ok(value)
    }
}

/// The support level from a detection command.
fn detect(cmd: &[PathBuf], timeout: Duration, level: u32) -> Result<SupportLevel, String> {
    let out = run(cmd, None, &[], timeout, 4096).map_err(|e| e.to_string())?;
    match out.status.code() {
        Some(0) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let text = text.trim();
            if text.is_empty() {
                return Ok(SupportLevel(level));
            }
            text.parse::<u32>().map(SupportLevel).map_err(|_| {
                format!(
                    "{} printed {text:?}: expected nothing or an integer support level",
                    display_command(cmd)
                )
            })
        }
        Some(1) => Ok(SupportLevel::NONE),
        _ => Err(format!(
            "{} {}: {}",
            display_command(cmd),
            describe_status(out.status),
            if out.stderr_tail.is_empty() {
                "no output"
            } else {
                &out.stderr_tail
            }
        )),
    }
}

/// What a finished command left.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr_tail: String,
}

/// Why [`run`] has no output to give.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run it: {0}")]
    Spawn(std::io::Error),
    #[error("did not finish within {0:.1} s and was killed")]
    Timeout(f64),
    #[error("printed more than {0} bytes on stdout and was killed")]
    TooMuchOutput(usize),
    #[error("waiting for it: {0}")]
    Wait(std::io::Error),
}

/// Runs `cmd` in its own process group, feeding `input` on stdin, capturing stdout (at most
/// `max_output` bytes) and the tail of stderr, and killing the group on timeout. For managers
/// that drive a vendor tool, as external managers drive their commands.
pub fn run(
    cmd: &[PathBuf],
    input: Option<&[u8]>,
    env: &[(&str, &str)],
    timeout: Duration,
    max_output: usize,
) -> Result<Output, RunError> {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = c.spawn().map_err(RunError::Spawn)?;
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let kill_group = || {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    };

    // A command that does not read its input must not block us: feed it from a thread.
    let stdin = child.stdin.take();
    let input = input.map(<[u8]>::to_vec);
    let writer = std::thread::spawn(move || {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            let _ = stdin.write_all(&input);
        }
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > max_output {
                        let _ = out_tx.send(());
                        break;
                    }
                }
            }
        }
        buf
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let err_reader = std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match stderr.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    tail.extend_from_slice(&chunk[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
        }
        tail
    });

    let deadline = Instant::now() + timeout;
    let mut failure = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                kill_group();
                failure = Some(RunError::Wait(e));
                break None;
            }
        }
        if out_rx.try_recv().is_ok() {
            kill_group();
            failure = Some(RunError::TooMuchOutput(max_output));
            break None;
        }
        if Instant::now() >= deadline {
            kill_group();
            failure = Some(RunError::Timeout(timeout.as_secs_f64()));
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Children of the command may still hold the pipes open; they go with the group.
    if status.is_some() {
        kill_group();
    }
    let _ = child.wait();
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if let Some(f) = failure {
        return Err(f);
    }
    if stdout.len() > max_output {
        return Err(RunError::TooMuchOutput(max_output));
    }
    Ok(Output {
        status: status.expect("set when there is no failure"),
        stdout,
        stderr_tail: tail_text(&stderr),
    })
}

/// The last lines of `bytes`, at most [`STDERR_TAIL`] bytes, as text.
fn tail_text(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let text = text.trim();
    // Do not start in the middle of a line when the tail was cut.
    match (start > 0, text.find('\n')) {
        (true, Some(i)) => text[i + 1..].to_string(),
        _ => text.to_string(),
    }
}

/// What an external step's output means: its JSON result when it exited 0 (`exit` is
/// `None`) with JSON or nothing on stdout, else the message for the step error: the exit
/// status (`exit`) and the manager's `{"error": ...}`, or the stderr tail, or a preview of the
/// output that is not JSON. The message is bounded by what the manager printed (stdout is
/// capped by `max_output`, stderr by its tail), never by the parser.
pub fn step_outcome(exit: Option<&str>, stdout: &[u8], stderr_tail: &str) -> Result<Value, String> {
    let parsed = parse_stdout(stdout);
    if let Some(exit) = exit {
        let reason = match &parsed {
            Ok(Value::Object(o)) => o.get("error").and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
        .or_else(|| (!stderr_tail.is_empty()).then(|| stderr_tail.to_string()))
        .unwrap_or_else(|| "no output".into());
        return Err(format!("{exit}: {reason}"));
    }
    parsed.map_err(|e| {
        format!(
            "exited 0 but its stdout is not JSON ({e}): {}",
            preview(stdout)
        )
    })
}

/// The tail of a command's stderr as [`run`] keeps it, for [`step_outcome`].
pub fn stderr_tail(stderr: &[u8]) -> String {
    tail_text(stderr)
}

fn parse_stdout(stdout: &[u8]) -> Result<Value, serde_json::Error> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(stdout)
}

fn preview(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(&stdout[..stdout.len().min(200)]);
    format!(
        "{:?}{}",
        text.trim(),
        if stdout.len() > 200 { "..." } else { "" }
    )
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".into(),
    }
}

fn display_command(cmd: &[PathBuf]) -> String {
    cmd.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The command with its program resolved against the manifest's directory, checked to be an
/// executable file now rather than when a node is half-way through cleaning.
fn resolve_command(base: &Path, cmd: &[String]) -> Result<Vec<PathBuf>, String> {
    let Some(program) = cmd.first().filter(|p| !p.is_empty()) else {
        return Err("command must name a program".into());
    };
    let program = base.join(program);
    let meta =
        std::fs::metadata(&program).map_err(|e| format!("command {}: {e}", program.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "command {} is not an executable file",
            program.display()
        ));
    }
    let mut out = vec![program];
    out.extend(cmd[1..].iter().map(PathBuf::from));
    Ok(out)
}

fn parse_kinds(kinds: Option<&[String]>) -> Result<Vec<StepKind>, String> {
    let Some(kinds) = kinds else {
        return Ok(vec![StepKind::Clean]);
    };
    if kinds.is_empty() {
        return Err("kinds must list at least one of clean, deploy, service".into());
    }
    kinds
        .iter()
        .map(|k| {
            StepKind::ALL
                .into_iter()
                .find(|s| s.as_str() == k)
                .ok_or_else(|| format!("unknown kind {k:?} (clean, deploy or service)"))
        })
        .collect()
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must be non-empty and use only letters, digits, '_', '-', '.'"
        ))
    }
}

fn seconds(what: &str, value: Option<f64>, default: f64) -> Result<Duration, String> {
    let v = value.unwrap_or(default);
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{what} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}
