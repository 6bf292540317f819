//! Kernel modules in the ramdisk: depmod's file formats (`modules.dep`, `modules.alias`,
//! `modules.softdep`), written by `ironic-agent-build` and read by the init.
//!
//! The standard formats, so that an operator's `modprobe` (busybox or kmod, added as extra
//! files) works on the same tree. The init loads modules itself with `finit_module(2)`,
//! udev-style: every device's `modalias` in sysfs is matched against `modules.alias`.

use std::collections::{BTreeMap, BTreeSet};

/// What the builder knows of one module it puts into the ramdisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// `virtio_net` (dashes in file names become underscores, as the kernel does).
    pub name: String,
    /// Path relative to `/lib/modules/<version>/`, e.g. `kernel/drivers/net/virtio_net.ko`.
    pub path: String,
    /// Direct dependencies (`depends=` of its `.modinfo`), by name.
    pub depends: Vec<String>,
    /// `alias=` patterns, e.g. `virtio:d00000001v*`.
    pub aliases: Vec<String>,
    /// `softdep=pre: a b post: c` modules that are in the ramdisk.
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
}

/// Module name of a `.ko` path: the file name without extension, `-` as `_`.
pub fn name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// A module name as the kernel compares them (`-` and `_` are the same).
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Errors in module metadata: a dependency that is not in the ramdisk, a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleError(pub String);

impl std::fmt::Display for ModuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModuleError {}

/// The three depmod files for `modules`, deterministic (sorted by path / pattern).
#[derive(Debug)]
pub struct DepmodFiles {
    pub dep: String,
    pub alias: String,
    pub softdep: String,
}

/// Renders `modules.dep`, `modules.alias` and `modules.softdep`. Every dependency must be
/// among `modules`; in `modules.dep` each module's line lists its whole dependency closure
/// ordered as depmod does: loading the list from its end to its start works.
pub fn render(modules: &[ModuleInfo]) -> Result<DepmodFiles, ModuleError> {
    let by_name: BTreeMap<&str, &ModuleInfo> =
        modules.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut sorted: Vec<&ModuleInfo> = modules.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut dep = String::new();
    for m in &sorted {
        let order = closure(&by_name, &m.name)?;
        // `order` is deps-first and ends with the module itself.
        let deps: Vec<&str> = order[..order.len() - 1]
            .iter()
            .rev()
            .map(|n| by_name[n.as_str()].path.as_str())
            .collect();
        dep.push_str(&m.path);
        dep.push(':');
        for d in deps {
            dep.push(' ');
            dep.push_str(d);
        }
        dep.push('\n');
    }
    let mut aliases: Vec<(&str, &str)> = modules
        .iter()
        .flat_map(|m| m.aliases.iter().map(move |a| (a.as_str(), m.name.as_str())))
        .collect();
    aliases.sort();
    aliases.dedup();
    let mut alias = String::from("# Aliases extracted from modules themselves.\n");
    for (pattern, name) in aliases {
        alias.push_str(&format!("alias {pattern} {name}\n"));
    }
    let mut softdep = String::from("# Soft dependencies extracted from modules themselves.\n");
    let mut names: Vec<&ModuleInfo> = modules.iter().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    for m in names {
        if m.softdep_pre.is_empty() && m.softdep_post.is_empty() {
            continue;
        }
        softdep.push_str(&format!("softdep {}", m.name));
        if !m.softdep_pre.is_empty() {
            softdep.push_str(&format!(" pre: {}", m.softdep_pre.join(" ")));
        }
        if !m.softdep_post.is_empty() {
            softdep.push_str(&format!(" post: {}", m.softdep_post.join(" ")));
        }
        softdep.push('\n');
    }
    Ok(DepmodFiles {
        dep,
        alias,
        softdep,
    })
}

