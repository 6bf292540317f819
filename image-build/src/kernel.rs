//! The kernel and its modules, from a Debian `linux-image-*` package (as `apt-get download`
//! fetches it: no root, nothing installed) or from a vmlinuz and a `/lib/modules/<version>`
//! tree.
//!
//! Every module's `.modinfo` is read (name, `depends=`, `alias=`, `firmware=`,
//! `softdep=`), so the dependency closure is computed without `depmod` or `modinfo`; Debian
//! packages ship no `modules.dep` anyway (depmod writes it at install time). Compressed
//! modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are decompressed, so the init needs no
//! decompressor. A package is read in one pass, keeping each module zstd-compressed in
//! memory (about a quarter of the tree's size) until the closure is known.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::elf;

/// One module's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: String,
    /// Relative to `/lib/modules/<version>/`, always ending in `.ko`.
    pub path: String,
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
    pub firmware: Vec<String>,
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
}

/// Parses a `.modinfo` section (NUL-separated `key=value`).
pub fn parse_modinfo(path: &str, section: &[u8]) -> ModInfo {
    let mut m = ModInfo {
        name: ironic_agent_init::modules::name_of_path(path),
        path: path.to_string(),
        ..ModInfo::default()
    };
    for item in section.split(|&b| b == 0) {
        let Ok(s) = std::str::from_utf8(item) else {
            continue;
        };
        let Some((k, v)) = s.split_once('=') else {
            continue;
        };
        match k {
            "name" if !v.is_empty() => m.name = ironic_agent_init::modules::normalize(v),
            "depends" => m.depends.extend(
                v.split(',')
                    .filter(|d| !d.is_empty())
                    .map(ironic_agent_init::modules::normalize),
            ),
            "alias" => m.aliases.push(v.to_string()),
            "firmware" => m.firmware.push(v.to_string()),
            "softdep" => {
                let mut post = false;
                for w in v.split_whitespace() {
                    match w {
                        "pre:" => post = false,
                        "post:" => post = true,
                        w if post => m
                            .softdep_post
                            .push(ironic_agent_init::modules::normalize(w)),
                        w => m.softdep_pre.push(ironic_agent_init::modules::normalize(w)),
                    }
                }
            }
            _ => {}
        }
    }
    m
}

/// A kernel's image and modules, read into memory.
pub struct Kernel {
    pub version: String,
    pub vmlinuz: Vec<u8>,
    /// Module name -> metadata.
    pub modules: BTreeMap<String, ModInfo>,
    /// Names of modules built into the kernel (`modules.builtin`).
    pub builtin: Vec<String>,
    /// `modules.builtin` as shipped (modprobe reads it to know what needs no loading).
    pub builtin_text: String,
    /// Module bytes (decompressed `.ko`, stored zstd-compressed), by relative path.
    blobs: BTreeMap<String, Vec<u8>>,
    /// Where it came from, for the manifest.
    pub source: String,
}

