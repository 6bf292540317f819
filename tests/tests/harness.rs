//! The harness on its own, without the agent: Ironic reachable from the namespace on the
//! veth host address, a node in `clean wait`, and lookup by MAC handing out a token, as the
//! agent's first request will see it.

use std::time::Duration;

use e2e::harness::Harness;
use e2e::ironic_api::{NodeSpec, Provision};

#[test]
fn lookup_from_namespace_in_clean_wait() {
    let mut h = Harness::start("harness-lookup", "52:54:00:e2:00:03", |_| {}).expect("harness");
    let node = h.enroll_node(&NodeSpec::default()).expect("enroll");
    h.provision(Provision::Manage).expect("manage");
    h.wait_for("manageable", Duration::from_secs(30))
        .expect("manageable");
    h.provision(Provision::Provide).expect("provide");
    h.wait_for("clean wait", Duration::from_secs(30))
        .expect("clean wait");

    let url = format!(
        "{}/v1/lookup?addresses={}",
        h.ironic().api_url(),
        h.netns().mac()
    );
    let out = h
        .netns()
        .command("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(["-H", "X-OpenStack-Ironic-API-Version: 1.62", &url])
        .output()
        .expect("running curl in the namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').expect("curl output");
    assert_eq!(
        code,
        "200",
        "lookup answered {code}: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(body).expect("lookup JSON");
    assert_eq!(v["node"]["uuid"], node.uuid);
    let token = v["config"]["agent_token"].as_str().expect("agent_token");
    assert!(token.len() >= 32, "token {token:?} too short");
    assert_eq!(v["config"]["agent_token_required"], true);
    assert_eq!(v["config"]["heartbeat_timeout"], 10);

    // Ironic listens on the veth host address, not on every address of the machine.
    let out = std::process::Command::new("ss")
        .args(["-Hltn", "sport", "=", ":6385"])
        .output()
        .expect("ss");
    let listening = String::from_utf8_lossy(&out.stdout);
    let ours = format!("{}:6385", h.netns().host_addr());
    assert!(
        listening.contains(&ours),
        "no listener on {ours}: {listening}"
    );
    assert!(
        !listening.contains("0.0.0.0:6385") && !listening.contains("*:6385"),
        "something listens on all addresses: {listening}"
    );
}
