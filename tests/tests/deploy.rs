//! Direct deploys against a real Ironic: the conductor drives `write_image`,
//! `get_partition_uuids`, `install_bootloader` and `power_off` on the agent, which streams the
//! image from nginx (a temp-URL-shaped URL) onto a 5 GiB loop disk. Each test reaches `active`
//! and then compares the disk with the image byte for byte.
//!
//! Needs root, the Ironic venv (tests/setup.sh) and the agent binary; see tests/README.md.

use std::path::Path;

use e2e::agent::AgentOptions;
use e2e::deploy::{
    self, enroll_available, harness_with_disk, node_spec, run_deploy, set_instance_info,
    ImageChecksum, InstanceInfo, PartitionExpectation, TempUrl, WholeDiskExpectation,
};
use e2e::harness::Harness;
use e2e::images::{self, ConfigDrive, WholeDiskImage};
use e2e::loopdev::Fill;

/// Serves `file` with nginx under `name`, behind a fake temp URL query; returns the URL.
fn serve(h: &mut Harness, file: &Path, name: &str, temp_url: &TempUrl) -> String {
    let nginx = match h.nginx() {
        Ok(n) => n,
        Err(_) => h.start_nginx().expect("nginx"),
    };
    std::fs::hard_link(file, nginx.root().join(name))
        .or_else(|_| std::fs::copy(file, nginx.root().join(name)).map(drop))
        .expect("publishing the image");
    temp_url.apply(&nginx.url(name))
}

