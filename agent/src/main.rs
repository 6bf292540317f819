use std::process::ExitCode;

use ironic_agent::agent::Agent;
use ironic_agent::config::{Config, ConfigError};

fn main() -> ExitCode {
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
    let logs = match ironic_agent::logging::init(config.options.debug, config.log_file.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ironic-agent: cannot open the log file: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "ironic-agent starting");
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
        let agent = Agent::new(config, logs)?;
        agent.run().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}
