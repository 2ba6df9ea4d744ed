//! authz-service binary: parses the command line and hands off to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = authz_service::cli::Cli::parse();
    if cli.command.is_none() || matches!(cli.command, Some(authz_service::cli::Command::Serve(_))) {
        authz_service::cli::init_logging(cli.log_format);
    }
    match authz_service::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
