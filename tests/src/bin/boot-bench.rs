//! `boot-bench` (`tests/bench-ramdisk.sh --boot-floor`): where the time from power-on to the
//! agent's first request goes, beside the floor: the same QEMU (TCG, SeaBIOS, the iPXE ROM,
//! QEMU's DHCP handing out `http://10.0.2.2:8080/boot.ipxe`), the same Debian kernel and the
//! same kernel parameters, booting
//!
//! - **floor**: a minimal initramfs (static busybox, the virtio modules of the same kernel,
//!   `/init` a shell script: mount, insmod, `udhcpc`, one `wget`), gzip -9 like ours;
//! - **ours**: the ramdisk `ironic-agent-build` writes by default (gzip -9), and variants of
//!   it (zstd, `quiet`) to see what each costs;
//! - both again on Debian's `cloud` kernel flavour, when its package is in
//!   `/var/cache/ironic-agent-test/kernel-cloud` (`apt-get download
//!   linux-image-<version>-cloud-amd64` there; `tests/bench-ramdisk.sh --boot-floor` does).
//!
//! Each boot is timed from QEMU's start on the host: iPXE fetching the script, the
//! initramfs fetched (nginx's access log), the kernel's first console line, the init's first
//! line, modules loaded, the DHCP lease, the first HTTP request from user space (the floor's
//! `wget`; our agent's first call to `ipa-api-url`, pointed at nginx: the call a heartbeat
//! needs before anything else). Guest-side, the init's uptime when it started. Medians over
//! `--runs`. No Ironic and no IPMI: those add the same to both (see the ramdisk benchmark
//! for power-on → heartbeat through them).
//!
//! Everything runs inside a network namespace of its own (`e2e::qemu::QemuNetNs`: only
//! `lo` with 127.0.0.1 and 10.0.2.2, no route out). Not a test: no figure is asserted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use e2e::nginx::Nginx;
use e2e::qemu::{self, QemuNetNs, SerialLog, VmSpec};
use e2e::ramdisk;
use e2e::stats::median;
use e2e::testdir::TestDir;

/// The kernel parameters both get (Ironic's `[pxe] kernel_append_params` in the QEMU job).
const PARAMS: &str = "console=ttyS0";
const TIMEOUT: Duration = Duration::from_secs(180);

struct Variant {
    name: String,
    kernel: String,
    initramfs: String,
    params: String,
    floor: bool,
}

