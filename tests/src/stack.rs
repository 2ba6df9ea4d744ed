//! `Stack`: one test's world (temp dir, gateway.yaml, xds-server, one Envoy) and `ConfigFile`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::client::HttpClient;
use crate::envoy::{Envoy, XdsMode};
use crate::wait::wait_for;
use crate::xds::XdsServer;

/// Long enough for a config edit to reach Envoy (debounce ~100 ms, then xDS) on a busy machine.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

/// The gateway name the tests' configs use.
pub const GATEWAY: &str = "edge";

/// A gateway.yaml on disk that tests rewrite.
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(path: impl Into<PathBuf>) -> ConfigFile {
        ConfigFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file atomically: write a sibling, then rename it over (what editors and
    /// config-management tools do).
    pub fn write(&self, yaml: &str) {
        let tmp = self.path.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config temp file");
        std::fs::rename(&tmp, &self.path).expect("rename config into place");
    }

    /// Rewrites the file in place (truncate and write the same inode).
    pub fn write_in_place(&self, yaml: &str) {
        std::fs::write(&self.path, yaml).expect("write config in place");
    }
}

/// A temp dir with `gateway.yaml`, an xds-server serving it and one Envoy of gateway `edge`.
///
/// Fields drop in order: Envoy, then xds-server, then the directory. When the test fails the
/// directory (config, bootstraps, logs) is kept and its path printed.
pub struct Stack {
    pub mode: XdsMode,
    pub envoy: Envoy,
    pub xds: XdsServer,
    pub config: ConfigFile,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the control plane believed (per-type sent/acked/nacked) is usually the
            // quickest clue to a convergence failure.
            match blocking_get(&format!("{}/status", self.xds.admin_url())) {
                Ok(body) => eprintln!("xds-server /status at failure: {body}"),
                Err(e) => eprintln!("xds-server /status unavailable at failure: {e}"),
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("test failed; keeping its files in {}", dir.keep().display());
            }
        }
    }
}

impl Stack {
    /// Writes `yaml` as gateway.yaml, starts xds-server on it and an Envoy for gateway `edge`
    /// speaking `mode`, and waits until Envoy is LIVE.
    pub async fn start(mode: XdsMode, yaml: &str) -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("gateway-e2e-")
            .tempdir()
            .expect("temp dir");
        Self::start_in(dir, mode, yaml).await
    }

    /// Like [`start`](Self::start) in a given directory (for configs that reference files in it,
    /// such as certificates).
    pub async fn start_in(dir: tempfile::TempDir, mode: XdsMode, yaml: &str) -> Stack {
        let config = ConfigFile::new(dir.path().join("gateway.yaml"));
        config.write(yaml);
        let xds = XdsServer::start(config.path(), dir.path()).await;
        let envoy = Envoy::start(&xds, GATEWAY, mode, dir.path()).await;
        Stack {
            mode,
            envoy,
            xds,
            config,
            dir: Some(dir),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir is taken only on drop").path()
    }

    /// A client for the gateway listener on `port`.
    pub fn client(&self, port: u16) -> HttpClient {
        HttpClient::new(port)
    }

    /// `Ok` when xds-server reports this Envoy connected with every type it was sent acked and
    /// nothing NACKed; otherwise what it reports (shown when a wait times out).
    pub async fn converged(&self) -> Result<(), String> {
        match self.xds.client(self.envoy.node_id()).await {
            Some(c) if client_converged(&c) => Ok(()),
            Some(c) => Err(format!("xds-server reports {c}")),
            None => Err(format!("{} is not connected", self.envoy.node_id())),
        }
    }

    /// Waits until [`converged`](Self::converged).
    pub async fn wait_converged(&self) {
        wait_for(
            "Envoy to ACK everything xds-server sent",
            CONVERGE_TIMEOUT,
            async || self.converged().await,
        )
        .await;
    }
}

/// A `/status` client entry whose every type has `acked == sent` and no NACK.
pub fn client_converged(client: &Value) -> bool {
    let Some(types) = client["types"].as_object() else {
        return false;
    };
    !types.is_empty()
        && types
            .values()
            .all(|t| !t["sent"].is_null() && t["sent"] == t["acked"] && t["nacked"].is_null())
}

/// Polls `GET path` on `client` until it answers `status`, and returns that answer. For waiting
/// until a route (or its absence) has reached Envoy.
pub async fn wait_for_route(client: &HttpClient, path: &str, status: u16) -> crate::client::Reply {
    wait_for(
        &format!("GET {path} to answer {status}"),
        CONVERGE_TIMEOUT,
        async || {
            let r = client.get(path).send().await.map_err(|e| e.to_string())?;
            if r.status == status {
                Ok(r)
            } else {
                Err(format!("status {} body {:?}", r.status, r.body))
            }
        },
    )
    .await
}

/// Defines `mod <name> { fn sotw(); fn delta() }`: two tokio tests that run the async function
/// `<name>(mode: XdsMode)` once against a State-of-the-World Envoy and once against a Delta one.
#[macro_export]
macro_rules! sotw_and_delta {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sotw() {
                super::$name($crate::XdsMode::Sotw).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delta() {
                super::$name($crate::XdsMode::Delta).await
            }
        }
    )+};
}

/// A `/status` client entry with nothing outstanding: every type it lists (possibly none) has
/// `acked == sent` and no NACK.
pub fn client_settled(client: &Value) -> bool {
    client["types"].as_object().is_some_and(|types| {
        types
            .values()
            .all(|t| t["sent"] == t["acked"] && t["nacked"].is_null())
    })
}

/// A minimal blocking HTTP/1.0 GET (for use in `Drop`, where there is no async runtime to
/// borrow); returns the body.
fn blocking_get(url: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: std::net::SocketAddr = authority
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let path = if path.is_empty() { "/" } else { path };
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(response))
}
