//! The `rescue` extension: hand the machine to the rescue user.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironic_protocol::CommandError;
use serde::Deserialize;

use crate::agent::{AfterStop, Agent};
use crate::commands::{CommandDef, CommandValue, Mode, Params};

use ramdisk_contract::paths::{RESCUED_MARKER, RESCUE_PASSWORD as PASSWORD_FILE};

pub fn commands() -> Vec<CommandDef> {
    vec![CommandDef::new(
        "finalize_rescue",
        Mode::Sync,
        finalize_rescue,
    )]
}

#[derive(Deserialize)]
pub struct FinalizeRescue {
    #[serde(default)]
    rescue_password: String,
    #[serde(default)]
    hashed: bool,
}

impl std::fmt::Debug for FinalizeRescue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinalizeRescue")
            .field("hashed", &self.hashed)
            .finish_non_exhaustive()
    }
}

impl Params for FinalizeRescue {}

/// Writes the (hashed) rescue password where the ramdisk's rescue service reads it, leaves
/// IPA's `/etc/.rescued` marker, and stops the API after replying; the network stays up.
/// Outside a ramdisk the files go to the state directory instead of the host's `/etc`.
async fn finalize_rescue(
    agent: Arc<Agent>,
    p: FinalizeRescue,
) -> Result<CommandValue, CommandError> {
    let fail = |details: String| CommandError::execution_failed(details);
    let hash = if p.hashed {
        p.rescue_password
    } else {
        sha_crypt::sha256_simple(&p.rescue_password, &sha_crypt::Sha256Params::default())
            .map_err(|e| fail(format!("hashing the rescue password: {e:?}")))?
    };
    let (password_file, marker) = if agent.guard().in_ramdisk() {
        (PathBuf::from(PASSWORD_FILE), PathBuf::from(RESCUED_MARKER))
    } else {
        let dir = &agent.config().state_dir;
        tracing::warn!(dir = %dir.display(), "not in a ramdisk: writing rescue files to the state directory");
        let name = |p: &str| {
            Path::new(p)
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default()
        };
        (
            dir.join(name(PASSWORD_FILE)),
            dir.join(name(RESCUED_MARKER)),
        )
    };
    if let Some(parent) = password_file.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
    }
    write_private(&password_file, hash.as_bytes()).map_err(|e| {
        fail(format!(
            "Rescue Operation failed when writing the hashed rescue password to {}: {e}",
            password_file.display()
        ))
    })?;
    if let Err(e) = std::fs::write(&marker, b"") {
        tracing::warn!(marker = %marker.display(), error = %e, "cannot create the rescue marker");
    }
    tracing::info!("rescue finalised; stopping the API");
    let stopper = agent.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        stopper.stop_api(AfterStop::Rescue);
    });
    Ok(CommandValue::Null)
}

fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}