/// A table column: its heading and its milestone.
type Column = (&'static str, fn(&Boot) -> Option<f64>);

/// Seconds from QEMU's start (host clock) at which each milestone was seen.
#[derive(Debug, Default, Clone)]
struct Boot {
    script: Option<f64>,
    initramfs_fetched: Option<f64>,
    kernel: Option<f64>,
    init: Option<f64>,
    init_uptime: Option<f64>,
    modules: Option<f64>,
    lease: Option<f64>,
    first_request: Option<f64>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 3usize;
    let mut only: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--runs" => {
                runs = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .context("--runs needs a positive number")?;
                i += 2;
            }
            "--only" => {
                only = Some(args.get(i + 1).context("--only needs a name")?.clone());
                i += 2;
            }
            other => bail!(
                "unknown argument {other}; usage: boot-bench [--runs N] [--only NAME] \
                 (NAME: part of a variant's name, e.g. zstd)"
            ),
        }
    }
    e2e::cmd::check_prerequisites(&["qemu-system-x86_64", "nginx", "cpio", "gzip", "busybox"])?;
    let mut dir = TestDir::new("boot-bench")?;
    let www = dir.join("server/www");
    std::fs::create_dir_all(&www)?;

    let gz = ramdisk::build(&dir.join("ours-gzip"), &[])?;
    let zst = ramdisk::build(&dir.join("ours-zstd"), &["--compression", "zstd"])?;
    std::fs::copy(&gz.kernel, www.join("vmlinuz"))?;
    std::fs::copy(&gz.initramfs, www.join("ours.gz"))?;
    std::fs::copy(&zst.initramfs, www.join("ours.zst"))?;
    let floor = build_floor(&dir.join("floor"), &gz.initramfs, &www.join("floor.gz"))?;
    println!("floor initramfs: {floor}");

    let size = |n: &str| std::fs::metadata(www.join(n)).map(|m| m.len()).unwrap_or(0);
    let generic = |name: &str, initramfs: &str, params: String, floor: bool| Variant {
        name: format!("{name} ({:.1} MiB)", size(initramfs) as f64 / 1048576.0),
        kernel: "vmlinuz".into(),
        initramfs: initramfs.into(),
        params,
        floor,
    };
    let mut variants = vec![
        generic("floor", "floor.gz", PARAMS.to_string(), true),
        generic("floor, quiet", "floor.gz", format!("{PARAMS} quiet"), true),
        generic("ours (default, gzip)", "ours.gz", PARAMS.to_string(), false),
        generic("ours, zstd", "ours.zst", PARAMS.to_string(), false),
        generic("ours, quiet", "ours.gz", format!("{PARAMS} quiet"), false),
    ];
    // Debian's `cloud` kernel flavour (virtio built for VMs, few hardware drivers), when
    // its package is in the cache: the same two ramdisks on it.
    if let Some(deb) = cloud_kernel_deb() {
        // Single-threaded here: the variable only steers the one build below.
        std::env::set_var("IRONIC_AGENT_KERNEL_DEB", &deb);
        // A VM's drivers: the cloud flavour leaves out most hardware NIC and storage drivers
        // of the default list (ahci is built in; IPMI's are missing).
        let vm_config = dir.join("vm-ramdisk.toml");
        std::fs::write(
            &vm_config,
            "[modules]\ndrivers = [\"virtio_net\", \"virtio_pci\", \"virtio_blk\", \
             \"virtio_scsi\", \"nvme\", \"ata_piix\", \"sd_mod\"]\n\
             load_always = [\"efivarfs\"]\n",
        )?;
        let config = vm_config.display().to_string();
        let cloud = ramdisk::build(&dir.join("ours-cloud"), &["--config", &config]);
        std::env::remove_var("IRONIC_AGENT_KERNEL_DEB");
        let cloud = cloud?;
        std::fs::copy(&cloud.kernel, www.join("vmlinuz-cloud"))?;
        std::fs::copy(&cloud.initramfs, www.join("ours-cloud.gz"))?;
        let f = build_floor(
            &dir.join("floor-cloud"),
            &cloud.initramfs,
            &www.join("floor-cloud.gz"),
        )?;
        println!("floor initramfs on the cloud kernel: {f}");
        let kernel = |s: &str| {
            format!(
                "{s}, cloud kernel {} ({:.1} MiB kernel)",
                cloud.manifest["kernel"]["version"].as_str().unwrap_or("?"),
                size("vmlinuz-cloud") as f64 / 1048576.0
            )
        };
        for (name, initramfs, floor) in [
            (kernel("floor"), "floor-cloud.gz", true),
            (kernel("ours"), "ours-cloud.gz", false),
        ] {
            variants.push(Variant {
                name: format!("{name} ({:.1} MiB)", size(initramfs) as f64 / 1048576.0),
                kernel: "vmlinuz-cloud".into(),
                initramfs: initramfs.into(),
                params: PARAMS.to_string(),
                floor,
            });
        }
    }
    // The floors stay: every figure is read beside its kernel's floor.
    variants.retain(|v| v.floor || only.as_ref().is_none_or(|o| v.name.contains(o.as_str())));

    let ns = QemuNetNs::create()?;
    ns.enter()?;
    let nginx = Nginx::start(
        &dir.join("server"),
        std::net::Ipv4Addr::UNSPECIFIED,
        qemu::HTTP_PORT,
    )?;
    let mut results: Vec<Vec<Boot>> = variants.iter().map(|_| Vec::new()).collect();
    for run in 1..=runs {
        for (k, v) in variants.iter().enumerate() {
            let boot = boot_once(&dir, &nginx, v, run)
                .with_context(|| format!("{}, run {run}", v.name))
                .inspect_err(|_| dir.keep())?;
            println!(
                "run {run}/{runs} {:<28} first request at {}",
                v.name,
                fmt(boot.first_request)
            );
            results[k].push(boot);
        }
    }
    drop(nginx);
    drop(ns);

    println!(
        "\nseconds from QEMU's start (host clock), median of {runs}; kernel {}, parameters \
         `{PARAMS}`",
        gz.manifest["kernel"]["version"].as_str().unwrap_or("?")
    );
    let cols: [Column; 8] = [
        ("script", |b| b.script),
        ("initrd in", |b| b.initramfs_fetched),
        ("kernel", |b| b.kernel),
        ("init", |b| b.init),
        ("(guest uptime)", |b| b.init_uptime),
        ("modules", |b| b.modules),
        ("lease", |b| b.lease),
        ("1st request", |b| b.first_request),
    ];
    print!("| ramdisk |");
    for (c, _) in &cols {
        print!(" {c} |");
    }
    println!(" 1st request, range | vs floor |");
    println!("|---|{}", "---|".repeat(cols.len() + 2));
    // Each ramdisk beside the floor on the same kernel (the first floor row of it).
    let first_request =
        |k: usize| median(results[k].iter().filter_map(|b| b.first_request).collect());
    for (k, (v, boots)) in variants.iter().zip(&results).enumerate() {
        print!("| {} |", v.name);
        for (_, f) in &cols {
            print!(" {} |", fmt(median(boots.iter().filter_map(f).collect())));
        }
        let floor = variants
            .iter()
            .position(|f| f.floor && f.kernel == v.kernel)
            .and_then(first_request);
        let firsts: Vec<f64> = boots.iter().filter_map(|b| b.first_request).collect();
        let lo = firsts.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = firsts.iter().cloned().fold(0.0, f64::max);
        print!(" {lo:.2}-{hi:.2} |");
        match (floor, first_request(k)) {
            (Some(f), Some(o)) if !v.floor => println!(" {:+.2} |", o - f),
            _ => println!(" |"),
        }
    }
    println!(
        "(kernel: its first console line, printed when the serial console registers; init: \
         the init's first line; modules: the floor's insmods / our init's \"loaded N kernel \
         modules\"; 1st request: the floor's wget / our agent's first call to ipa-api-url)"
    );
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

