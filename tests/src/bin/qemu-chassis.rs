//! `qemu-chassis STATE_DIR get|set NAME [VALUE] ...`: the chassis-control program of an
//! OpenIPMI `ipmi_sim` BMC (`chassis_control` in its lan.conf), which makes a QEMU VM the
//! BMC's server: power on starts QEMU, power off stops it, and the boot device chosen
//! over IPMI (`chassis bootdev pxe|disk`) becomes QEMU's boot order at the next power-on.
//!
//! `ipmi_sim` runs this through popen() and reads its stdout to EOF, single-threaded: so
//! QEMU is started in its own session with its stdio on files (else every IPMI call would
//! hang until QEMU exits), and stopping it takes at most half a second (else Ironic's
//! one-second ipmitool timeout expires).
//!
//! The state directory (written by the harness, see `e2e::qemu::Bmc`):
//! - `qemu.args`: QEMU's program and arguments, one per line, without `-boot`;
//! - `bootdev`: the IPMI boot device (`pxe`, `default`, `cdrom`, `bios`, `none`);
//! - `qemu.pid`, `qemu.out`: the running VM; `chassis.log`: every call, with Unix times.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

struct Chassis {
    dir: PathBuf,
}

impl Chassis {
    fn log(&self, msg: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("chassis.log"))
        {
            let _ = writeln!(f, "{:.3} {msg}", now());
        }
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the VM runs. A killed QEMU is re-parented to PID 1, which may never reap
    /// it: a zombie counts as powered off.
    fn alive(&self) -> bool {
        self.pid().is_some_and(pid_alive)
    }

    fn bootdev(&self) -> String {
        std::fs::read_to_string(self.dir.join("bootdev"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string())
    }

    fn start(&self) -> Result<(), String> {
        if self.alive() {
            return Ok(());
        }
        let args = std::fs::read_to_string(self.dir.join("qemu.args"))
            .map_err(|e| format!("reading qemu.args: {e}"))?;
        let mut args = args.lines().filter(|l| !l.is_empty());
        let program = args.next().ok_or("qemu.args is empty")?;
        let bootdev = self.bootdev();
        let order = if bootdev == "pxe" { "n" } else { "c" };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("qemu.out"))
            .map_err(|e| format!("opening qemu.out: {e}"))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut c = Command::new(program);
        c.args(args)
            .args(["-boot", &format!("order={order}")])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let child = c.spawn().map_err(|e| format!("starting {program}: {e}"))?;
        std::fs::write(self.dir.join("qemu.pid"), format!("{}\n", child.id()))
            .map_err(|e| format!("writing qemu.pid: {e}"))?;
        self.log(&format!(
            "power on: qemu pid {} boot device {bootdev} (-boot order={order})",
            child.id()
        ));
        Ok(())
    }

    fn stop(&self, why: &str) {
        let Some(pid) = self.pid() else { return };
        if pid_alive(pid) {
            let p = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
            let t = Instant::now();
            while pid_alive(pid) && t.elapsed() < Duration::from_millis(500) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if pid_alive(pid) {
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
            }
            self.log(&format!("power off ({why}): qemu pid {pid} stopped"));
        }
        let _ = std::fs::remove_file(self.dir.join("qemu.pid"));
    }
}

fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(op)) = (args.first(), args.get(1)) else {
        eprintln!("usage: qemu-chassis STATE_DIR get|set|check NAME [VALUE]...");
        return ExitCode::FAILURE;
    };
    let ch = Chassis {
        dir: Path::new(dir).to_path_buf(),
    };
    let rest = &args[2..];
    match op.as_str() {
        "check" => ExitCode::SUCCESS,
        "get" => {
            let mut out = String::new();
            for name in rest {
                let value = match name.as_str() {
                    "power" => {
                        if ch.alive() {
                            "1".to_string()
                        } else {
                            "0".to_string()
                        }
                    }
                    "boot" => ch.bootdev(),
                    _ => "0".to_string(),
                };
                out.push_str(&format!("{name}:{value}\n"));
            }
            print!("{out}");
            ExitCode::SUCCESS
        }
        "set" => {
            let mut ok = true;
            for pair in rest.chunks(2) {
                let name = pair[0].as_str();
                let value = pair.get(1).map(|v| v.trim_matches('"')).unwrap_or("");
                match (name, value) {
                    ("power", "1") => {
                        if let Err(e) = ch.start() {
                            ch.log(&format!("power on failed: {e}"));
                            ok = false;
                        }
                    }
                    ("power", _) => ch.stop("power off"),
                    ("reset", _) => {
                        ch.stop("reset");
                        if let Err(e) = ch.start() {
                            ch.log(&format!("power on after reset failed: {e}"));
                            ok = false;
                        }
                    }
                    ("shutdown", _) => ch.stop("soft off"),
                    ("boot", v) => {
                        let _ = std::fs::write(ch.dir.join("bootdev"), format!("{v}\n"));
                        ch.log(&format!("boot device {v}"));
                    }
                    (n, v) => ch.log(&format!("ignored set {n}={v}")),
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        other => {
            ch.log(&format!("unknown operation {other}"));
            ExitCode::FAILURE
        }
    }
}
