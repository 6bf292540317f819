//! The agent's `main`, reusable by operators' binaries that add their own hardware managers
//! (see [`crate::plugins`]).

use std::process::ExitCode;

use hardware_managers::HardwareManager;

use crate::config::{Config, ConfigError};
use crate::lifecycle::Service;
use crate::plugins::{ManagerContext, ManagerFactory};

/// The stock agent: parses the command line, sets up logging and runs until stopped.
pub fn run() -> ExitCode {
    run_inner(None)
}

/// The agent with `managers` loaded next to the built-in ones.
pub fn run_with_managers(managers: Vec<Box<dyn HardwareManager>>) -> ExitCode {
    run_inner(Some(Box::new(move |_: &ManagerContext<'_>| managers)))
}

/// The agent with the managers `factory` builds once the agent's device guard and
/// configuration are known.
pub fn run_with(
    factory: impl FnOnce(&ManagerContext<'_>) -> Vec<Box<dyn HardwareManager>> + 'static,
) -> ExitCode {
    run_inner(Some(Box::new(factory)))
}

fn run_inner(plugins: Option<ManagerFactory>) -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(ConfigError::Usage(text)) => {
            // --help and --version land here too.
            print!("{text}");
            return if text.starts_with("error") {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(e) => {
            eprintln!("ironic-agent: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let logs = match crate::logging::init(config.options.debug, config.log_file.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ironic-agent: cannot open the log file: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "ironic-agent starting");
    match crate::rlimit::raise_open_files_limit() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        Service::build(config, logs, crate::extensions::all(), plugins)?
            .run()
            .await
    });
    // A blocking task (a disk write) must not keep a dying agent alive: the init restarts it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}