/// The floor: busybox, the virtio modules of our ramdisk's kernel (taken from our
/// initramfs, with their order from its modules.dep) and a shell `/init`.
fn build_floor(work: &Path, ours: &Path, out: &Path) -> Result<String> {
    let unpacked = work.join("ours-unpacked");
    let root = work.join("root");
    for d in [&unpacked, &root] {
        std::fs::create_dir_all(d)?;
    }
    e2e::cmd::run(Command::new("bash").arg("-c").arg(format!(
        "zcat {} | (cd {} && cpio -idm --quiet)",
        ours.display(),
        unpacked.display()
    )))?;
    let modules_root = std::fs::read_dir(unpacked.join("lib/modules"))?
        .flatten()
        .map(|e| e.path())
        .next()
        .context("no lib/modules/<version> in our initramfs")?;
    let dep = std::fs::read_to_string(modules_root.join("modules.dep"))?;
    // virtio_net and virtio_pci with their dependencies, dependencies first.
    let mut order: Vec<String> = Vec::new();
    for want in ["virtio_pci.ko", "virtio_net.ko"] {
        let Some(line) = dep.lines().find(|l| {
            l.split(':')
                .next()
                .is_some_and(|p| p.ends_with(&format!("/{want}")))
        }) else {
            continue; // built into this kernel
        };
        let (module, deps) = line.split_once(':').unwrap_or((line, ""));
        for m in deps.split_whitespace().rev().chain(std::iter::once(module)) {
            if !order.iter().any(|o| o == m) {
                order.push(m.to_string());
            }
        }
    }
    let mods = root.join("lib/modules");
    std::fs::create_dir_all(&mods)?;
    let mut insmods = String::new();
    for m in &order {
        let file = Path::new(m).file_name().context("module path")?;
        std::fs::copy(modules_root.join(m), mods.join(file))?;
        insmods.push_str(&format!("insmod /lib/modules/{}\n", file.to_string_lossy()));
    }
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         echo \"FLOOR init $(cut -d' ' -f1 /proc/uptime)\"\n\
         {insmods}\
         echo FLOOR modules\n\
         ip link set lo up\n\
         ip link set eth0 up\n\
         udhcpc -i eth0 -s /udhcpc.sh -q -f -n -t 30 -T 1\n\
         echo FLOOR lease\n\
         wget -q -O /dev/null http://{host}:{port}/floor-done\n\
         echo FLOOR done\n\
         poweroff -f\n",
        host = qemu::HOST,
        port = qemu::HTTP_PORT,
    );
    let udhcpc = "#!/bin/sh\n\
         [ \"$1\" = bound ] || exit 0\n\
         ip addr add \"$ip/${mask:-24}\" dev \"$interface\"\n\
         [ -n \"$router\" ] && ip route add default via \"${router%% *}\"\n\
         exit 0\n";
    for (name, text) in [("init", init.as_str()), ("udhcpc.sh", udhcpc)] {
        let p = root.join(name);
        std::fs::write(&p, text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    e2e::cmd::run(Command::new("bash").arg("-c").arg(format!(
        "cd {} && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9 > {}",
        root.display(),
        out.display()
    )))?;
    Ok(format!(
        "busybox, {} modules ({}), {:.2} MiB gzip",
        order.len(),
        order
            .iter()
            .map(|m| ramdisk_module_name(m))
            .collect::<Vec<_>>()
            .join(" "),
        std::fs::metadata(out)?.len() as f64 / 1048576.0
    ))
}

/// The cloud kernel package: the newest `linux-image-*-cloud-amd64_*.deb` in
/// `/var/cache/ironic-agent-test/kernel-cloud` (`apt-get download
/// linux-image-<version>-cloud-amd64` there), if any.
fn cloud_kernel_deb() -> Option<std::path::PathBuf> {
    let mut debs: Vec<_> = std::fs::read_dir("/var/cache/ironic-agent-test/kernel-cloud")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("linux-image-") && n.contains("-cloud-") && n.ends_with(".deb")
        })
        .collect();
    debs.sort();
    debs.pop()
}

