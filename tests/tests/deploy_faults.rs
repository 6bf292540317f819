//! Deploys that meet the faults of the field, against a real Ironic: image servers that drop
//! connections, trickle, refuse an expired temp URL or cut bodies short, wrong checksums,
//! disks too small for the image, and qcow2 files with hostile headers. Faults that need
//! injecting come from `image_pipeline::test_server` (with `get_only`, so the conductor's HEAD
//! of the URL sees a healthy server); the rest is served by nginx.
//!
//! Every failure must end in `deploy failed` with a `last_error` an operator can act on,
//! never showing the temp URL's signature, and leave no partition table at the start of the
//! disk (or, when the agent had to refuse before writing, the disk exactly as it was).
//!
//! Needs root, the Ironic venv (tests/setup.sh) and the agent binary; see tests/README.md.

use std::path::{Path, PathBuf};

use e2e::agent::AgentOptions;
use e2e::deploy::{
    self, add_prefilled_disk, enroll_available, node_spec, run_deploy, set_instance_info,
    ImageChecksum, InstanceInfo, TempUrl, DISK_SIZE,
};
use e2e::harness::Harness;
use e2e::images::{self, WholeDiskImage};
use e2e::ironic_api::Node;
use e2e::loopdev::Fill;
use image_pipeline::test_server::Faults;
use serde_json::{json, Value};

/// The path the fault-injecting server serves the image at.
const IMAGE_PATH: &str = "/images/disk.raw";

fn harness(test: &str, mac: &str) -> Harness {
    Harness::start(test, mac, deploy::ironic_config).expect("harness")
}

/// A 34 MiB GPT image (16 MiB ESP, 16 MiB root) in the test's dir.
fn small_image(h: &Harness) -> WholeDiskImage {
    WholeDiskImage::build(h.dir().path(), "disk.raw", 16, 16).expect("image")
}

/// Serves `file` at [`IMAGE_PATH`] with `faults` (HEAD excluded) behind a fake temp URL.
fn serve_faulty(h: &mut Harness, file: &Path, faults: Faults, temp_url: &TempUrl) -> String {
    let server = h.start_fault_server().expect("fault server");
    server
        .serve_file(IMAGE_PATH, file, faults.get_only())
        .expect("serving the image");
    temp_url.apply(&server.url(IMAGE_PATH))
}

/// Serves `file` with nginx behind a fake temp URL.
fn serve_nginx(h: &mut Harness, file: &Path, temp_url: &TempUrl) -> String {
    let nginx = h.start_nginx().expect("nginx");
    let name = file.file_name().and_then(|n| n.to_str()).expect("name");
    std::fs::copy(file, nginx.root().join(name)).expect("publishing the image");
    temp_url.apply(&nginx.url(name))
}

/// Enrolls the node (with `root_device` hints if given), points it at `url` and deploys,
/// expecting `verdict`.
fn deploy(
    h: &mut Harness,
    url: String,
    checksum: ImageChecksum,
    root_device: Option<Value>,
    extra_cmdline: &[&str],
    verdict: &str,
) -> Node {
    let spec = node_spec("e2e-node", root_device);
    enroll_available(h, &spec).expect("enroll");
    set_instance_info(h, &InstanceInfo::whole_disk(url, checksum)).expect("instance_info");
    let opts = AgentOptions {
        extra_cmdline: extra_cmdline.iter().map(|s| s.to_string()).collect(),
        ..AgentOptions::default()
    };
    let (node, times) = run_deploy(h, None, opts, verdict).expect("deploy");
    println!("timings: {times:?}");
    if verdict == "deploy failed" {
        println!(
            "last_error: {}",
            deploy::last_error(&node).expect("last_error")
        );
    }
    node
}

/// The checks every failed deploy shares: a message naming `needles`, the deploy step named,
/// no signature anywhere.
fn verify_failure(h: &Harness, node: &Node, temp_url: &TempUrl, needles: &[&str]) {
    assert_eq!(node.provision_state, "deploy failed");
    let mut all = vec!["deploy.write_image failed"];
    all.extend_from_slice(needles);
    deploy::verify_last_error(node, &all).expect("last_error");
    deploy::verify_secret_kept(h, &temp_url.sig).expect("signature kept secret");
}

