//! From a [`Config`] to the files an operator serves: `<name>.kernel`, `<name>.initramfs`,
//! `boot.ipxe`, `SHA256SUMS` and `<name>.manifest.json`.
//!
//! Byte-identical on rebuild from the same inputs: the cpio writer sorts and normalises
//! everything, every mtime is `SOURCE_DATE_EPOCH`, compression is single-threaded, and no
//! output records the build host, user or time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ironic_agent_init::config::{DhcpMode, InitConfig};
use ironic_agent_init::modules::{self as depmod, ModuleInfo};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::{parse_mode, Compression, Config};
use crate::cpio::{Archive, Node};
use crate::elf;
use crate::kernel::Kernel;

use ramdisk_contract::paths::{
    AGENT as AGENT_PATH, AGENT_CONFIG as AGENT_CONFIG_PATH, BUILD_INFO, INIT_CONFIG, MANAGERS_DIR,
};

/// What was built, for the manifest and the summary.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub kernel_version: String,
    pub kernel_source: String,
    /// Module names in the initramfs, sorted.
    pub modules: Vec<String>,
    /// Requested drivers that are built into the kernel.
    pub builtin: Vec<String>,
    /// Default drivers this kernel does not have.
    pub unavailable: Vec<String>,
    pub firmware: Vec<String>,
    pub firmware_missing: Vec<String>,
    /// Optional extra files whose source was absent.
    pub skipped_files: Vec<String>,
    pub archive_entries: usize,
    pub cpio_bytes: u64,
    /// (file name, size, sha256) of every output, sorted by name.
    pub outputs: Vec<(String, u64, String)>,
}

impl Report {
    pub fn output(&self, suffix: &str) -> Option<&(String, u64, String)> {
        self.outputs.iter().find(|(n, _, _)| n.ends_with(suffix))
    }
}

