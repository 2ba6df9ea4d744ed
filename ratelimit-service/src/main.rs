//! `ratelimit-service`: see `cli` for the command line.

fn main() -> std::process::ExitCode {
    match ratelimit_service::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ratelimit-service: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
