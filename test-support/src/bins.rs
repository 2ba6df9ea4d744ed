//! The binaries tests run: Envoy and Redis (`$ENVOY_BIN` / `$REDIS_SERVER`, as `scripts/test`
//! exports them, else what `scripts/ensure-*` finds or installs) and this workspace's own.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root (the parent of this crate's directory).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ lives inside the workspace")
}

/// The Envoy binary: `$ENVOY_BIN`, else whatever `scripts/ensure-envoy` finds or installs.
///
/// Panics when there is none: an e2e suite that skips without Envoy would pass while testing nothing.
pub fn envoy_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| ensured_bin("ENVOY_BIN", "scripts/ensure-envoy"))
}

/// The `redis-server` binary: `$REDIS_SERVER`, else what `scripts/ensure-redis` finds or installs
/// (Debian's package).
pub fn redis_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| ensured_bin("REDIS_SERVER", "scripts/ensure-redis"))
}

/// `redis-cli`, installed beside `redis-server` by the same package (else from `$PATH`).
pub fn redis_cli() -> PathBuf {
    let beside = redis_bin().with_file_name("redis-cli");
    if beside.is_file() {
        return beside;
    }
    PathBuf::from("redis-cli")
}

/// `$env_var` when set, else the path `script` prints (it finds or installs the program). Panics
/// with the script's output when neither works.
fn ensured_bin(env_var: &str, script: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(env_var).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "{env_var}={} does not exist", bin.display());
        return bin;
    }
    let script = repo_root().join(script);
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "nothing found: set {env_var} or make {} work ({}):\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(path)
}

/// The cargo target profile directory: `$CARGO_TARGET_DIR/debug`, default `<repo>/target/debug`.
pub fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                repo_root().join(d)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    base.join("debug")
}

/// Path of a workspace binary (`xds-server`, ...), building it with cargo first.
///
/// Runs `cargo build --workspace --bins` once per test process, even when the binary exists: a
/// stale binary from an earlier checkout would test old code. It is the very build `scripts/test`
/// runs first, so there it is a no-op (a `-p <name>` build would unify features differently and
/// rebuild, then fight the workspace build over the same file). Cargo's own lock serialises
/// concurrent builds across processes; the `OnceLock` ensures one build per process.
///
/// With `$GATEWAY_BIN_DIR` set (benchmarks point it at `target/release`), the binary is taken
/// from there as it is, without building.
pub fn workspace_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("GATEWAY_BIN_DIR").filter(|d| !d.is_empty()) {
        let path = PathBuf::from(dir).join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        assert!(path.is_file(), "GATEWAY_BIN_DIR has no {}", path.display());
        return path;
    }
    static BUILT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let path = target_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !built.contains(name) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(repo_root());
        // Cargo gives a test process its crate's variables (CARGO_MANIFEST_DIR, CARGO_PKG_*,
        // OUT_DIR, …). Passed on, they make build scripts that watch them (ring's does) and
        // everything above them rebuild, once per test binary, and then again for the next
        // plain `cargo build`. The build must see the environment `scripts/test` saw.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(is_crate_variable) {
                cmd.env_remove(key);
            }
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
        assert!(
            status.success(),
            "`cargo build --workspace --bins` failed ({status})"
        );
        built.insert(name.to_string());
    }
    assert!(
        path.is_file(),
        "{} was built but is not at {}",
        name,
        path.display()
    );
    path
}

/// The variables cargo sets for the crate it compiles or runs (not the ones users set to
/// configure cargo, such as `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn is_crate_variable(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_BIN_EXE_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

#[cfg(test)]
mod tests {
    use super::is_crate_variable;

    #[test]
    fn only_the_crate_variables_are_dropped() {
        for key in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_xds-server",
            "OUT_DIR",
        ] {
            assert!(is_crate_variable(key), "{key}");
        }
        // What configures cargo itself must reach the build, or it would build elsewhere.
        for key in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is_crate_variable(key), "{key}");
        }
    }
}
