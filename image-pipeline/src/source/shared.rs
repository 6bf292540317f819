//! What the download task, its window fetches and the [`super::Download`] handle share: the
//! file as the last response described it, and the statistics.

use std::sync::Mutex;

use super::client::Validators;
use super::DownloadStats;

/// The file being downloaded, as the last response described it.
#[derive(Debug, Clone)]
pub(crate) struct Entity {
    pub url_index: usize,
    pub validators: Validators,
    /// Size of the whole file, when the server said.
    pub total: Option<u64>,
}

/// What the download task, its window fetches and the [`super::Download`] handle share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub entity: Mutex<Option<Entity>>,
    pub stats: Mutex<DownloadStats>,
    /// Set when the last chunk was queued: a closed channel without it is a failure.
    pub complete: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn stats(&self) -> std::sync::MutexGuard<'_, DownloadStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn entity(&self) -> Option<Entity> {
        self.entity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_entity(&self, e: Entity) {
        *self.entity.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}