/// `name` and its hard dependencies, dependencies first (depth-first post-order with the
/// dependencies in their listed order).
fn closure(by_name: &BTreeMap<&str, &ModuleInfo>, name: &str) -> Result<Vec<String>, ModuleError> {
    fn visit(
        by_name: &BTreeMap<&str, &ModuleInfo>,
        name: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(ModuleError(format!(
                "dependency cycle: {} -> {name}",
                stack.join(" -> ")
            )));
        }
        let m = by_name.get(name).ok_or_else(|| {
            ModuleError(format!(
                "module {name} (needed by {}) is not in the ramdisk",
                stack.last().map(String::as_str).unwrap_or("the list")
            ))
        })?;
        stack.push(name.to_string());
        for d in &m.depends {
            visit(by_name, d, stack, done, out)?;
        }
        stack.pop();
        done.insert(name.to_string());
        out.push(name.to_string());
        Ok(())
    }
    let mut out = Vec::new();
    visit(
        by_name,
        name,
        &mut Vec::new(),
        &mut BTreeSet::new(),
        &mut out,
    )?;
    Ok(out)
}

/// The depmod files read back: what the init needs to load modules.
#[derive(Debug, Default, Clone)]
pub struct ModuleDb {
    /// name -> (path, dependency paths in modules.dep order)
    modules: BTreeMap<String, (String, Vec<String>)>,
    aliases: Vec<(String, String)>,
    softdeps: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

impl ModuleDb {
    pub fn parse(dep: &str, alias: &str, softdep: &str) -> ModuleDb {
        let mut db = ModuleDb::default();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() || path.starts_with('#') {
                continue;
            }
            db.modules.insert(
                name_of_path(path),
                (
                    path.to_string(),
                    deps.split_whitespace().map(str::to_string).collect(),
                ),
            );
        }
        for line in alias.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(name)) = (w.next(), w.next(), w.next()) {
                db.aliases.push((pattern.to_string(), normalize(name)));
            }
        }
        for line in softdep.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(name) = w.next() else { continue };
            let (mut pre, mut post) = (Vec::new(), Vec::new());
            let mut post_mode = false;
            for word in w {
                match word {
                    "pre:" => post_mode = false,
                    "post:" => post_mode = true,
                    m if post_mode => post.push(normalize(m)),
                    m => pre.push(normalize(m)),
                }
            }
            db.softdeps.insert(normalize(name), (pre, post));
        }
        db
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&normalize(name))
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Paths (relative to the modules directory) to load for `name`, in load order: soft
    /// pre-dependencies, hard dependencies, the module, soft post-dependencies. Unknown
    /// names give an empty list.
    pub fn load_order(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.push_order(&normalize(name), &mut out, 0);
        out
    }

    fn push_order(&self, name: &str, out: &mut Vec<String>, depth: usize) {
        // Soft dependencies may point back at each other; a small depth bound is plenty.
        if depth > 8 {
            return;
        }
        let Some((path, deps)) = self.modules.get(name) else {
            return;
        };
        let (pre, post) = self.softdeps.get(name).cloned().unwrap_or_default();
        for p in &pre {
            self.push_order(p, out, depth + 1);
        }
        for d in deps.iter().rev() {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        if !out.contains(path) {
            out.push(path.clone());
        }
        for p in &post {
            self.push_order(p, out, depth + 1);
        }
    }

    /// Names of modules with an alias pattern matching `modalias` (a device's
    /// `/sys/.../modalias`, or `fs-efivarfs`-style aliases).
    pub fn matching(&self, modalias: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .aliases
            .iter()
            .filter(|(pattern, _)| glob_match(pattern.as_bytes(), modalias.as_bytes()))
            .map(|(_, name)| name.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// fnmatch(3) without flags, as modprobe matches aliases: `*`, `?` and `[...]` classes
/// (with `!`/`^` negation and ranges).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        // An unterminated class is a literal '['.
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `pattern` (`[...]`); returns whether it
/// matched and the class's length, or `None` when the class is not terminated.
fn class_match(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let lo = pattern[i];
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, path: &str, depends: &[&str], aliases: &[&str]) -> ModuleInfo {
        ModuleInfo {
            name: name.into(),
            path: path.into(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            softdep_pre: vec![],
            softdep_post: vec![],
        }
    }

    fn virtio() -> Vec<ModuleInfo> {
        vec![
            m(
                "virtio_net",
                "kernel/drivers/net/virtio_net.ko",
                &["net_failover", "virtio", "virtio_ring"],
                &["virtio:d00000001v*"],
            ),
            m(
                "net_failover",
                "kernel/drivers/net/net_failover.ko",
                &["failover"],
                &[],
            ),
            m("failover", "kernel/net/core/failover.ko", &[], &[]),
            m(
                "virtio",
                "kernel/drivers/virtio/virtio.ko",
                &["virtio_ring"],
                &[],
            ),
            m(
                "virtio_ring",
                "kernel/drivers/virtio/virtio_ring.ko",
                &[],
                &[],
            ),
        ]
    }

    #[test]
    fn depmod_files_round_trip_to_a_load_order() {
        let files = render(&virtio()).unwrap();
        assert!(files
            .dep
            .starts_with("kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"));
        assert!(files
            .alias
            .contains("alias virtio:d00000001v* virtio_net\n"));
        let db = ModuleDb::parse(&files.dep, &files.alias, &files.softdep);
        let order = db.load_order("virtio-net");
        let pos = |p: &str| order.iter().position(|o| o.ends_with(p)).unwrap();
        assert_eq!(order.len(), 5);
        assert!(pos("failover.ko") < pos("net_failover.ko"));
        assert!(pos("virtio_ring.ko") < pos("/virtio.ko"));
        assert_eq!(order.last().unwrap(), "kernel/drivers/net/virtio_net.ko");
        assert_eq!(
            db.matching("virtio:d00000001v00001AF4"),
            vec!["virtio_net".to_string()]
        );
        assert!(db.matching("virtio:d00000002v00001AF4").is_empty());
        assert!(db.load_order("e1000e").is_empty());
    }

    #[test]
    fn missing_dependencies_and_cycles_are_errors() {
        let mut mods = virtio();
        mods.retain(|m| m.name != "failover");
        let e = render(&mods).unwrap_err();
        assert!(
            e.0.contains("failover") && e.0.contains("net_failover"),
            "{e}"
        );
        let cyc = vec![m("a", "a.ko", &["b"], &[]), m("b", "b.ko", &["a"], &[])];
        assert!(render(&cyc).unwrap_err().0.contains("cycle"));
    }

    #[test]
    fn soft_dependencies_load_around_the_module() {
        let mut mods = virtio();
        mods.push(m(
            "crc32c_generic",
            "kernel/crypto/crc32c_generic.ko",
            &[],
            &[],
        ));
        mods[4].softdep_pre = vec!["crc32c_generic".into()];
        let files = render(&mods).unwrap();
        assert!(files
            .softdep
            .contains("softdep virtio_ring pre: crc32c_generic\n"));
        let db = ModuleDb::parse(&files.dep, &files.alias, &files.softdep);
        let order = db.load_order("virtio_ring");
        assert_eq!(
            order,
            vec![
                "kernel/crypto/crc32c_generic.ko".to_string(),
                "kernel/drivers/virtio/virtio_ring.ko".to_string()
            ]
        );
    }

    #[test]
    fn globs_like_fnmatch() {
        let g = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(g(
            "pci:v00008086d000010D3sv*sd*bc*sc*i*",
            "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00"
        ));
        assert!(!g(
            "pci:v00008086d000010D3sv*sd*bc*sc*i*",
            "pci:v00008086d000010D4sv0sd0bc02sc00i00"
        ));
        assert!(g(
            "pci:v*d*sv*sd*bc01sc06i01*",
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"
        ));
        assert!(g("scsi:t-0x0[0e]*", "scsi:t-0x00"));
        assert!(!g("scsi:t-0x0[!0e]*", "scsi:t-0x00"));
        assert!(g("a?c", "abc") && !g("a?c", "ac"));
        assert!(g("*", "") && g("fs-efivarfs", "fs-efivarfs"));
        assert!(g("x[a-c]y", "xby") && !g("x[a-c]y", "xdy"));
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(name_of_path("kernel/drivers/ata/ata_piix.ko"), "ata_piix");
        assert_eq!(
            name_of_path("kernel/crypto/crc32c-intel.ko.xz"),
            "crc32c_intel"
        );
    }
}
