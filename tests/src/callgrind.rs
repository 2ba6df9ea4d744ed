//! Reading valgrind's callgrind from a benchmark: zero and dump a running process's counters
//! (`callgrind_control`), find its newest dump, and read the instruction total from it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _};

/// `callgrind_control <flag> <pid>`: `-z` zeroes the counters, `-d` dumps them.
pub fn control(flag: &str, pid: u32) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .args([flag, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("callgrind_control")?;
    ensure!(status.success(), "callgrind_control {flag} {pid} failed");
    Ok(())
}

/// The newest dump of `pid` (`callgrind.<pid>.out.<n>`).
pub fn last_dump(dir: &Path, pid: u32) -> anyhow::Result<PathBuf> {
    let stem = format!("callgrind.{pid}.out.");
    let mut dumps: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix(&stem)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    dumps.sort();
    dumps
        .pop()
        .map(|(_, p)| p)
        .with_context(|| format!("no dump {stem}* in {}", dir.display()))
}

/// The instruction total of a callgrind dump (`totals:`, or `summary:` in older formats).
pub fn totals(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no totals in {}", path.display()))
}