/// Deploys `file` (served as `name`) with `disk_format`, expects `active`, checks the calls
/// and that the signature stayed secret; returns the harness for the disk checks.
fn deploy_whole_disk(
    test: &str,
    mac: &str,
    build: impl FnOnce(&Path, &WholeDiskImage) -> (std::path::PathBuf, Option<&'static str>),
) -> (Harness, usize, WholeDiskImage) {
    let (mut h, disk) = harness_with_disk(test, mac).expect("harness");
    let image = WholeDiskImage::build(h.dir().path(), "disk.raw", 16, 32).expect("image");
    let (file, disk_format) = build(h.dir().path(), &image);
    let digests = images::digests(&file).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name")
        .to_string();
    let url = serve(&mut h, &file, &name, &temp_url);

    enroll_available(&mut h, &node_spec(test, None)).expect("enroll");
    let mut info = InstanceInfo::whole_disk(url, ImageChecksum::sha256(&digests));
    info.disk_format = disk_format.map(str::to_string);
    set_instance_info(&h, &info).expect("instance_info");
    let (node, times) =
        run_deploy(&mut h, None, AgentOptions::default(), "active").expect("deploy");
    println!("timings: {times:?}");
    assert_eq!(node.provision_state, "active");

    deploy::verify_deploy_calls(&h).expect("conductor calls");
    deploy::verify_secret_kept(&h, &temp_url.sig).expect("signature kept secret");
    let stored = node.driver_internal_info["root_uuid_or_disk_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        stored.starts_with("0x") && h.agent_logs().contains(&format!("root_uuid={stored}")),
        "the conductor stored root_uuid_or_disk_id {stored:?}, not the disk identifier the \
         agent reported"
    );
    (h, disk, image)
}

#[test]
fn raw_whole_disk_image() {
    let (mut h, disk, image) = deploy_whole_disk("deploy-raw", "52:54:00:e2:10:01", |_, img| {
        (img.path.clone(), None)
    });
    deploy::verify_whole_disk(
        &h,
        disk,
        &WholeDiskExpectation {
            raw: &image.path,
            configdrive: None,
        },
    )
    .expect("disk after deploy");

    // Undeploy: without automated cleaning the node goes straight back to available.
    deploy::undeploy(&mut h).expect("undeploy");
}

/// A qcow2 is converted while streaming; what lands on the disk is what
/// `qemu-img convert -O raw` makes of it.
fn qcow2_case(test: &str, mac: &str, compressed: bool, disk_format: Option<&'static str>) {
    let (h, disk, _) = deploy_whole_disk(test, mac, |dir, img| {
        let qcow2 = dir.join("disk.qcow2");
        let extra: &[&str] = if compressed { &["-c"] } else { &[] };
        images::qemu_img_convert(&img.path, "raw", &qcow2, "qcow2", extra).expect("qcow2");
        (qcow2, disk_format)
    });
    let raw = h.dir().join("disk.qcow2.raw");
    images::qemu_img_convert(&h.dir().join("disk.qcow2"), "qcow2", &raw, "raw", &[])
        .expect("qemu-img convert -O raw");
    deploy::verify_whole_disk(
        &h,
        disk,
        &WholeDiskExpectation {
            raw: &raw,
            configdrive: None,
        },
    )
    .expect("disk after deploy");
}

#[test]
fn qcow2_whole_disk_image() {
    qcow2_case("deploy-qcow2", "52:54:00:e2:10:02", false, None);
}

#[test]
fn compressed_qcow2_declared_as_qcow2() {
    qcow2_case("deploy-qcow2c", "52:54:00:e2:10:03", true, Some("qcow2"));
}

fn compressed_raw_case(
    test: &str,
    mac: &str,
    compress: fn(&Path, &Path) -> anyhow::Result<()>,
    ext: &str,
) {
    let ext = ext.to_string();
    let (h, disk, image) = deploy_whole_disk(test, mac, move |dir, img| {
        let out = dir.join(format!("disk.raw.{ext}"));
        compress(&img.path, &out).expect("compressing");
        (out, None)
    });
    deploy::verify_whole_disk(
        &h,
        disk,
        &WholeDiskExpectation {
            raw: &image.path,
            configdrive: None,
        },
    )
    .expect("disk after deploy");
}

#[test]
fn zstd_compressed_raw_image() {
    compressed_raw_case("deploy-zstd", "52:54:00:e2:10:04", images::zstd, "zst");
}

#[test]
fn gzip_compressed_raw_image() {
    compressed_raw_case("deploy-gzip", "52:54:00:e2:10:05", images::gzip, "gz");
}

/// A partition image on a node with `boot_mode:uefi`: the agent lays out a GPT with an ESP,
/// a config drive partition and a root partition of `root_gb`, and writes the ext4 image
/// into the root partition. The agent runs without UEFI firmware here (no
/// /sys/firmware/efi), so it cannot install a boot loader for a partition image (it has no
/// GRUB fallback); `ipa-ignore-bootloader-failure` lets the deploy finish, as an operator of
/// such hardware would.
#[test]
fn partition_image_with_configdrive() {
    let test = "deploy-partition";
    // Ironic collects the agent's log bundle at the end (the secrets check reads it).
    let mut h = Harness::start(test, "52:54:00:e2:10:06", |c| {
        deploy::ironic_config(c);
        c.deploy_logs_collect = "always";
    })
    .expect("harness");
    let disk = h.add_disk(deploy::DISK_SIZE, Fill::Zeros).expect("disk");
    let dir = h.dir().path().to_path_buf();
    let fs_uuid = images::random_uuid().expect("uuid");
    let root_image = images::ext4_image(&dir, "root.ext4", 24, &fs_uuid).expect("ext4 image");
    let configdrive = ConfigDrive::build(&dir, "e2e-partition").expect("config drive");
    let digests = images::digests(&root_image).expect("digests");
    let temp_url = TempUrl::fake().expect("temp url");
    let url = serve(&mut h, &root_image, "root.ext4", &temp_url);

    let mut spec = node_spec(test, None);
    spec.capabilities = Some("boot_mode:uefi".into());
    enroll_available(&mut h, &spec).expect("enroll");
    let mut info = InstanceInfo::whole_disk(url, ImageChecksum::sha512(&digests));
    info.partition = true;
    info.root_gb = 1;
    set_instance_info(&h, &info).expect("instance_info");
    let opts = AgentOptions {
        extra_cmdline: vec!["ipa-ignore-bootloader-failure=1".into()],
        ..AgentOptions::default()
    };
    let (node, times) =
        run_deploy(&mut h, Some(&configdrive.encoded), opts, "active").expect("deploy");
    println!("timings: {times:?}");

    deploy::verify_deploy_calls(&h).expect("conductor calls");
    deploy::verify_secret_kept(&h, &temp_url.sig).expect("signature kept secret");
    // The config drive is the tenant's user data: a stretch of its encoding stands for it.
    let mid = configdrive.encoded.len() / 2;
    let user_data = &configdrive.encoded[mid..mid + 40];
    deploy::verify_secrets_absent(&h, &[&temp_url.sig, user_data]).expect("secrets kept");
    let layout = deploy::verify_partition_disk(
        &h,
        disk,
        &PartitionExpectation {
            root_image: &root_image,
            root_fs_uuid: &fs_uuid,
            configdrive: &configdrive.iso,
            root_bytes: 1 << 30,
        },
    )
    .expect("disk after deploy");
    println!("layout: {layout:#?}");

    // get_partition_uuids answered the root filesystem's UUID (IPA's block_uuid), and that
    // is what the conductor keeps to boot the instance.
    let stored = node.driver_internal_info["root_uuid_or_disk_id"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        stored, fs_uuid,
        "driver_internal_info.root_uuid_or_disk_id is not the root filesystem's UUID"
    );
    assert!(
        h.agent_logs().contains(&format!("root_uuid={fs_uuid}")),
        "the agent's write_image result does not name root_uuid={fs_uuid}"
    );
}
