//! CPU time of processes and threads from `/proc` (Linux), for the benchmarks' CPU per request.

use std::process::Command;
use std::time::Duration;

use crate::redis::raw_command;

/// utime + stime of a process from `/proc/<pid>/stat` (Linux; `None` elsewhere).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    cpu_time_of(&format!("/proc/{pid}/stat"))
}

/// utime + stime from a `stat` file of `/proc` (a process's or one thread's).
pub fn cpu_time_of(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing paren);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// `getconf CLK_TCK` (the unit of `/proc/<pid>/stat` times), 100 when it cannot be asked.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// redis-server's pid, from `INFO server`.
pub fn redis_pid(port: u16) -> Option<u32> {
    let info = raw_command(port, "INFO server").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}