/// The disk holds exactly `image` (and zeros elsewhere), its GPT spanning the disk.
fn verify_image_on_disk(h: &Harness, disk: usize, image: &WholeDiskImage) {
    deploy::verify_raw_image(h, disk, &image.path).expect("disk after deploy");
}

/// What a deploy of the small image through a trickling server leaves to check.
struct Trickled {
    h: Harness,
    disk: usize,
    image: WholeDiskImage,
    temp_url: TempUrl,
    node: Node,
}

/// Deploys the small image served at `bytes_per_second`, expecting `verdict`.
fn trickled_deploy(
    test: &str,
    mac: &str,
    bytes_per_second: u64,
    extra_cmdline: &[&str],
    verdict: &str,
) -> Trickled {
    let mut h = harness(test, mac);
    let disk = h.add_disk(DISK_SIZE, Fill::Zeros).expect("disk");
    let image = small_image(&h);
    let digests = images::digests(&image.path).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    let url = serve_faulty(
        &mut h,
        &image.path,
        Faults::none().trickle(bytes_per_second),
        &temp_url,
    );
    let node = deploy(
        &mut h,
        url,
        ImageChecksum::sha256(&digests),
        None,
        extra_cmdline,
        verdict,
    );
    Trickled {
        h,
        disk,
        image,
        temp_url,
        node,
    }
}

