//! The ironic-agent: looks its node up in Ironic, heartbeats, and runs what the conductor
//! asks through IPA's command API.
//!
//! The rooms, from the top: [`lifecycle`] assembles the agent and runs its start-up in IPA's
//! order; [`agent`] is the state every part shares; [`api`] serves IPA's HTTP API, whose
//! commands ([`commands`]) the [`extensions`] define, one module per IPA extension;
//! [`conductor`] is the client of Ironic's API (lookup, heartbeats); [`deploy`] writes images
//! through `image-pipeline` and `disk-layout`; [`inspection`] posts IPA's collectors;
//! [`config`] reads kernel parameters, INI files and flags; [`tls`], [`lockdown`], [`logging`],
//! [`redact`] (secrets out of what is echoed), [`rlimit`] and [`plugins`] (operators'
//! compiled-in managers) do one job each.

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
pub mod redact;
pub mod rlimit;
mod run;
pub mod tls;

pub use plugins::{ManagerContext, ManagerFactory};
pub use run::{run, run_with, run_with_managers};
