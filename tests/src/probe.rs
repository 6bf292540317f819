//! Independent looks at a disk with util-linux: which signatures `wipefs` and `blkid` see.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// A signature `wipefs` reports: where its magic is and what it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub offset: u64,
    pub kind: String,
}

/// `wipefs --no-act` listing of `dev` (signatures at the device start, e.g. GPT, PMBR, ext4).
pub fn wipefs_signatures(dev: &Path) -> Result<Vec<Signature>> {
    let out = cmd::run(
        Command::new("wipefs")
            .args(["--no-act", "--noheadings", "--output", "OFFSET,TYPE"])
            .arg(dev),
    )?;
    let mut sigs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut cols = line.split_whitespace();
        let (Some(offset), Some(kind)) = (cols.next(), cols.next()) else {
            continue;
        };
        let offset = u64::from_str_radix(offset.trim_start_matches("0x"), 16)
            .with_context(|| format!("bad wipefs offset in {line:?}"))?;
        sigs.push(Signature {
            offset,
            kind: kind.to_string(),
        });
    }
    Ok(sigs)
}

/// `blkid --probe` of `dev`, optionally at a byte offset (to look at a partition's area
/// without trusting the kernel's partition list). `None` when nothing is recognised.
pub fn blkid_probe(dev: &Path, offset: Option<u64>, size: Option<u64>) -> Result<Option<String>> {
    let mut c = Command::new("blkid");
    c.args(["--probe", "--output", "export"]);
    if let Some(o) = offset {
        c.args(["--offset", &o.to_string()]);
    }
    if let Some(s) = size {
        c.args(["--size", &s.to_string()]);
    }
    c.arg(dev);
    let out = c
        .output()
        .with_context(|| format!("running `{}`", cmd::display(&c)))?;
    match out.status.code() {
        Some(0) => Ok(Some(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .replace('\n', " "),
        )),
        // 2: nothing found (the documented "no signature" exit code).
        Some(2) => Ok(None),
        _ => bail!(
            "`{}` failed ({}): {}",
            cmd::display(&c),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}
