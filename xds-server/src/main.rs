//! xds-server binary: parses the command line and hands off to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = xds_server::cli::Cli::parse();
    // Held until exit: dropping it flushes the spans not yet exported.
    let _telemetry = xds_client::side::init_logging(cli.log_format, "xds-server");
    match xds_server::cli::run(cli) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
