//! A fresh temporary directory per test, kept for inspection when the test fails.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Prefix of every harness temp dir: `iae2e-<pid>-<random>`. The pid lets a later run tell
/// leftovers of a killed run (dead pid) from the directories of a run still going.
pub const PREFIX: &str = "iae2e-";

pub struct TestDir {
    path: PathBuf,
    keep: bool,
}

impl TestDir {
    /// Creates `$TMPDIR/iae2e-<pid>-<name>-<random>`.
    pub fn new(name: &str) -> Result<TestDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-{name}-", std::process::id()))
            .tempdir()
            .context("creating the test's temp dir")?;
        Ok(TestDir {
            path: dir.keep(),
            keep: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the directory when dropped (a failure reported without a panic).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    /// Removed on success; kept (and named) when the test panicked or `E2E_KEEP` is set.
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() || std::env::var_os("E2E_KEEP").is_some() {
            eprintln!("test files kept in {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: removing {}: {e}", self.path.display());
        }
    }
}
