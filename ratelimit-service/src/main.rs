//! `ratelimit-service`: see `cli` for the command line.

/// Many small, short-lived allocations per call (see the workspace's `mimalloc` entry).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match ratelimit_service::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ratelimit-service: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