/// Checks that `bytes` is a static executable: the ramdisk has no libc to load.
pub fn require_static(what: &str, path: &Path, bytes: &[u8]) -> Result<()> {
    match elf::interpreter(bytes).with_context(|| format!("{what} {}", path.display()))? {
        None => Ok(()),
        Some(interp) => bail!(
            "{what} {} is dynamically linked (interpreter {interp}); the ramdisk has no libc. \
             Build it static: cargo build --release --target x86_64-unknown-linux-musl",
            path.display()
        ),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn file_mode(meta: &std::fs::Metadata, given: Option<&str>) -> Result<u32> {
    match given {
        Some(m) => parse_mode(m),
        None if meta.permissions().mode() & 0o111 != 0 => Ok(0o755),
        None => Ok(0o644),
    }
}

/// Copies `source` (file or directory tree) to `dest` in the archive.
fn add_tree(a: &mut Archive, dest: &str, source: &Path, mode: Option<&str>) -> Result<usize> {
    let meta = std::fs::symlink_metadata(source)
        .with_context(|| format!("reading {}", source.display()))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(source)?;
        a.add(
            dest,
            Node::Symlink {
                target: target.to_string_lossy().into_owned(),
            },
        )?;
        return Ok(1);
    }
    if meta.is_file() {
        a.file(dest, file_mode(&meta, mode)?, read(source, "extra file")?)?;
        return Ok(1);
    }
    if !meta.is_dir() {
        bail!("{}: not a file, directory or symlink", source.display());
    }
    a.dir(dest)?;
    let mut names: Vec<_> = std::fs::read_dir(source)
        .with_context(|| format!("listing {}", source.display()))?
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let mut n = 0;
    for name in names {
        let child = format!("{}/{}", dest.trim_end_matches('/'), name.to_string_lossy());
        n += add_tree(a, &child, &source.join(&name), mode)?;
    }
    Ok(n)
}

/// The modules to include: the requested drivers, `load_always`, and their hard and soft
/// dependencies that exist.
fn resolve_modules(kernel: &Kernel, config: &Config, report: &mut Report) -> Result<Vec<String>> {
    let mut wanted: Vec<(String, bool)> = config.drivers();
    wanted.extend(config.load_always().into_iter().map(|n| (n, true)));
    let builtin: BTreeSet<&str> = kernel.builtin.iter().map(String::as_str).collect();
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut missing_explicit = Vec::new();
    for (name, explicit) in wanted {
        let n = depmod::normalize(&name);
        if kernel.modules.contains_key(&n) {
            queue.push_back(n);
        } else if builtin.contains(n.as_str()) {
            if !report.builtin.contains(&n) {
                report.builtin.push(n);
            }
        } else if explicit {
            missing_explicit.push(name);
        } else if !report.unavailable.contains(&n) {
            report.unavailable.push(n);
        }
    }
    if !missing_explicit.is_empty() {
        bail!(
            "kernel {} has no module or built-in driver named {}",
            kernel.version,
            missing_explicit.join(", ")
        );
    }
    let mut included: BTreeSet<String> = BTreeSet::new();
    while let Some(n) = queue.pop_front() {
        if !included.insert(n.clone()) {
            continue;
        }
        let m = &kernel.modules[&n];
        for d in &m.depends {
            if kernel.modules.contains_key(d) {
                queue.push_back(d.clone());
            } else if !builtin.contains(d.as_str()) {
                bail!(
                    "module {n} depends on {d}, which kernel {} does not have",
                    kernel.version
                );
            }
        }
        // Soft dependencies are best effort, as for modprobe.
        for d in m.softdep_pre.iter().chain(&m.softdep_post) {
            if kernel.modules.contains_key(d) {
                queue.push_back(d.clone());
            }
        }
    }
    Ok(included.into_iter().collect())
}

pub struct Inputs {
    pub config: Config,
    pub output: PathBuf,
    /// `SOURCE_DATE_EPOCH`: every mtime in the archive.
    pub mtime: u32,
}

pub fn build(inputs: &Inputs) -> Result<Report> {
    let config = &inputs.config;
    let compression = config.compression()?;
    let agent_path = config.agent.binary.clone().context(
        "no agent binary: [agent] binary or --agent (a static musl build of ironic-agent)",
    )?;
    let init_path =
        config.agent.init.clone().context(
            "no init: [agent] init or --init (a static musl build of ironic-agent-init)",
        )?;
    let agent = read(&agent_path, "the agent")?;
    require_static("the agent", &agent_path, &agent)?;
    let init = read(&init_path, "the init")?;
    require_static("the init", &init_path, &init)?;
    // The binaries are checked first: reading a kernel package takes seconds.
    let kernel = match (
        &config.kernel.deb,
        &config.kernel.vmlinuz,
        &config.kernel.modules,
    ) {
        (Some(deb), None, None) => Kernel::from_deb(deb)?,
        (None, Some(v), Some(m)) => Kernel::from_tree(v, m)?,
        (None, None, None) => bail!(
            "no kernel: give [kernel] deb (a linux-image .deb, e.g. from `apt-get download \
             linux-image-6.1.0-56-amd64`) or [kernel] vmlinuz + modules"
        ),
        _ => bail!("[kernel]: give either deb, or vmlinuz and modules"),
    };

    let mut report = Report {
        name: config.name().to_string(),
        kernel_version: kernel.version.clone(),
        kernel_source: kernel.source.clone(),
        modules: vec![],
        builtin: vec![],
        unavailable: vec![],
        firmware: vec![],
        firmware_missing: vec![],
        skipped_files: vec![],
        archive_entries: 0,
        cpio_bytes: 0,
        outputs: vec![],
    };
    let names = resolve_modules(&kernel, config, &mut report)?;
    let included: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let infos: Vec<ModuleInfo> = names
        .iter()
        .map(|n| {
            let m = &kernel.modules[n];
            let keep = |v: &[String]| -> Vec<String> {
                v.iter()
                    .filter(|d| included.contains(d.as_str()))
                    .cloned()
                    .collect()
            };
            ModuleInfo {
                name: m.name.clone(),
                path: m.path.clone(),
                depends: keep(&m.depends),
                aliases: m.aliases.clone(),
                softdep_pre: keep(&m.softdep_pre),
                softdep_post: keep(&m.softdep_post),
            }
        })
        .collect();
    let files = depmod::render(&infos).map_err(|e| anyhow::anyhow!("{e}"))?;

    let mut a = Archive::new();
    for d in [
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/var/log",
        "/etc/ironic-agent",
        MANAGERS_DIR,
    ] {
        a.dir(d)?;
    }
    a.add("/tmp", Node::Dir { mode: 0o1777 })?;
    a.add("/root", Node::Dir { mode: 0o700 })?;
    a.add(
        "/dev/console",
        Node::CharDev {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )?;
    a.add(
        "/dev/null",
        Node::CharDev {
            mode: 0o666,
            major: 1,
            minor: 3,
        },
    )?;
    a.file("/init", 0o755, init)?;
    a.file(AGENT_PATH, 0o755, agent)?;
    a.file(
        "/etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
    )?;
    a.file("/etc/group", 0o644, b"root:x:0:\n".to_vec())?;
    a.file("/etc/shadow", 0o600, b"root:*:1::::::\n".to_vec())?;
    a.file(
        "/etc/hosts",
        0o644,
        b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_vec(),
    )?;
    a.file(
        "/etc/os-release",
        0o644,
        format!(
            "NAME=\"ironic-agent ramdisk\"\nID=ironic-agent\nVERSION_ID={}\nPRETTY_NAME=\"ironic-agent ramdisk {} (Linux {})\"\n",
            env!("CARGO_PKG_VERSION"),
            env!("CARGO_PKG_VERSION"),
            kernel.version
        )
        .into_bytes(),
    )?;
    let dhcp = match config.agent.dhcp.as_deref() {
        None => DhcpMode::Bootif,
        Some(s) => DhcpMode::parse(s)
            .with_context(|| format!("[agent] dhcp must be bootif, all or none, not {s:?}"))?,
    };
    let init_conf = InitConfig {
        agent: AGENT_PATH.to_string(),
        agent_args: config.agent.args.clone(),
        load_modules: config.load_always(),
        rescue_command: config.agent.rescue_command.clone(),
        dhcp,
    };
    a.file(INIT_CONFIG, 0o644, init_conf.render().into_bytes())?;
    if let Some(c) = &config.agent.config {
        a.file(AGENT_CONFIG_PATH, 0o644, read(c, "the agent config")?)?;
    }
    if let Some(dir) = &config.agent.hardware_managers {
        if !dir.is_dir() {
            bail!(
                "[agent] hardware_managers {}: not a directory",
                dir.display()
            );
        }
        add_tree(&mut a, MANAGERS_DIR, dir, None)?;
    }

    // Modules and their depmod files.
    let moddir = format!("/lib/modules/{}", kernel.version);
    for m in &infos {
        a.file(
            &format!("{moddir}/{}", m.path),
            0o644,
            kernel.module_bytes(&m.path)?,
        )?;
    }
    a.file(
        &format!("{moddir}/modules.dep"),
        0o644,
        files.dep.into_bytes(),
    )?;
    a.file(
        &format!("{moddir}/modules.alias"),
        0o644,
        files.alias.into_bytes(),
    )?;
    a.file(
        &format!("{moddir}/modules.softdep"),
        0o644,
        files.softdep.into_bytes(),
    )?;
    a.file(
        &format!("{moddir}/modules.builtin"),
        0o644,
        kernel.builtin_text.clone().into_bytes(),
    )?;

    // Firmware the included modules declare, where the operator has it.
    let mut fw_names: BTreeSet<String> = BTreeSet::new();
    for n in &names {
        fw_names.extend(kernel.modules[n].firmware.iter().cloned());
    }
    for fw in fw_names {
        if fw.contains("..") || fw.starts_with('/') {
            continue;
        }
        let found = config.modules.firmware_dirs.iter().find_map(|d| {
            ["", ".zst", ".xz"]
                .iter()
                .map(|ext| (format!("{fw}{ext}"), d.join(format!("{fw}{ext}"))))
                .find(|(_, p)| p.is_file())
        });
        match found {
            Some((rel, p)) => {
                a.file(
                    &format!("/lib/firmware/{rel}"),
                    0o644,
                    read(&p, "firmware")?,
                )?;
                report.firmware.push(rel);
            }
            None => report.firmware_missing.push(fw),
        }
    }

    // The operator's files last: they may replace a default file.
    for f in &config.files {
        if !f.path.starts_with('/') {
            bail!("[[files]] path {:?} must be absolute", f.path);
        }
        if !f.source.exists() && std::fs::symlink_metadata(&f.source).is_err() {
            if f.optional {
                report.skipped_files.push(f.path.clone());
                continue;
            }
            bail!(
                "[[files]] {}: source {} does not exist",
                f.path,
                f.source.display()
            );
        }
        add_tree(&mut a, &f.path, &f.source, f.mode.as_deref())?;
    }

    report.modules = infos.iter().map(|m| m.name.clone()).collect();
    report.modules.sort();
    let build_info = build_info(&report, config);
    a.file(BUILD_INFO, 0o644, build_info.into_bytes())?;
    report.archive_entries = a.len();

    let mut cpio = Vec::with_capacity(a.data_len() as usize + (1 << 20));
    report.cpio_bytes = a.write(inputs.mtime, &mut cpio)?;
    let initramfs = compress(&cpio, compression)?;
    drop(cpio);

    std::fs::create_dir_all(&inputs.output)
        .with_context(|| format!("creating {}", inputs.output.display()))?;
    let name = config.name();
    let kernel_file = format!("{name}.kernel");
    let initramfs_file = format!("{name}.initramfs");
    let ipxe = ipxe_script(config, &kernel_file, &initramfs_file, &report);
    let mut outputs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    outputs.insert(kernel_file, kernel.vmlinuz.clone());
    outputs.insert(initramfs_file, initramfs);
    outputs.insert("boot.ipxe".to_string(), ipxe.into_bytes());
    for (file, data) in &outputs {
        report
            .outputs
            .push((file.clone(), data.len() as u64, hex(&Sha256::digest(data))));
    }
    let manifest = manifest(&report, config, compression, inputs.mtime);
    outputs.insert(format!("{name}.manifest.json"), manifest.into_bytes());
    let sums: String = outputs
        .iter()
        .map(|(f, d)| format!("{}  {f}\n", hex(&Sha256::digest(d))))
        .collect();
    outputs.insert("SHA256SUMS".to_string(), sums.into_bytes());
    for (file, data) in &outputs {
        write_atomic(&inputs.output.join(file), data)?;
    }
    Ok(report)
}

fn compress(data: &[u8], c: Compression) -> Result<Vec<u8>> {
    match c {
        Compression::Zstd(level) => {
            let mut e = zstd::stream::Encoder::new(Vec::new(), level)?;
            // The kernel's decompressor needs no content checksum; keep the frame plain.
            e.include_checksum(false)?;
            e.set_pledged_src_size(Some(data.len() as u64))?;
            e.write_all(data)?;
            Ok(e.finish()?)
        }
        Compression::Gzip(level) => {
            // GzBuilder writes mtime 0 and no file name: reproducible.
            let mut e = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::new(level));
            e.write_all(data)?;
            Ok(e.finish()?)
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-build");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ipxe_script(config: &Config, kernel: &str, initramfs: &str, report: &Report) -> String {
    let base = config
        .boot
        .http_url
        .as_deref()
        .map(|u| format!("{}/", u.trim_end_matches('/')))
        .unwrap_or_default();
    let mut params = vec![format!("initrd={initramfs}")];
    params.extend(config.kernel_params());
    if let Some(api) = &config.boot.api_url {
        params.push(format!("ipa-api-url={api}"));
    }
    params.push("BOOTIF=${mac}".to_string());
    format!(
        "#!ipxe\n\
         # ironic-agent ramdisk {version}: Linux {kver}, {n} kernel modules.\n\
         # Written by ironic-agent-build. `initrd=` is needed by EFI-stub boots; BOOTIF tells\n\
         # the ramdisk which NIC booted (the agent accepts this form and PXELINUX's 01-aa-bb-...).\n\
         :retry\n\
         kernel --timeout 60000 {base}{kernel} {params} || goto failed\n\
         initrd --timeout 60000 {base}{initramfs} || goto failed\n\
         boot\n\
         :failed\n\
         echo ironic-agent: downloading the ramdisk failed; retrying in 10 seconds\n\
         sleep 10\n\
         goto retry\n",
        version = env!("CARGO_PKG_VERSION"),
        kver = report.kernel_version,
        n = report.modules.len(),
        params = params.join(" "),
    )
}

fn build_info(report: &Report, config: &Config) -> String {
    let mut s = format!(
        "ironic-agent ramdisk {}\nkernel {}\nmodules {}\n",
        env!("CARGO_PKG_VERSION"),
        report.kernel_version,
        report.modules.join(" ")
    );
    if !report.builtin.is_empty() {
        s.push_str(&format!("built-in {}\n", report.builtin.join(" ")));
    }
    if !report.firmware.is_empty() {
        s.push_str(&format!("firmware {}\n", report.firmware.join(" ")));
    }
    if !report.firmware_missing.is_empty() {
        s.push_str(&format!(
            "firmware-missing {}\n",
            report.firmware_missing.join(" ")
        ));
    }
    for f in &config.files {
        if !report.skipped_files.contains(&f.path) {
            s.push_str(&format!("file {}\n", f.path));
        }
    }
    s
}

fn manifest(report: &Report, config: &Config, c: Compression, mtime: u32) -> String {
    let compression = match c {
        Compression::Zstd(l) => format!("zstd -{l}"),
        Compression::Gzip(l) => format!("gzip -{l}"),
    };
    let outputs: Vec<_> = report
        .outputs
        .iter()
        .map(|(f, size, sha)| json!({"file": f, "size": size, "sha256": sha}))
        .collect();
    let v = json!({
        "builder": format!("ironic-agent-build {}", env!("CARGO_PKG_VERSION")),
        "name": report.name,
        "kernel": {"version": report.kernel_version, "source": file_name(&report.kernel_source)},
        "source_date_epoch": mtime,
        "compression": compression,
        "initramfs_uncompressed_bytes": report.cpio_bytes,
        "archive_entries": report.archive_entries,
        "modules": report.modules,
        "builtin_drivers": report.builtin,
        "drivers_not_in_kernel": report.unavailable,
        "firmware": report.firmware,
        "firmware_not_found": report.firmware_missing,
        "extra_files": config.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
        "optional_files_skipped": report.skipped_files,
        "kernel_params": config.kernel_params(),
        "outputs": outputs,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// Only file names in the manifest: full paths would make it differ between build hosts.
fn file_name(source: &str) -> String {
    source
        .split(" + ")
        .map(|p| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.to_string())
        })
        .collect::<Vec<_>>()
        .join(" + ")
}
