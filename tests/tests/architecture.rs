//! The workspace's layering rules, checked on its own sources (see `src/architecture.rs`):
//! no file of a crate imports itself in a circle, the disk primitives live in one crate at
//! the bottom, every block-device ioctl is defined once, and no JSON reaches the image
//! pipeline.

use std::path::{Path, PathBuf};

use e2e::architecture::{crate_graph, crate_roots, dependencies, members, Member};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn all_members() -> Vec<Member> {
    members(&workspace()).expect("reading the workspace manifest")
}

fn member(name: &str) -> Member {
    all_members()
        .into_iter()
        .find(|m| m.package == name)
        .unwrap_or_else(|| panic!("no workspace member {name}"))
}

#[test]
fn no_file_imports_itself_through_others() {
    let root = workspace();
    let mut report = Vec::new();
    let mut crates = 0;
    for m in all_members() {
        for (name, file) in crate_roots(&m) {
            let graph = crate_graph(&name, &file).unwrap_or_else(|e| panic!("{name}: {e}"));
            crates += 1;
            for cycle in graph.cycles() {
                let files: Vec<String> = cycle
                    .iter()
                    .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
                    .collect();
                report.push(format!("{name}: {}", files.join(" ↔ ")));
                for line in graph.describe(&cycle, &root) {
                    report.push(format!("    {line}"));
                }
            }
        }
    }
    assert!(
        crates > 10,
        "only {crates} crates found: is the workspace read right?"
    );
    assert!(
        report.is_empty(),
        "files that import each other in a circle (move the shared piece into a module both \
         import):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_disk_primitives_are_the_bottom_floor() {
    let blockdev = dependencies(&member("blockdev")).unwrap();
    let workspace_crates: Vec<String> = all_members().into_iter().map(|m| m.package).collect();
    let upward: Vec<&String> = blockdev
        .iter()
        .filter(|d| workspace_crates.contains(d))
        .collect();
    assert!(upward.is_empty(), "blockdev depends on {upward:?}");
    for name in ["image-pipeline", "disk-layout"] {
        let deps = dependencies(&member(name)).unwrap();
        assert!(
            !deps.contains("hardware-managers"),
            "{name} depends on hardware-managers: disk primitives belong in blockdev"
        );
    }
}

/// The image pipeline gets typed settings from the agent, which parsed `image_info` once at
/// the command boundary (`ironic_protocol::ImageInfo`): no JSON reaches it.
#[test]
fn no_json_crosses_into_the_image_pipeline() {
    let deps = dependencies(&member("image-pipeline")).unwrap();
    assert!(
        !deps.contains("serde_json") && !deps.contains("ironic-protocol"),
        "image-pipeline depends on {deps:?}"
    );
}

/// The workspace's lints (every `unsafe` block documented) bind every crate, new ones too.
#[test]
fn every_crate_takes_the_workspace_lints() {
    for m in all_members() {
        let text = std::fs::read_to_string(m.dir.join("Cargo.toml")).unwrap();
        let manifest: toml::Table = text.parse().unwrap();
        let inherits = manifest
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(|w| w.as_bool());
        assert_eq!(
            inherits,
            Some(true),
            "{}: add `[lints] workspace = true` to its Cargo.toml",
            m.package
        );
    }
}

/// Every `nix::ioctl_*!` whose request is of type 0x12 (`<linux/fs.h>`'s block requests)
/// must be in `blockdev/src/ioctl.rs`.
#[test]
fn every_block_ioctl_is_defined_once_in_blockdev() {
    let root = workspace();
    let home = root.join("blockdev/src/ioctl.rs");
    let mut stray = Vec::new();
    for m in all_members() {
        for file in rust_files(&m.dir) {
            if file == home {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let flat: String = text.split_whitespace().collect();
            for (at, _) in flat.match_indices("ioctl_") {
                let call = &flat[at..flat.len().min(at + 120)];
                let defines = call.split_once('!').is_some_and(|(name, _)| {
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                if defines && call.contains("0x12") {
                    stray.push(file.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
    }
    assert!(
        stray.is_empty(),
        "block-device ioctls outside blockdev/src/ioctl.rs: {stray:?}"
    );
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name()
                    .is_some_and(|n| n != "target" && n != "fixtures")
                {
                    todo.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}
