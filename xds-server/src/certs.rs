//! `xds-server certs`: a private CA and the certificates of an mTLS control plane, for a demo or
//! a first deployment. Each node group gets a certificate whose URI SAN names it (the scheme of
//! `ads::identity`), so xds-server serves that certificate's holder that group only; its DNS SAN
//! is the group's name too, so the policy services' certificates also serve their own gRPC
//! ports. The CA's private key is not written: issuing again means running the command again
//! (and restarting every process with the new files).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why the certificates could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct CertsOptions {
    pub out: PathBuf,
    /// The node groups (gateways and policy services) that get a client certificate.
    pub groups: Vec<String>,
    /// The DNS name of xds-server's certificate (`--xds-server-name` of its clients).
    pub server_name: String,
}

/// Writes `ca.pem`, `xds-server.{pem,key}` and `<group>.{pem,key}` for every group into
/// `o.out`; returns the files written.
pub fn write(o: &CertsOptions) -> Result<Vec<PathBuf>, CertsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name("gateway control plane CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    create_dir(&o.out)?;
    let mut written = vec![put(&o.out.join("ca.pem"), &ca.pem(), false)?];
    // xds-server's own certificate names no node group: it can never read ADS itself.
    let mut leaves = vec![(o.server_name.clone(), None)];
    leaves.extend(
        o.groups
            .iter()
            .map(|g| (g.clone(), Some(ads::identity::uri_for(g)))),
    );
    for (file, uri) in leaves {
        let mut params = CertificateParams::new(vec![file.clone()])?;
        params.distinguished_name = name(&file);
        if let Some(uri) = uri {
            params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Both: a policy service's certificate is its ADS client identity and its gRPC port's
        // server certificate.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        written.push(put(&o.out.join(format!("{file}.pem")), &cert.pem(), false)?);
        written.push(put(
            &o.out.join(format!("{file}.key")),
            &key.serialize_pem(),
            true,
        )?);
    }
    Ok(written)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `text` to `path`; a private key is readable by its owner only.
fn put(path: &Path, text: &str, private: bool) -> Result<PathBuf, CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = open.open(path).map_err(err)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(err)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_certificate_names_its_group_only() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(&CertsOptions {
            out: dir.path().to_path_buf(),
            groups: vec!["edge".into(), "authz-service".into()],
            server_name: "xds-server".into(),
        })
        .unwrap();
        assert_eq!(files.len(), 7);
        let der = |name: &str| {
            let pem = std::fs::read(dir.path().join(name)).unwrap();
            x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents
        };
        assert_eq!(ads::identity::groups_of(&der("edge.pem")), ["edge"]);
        assert_eq!(
            ads::identity::groups_of(&der("authz-service.pem")),
            ["authz-service"]
        );
        assert!(ads::identity::groups_of(&der("xds-server.pem")).is_empty());
        // A policy service's certificate also serves its gRPC port (Envoy checks the DNS name
        // `auth.service.tls.sni` gives), and a gateway's is Envoy's client certificate there.
        for (file, dns) in [
            ("authz-service.pem", "authz-service"),
            ("edge.pem", "edge"),
            ("xds-server.pem", "xds-server"),
        ] {
            let der = der(file);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let san = cert.subject_alternative_name().unwrap().expect("a SAN");
            let names: Vec<&str> = san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(*d),
                    _ => None,
                })
                .collect();
            assert_eq!(names, [dns], "{file}");
            let eku = cert.extended_key_usage().unwrap().expect("an EKU").value;
            assert!(eku.server_auth && eku.client_auth, "{file}: {eku:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("edge.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "a private key must not be group/world readable"
            );
        }
    }
}