impl Kernel {
    /// The `.ko` bytes of a module, by relative path.
    pub fn module_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let blob = self
            .blobs
            .get(path)
            .with_context(|| format!("module {path} not read"))?;
        zstd::decode_all(&blob[..]).with_context(|| format!("unpacking {path}"))
    }

    /// Reads a Debian `linux-image-*.deb`.
    pub fn from_deb(path: &Path) -> Result<Kernel> {
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let (member, offset, size) = find_data_member(&mut f)
            .with_context(|| format!("reading {} as a Debian package", path.display()))?;
        f.seek(SeekFrom::Start(offset))?;
        let limited = BufReader::with_capacity(1 << 20, f.take(size));
        let decoder: Box<dyn Read> = if member.ends_with(".xz") {
            Box::new(liblzma::read::XzDecoder::new(limited))
        } else if member.ends_with(".zst") {
            Box::new(zstd::stream::read::Decoder::new(limited)?)
        } else if member.ends_with(".gz") {
            Box::new(flate2::read::GzDecoder::new(limited))
        } else if member == "data.tar" {
            Box::new(limited)
        } else {
            bail!("{}: unsupported data member {member}", path.display());
        };
        let mut collector = Collector::default();
        let mut archive = tar::Archive::new(decoder);
        for entry in archive
            .entries()
            .with_context(|| format!("reading {member} of {}", path.display()))?
        {
            let mut entry = entry.with_context(|| format!("reading {member}"))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path()?.to_string_lossy().into_owned();
            let name = name.trim_start_matches("./").to_string();
            if collector.wants(&name) {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut data)
                    .with_context(|| format!("reading {name} from {}", path.display()))?;
                collector.take(&name, data)?;
            }
        }
        collector.finish(format!("{}", path.display()))
    }

    /// Reads a vmlinuz and a modules tree (`/lib/modules/<version>`; its name is the version).
    pub fn from_tree(vmlinuz: &Path, modules_dir: &Path) -> Result<Kernel> {
        let version = modules_dir
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("no kernel version in {}", modules_dir.display()))?
            .to_string();
        let mut collector = Collector::default();
        collector.take(
            &format!("boot/vmlinuz-{version}"),
            std::fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?,
        )?;
        let mut stack = vec![modules_dir.to_path_buf()];
        let mut files: Vec<PathBuf> = Vec::new();
        while let Some(dir) = stack.pop() {
            for e in
                std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
            {
                let e = e?;
                let t = e.file_type()?;
                if t.is_dir() {
                    stack.push(e.path());
                } else if t.is_file() {
                    files.push(e.path());
                }
            }
        }
        files.sort();
        for p in files {
            let rel = p.strip_prefix(modules_dir)?.to_string_lossy().into_owned();
            let name = format!("lib/modules/{version}/{rel}");
            if collector.wants(&name) {
                let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                collector.take(&name, data)?;
            }
        }
        collector.finish(format!("{} + {}", vmlinuz.display(), modules_dir.display()))
    }
}

/// Finds `data.tar*` in an `ar` archive; returns its name, offset and size.
fn find_data_member(f: &mut File) -> Result<(String, u64, u64)> {
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)?;
    if &magic != b"!<arch>\n" {
        bail!("not an ar archive");
    }
    let mut pos = 8u64;
    loop {
        let mut h = [0u8; 60];
        if f.read_exact(&mut h).is_err() {
            bail!("no data.tar member");
        }
        let name = String::from_utf8_lossy(&h[..16])
            .trim()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = String::from_utf8_lossy(&h[48..58])
            .trim()
            .parse()
            .context("bad ar member size")?;
        pos += 60;
        if name.starts_with("data.tar") {
            return Ok((name, pos, size));
        }
        pos += size + (size % 2);
        f.seek(SeekFrom::Start(pos))?;
    }
}

/// Splits `.../lib/modules/<version>/<rest>` (also `usr/lib/modules`).
fn modules_path(name: &str) -> Option<(&str, &str)> {
    let i = name.find("lib/modules/")?;
    let rest = &name[i + "lib/modules/".len()..];
    let (version, rel) = rest.split_once('/')?;
    Some((version, rel))
}

#[derive(Default)]
struct Collector {
    version: Option<String>,
    vmlinuz: Option<Vec<u8>>,
    modules: BTreeMap<String, ModInfo>,
    blobs: BTreeMap<String, Vec<u8>>,
    builtin: Vec<String>,
    builtin_text: String,
}

impl Collector {
    fn wants(&self, name: &str) -> bool {
        if name.starts_with("boot/vmlinuz-") {
            return true;
        }
        match modules_path(name) {
            Some((_, rel)) => {
                rel == "modules.builtin"
                    || rel.ends_with(".ko")
                    || rel.ends_with(".ko.xz")
                    || rel.ends_with(".ko.zst")
                    || rel.ends_with(".ko.gz")
            }
            None => false,
        }
    }

