//! An external hardware manager (a manifest and a script in the ramdisk's managers.d) driven
//! by a real Ironic 39 through manual cleaning: the conductor sees the script's step in
//! `get_clean_steps`, validates the operator's arguments against the step's `argsinfo`, and
//! runs it; a failing script fails cleaning with its stderr in `last_error`.
//!
//! Needs root, the Ironic venv (tests/setup.sh) and the agent binary; see tests/README.md.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use e2e::agent::AgentOptions;
use e2e::harness::Harness;
use e2e::ironic_api::{NodeSpec, Provision};
use serde_json::{json, Value};

const MANIFEST: &str = r#"
name = "SiteCheckManager"
version = "1.0"
timeout = 60

[[steps]]
step = "site_check"
kinds = ["clean"]
priority = 0
interface = "deploy"
abortable = true
command = ["site-check.py"]
[steps.argsinfo.expected_nics]
description = "how many NICs the machine must have"
required = true
[steps.argsinfo.fail_with]
description = "fail the check with this message (for testing)"
required = false
"#;

/// Records its input, counts the NICs it is told about, fails on request.
const SCRIPT: &str = r#"#!/usr/bin/python3
import json, os, sys
data = json.load(sys.stdin)
# Next to managers.d, not in it: the agent would take a .json there for a manifest.
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "inputs")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "input-%d.json" % os.getpid()), "w") as f:
    json.dump(data, f)
args = data["args"]
print("site_check: node %s, %d ports" % (data["node"]["uuid"], len(data["ports"])),
      file=sys.stderr)
if "fail_with" in args:
    print("site_check: " + args["fail_with"], file=sys.stderr)
    sys.exit(3)
json.dump({"nics_expected": args["expected_nics"], "ports": len(data["ports"])}, sys.stdout)
"#;

fn managers_dir(h: &Harness) -> std::path::PathBuf {
    let dir = h.dir().join("managers.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("site.toml"), MANIFEST).unwrap();
    let script = dir.join("site-check.py");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// What the script was given, one document per run.
fn inputs(managers_dir: &Path) -> Vec<Value> {
    let dir = managers_dir.join("../inputs");
    let mut v: Vec<Value> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("input-"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    v.sort_by_key(|i| i["args"].to_string());
    v
}

/// Manual cleaning with `steps`, the agent "booted" for it, until `verdict`.
fn manual_clean(h: &mut Harness, dir: &Path, steps: Value, verdict: &str) -> e2e::ironic_api::Node {
    h.provision(Provision::Clean(steps.as_array().unwrap().clone()))
        .expect("clean");
    h.wait_for("clean wait", Duration::from_secs(30))
        .expect("clean wait");
    h.start_agent(AgentOptions {
        managers_dir: Some(dir.to_path_buf()),
        ..AgentOptions::default()
    })
    .expect("agent");
    let node = h
        .wait_for(verdict, Duration::from_secs(180))
        .expect("cleaning verdict");
    // The conductor powers the machine off after cleaning.
    h.stop_agent();
    node
}

#[test]
fn manual_cleaning_runs_an_external_managers_step() {
    let mut h = Harness::start("external-manager", "52:54:00:e2:06:01", |_| {}).expect("harness");
    let dir = managers_dir(&h);
    let node = h.enroll_node(&NodeSpec::default()).expect("enroll");
    h.provision(Provision::Manage).expect("manage");
    h.wait_for("manageable", Duration::from_secs(30))
        .expect("manageable");

    // 1. The step runs with the operator's arguments and succeeds.
    manual_clean(
        &mut h,
        &dir,
        json!([{"interface": "deploy", "step": "site_check", "args": {"expected_nics": 1}}]),
        "manageable",
    );
    let seen = inputs(&dir);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["step"], "site_check");
    assert_eq!(seen[0]["args"], json!({"expected_nics": 1}));
    assert_eq!(seen[0]["node"]["uuid"], json!(node.uuid));
    assert_eq!(seen[0]["ports"][0]["address"], json!(h.netns().mac()));
    assert_eq!(seen[0]["in_ramdisk"], false);
    let log = h.ironic_log();
    assert!(
        log.lines().any(|l| l.contains("Clean step {")
            && l.contains("'step': 'site_check'")
            && l.contains("being executed")),
        "the conductor never ran site_check"
    );
    let agent_log = h.agent_logs();
    assert!(
        agent_log.contains("external step succeeded"),
        "agent log: {agent_log}"
    );

    // 2. A failing command fails cleaning with its stderr.
    let failed = manual_clean(
        &mut h,
        &dir,
        json!([{"interface": "deploy", "step": "site_check",
                "args": {"expected_nics": 1, "fail_with": "BMC firmware 1.02 is too old"}}]),
        "clean failed",
    );
    let err = failed.last_error.unwrap_or_default();
    assert!(
        err.contains("SiteCheckManager step site_check")
            && err.contains("exited with status 3")
            && err.contains("site_check: BMC firmware 1.02 is too old"),
        "last_error: {err}"
    );
    assert_eq!(inputs(&dir).len(), 2);
    // A failed clean step puts the node in maintenance; the operator clears it.
    let (status, body) = h
        .client()
        .call(
            "DELETE",
            &format!("/v1/nodes/{}/maintenance", node.uuid),
            None,
        )
        .expect("maintenance off");
    assert_eq!(status, 202, "{body}");
    h.provision(Provision::Manage).expect("manage");
    h.wait_for("manageable", Duration::from_secs(30))
        .expect("manageable");

    // 3. Ironic itself rejects an argument the step's argsinfo does not declare, and one it
    //    requires missing: the command never runs.
    let rejected = manual_clean(
        &mut h,
        &dir,
        json!([{"interface": "deploy", "step": "site_check", "args": {"colour": "red"}}]),
        "clean failed",
    );
    let err = rejected.last_error.unwrap_or_default();
    assert!(
        err.contains("unexpected arguments: colour")
            && err.contains("missing these required arguments: expected_nics"),
        "last_error: {err}"
    );
    assert_eq!(
        inputs(&dir).len(),
        2,
        "the command ran for rejected arguments"
    );
}
