//! authz-service binary: parses the command line and hands off to the library.

use clap::Parser;

/// Many small, short-lived allocations per call (see the workspace's `mimalloc` entry).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = authz_service::cli::Cli::parse();
    // Held until exit: dropping it flushes the spans not yet exported.
    let _telemetry = (cli.command.is_none()
        || matches!(cli.command, Some(authz_service::cli::Command::Serve(_))))
    .then(|| authz_service::cli::init_logging(cli.log_format, "authz-service"));
    match authz_service::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
