//! The operator's binary is the whole agent: started as the ramdisk would start it (no Ironic
//! here, so with a pre-shared token and no API URL), it serves IPA's command API, and the
//! conductor's `get_clean_steps` lists the compiled-in manager's step next to the generic ones
//! and an external manager's from `--managers-dir`; both steps run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "0123456789abcdef0123456789abcdef-example";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn post(port: u16, body: &Value) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.to_string();
    write!(
        s,
        "POST /v1/commands/?wait=true&agent_token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // The agent answers with a plain (not chunked) JSON body.
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

#[test]
fn the_operators_binary_serves_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        format!(
            "ipa-agent-token={TOKEN} ipa-listen-host=127.0.0.1 ipa-listen-port={port} ipa-debug=1\n"
        ),
    )
    .unwrap();
    let managers = dir.path().join("managers.d");
    std::fs::create_dir_all(&managers).unwrap();
    let script = managers.join("hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho '{\"hello\": \"world\"}'\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        managers.join("hello.toml"),
        "name = \"HelloManager\"\nversion = \"1\"\n[[steps]]\nstep = \"say_hello\"\n\
         priority = 0\ncommand = [\"hello.sh\"]\n",
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let child = Command::new(env!("CARGO_BIN_EXE_ironic-agent-example"))
        .arg("--cmdline-file")
        .arg(&cmdline)
        .arg("--managers-dir")
        .arg(&managers)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--log-file")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = Running(child);

    let node = json!({"uuid": "9f1a3d2e-8f64-4d8e-b6f7-0d0a5b7c1e11", "properties": {}});
    let get_steps = json!({"name": "clean.get_clean_steps",
                           "params": {"node": node, "ports": []}});
    let deadline = Instant::now() + Duration::from_secs(90);
    let reply = loop {
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!(
                "the agent exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        match post(port, &get_steps) {
            Ok((200, v)) => break v,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!(
                "no answer from the agent: {other:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    };
    assert_eq!(reply["command_status"], "SUCCEEDED", "{reply}");
    let result = &reply["command_result"];
    let names = |m: &str| -> Vec<String> {
        result["clean_steps"][m]
            .as_array()
            .unwrap_or_else(|| panic!("no {m} in {result}"))
            .iter()
            .map(|s| s["step"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("SiteManager"), ["check_memory"]);
    assert_eq!(names("HelloManager"), ["say_hello"]);
    assert!(names("GenericHardwareManager").contains(&"erase_devices_metadata".to_string()));
    assert_eq!(
        result["hardware_manager_version"],
        json!({"generic_hardware_manager": "1.2", "site_manager": "1.0", "HelloManager": "1"})
    );
    let argsinfo = &result["clean_steps"]["SiteManager"][0]["argsinfo"];
    assert_eq!(argsinfo["min_gb"]["required"], true);

    // Run both, as manual cleaning would.
    let execute = |step: Value| {
        json!({"name": "clean.execute_clean_step",
               "params": {"step": step, "node": node, "ports": [],
                          "clean_version": result["hardware_manager_version"]}})
    };
    let (status, r) = post(
        port,
        &execute(
            json!({"step": "check_memory", "interface": "deploy", "priority": 0,
                        "args": {"min_gb": 0.01}}),
        ),
    )
    .unwrap();
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert!(
        r["command_result"]["clean_result"]["memory_gib"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(r["command_result"]["clean_step"]["step"], "check_memory");

    let (_, r) = post(
        port,
        &execute(json!({"step": "say_hello", "interface": "deploy", "priority": 0})),
    )
    .unwrap();
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert_eq!(
        r["command_result"]["clean_result"],
        json!({"hello": "world"})
    );

    // An argument check failure is a failed command with IPA's error class.
    let (_, r) = post(
        port,
        &execute(
            json!({"step": "check_memory", "interface": "deploy", "priority": 0,
                        "args": {"min_gb": 1, "max_gb": 2}}),
        ),
    )
    .unwrap();
    assert_eq!(r["command_status"], "FAILED", "{r}");
    assert_eq!(
        r["command_error"]["type"], "InvalidCommandParamsError",
        "{r}"
    );
    assert!(
        r["command_error"]["details"]
            .as_str()
            .unwrap()
            .contains("unexpected arguments: max_gb"),
        "{r}"
    );
}
