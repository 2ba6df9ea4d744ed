//! ratelimit-service: placeholder binary. The service is specified in the gateway spec (§7) and arrives in a
//! later change; until then it refuses to start instead of pretending to enforce anything.

fn main() -> std::process::ExitCode {
    eprintln!("ratelimit-service: not implemented yet; routes must use `auth: none` and no `rate_limits` for now");
    std::process::ExitCode::FAILURE
}
