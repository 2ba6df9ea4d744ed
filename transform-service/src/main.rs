//! transform-service binary: parses the command line and hands off to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = transform_service::cli::Cli::parse();
    // Held until exit: dropping it flushes the spans not yet exported.
    let _telemetry = xds_client::side::init_logging(cli.log_format, "transform-service");
    match transform_service::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
