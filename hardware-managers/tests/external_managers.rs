//! External managers through the real dispatch: manifests in a temp directory, small shell
//! scripts as their commands, run by `Managers` as the agent runs them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockdev::DeviceGuard;
use hardware_managers::external::{self, ExternalManager, LoadError};
use hardware_managers::generic::{GenericHardwareManager, GenericOptions};
use hardware_managers::{HardwareError, HardwareManager, Managers, StepCall};
use ironic_protocol::{Node, StepKind};
use serde_json::{json, Map, Value};

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn manifest(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn guard() -> DeviceGuard {
    DeviceGuard::new(false, vec![], "/nonexistent-sys")
}

/// The generic manager (no disks: nothing allowed, not in a ramdisk) plus `dir`'s managers.
fn managers(dir: &Path) -> Managers {
    let mut all: Vec<Box<dyn HardwareManager>> = vec![Box::new(GenericHardwareManager::new(
        guard(),
        GenericOptions::default(),
    ))];
    for m in external::load_dir(dir, &guard()).unwrap() {
        all.push(Box::new(m));
    }
    Managers::new(all).unwrap()
}

fn node() -> Node {
    serde_json::from_value(json!({"uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
        "properties": {"cpus": 4}}))
    .unwrap()
}

fn run(m: &Managers, kind: StepKind, step: &str, args: Value) -> Result<Value, HardwareError> {
    let node = node();
    let args: Map<String, Value> = args.as_object().unwrap().clone();
    let ports = [json!({"address": "52:54:00:12:34:56"})];
    m.execute_step_checked(kind, step, &args, &StepCall::new(&node, &ports, &args))
}

const FIRMWARE: &str = r#"
name = "AcmeFirmwareManager"
version = "1.3"
timeout = 20

[[steps]]
step = "update_firmware"
kinds = ["clean", "service"]
priority = 0
interface = "management"
abortable = false
command = ["update-firmware.sh", "--all"]
[steps.argsinfo.url]
description = "URL of the firmware bundle"
required = true
[steps.argsinfo.force]
description = "flash even when the version matches"
required = false

[[steps]]
step = "erase_devices"
priority = 10
abortable = true
command = ["erase.sh"]
"#;

#[test]
fn a_good_manager_runs_through_dispatch() {
    let d = Dir::new();
    // Records its input and arguments, logs on stderr, answers JSON.
    d.script(
        "update-firmware.sh",
        r#"cat > "$(dirname "$0")/input.json"
echo "flashing ($IRONIC_AGENT_MANAGER/$IRONIC_AGENT_STEP $1)" >&2
echo '{"flashed": ["bmc", "bios"], "version": "2.1"}'"#,
    );
    d.script("erase.sh", r#"echo '{"erased": true}'"#);
    d.manifest("acme.toml", FIRMWARE);
    let m = managers(d.path());
    assert_eq!(m.names(), ["AcmeFirmwareManager", "GenericHardwareManager"]);
    assert_eq!(m.versions()["AcmeFirmwareManager"], "1.3");
    assert_eq!(m.versions()["generic_hardware_manager"], "1.2");

    // Step lists: the external erase_devices (support 3) replaces the generic one (1).
    let lists = m.steps(StepKind::Clean, &node(), &[]);
    let acme = serde_json::to_value(&lists["AcmeFirmwareManager"]).unwrap();
    assert_eq!(
        acme,
        json!([
            {"step": "update_firmware", "priority": 0, "interface": "management",
             "reboot_requested": false, "abortable": false,
             "argsinfo": {"url": {"description": "URL of the firmware bundle", "required": true},
                          "force": {"description": "flash even when the version matches",
                                    "required": false}}},
            {"step": "erase_devices", "priority": 10, "interface": "deploy",
             "reboot_requested": false, "abortable": true},
        ])
        .as_array()
        .map(|a| {
            // Managers::steps orders each manager's steps by name.
            let mut a = a.clone();
            a.sort_by_key(|s| s["step"].as_str().unwrap().to_string());
            Value::Array(a)
        })
        .unwrap()
    );
    let generic: Vec<&str> = lists["GenericHardwareManager"]
        .iter()
        .map(|s| s.step.as_str())
        .collect();
    assert_eq!(generic, ["erase_devices_express", "erase_devices_metadata"]);
    let service = m.steps(StepKind::Service, &node(), &[]);
    assert_eq!(service["AcmeFirmwareManager"].len(), 1);
    assert!(m.steps(StepKind::Deploy, &node(), &[])["AcmeFirmwareManager"].is_empty());

    let result = run(
        &m,
        StepKind::Clean,
        "update_firmware",
        json!({"url": "http://x/fw.tar"}),
    )
    .unwrap();
    assert_eq!(
        result,
        json!({"flashed": ["bmc", "bios"], "version": "2.1"})
    );
    let input: Value =
        serde_json::from_slice(&std::fs::read(d.path().join("input.json")).unwrap()).unwrap();
    assert_eq!(input["step"], "update_firmware");
    assert_eq!(input["args"], json!({"url": "http://x/fw.tar"}));
    assert_eq!(
        input["node"]["uuid"],
        "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
    );
    assert_eq!(input["ports"][0]["address"], "52:54:00:12:34:56");
    assert_eq!(input["in_ramdisk"], false);
    assert_eq!(input["allowed_devices"], json!([]));

    // The override wins over the generic erase_devices.
    assert_eq!(
        run(&m, StepKind::Clean, "erase_devices", json!({})).unwrap(),
        json!({"erased": true})
    );
}

#[test]
fn unknown_and_missing_arguments_are_refused_before_the_command_runs() {
    let d = Dir::new();
    d.script(
        "update-firmware.sh",
        r#"touch "$(dirname "$0")/ran"; echo '{}'"#,
    );
    d.script("erase.sh", "echo null");
    d.manifest("acme.toml", FIRMWARE);
    let m = managers(d.path());

    let e = run(
        &m,
        StepKind::Clean,
        "update_firmware",
        json!({"url": "u", "colour": "red"}),
    )
    .unwrap_err();
    assert!(matches!(e, HardwareError::InvalidArguments(_)), "{e:?}");
    assert_eq!(
        e.ipa_class(),
        Some(ironic_protocol::ErrorClass::InvalidCommandParamsError)
    );
    assert!(
        e.to_string()
            .contains("unexpected arguments: colour (the step accepts: force, url)"),
        "{e}"
    );
    let e = run(
        &m,
        StepKind::Service,
        "update_firmware",
        json!({"force": true}),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(
            "service step update_firmware (interface management): missing required \
             arguments: url (URL of the firmware bundle)"
        ),
        "{e}"
    );
    assert!(!d.path().join("ran").exists(), "the command ran anyway");
    // A step without argsinfo refuses no argument... but erase_devices here has none declared.
    assert_eq!(
        run(&m, StepKind::Clean, "erase_devices", json!({"anything": 1})).unwrap(),
        Value::Null
    );
}

fn one_step_manifest(d: &Dir, script: &str, body: &str, extra: &str) -> Managers {
    d.script(script, body);
    d.manifest(
        "m.toml",
        &format!(
            "name = \"Site\"\nversion = \"1\"\n{extra}\n[[steps]]\nstep = \"check\"\n\
             priority = 0\ncommand = [\"{script}\"]\n"
        ),
    );
    managers(d.path())
}

fn step_error(m: &Managers) -> String {
    let e = run(m, StepKind::Clean, "check", json!({})).unwrap_err();
    assert!(matches!(e, HardwareError::StepFailed(_)), "{e:?}");
    // Reported as the kind's own error class by the agent.
    assert_eq!(e.ipa_class(), None);
    e.to_string()
}

#[test]
fn a_non_zero_exit_reports_the_stderr_tail() {
    let d = Dir::new();
    let m = one_step_manifest(
        &d,
        "check.sh",
        "cat >/dev/null\nfor i in $(seq 1 2000); do echo \"noise line $i\" >&2; done\n\
         echo 'controller 0: firmware 1.2 is too old' >&2\nexit 3",
        "",
    );
    let e = step_error(&m);
    assert!(e.starts_with("Site step check ("), "{e}");
    assert!(e.contains("check.sh): exited with status 3: "), "{e}");
    assert!(e.ends_with("controller 0: firmware 1.2 is too old"), "{e}");
    assert!(!e.contains("noise line 1\n"), "only the tail: {e}");
    assert!(e.len() < 4500, "{} bytes", e.len());
}

#[test]
fn a_non_zero_exit_prefers_the_json_error() {
    let d = Dir::new();
    let m = one_step_manifest(
        &d,
        "check.sh",
        "echo 'debug' >&2\necho '{\"error\": \"RAID controller is degraded\"}'\nexit 1",
        "",
    );
    let e = step_error(&m);
    assert!(
        e.ends_with("exited with status 1: RAID controller is degraded"),
        "{e}"
    );
}

#[test]
fn bad_json_is_an_error() {
    let d = Dir::new();
    let m = one_step_manifest(&d, "check.sh", "echo 'all good!'", "");
    let e = step_error(&m);
    assert!(
        e.contains("exited 0 but its stdout is not JSON") && e.contains("\"all good!\""),
        "{e}"
    );
}

#[test]
fn a_hanging_command_is_killed_with_its_children() {
    let d = Dir::new();
    let pidfile = d.path().join("child.pid");
    let m = one_step_manifest(
        &d,
        "check.sh",
        &format!("sleep 300 &\necho $! > {}\nwait", pidfile.display()),
        "timeout = 0.5",
    );
    let t = Instant::now();
    let e = step_error(&m);
    assert!(
        e.contains("did not finish within 0.5 s and was killed"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The background sleep went with the process group.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the command's child {pid} survived: {stat}"
    );
}

#[test]
fn output_beyond_the_cap_is_an_error() {
    let d = Dir::new();
    let m = one_step_manifest(
        &d,
        "check.sh",
        "yes '\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\",'",
        "max_output_bytes = 10000",
    );
    let e = step_error(&m);
    assert!(
        e.contains("printed more than 10000 bytes on stdout and was killed"),
        "{e}"
    );
}

#[test]
fn a_command_that_ignores_its_input_still_works() {
    let d = Dir::new();
    let m = one_step_manifest(&d, "check.sh", "echo '[1, 2]'", "");
    assert_eq!(
        run(&m, StepKind::Clean, "check", json!({})).unwrap(),
        json!([1, 2])
    );
}

#[test]
fn detection_decides_whether_and_how_a_manager_loads() {
    let d = Dir::new();
    d.script("step.sh", "echo null");
    d.script("yes.sh", "exit 0");
    d.script("level.sh", "echo 5");
    d.script("no.sh", "exit 1");
    let manifest = |file: &str, name: &str, detect: &str| {
        d.manifest(
            file,
            &format!(
                "name = \"{name}\"\nversion = \"1\"\ndetect = [\"{detect}\"]\nsupport_level = 2\n\
                 [[steps]]\nstep = \"s_{name}\"\npriority = 1\ncommand = [\"step.sh\"]\n"
            ),
        )
    };
    manifest("a.toml", "Yes", "yes.sh");
    manifest("b.toml", "Level", "level.sh");
    manifest("c.toml", "No", "no.sh");
    let loaded = external::load_dir(d.path(), &guard()).unwrap();
    let levels: Vec<(&str, u32)> = loaded
        .iter()
        .map(|m| (m.name(), m.evaluate_hardware_support().0))
        .collect();
    assert_eq!(levels, [("Yes", 2), ("Level", 5)]);

    // Any other outcome stops start-up.
    d.script("broken.sh", "echo 'no such controller' >&2; exit 2");
    manifest("d.toml", "Broken", "broken.sh");
    let e = external::load_dir(d.path(), &guard()).unwrap_err();
    assert!(matches!(e, LoadError::Detect { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("exited with status 2: no such controller"),
        "{e}"
    );
}

#[test]
fn json_manifests_work_too() {
    let d = Dir::new();
    d.script("s.sh", "echo '{\"ok\": 1}'");
    d.manifest(
        "j.json",
        r#"{"name": "JsonManager", "version": "0.1",
            "steps": [{"step": "tune", "kinds": ["deploy"], "priority": 50,
                       "command": ["s.sh"], "reboot_requested": true}]}"#,
    );
    let m = managers(d.path());
    let steps = m.steps(StepKind::Deploy, &node(), &[]);
    assert_eq!(
        serde_json::to_value(&steps["JsonManager"]).unwrap(),
        json!([{"step": "tune", "priority": 50, "interface": "deploy",
                "reboot_requested": true}])
    );
    assert_eq!(
        run(&m, StepKind::Deploy, "tune", json!({})).unwrap(),
        json!({"ok": 1})
    );
}

#[test]
fn broken_manifests_are_reported_with_their_path() {
    let cases: &[(&str, &str)] = &[
        ("name = \"X\"\n", "missing field `version`"),
        (
            "name = \"X\"\nversion = \"1\"\ncolour = 1\n",
            "unknown field `colour`",
        ),
        (
            "name = \"bad name\"\nversion = \"1\"\n",
            "name \"bad name\" must be non-empty",
        ),
        (
            "name = \"X\"\nversion = \"1\"\n[[steps]]\nstep = \"s\"\npriority = 0\n\
             command = [\"missing.sh\"]\n",
            "missing.sh: No such file or directory",
        ),
        (
            "name = \"X\"\nversion = \"1\"\n[[steps]]\nstep = \"s\"\npriority = 0\n\
             kinds = [\"rescue\"]\ncommand = [\"ok.sh\"]\n",
            "unknown kind \"rescue\"",
        ),
        (
            "name = \"X\"\nversion = \"1\"\n[[steps]]\nstep = \"s\"\npriority = 0\n\
             command = [\"ok.sh\"]\n[steps.argsinfo]\nurl = \"the url\"\n",
            "argsinfo.url must be an object",
        ),
        (
            "name = \"X\"\nversion = \"1\"\n[[steps]]\nstep = \"s\"\npriority = 0\n\
             command = [\"notexec.sh\"]\n",
            "is not an executable file",
        ),
    ];
    for (text, needle) in cases {
        let d = Dir::new();
        d.script("ok.sh", "true");
        std::fs::write(d.path().join("notexec.sh"), "#!/bin/sh\n").unwrap();
        let path = d.manifest("x.toml", text);
        let e = external::load_dir(d.path(), &guard())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&path.display().to_string()) && e.contains(needle),
            "{text:?}: {e}"
        );
    }

    // Two manifests for one manager.
    let d = Dir::new();
    d.manifest("a.toml", "name = \"Same\"\nversion = \"1\"\n");
    d.manifest("b.json", r#"{"name": "Same", "version": "2"}"#);
    let e = external::load_dir(d.path(), &guard())
        .unwrap_err()
        .to_string();
    assert!(e.contains("already used by"), "{e}");

    // No directory: no external managers.
    assert!(
        external::load_dir(Path::new("/nonexistent/managers.d"), &guard())
            .unwrap()
            .is_empty()
    );
    let _ = ExternalManager::manifest;
}
