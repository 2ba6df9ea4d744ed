//! TLS on the control plane's gRPC ports, shared by every process: the flags of a port that
//! requires client certificates ([`ServerTlsArgs`]: xds-server's ADS port, the policy services'
//! Envoy-facing ports) and of an ADS client's certificate ([`XdsTlsArgs`]: the policy services,
//! and `xds-server bootstrap` for Envoy), and the tonic configurations built from the files.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The name xds-server's certificate carries (DNS SAN) unless `--xds-server-name` says
/// otherwise: the compose service name, and what `xds-server certs` issues.
pub const DEFAULT_SERVER_NAME: &str = "xds-server";

/// Why TLS could not be set up. Always the operator's to fix (a path or a file's content).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {flag} {}: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: no PEM {what} in it", path.display())]
    NoPem {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] tonic::transport::Error),
}

fn read_pem(flag: &'static str, path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    // tonic reads PEM lazily, when the first connection is made; a file that holds no PEM
    // block at all is caught here, at startup.
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(TlsError::NoPem {
            flag,
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(bytes)
}

/// A gRPC port that requires TLS with client certificates. All three flags or none: without
/// them the port serves plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ServerTlsArgs {
    /// PEM certificate (chain) this gRPC port presents. With --tls-key and --client-ca the port
    /// serves only TLS clients with a certificate signed by that CA.
    #[arg(long, env = "TLS_CERT", requires_all = ["tls_key", "client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires_all = ["tls_cert", "client_ca"])]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that must have signed every client's certificate.
    #[arg(long, env = "TLS_CLIENT_CA", requires_all = ["tls_cert", "tls_key"])]
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The server configuration, or `None` for plain text.
    pub fn load(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.client_ca)
        else {
            return Ok(None);
        };
        let identity = Identity::from_pem(
            read_pem("--tls-cert", cert, "certificate")?,
            read_pem("--tls-key", key, "private key")?,
        );
        let ca = Certificate::from_pem(read_pem("--client-ca", ca, "certificate")?);
        // `client_ca_root` makes a client certificate mandatory (`client_auth_optional` stays
        // false): a client without one fails the handshake.
        Ok(Some(
            ServerTlsConfig::new().identity(identity).client_ca_root(ca),
        ))
    }
}

/// How an ADS client reaches xds-server over TLS: the CA that signed xds-server's certificate,
/// the client's own certificate (whose URI SAN names its node group, see `ads::identity`) and
/// the name xds-server's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct XdsTlsArgs {
    /// PEM CA certificate that must have signed xds-server's certificate. With --xds-tls-cert
    /// and --xds-tls-key, ADS goes over TLS with that client certificate.
    #[arg(long, env = "XDS_CA", requires_all = ["xds_tls_cert", "xds_tls_key"])]
    pub xds_ca: Option<PathBuf>,
    /// PEM client certificate presented to xds-server; its URI SAN
    /// `spiffe://gateway/group/<node group>` decides what xds-server serves.
    #[arg(long, env = "XDS_TLS_CERT", requires_all = ["xds_ca", "xds_tls_key"])]
    pub xds_tls_cert: Option<PathBuf>,
    /// PEM private key of --xds-tls-cert.
    #[arg(long, env = "XDS_TLS_KEY", requires_all = ["xds_ca", "xds_tls_cert"])]
    pub xds_tls_key: Option<PathBuf>,
    /// The DNS name xds-server's certificate must carry (also sent as SNI).
    #[arg(long, env = "XDS_SERVER_NAME", default_value = DEFAULT_SERVER_NAME)]
    pub xds_server_name: String,
}

impl Default for XdsTlsArgs {
    fn default() -> Self {
        Self {
            xds_ca: None,
            xds_tls_cert: None,
            xds_tls_key: None,
            xds_server_name: DEFAULT_SERVER_NAME.into(),
        }
    }
}

/// The three files of an ADS client's TLS, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsTlsFiles<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub server_name: &'a str,
}

impl XdsTlsArgs {
    /// The files, or `None` for plain-text ADS.
    pub fn files(&self) -> Option<XdsTlsFiles<'_>> {
        match (&self.xds_ca, &self.xds_tls_cert, &self.xds_tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(XdsTlsFiles {
                ca,
                cert,
                key,
                server_name: &self.xds_server_name,
            }),
            _ => None,
        }
    }

    /// The client configuration, or `None` for plain text.
    pub fn load(&self) -> Result<Option<ClientTls>, TlsError> {
        let Some(f) = self.files() else {
            return Ok(None);
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read_pem(
                "--xds-ca",
                f.ca,
                "certificate",
            )?))
            .identity(Identity::from_pem(
                read_pem("--xds-tls-cert", f.cert, "certificate")?,
                read_pem("--xds-tls-key", f.key, "private key")?,
            ))
            .domain_name(f.server_name);
        // Building an endpoint parses the PEM: a bad file fails at startup, not on every
        // reconnect.
        tonic::transport::Endpoint::from_static("https://xds-server").tls_config(config.clone())?;
        Ok(Some(ClientTls(config)))
    }
}

/// An ADS client's TLS configuration. Its `Debug` shows nothing: the configuration holds a
/// private key.
#[derive(Clone)]
pub struct ClientTls(pub ClientTlsConfig);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerTlsArgs,
        #[command(flatten)]
        xds: XdsTlsArgs,
    }

    #[test]
    fn the_files_go_together() {
        let plain = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(plain.server, ServerTlsArgs::default());
        assert_eq!(plain.xds, XdsTlsArgs::default());
        assert!(plain.server.load().unwrap().is_none());
        assert!(plain.xds.load().unwrap().is_none());
        assert!(Cli::try_parse_from(["x", "--tls-cert", "c"]).is_err());
        assert!(Cli::try_parse_from(["x", "--tls-cert", "c", "--tls-key", "k"]).is_err());
        assert!(Cli::try_parse_from(["x", "--xds-ca", "ca", "--xds-tls-cert", "c"]).is_err());
        let all = Cli::try_parse_from([
            "x",
            "--xds-ca",
            "ca",
            "--xds-tls-cert",
            "c",
            "--xds-tls-key",
            "k",
        ])
        .unwrap();
        assert_eq!(all.xds.files().unwrap().server_name, "xds-server");
    }

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let dir = std::env::temp_dir().join(format!("xds-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let args = ServerTlsArgs {
            tls_cert: Some(empty.clone()),
            tls_key: Some(empty.clone()),
            client_ca: Some(dir.join("missing.pem")),
        };
        let err = args.load().unwrap_err().to_string();
        assert!(
            err.contains("--tls-cert") && err.contains("empty.pem"),
            "{err}"
        );
        let args = ServerTlsArgs {
            client_ca: Some(dir.join("missing.pem")),
            tls_cert: None,
            tls_key: None,
        };
        // Incomplete sets never reach `load` through clap; by hand they mean plain text.
        assert!(args.load().unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