    fn take(&mut self, name: &str, data: Vec<u8>) -> Result<()> {
        if let Some(v) = name.strip_prefix("boot/vmlinuz-") {
            self.set_version(v)?;
            self.vmlinuz = Some(data);
            return Ok(());
        }
        let Some((version, rel)) = modules_path(name) else {
            return Ok(());
        };
        self.set_version(version)?;
        if rel == "modules.builtin" {
            self.builtin_text = String::from_utf8_lossy(&data).into_owned();
            self.builtin = String::from_utf8_lossy(&data)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| ironic_agent_init::modules::name_of_path(l.trim()))
                .collect();
            return Ok(());
        }
        let (ko_path, ko) = if let Some(base) = rel.strip_suffix(".xz") {
            let mut out = Vec::new();
            liblzma::read::XzDecoder::new(&data[..])
                .read_to_end(&mut out)
                .with_context(|| format!("decompressing {rel}"))?;
            (base.to_string(), out)
        } else if let Some(base) = rel.strip_suffix(".zst") {
            (
                base.to_string(),
                zstd::decode_all(&data[..]).with_context(|| format!("decompressing {rel}"))?,
            )
        } else if let Some(base) = rel.strip_suffix(".gz") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&data[..])
                .read_to_end(&mut out)
                .with_context(|| format!("decompressing {rel}"))?;
            (base.to_string(), out)
        } else {
            (rel.to_string(), data)
        };
        let section = elf::section(&ko, ".modinfo")
            .with_context(|| format!("reading {ko_path}"))?
            .unwrap_or_default();
        let info = parse_modinfo(&ko_path, section);
        // Level 1: fast, and a quarter of the size; the closure needs only a few.
        let blob = zstd::encode_all(&ko[..], 1)?;
        self.blobs.insert(ko_path, blob);
        if let Some(old) = self.modules.insert(info.name.clone(), info) {
            bail!(
                "two modules named {}: {} and another; the kernel tree is inconsistent",
                old.name,
                old.path
            );
        }
        Ok(())
    }

    fn set_version(&mut self, v: &str) -> Result<()> {
        match &self.version {
            Some(old) if old != v => {
                bail!("the kernel source holds two kernel versions: {old} and {v}")
            }
            Some(_) => {}
            None => self.version = Some(v.to_string()),
        }
        Ok(())
    }

    fn finish(self, source: String) -> Result<Kernel> {
        let version = self.version.with_context(|| {
            format!("{source}: no kernel found (boot/vmlinuz-*, lib/modules/*)")
        })?;
        let vmlinuz = self
            .vmlinuz
            .with_context(|| format!("{source}: no boot/vmlinuz-{version}"))?;
        if self.modules.is_empty() {
            bail!("{source}: no kernel modules under lib/modules/{version}");
        }
        Ok(Kernel {
            version,
            vmlinuz,
            modules: self.modules,
            builtin: self.builtin,
            builtin_text: self.builtin_text,
            blobs: self.blobs,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modinfo() {
        let s = b"license=GPL\0alias=pci:v00008086d000010D3sv*sd*bc*sc*i*\0depends=ptp,crc-itu-t\0\
                  firmware=e1000e/a.bin\0softdep=pre: crc32c post: x-y\0name=e1000e\0vermagic=6.1\0";
        let m = parse_modinfo("kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko", s);
        assert_eq!(m.name, "e1000e");
        assert_eq!(m.depends, ["ptp", "crc_itu_t"]);
        assert_eq!(m.aliases, ["pci:v00008086d000010D3sv*sd*bc*sc*i*"]);
        assert_eq!(m.firmware, ["e1000e/a.bin"]);
        assert_eq!(m.softdep_pre, ["crc32c"]);
        assert_eq!(m.softdep_post, ["x_y"]);
        let empty = parse_modinfo("kernel/a/b-c.ko", b"depends=\0");
        assert_eq!(empty.name, "b_c");
        assert!(empty.depends.is_empty());
    }

    #[test]
    fn splits_module_paths() {
        assert_eq!(
            modules_path("lib/modules/6.1.0-56-amd64/kernel/x.ko"),
            Some(("6.1.0-56-amd64", "kernel/x.ko"))
        );
        assert_eq!(
            modules_path("usr/lib/modules/6.12.0/modules.builtin"),
            Some(("6.12.0", "modules.builtin"))
        );
        assert_eq!(modules_path("usr/share/doc/x"), None);
    }
}
