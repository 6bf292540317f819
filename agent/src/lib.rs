//! The ironic-agent: looks its node up in Ironic, heartbeats, and runs what the conductor
//! asks through IPA's command API.

pub mod agent;
pub mod api;
pub mod commands;
pub mod conductor;
pub mod config;
pub mod deploy;
pub mod extensions;
pub mod inspection;
pub mod lifecycle;
pub mod lockdown;
pub mod logging;
pub mod plugins;
mod run;
pub mod tls;

pub use plugins::{ManagerContext, ManagerFactory};
pub use run::{run, run_with, run_with_managers};