#[test]
fn dropped_connection_resumes_with_range() {
    let mut h = harness("fault-drop", "52:54:00:e2:20:01");
    let disk = h.add_disk(DISK_SIZE, Fill::Zeros).expect("disk");
    let image = small_image(&h);
    let digests = images::digests(&image.path).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    // The first GET is cut after 5 MiB of its body.
    let url = serve_faulty(
        &mut h,
        &image.path,
        Faults::none().drop_after(5 << 20, 1),
        &temp_url,
    );

    let node = deploy(
        &mut h,
        url,
        ImageChecksum::sha256(&digests),
        None,
        // One stream: this is the single connection's resume (the parallel download's has a
        // test of its own).
        &["ipa-image-download-connections=1"],
        "active",
    );
    assert_eq!(node.provision_state, "active");
    let gets: Vec<_> = h
        .fault_server()
        .expect("server")
        .requests_for(IMAGE_PATH)
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    let ranges: Vec<&str> = gets.iter().filter_map(|r| r.range()).collect();
    assert!(
        gets.len() >= 2
            && ranges
                .iter()
                .any(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-")),
        "the agent did not resume with a Range request: {:?}",
        gets.iter().map(|r| r.range()).collect::<Vec<_>>()
    );
    deploy::verify_deploy_calls(&h).expect("conductor calls");
    deploy::verify_secret_kept(&h, &temp_url.sig).expect("signature kept secret");
    verify_image_on_disk(&h, disk, &image);
}

#[test]
fn trickling_server_exceeds_max_duration() {
    // 34 MiB at 1 MiB/s: half a minute, against a limit of 3 s.
    let t = trickled_deploy(
        "fault-trickle",
        "52:54:00:e2:20:02",
        1 << 20,
        &["ipa-image-download-max-duration=3"],
        "deploy failed",
    );
    verify_failure(
        &t.h,
        &t.node,
        &t.temp_url,
        &["max allowed time", "3 seconds"],
    );
    deploy::verify_no_partition_table(&t.h, t.disk).expect("disk after failure");
}

#[test]
fn slow_image_shows_progress_while_running() {
    // 34 MiB at 3 MiB/s on one connection (the trickle is per connection): about 11 s, two
    // or three heartbeats (every 3-6 s) while it runs.
    let t = trickled_deploy(
        "fault-progress",
        "52:54:00:e2:20:0b",
        3 << 20,
        &["ipa-image-download-connections=1"],
        "active",
    );
    let h = &t.h;
    assert_eq!(t.node.provision_state, "active");
    // The conductor read the RUNNING command with its progress and carried on (its debug log
    // prints every command's result when it reads the list).
    let ironic = h.ironic_log();
    let read_running = ironic.lines().any(|l| {
        l.contains("Status of agent commands")
            && l.contains("execute_deploy_step: result \"{'progress': [{'operation': 'write_image'")
    });
    assert!(
        read_running,
        "the conductor never read a RUNNING write_image with its progress:\n{}",
        h.ironic_log_tail(60)
    );
    assert!(
        ironic.contains("Deploy step still running"),
        "the conductor did not see the step as running"
    );
    // The log has progress lines, with a rate, a total and an ETA, and no signature.
    let agent = h.agent_logs();
    let lines: Vec<&str> = agent
        .lines()
        .filter(|l| l.contains("progress") && l.contains("operation=\"write_image\""))
        .collect();
    println!("progress lines: {lines:#?}");
    assert!(
        !lines.is_empty()
            && lines
                .iter()
                .any(|l| l.contains("eta_s") && l.contains("total=")),
        "no progress line in the agent log: {lines:?}"
    );
    deploy::verify_secret_kept(h, &t.temp_url.sig).expect("signature kept secret");
    verify_image_on_disk(h, t.disk, &t.image);
}

#[test]
fn parallel_download_over_several_connections() {
    let mut h = harness("fault-parallel", "52:54:00:e2:20:0c");
    let disk = h.add_disk(DISK_SIZE, Fill::Zeros).expect("disk");
    let image = small_image(&h);
    let digests = images::digests(&image.path).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    let url = serve_nginx(&mut h, &image.path, &temp_url);
    let node = deploy(
        &mut h,
        url,
        ImageChecksum::sha256(&digests),
        None,
        &[
            "ipa-image-download-connections=4",
            "ipa-image-download-window-mib=1",
        ],
        "active",
    );
    assert_eq!(node.provision_state, "active");
    // nginx served the 34 MiB image as a first GET cut after its first window, then one
    // 206 of 1 MiB per window: 33 of them, the signature never logged by the agent.
    let access = h.nginx().expect("nginx").access_log();
    let partial = access
        .lines()
        .filter(|l| l.contains("ironic-agent/") && l.contains("\" 206 1048576 "))
        .count();
    assert_eq!(partial, 33, "nginx access log:\n{access}");
    deploy::verify_secret_kept(&h, &temp_url.sig).expect("signature kept secret");
    verify_image_on_disk(&h, disk, &image);
}

#[test]
fn expired_temp_url_is_refused() {
    let mut h = harness("fault-403", "52:54:00:e2:20:03");
    let snap = add_prefilled_disk(&mut h, DISK_SIZE).expect("disk");
    let image = small_image(&h);
    let digests = images::digests(&image.path).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    // Every GET: 403 with a body that echoes the URL, signature included (as Swift does).
    let url = serve_faulty(
        &mut h,
        &image.path,
        Faults::none().status(403, usize::MAX),
        &temp_url,
    );

    let node = deploy(
        &mut h,
        url,
        ImageChecksum::sha256(&digests),
        None,
        &[],
        "deploy failed",
    );
    verify_failure(&h, &node, &temp_url, &["temp URL", "403", "expired"]);
    deploy::verify_untouched(&h, &snap).expect("disk after refusal");
}

#[test]
fn wrong_checksum_fails_after_writing() {
    let mut h = harness("fault-checksum", "52:54:00:e2:20:04");
    let disk = h.add_disk(DISK_SIZE, Fill::Zeros).expect("disk");
    let image = small_image(&h);
    let temp_url = TempUrl::fake().expect("temp url");
    let url = serve_nginx(&mut h, &image.path, &temp_url);
    let wrong = "0".repeat(63) + "1";

    let node = deploy(
        &mut h,
        url,
        ImageChecksum::OsHash {
            algo: "sha256".into(),
            value: wrong.clone(),
        },
        None,
        &[],
        "deploy failed",
    );
    verify_failure(&h, &node, &temp_url, &["checksum mismatch", &wrong]);
    deploy::verify_no_partition_table(&h, disk).expect("disk after failure");
}

#[test]
fn truncated_body_fails_after_retries() {
    let mut h = harness("fault-truncated", "52:54:00:e2:20:05");
    let disk = h.add_disk(DISK_SIZE, Fill::Zeros).expect("disk");
    let image = small_image(&h);
    let digests = images::digests(&image.path).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    // Every response stops 3 MiB short of its end and closes: resuming never gets the rest.
    let url = serve_faulty(
        &mut h,
        &image.path,
        Faults::none().truncate_by(3 << 20, usize::MAX),
        &temp_url,
    );

    let node = deploy(
        &mut h,
        url,
        ImageChecksum::sha256(&digests),
        None,
        &[
            "ipa-image-download-connection-retries=1",
            "ipa-image-download-connection-retry-interval=1",
        ],
        "deploy failed",
    );
    let size = std::fs::metadata(&image.path).expect("size").len();
    let received = (size - (3 << 20)).to_string();
    verify_failure(
        &h,
        &node,
        &temp_url,
        &["Download of image", "failed after", &received],
    );
    let gets = h
        .fault_server()
        .expect("server")
        .requests_for(IMAGE_PATH)
        .into_iter()
        .filter(|r| r.method == "GET")
        .count();
    assert!(gets >= 2, "the agent did not retry ({gets} GET requests)");
    deploy::verify_no_partition_table(&h, disk).expect("disk after failure");
}

#[test]
fn disk_smaller_than_the_image() {
    let mut h = harness("fault-small-disk", "52:54:00:e2:20:06");
    let big = add_prefilled_disk(&mut h, DISK_SIZE).expect("disk");
    let small = add_prefilled_disk(&mut h, 16 << 20).expect("small disk");
    let small_dev = h.disk(small.disk).device().display().to_string();
    let image = small_image(&h);
    let digests = images::digests(&image.path).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    let url = serve_nginx(&mut h, &image.path, &temp_url);

    let node = deploy(
        &mut h,
        url,
        ImageChecksum::sha256(&digests),
        Some(json!({"name": small_dev})),
        &[],
        "deploy failed",
    );
    let size = std::fs::metadata(&image.path).expect("size").len();
    verify_failure(
        &h,
        &node,
        &temp_url,
        &[&small_dev, &size.to_string(), &(16u64 << 20).to_string()],
    );
    deploy::verify_untouched(&h, &small).expect("the small disk");
    deploy::verify_untouched(&h, &big).expect("the big disk");
}

#[test]
fn qcow2_larger_than_the_disk() {
    let mut h = harness("fault-qcow2-size", "52:54:00:e2:20:07");
    let snap = add_prefilled_disk(&mut h, DISK_SIZE).expect("disk");
    let path = h.dir().join("big.qcow2");
    e2e::cmd::run(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg("6G"),
    )
    .expect("qemu-img create");
    let digests = images::digests(&path).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    let url = serve_nginx(&mut h, &path, &temp_url);

    let node = deploy(
        &mut h,
        url,
        ImageChecksum::sha256(&digests),
        None,
        &[],
        "deploy failed",
    );
    verify_failure(
        &h,
        &node,
        &temp_url,
        &[&(6u64 << 30).to_string(), &DISK_SIZE.to_string()],
    );
    deploy::verify_untouched(&h, &snap).expect("disk after refusal");
}

/// A hostile qcow2 must be refused before anything is written, with a message naming what
/// is wrong with it.
fn hostile_qcow2(
    test: &str,
    mac: &str,
    build: fn(&Path, &str) -> anyhow::Result<PathBuf>,
    needles: &[&str],
) {
    let mut h = harness(test, mac);
    let snap = add_prefilled_disk(&mut h, DISK_SIZE).expect("disk");
    let path = build(h.dir().path(), "hostile.qcow2").expect("hostile qcow2");
    let digests = images::digests(&path).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    let url = serve_nginx(&mut h, &path, &temp_url);

    let node = deploy(
        &mut h,
        url,
        ImageChecksum::sha256(&digests),
        None,
        &[],
        "deploy failed",
    );
    verify_failure(&h, &node, &temp_url, needles);
    deploy::verify_untouched(&h, &snap).expect("disk after refusal");
}

#[test]
fn qcow2_with_backing_file_is_refused() {
    hostile_qcow2(
        "fault-qcow2-backing",
        "52:54:00:e2:20:08",
        images::qcow2_with_backing_file,
        &["qcow2", "backing file"],
    );
}

#[test]
fn qcow2_with_huge_l1_table_is_refused() {
    hostile_qcow2(
        "fault-qcow2-l1",
        "52:54:00:e2:20:09",
        images::qcow2_with_huge_l1,
        &["qcow2", "L1 table", &(16u32 << 20).to_string()],
    );
}

#[test]
fn qcow2_with_cluster_past_the_end_is_refused() {
    hostile_qcow2(
        "fault-qcow2-past-end",
        "52:54:00:e2:20:0a",
        images::qcow2_with_cluster_past_end,
        &["qcow2", "past the end"],
    );
}