fn ramdisk_module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".ko").to_string()
}

fn boot_once(dir: &TestDir, nginx: &Nginx, v: &Variant, run: usize) -> Result<Boot> {
    let base = format!("http://{}:{}", qemu::HOST, qemu::HTTP_PORT);
    let agent_params = if v.floor {
        String::new()
    } else {
        // Where the agent's first call goes: nginx, which logs it (and answers 404).
        format!(" ipa-api-url={base}/ironic-api")
    };
    std::fs::write(
        nginx.root().join("boot.ipxe"),
        format!(
            "#!ipxe\nkernel {base}/{k} initrd={i} {p}{agent_params} BOOTIF=${{mac}}\n\
             initrd {base}/{i}\nboot\n",
            k = v.kernel,
            i = v.initramfs,
            p = v.params,
        ),
    )?;
    let tag = format!("{}-{run}", v.initramfs.replace('.', "-"));
    let serial = dir.join(&format!("serial-{tag}-{}.log", v.params.len()));
    let _ = std::fs::remove_file(&serial);
    let disk = dir.join("vm-disk.img");
    std::fs::File::create(&disk)?.set_len(1 << 30)?;
    let vm = VmSpec::new(512, disk, serial.clone());
    let args = vm.args();
    let log_offset = nginx.access_log().len();
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .args(["-boot", "order=n", "-no-reboot"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("qemu.out"))?)
        .spawn()
        .context("starting QEMU")?;
    let started = Instant::now();
    let mut console = SerialLog::new(&serial);
    let mut b = Boot::default();
    let mut text = String::new();
    let result = loop {
        let now = started.elapsed().as_secs_f64();
        for l in console.new_lines() {
            let mark = |slot: &mut Option<f64>| {
                slot.get_or_insert(now);
            };
            if l.starts_with('[') && l.contains("] Linux version") {
                mark(&mut b.kernel);
            }
            if l.starts_with("FLOOR init") || l.starts_with("ironic-agent-init[") {
                if b.init.is_none() {
                    b.init_uptime = guest_uptime(&l);
                }
                mark(&mut b.init);
            }
            if l.starts_with("FLOOR modules") || l.contains("kernel modules in") {
                mark(&mut b.modules);
            }
            if l.starts_with("FLOOR lease") || l.contains("DHCP lease") {
                mark(&mut b.lease);
            }
            text.push_str(&l);
            text.push('\n');
        }
        let access = nginx.access_log();
        let new = access.get(log_offset..).unwrap_or("");
        for l in new.lines() {
            if l.contains("GET /boot.ipxe") {
                b.script.get_or_insert(now);
            } else if l.contains(&format!("GET /{} ", v.initramfs)) {
                b.initramfs_fetched.get_or_insert(now);
            } else if l.contains("GET /floor-done") || l.contains("/ironic-api") {
                b.first_request.get_or_insert(now);
            }
        }
        if b.first_request.is_some() {
            break Ok(());
        }
        if text.contains("Kernel panic") {
            break Err(anyhow::anyhow!("kernel panic"));
        }
        if started.elapsed() > TIMEOUT {
            break Err(anyhow::anyhow!(
                "no request from user space within {}s",
                TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(|e| {
        let tail: String = text
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        anyhow::anyhow!("{e}; console {}:\n{tail}", serial.display())
    })?;
    Ok(b)
}

/// `FLOOR init 2.34` / `ironic-agent-init[2.34]: ...` → 2.34.
fn guest_uptime(line: &str) -> Option<f64> {
    if let Some(rest) = line.strip_prefix("FLOOR init ") {
        return rest.trim().parse().ok();
    }
    let rest = line.strip_prefix("ironic-agent-init[")?;
    rest.split(']').next()?.parse().ok()
}
