//! The `gateway.yaml` contract: loading, decoding with positions, and validation into the typed [`model`].

pub(crate) mod decode;
mod describe;
mod grammar;
pub mod json;
pub mod jwks;
pub mod keys_file;
pub mod model;
pub mod pem;
pub mod schema;
mod suggest;
#[cfg(test)]
mod tests;
mod yaml;

/// The one `host:port` parser, for command lines as much as for gateway.yaml.
pub use grammar::host_port;
pub use model::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use proto::error::{Classify, ErrorSource, RetryType};

/// A validated config plus the bytes of every file it references (TLS certificates and keys,
/// upstream CAs, JWKS files, API-key files), read at load time so translation stays pure and a
/// changed file produces a new content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The `gateway.yaml` path as given.
    pub path: PathBuf,
    pub config: Config,
    /// Absolute path → contents, for every file the config references.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// What is valid but probably not meant, in source order.
    pub warnings: Vec<ConfigWarning>,
}

/// Something valid but probably not meant, located in gateway.yaml: `xds-server validate` prints
/// it and still exits 0, `xds-server serve` logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// Says what was found and what was probably meant.
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// One problem, located in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the position is in: gateway.yaml, or a file it references when the problem is
    /// inside that file.
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// What kind of problem this is (not part of the message).
    pub kind: ErrorKind,
    /// Says what was found and what was expected.
    pub message: String,
}

/// What failed, in the manner of pingora's `ErrorType`: callers branch on this, never on the
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// gateway.yaml is not YAML (or not UTF-8).
    Syntax,
    /// A key, value or combination the contract does not allow.
    InvalidValue,
    /// A name that nothing defines: a route's service or auth provider, a plan.
    UnknownReference,
    /// gateway.yaml or a file it names could not be read.
    UnreadableFile,
    /// A file gateway.yaml names was read but is not what it must be (a JWKS document that is
    /// not JSON or holds no usable key, a keys file with an unknown key or a wrong type).
    InvalidReferencedFile,
}

impl ErrorKind {
    /// The kind of a decoder problem. The decoder reports `(position, message)` pairs, so its
    /// unknown-reference problems are told apart by the wording its reference checks use.
    fn of_decode_problem(message: &str) -> ErrorKind {
        const UNKNOWN: [&str; 3] = [
            ": unknown service `",
            ": unknown auth provider `",
            ": unknown plan `",
        ];
        if UNKNOWN.iter().any(|u| message.contains(u)) {
            ErrorKind::UnknownReference
        } else {
            ErrorKind::InvalidValue
        }
    }
}

/// Every load error is the config author's to fix (an unreadable file too: it names a path that
/// is missing or not readable by the server). Only a file that could not be read may succeed
/// when read again unchanged (it may be in the middle of being replaced); everything else fails
/// the same way until the text changes.
impl Classify for ConfigError {
    fn source_kind(&self) -> ErrorSource {
        ErrorSource::Config
    }

    fn retry(&self) -> RetryType {
        match self.kind {
            ErrorKind::UnreadableFile => RetryType::Later,
            _ => RetryType::AfterChange,
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found in one file, in source order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Decodes and validates `src` as if read from `file` (relative paths inside are resolved against
/// `file`'s directory). Does no I/O.
pub fn parse(src: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let base_dir = file.parent().unwrap_or_else(|| Path::new(""));
    parse_with_refs(src, file, base_dir).map(|(config, _, _)| config)
}

/// Reads `path`, parses it, and reads every file it references; JWKS files, API-key files and
/// PEM files (certificates, CAs, private keys) are also parsed, so a broken one fails the load
/// like a broken gateway.yaml.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let at_start = |kind: ErrorKind, message: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            kind,
            message,
        }])
    };
    let bytes = std::fs::read(path).map_err(|e| {
        at_start(
            ErrorKind::UnreadableFile,
            format!("cannot read the config file: {e}"),
        )
    })?;
    let src = String::from_utf8(bytes).map_err(|e| {
        at_start(
            ErrorKind::Syntax,
            format!("the config file is not valid UTF-8: {e}"),
        )
    })?;
    // Referenced files are resolved against the config's directory as of now, so a later
    // change of working directory (or a relative `--config`) cannot change what they mean.
    let absolute = std::path::absolute(path).map_err(|e| {
        at_start(
            ErrorKind::UnreadableFile,
            format!("cannot resolve the config file's path: {e}"),
        )
    })?;
    let base_dir = absolute.parent().unwrap_or_else(|| Path::new("/"));
    load_text(path, &src, base_dir, &mut |p| std::fs::read(p))
}

/// What [`load`] does once gateway.yaml is read: decodes `src` as the text of `path` (relative
/// references resolved against `base_dir`), reads every referenced file through `read`, and
/// checks them as [`load`] does. [`load`] passes `std::fs::read`; the fuzz targets pass a fixed
/// in-memory set of files, so no input can make them read the machine's files.
pub fn load_text(
    path: &Path,
    src: &str,
    base_dir: &Path,
    read: &mut dyn FnMut(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<Loaded, ConfigErrors> {
    let (config, refs, warnings) = parse_with_refs(src, path, base_dir)?;

    let mut files = BTreeMap::new();
    let mut errors = Vec::new();
    for r in &refs {
        if files.contains_key(&r.path) {
            continue;
        }
        match read(&r.path) {
            Ok(contents) => {
                files.insert(r.path.clone(), contents);
            }
            Err(e) => errors.push(ConfigError {
                file: path.to_path_buf(),
                line: r.pos.line,
                column: r.pos.column,
                kind: ErrorKind::UnreadableFile,
                message: format!("{}: cannot read {}: {e}", r.key, r.path.display()),
            }),
        }
    }
    errors.extend(check_referenced(path, &config, &refs, &files));
    errors.extend(check_pem(path, &config, &refs, &files));
    errors.extend(check_descriptors(path, &refs, &files));
    if !errors.is_empty() {
        // gateway.yaml's own problems first, in source order, then each referenced file's.
        errors.sort_by(|a, b| {
            (a.file != path, &a.file, a.line, a.column).cmp(&(
                b.file != path,
                &b.file,
                b.line,
                b.column,
            ))
        });
        errors.dedup();
        return Err(ConfigErrors(errors));
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        config,
        files,
        warnings,
    })
}

/// Decodes every `grpc.transcode.descriptor` as a `FileDescriptorSet` and checks that each
/// service its route names is defined in it.
fn check_descriptors(
    config_path: &Path,
    refs: &[decode::FileRef],
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<ConfigError> {
    use prost::Message as _;
    let mut errors = Vec::new();
    let at = |pos: yaml::Pos, kind: ErrorKind, message: String| ConfigError {
        file: config_path.to_path_buf(),
        line: pos.line,
        column: pos.column,
        kind,
        message,
    };
    for r in refs.iter().filter(|r| r.key == "descriptor") {
        let Some(bytes) = files.get(&r.path) else {
            continue;
        };
        let set = match prost_types::FileDescriptorSet::decode(bytes.as_slice()) {
            Ok(set) if !set.file.is_empty() => set,
            Ok(_) => {
                errors.push(at(
                    r.pos,
                    ErrorKind::InvalidReferencedFile,
                    format!(
                        "descriptor: {} holds no .proto file (an empty or non-descriptor file)",
                        r.path.display()
                    ),
                ));
                continue;
            }
            Err(e) => {
                errors.push(at(
                    r.pos,
                    ErrorKind::InvalidReferencedFile,
                    format!(
                        "descriptor: {} is not a binary FileDescriptorSet: {e}",
                        r.path.display()
                    ),
                ));
                continue;
            }
        };
        // Without `--include_imports` Envoy cannot build the descriptor pool and refuses the
        // whole listener update; say so here, at the key.
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        let missing: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| f.dependency.iter())
            .filter(|d| !names.contains(&d.as_str()))
            .map(|d| format!("`{d}`"))
            .collect();
        if !missing.is_empty() {
            errors.push(at(
                r.pos,
                ErrorKind::InvalidReferencedFile,
                format!(
                    "descriptor: {} imports {} but does not include {}; build it with \
                        `protoc --include_imports`",
                    r.path.display(),
                    missing.join(", "),
                    if missing.len() == 1 { "it" } else { "them" }
                ),
            ));
            continue;
        }
        let defined: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                let package = f.package().to_string();
                f.service.iter().map(move |s| {
                    if package.is_empty() {
                        s.name().to_string()
                    } else {
                        format!("{package}.{}", s.name())
                    }
                })
            })
            .collect();
        for (name, pos) in &r.services {
            if defined.contains(name) {
                continue;
            }
            let suggestion =
                suggest::did_you_mean(suggest::closest(name, defined.iter().map(String::as_str)));
            let known = if defined.is_empty() {
                "none".to_string()
            } else {
                defined
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            errors.push(at(
                *pos,
                ErrorKind::UnknownReference,
                format!(
                    "grpc.transcode.services: unknown service `{name}`{suggestion} in {}; \
                        it defines: {known}",
                    r.path.display()
                ),
            ));
        }
    }
    errors
}

/// Parses every JWKS file (for its provider's algorithms) and every API-key file that was read,
/// with the same code authz-service uses. A problem with a position inside the file is reported
/// there; one about the document as a whole (no usable key, a repeated `kid`) at the key in
/// gateway.yaml that names the file.
fn check_referenced(
    config_path: &Path,
    config: &Config,
    refs: &[decode::FileRef],
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<ConfigError> {
    let Some(auth) = &config.auth else {
        return Vec::new();
    };
    let named_at = |file: &Path, key: &str| {
        refs.iter()
            .find(|r| r.path == file && r.key == key)
            .map_or(yaml::Pos::START, |r| r.pos)
    };
    let mut errors = Vec::new();
    for p in auth.jwt.values() {
        let JwtKeys::File(file) = &p.keys else {
            continue;
        };
        let Some(bytes) = files.get(file) else {
            continue;
        };
        let Err(e) = jwks::parse(bytes, &p.algorithms) else {
            continue;
        };
        errors.push(match &e {
            jwks::JwksError::Syntax {
                line,
                column,
                message,
            } => ConfigError {
                file: file.clone(),
                line: *line,
                column: *column,
                kind: ErrorKind::InvalidReferencedFile,
                message: format!("not a JWKS document: {message}"),
            },
            _ => {
                let pos = named_at(file, "jwks_file");
                ConfigError {
                    file: config_path.to_path_buf(),
                    line: pos.line,
                    column: pos.column,
                    kind: ErrorKind::InvalidReferencedFile,
                    message: format!("jwks_file: {}: {e}", file.display()),
                }
            }
        });
    }
    let plans = config.rate_limits.as_ref().map(|r| &r.plans);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    for p in auth.api_keys.values() {
        let Some(bytes) = files.get(&p.keys_file) else {
            continue;
        };
        match keys_file::KeysFile::parse_located(bytes) {
            Err(e) => errors.push(ConfigError {
                file: p.keys_file.clone(),
                line: e.line,
                column: e.column,
                kind: ErrorKind::InvalidReferencedFile,
                message: e.message,
            }),
            Ok((file, plan_at)) => {
                let Some(plans) = plans.filter(|p| !p.is_empty()) else {
                    continue;
                };
                errors.extend(undefined_plans(&p.keys_file, &file, &plan_at, plans, now));
            }
        }
    }
    errors
}

/// Every usable key (not revoked, not expired at `now`) of a keys file whose `plan` is not one
/// of `rate_limits.plans`. authz-service would limit such a key as the default plan (and tell
/// the upstream so); a keys file is written for one gateway.yaml, so a plan it does not define
/// is a typo or a plan since removed, refused here before it silently demotes a client. Only
/// checked when gateway.yaml defines plans: without any, nothing limits by plan.
fn undefined_plans(
    path: &Path,
    file: &keys_file::KeysFile,
    plan_at: &[Option<keys_file::At>],
    plans: &BTreeMap<String, Rate>,
    now: i64,
) -> Vec<ConfigError> {
    let defined = || {
        plans
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    file.keys
        .iter()
        .zip(plan_at)
        .enumerate()
        .filter_map(|(i, (k, at))| {
            let at = (*at)?;
            if k.plan.is_empty() || plans.contains_key(&k.plan) || !k.is_active(now) {
                return None;
            }
            Some(ConfigError {
                file: path.to_path_buf(),
                line: at.line,
                column: at.column,
                kind: ErrorKind::UnknownReference,
                message: format!(
                    "keys[{i}].plan: unknown plan `{}` (key {:?}); rate_limits.plans defines: {}",
                    k.plan,
                    k.id,
                    defined()
                ),
            })
        })
        .collect()
}

/// Checks every certificate, CA and private-key file that was read ([`pem`]), and that each
/// key is its certificate's. PEM problems have no useful position inside the file, so each is
/// reported at the key in gateway.yaml that names the file, with the file's path.
fn check_pem(
    config_path: &Path,
    config: &Config,
    refs: &[decode::FileRef],
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<ConfigError> {
    let error = |r: &decode::FileRef, message: String| ConfigError {
        file: config_path.to_path_buf(),
        line: r.pos.line,
        column: r.pos.column,
        kind: ErrorKind::InvalidReferencedFile,
        message: format!("{}: {}: {message}", r.key, r.path.display()),
    };
    let mut errors = Vec::new();
    let mut checked: Vec<(&Path, &str)> = Vec::new();
    let mut refused: Vec<&Path> = Vec::new();
    for r in refs {
        if checked.contains(&(r.path.as_path(), r.key)) {
            continue;
        }
        checked.push((&r.path, r.key));
        let Some(bytes) = files.get(&r.path) else {
            continue;
        };
        let result = match r.key {
            // A certificate Envoy presents must also have a key size Envoy accepts.
            "cert_file" => pem::chain(bytes).map(drop),
            "ca_file" | "client_ca_file" => pem::certificates(bytes).map(drop),
            "key_file" => pem::private_key(bytes).map(drop),
            _ => continue,
        };
        if let Err(e) = result {
            errors.push(error(r, e.to_string()));
            refused.push(&r.path);
        }
    }
    for (cert, key) in certificate_pairs(config) {
        if refused.contains(&cert) || refused.contains(&key) {
            continue;
        }
        let (Some(c), Some(k)) = (files.get(cert), files.get(key)) else {
            continue;
        };
        let Err(e) = pem::pair(c, k) else {
            continue;
        };
        if let Some(r) = refs.iter().find(|r| r.path == key && r.key == "key_file") {
            errors.push(error(r, format!("{e} (cert_file: {})", cert.display())));
        }
    }
    errors
}

/// Every certificate file with its key file: listeners' `tls`, and the client certificates of
/// upstream services and of the two policy services.
fn certificate_pairs(config: &Config) -> Vec<(&Path, &Path)> {
    let mut out: Vec<(&Path, &Path)> = Vec::new();
    for gw in config.gateways.values() {
        for l in &gw.listeners {
            if let Some(t) = &l.tls {
                out.push((&t.cert_file, &t.key_file));
            }
        }
    }
    let upstream = config
        .services
        .values()
        .map(|s| &s.tls)
        .chain(config.auth.as_ref().map(|a| &a.service.tls))
        .chain(config.rate_limits.as_ref().map(|r| &r.service.tls));
    for tls in upstream.flatten() {
        if let Some(c) = &tls.client_cert {
            out.push((&c.cert_file, &c.key_file));
        }
    }
    out
}

/// [`parse`], also returning every referenced file and where it was named, so that [`load`] can
/// position a read error at the key that names the file, and the warnings in source order.
fn parse_with_refs(
    src: &str,
    file: &Path,
    base_dir: &Path,
) -> Result<(Config, Vec<decode::FileRef>, Vec<ConfigWarning>), ConfigErrors> {
    let error = |pos: yaml::Pos, kind: ErrorKind, message: String| ConfigError {
        file: file.to_path_buf(),
        line: pos.line,
        column: pos.column,
        kind,
        message,
    };
    let root = yaml::parse(src)
        .map_err(|e| ConfigErrors(vec![error(e.pos, ErrorKind::Syntax, e.message)]))?;
    let decoded = decode::decode(root.as_ref(), base_dir).map_err(|mut problems| {
        // Source order reads best; the same node can be reached twice (through an alias), so
        // identical reports are merged.
        problems.sort_by_key(|(pos, _)| *pos);
        problems.dedup();
        ConfigErrors(
            problems
                .into_iter()
                .map(|(pos, message)| error(pos, ErrorKind::of_decode_problem(&message), message))
                .collect(),
        )
    })?;
    let mut warnings = decoded.warnings;
    warnings.sort_by_key(|(pos, _)| *pos);
    warnings.dedup();
    let warnings = warnings
        .into_iter()
        .map(|(pos, message)| ConfigWarning {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            message,
        })
        .collect();
    Ok((decoded.config, decoded.files, warnings))
}

#[cfg(test)]
mod referenced_file_tests {
    use super::*;

    const KEYS_HEAD: &str = "version: 1\nkeys:\n  - id: \"a\"\n    sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

    /// A config with one JWT provider and one API-key provider, and their files.
    fn load_with(jwks: &str, keys: &str) -> (tempfile::TempDir, Result<Loaded, ConfigErrors>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            "version: 1\nauth:\n  jwt:\n    main: { issuer: x, algorithms: [ES256], jwks_file: jwks.json }\n  api_keys:\n    partners: { keys_file: keys.yaml }\ngateways:\n  edge:\n    listeners: [{ name: http, port: 8080 }]\n    routes:\n      - { name: r, match: { prefix: / }, respond: { status: 200 }, auth: [main, partners] }\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("jwks.json"), jwks).expect("write");
        std::fs::write(dir.path().join("keys.yaml"), keys).expect("write");
        let result = load(&config);
        (dir, result)
    }

    const EC_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"e","x":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE","y":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"}]}"#;

    #[test]
    fn broken_keys_files_fail_the_load_inside_the_keys_file() {
        for (line, at, why) in [
            (
                "    revoked: true\n",
                (5, 14),
                "keys[0].revoked: expected an RFC 3339 time",
            ),
            (
                "    expires: 1735689600\n",
                (5, 14),
                "keys[0].expires: expected an RFC 3339 time",
            ),
            (
                "    revoke: \"2026-01-01T00:00:00Z\"\n",
                (5, 5),
                "keys[0]: unknown key `revoke`",
            ),
        ] {
            let (dir, result) = load_with(EC_JWKS, &format!("{KEYS_HEAD}{line}"));
            let errs = result.expect_err(line).0;
            assert_eq!(errs.len(), 1, "{errs:?}");
            let e = &errs[0];
            assert_eq!(e.file, dir.path().join("keys.yaml"));
            assert_eq!((e.line, e.column), at, "{e}");
            assert!(e.message.starts_with(why), "{e}");
            assert_eq!(e.kind, ErrorKind::InvalidReferencedFile);
            assert!(
                e.to_string()
                    .contains(&format!("keys.yaml:{}:{}: ", at.0, at.1)),
                "{e}"
            );
        }
        let (_dir, ok) = load_with(EC_JWKS, KEYS_HEAD);
        ok.unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn keys_naming_undefined_plans_fail_the_load_at_the_plan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.yaml");
        let write_config = |plans: &str| {
            std::fs::write(
                &config,
                format!("version: 1\nauth:\n  api_keys:\n    partners: {{ keys_file: keys.yaml }}\n{plans}gateways:\n  edge:\n    listeners: [{{ name: http, port: 8080 }}]\n    routes:\n      - {{ name: r, match: {{ prefix: / }}, respond: {{ status: 200 }}, auth: [partners] }}\n"),
            )
            .expect("write");
        };
        write_config("rate_limits: { plans: { free: 1/s, pro: 2/s }, default_plan: free }\n");
        let digest = |c: char| c.to_string().repeat(64);
        let keys = format!(
            "version: 1\nkeys:\n  - {{ id: a, sha256: \"{}\", plan: pro }}\n  - {{ id: b, sha256: \"{}\", plan: gold }}\n  - {{ id: c, sha256: \"{}\" }}\n  - {{ id: d, sha256: \"{}\", plan: gold, revoked: \"2026-01-01T00:00:00Z\" }}\n  - {{ id: e, sha256: \"{}\", plan: gold, expires: \"2000-01-01T00:00:00Z\" }}\n  - {{ id: f, sha256: \"{}\", plan: \"Pro\" }}\n",
            digest('0'), digest('1'), digest('2'), digest('3'), digest('4'), digest('5'),
        );
        std::fs::write(dir.path().join("keys.yaml"), &keys).expect("write");
        let errs = load(&config).expect_err("undefined plans").0;
        let got: Vec<(usize, usize, &str)> = errs
            .iter()
            .map(|e| (e.line, e.column, e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (4, 96, "keys[1].plan: unknown plan `gold` (key \"b\"); rate_limits.plans defines: free, pro"),
                (8, 96, "keys[5].plan: unknown plan `Pro` (key \"f\"); rate_limits.plans defines: free, pro"),
            ],
            "revoked and expired keys, and keys without a plan, are not checked"
        );
        for e in &errs {
            assert_eq!(e.file, dir.path().join("keys.yaml"));
            assert_eq!(e.kind, ErrorKind::UnknownReference);
        }
        // Without plans in gateway.yaml nothing limits by plan: any plan name goes.
        write_config("");
        load(&config).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn broken_jwks_files_fail_the_load() {
        let (dir, result) = load_with("{\n  \"keys\": [\n    not json\n", KEYS_HEAD);
        let errs = result.unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].file, dir.path().join("jwks.json"));
        // serde_json points where it gave up: just after the `n` of `not`.
        assert_eq!((errs[0].line, errs[0].column), (3, 6), "{}", errs[0]);
        assert!(
            errs[0].message.starts_with("not a JWKS document: "),
            "{}",
            errs[0]
        );
        assert_eq!(errs[0].kind, ErrorKind::InvalidReferencedFile);

        // JSON, but nothing usable for ES256: reported at the key naming the file.
        let rsa_only = r#"{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}]}"#;
        let (dir, result) = load_with(rsa_only, KEYS_HEAD);
        let errs = result.unwrap_err().0;
        assert_eq!(errs[0].file, dir.path().join("gateway.yaml"));
        assert_eq!((errs[0].line, errs[0].column), (4, 56), "{}", errs[0]);
        assert!(
            errs[0].message.contains("jwks.json: no key is usable"),
            "{}",
            errs[0]
        );
    }

    /// A listener with a certificate and a key, and `auth.service.tls` with a CA and a client
    /// certificate, each file given by the test.
    fn load_with_pem(
        files: [(&str, &[u8]); 5],
    ) -> (tempfile::TempDir, Result<Loaded, ConfigErrors>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            "version: 1\nauth:\n  service:\n    address: 127.0.0.1:9001\n    tls: { ca_file: ca.crt, cert_file: client.crt, key_file: client.key }\ngateways:\n  edge:\n    listeners: [{ name: https, port: 8443, tls: { cert_file: api.crt, key_file: api.key } }]\n    routes:\n      - { name: r, match: { prefix: / }, respond: { status: 200 }, auth: none }\n",
        )
        .expect("write");
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).expect("write");
        }
        let result = load(&config);
        (dir, result)
    }

    const P256_CRT: &[u8] = include_bytes!("testdata/pem/p256.crt");
    const P256_KEY: &[u8] = include_bytes!("testdata/pem/p256.key");
    const OTHER_CRT: &[u8] = include_bytes!("testdata/pem/other-p256.crt");
    const RSA_CRT: &[u8] = include_bytes!("testdata/pem/rsa2048.crt");
    const RSA_KEY: &[u8] = include_bytes!("testdata/pem/rsa2048.key");

    #[test]
    fn broken_pem_files_fail_the_load_at_the_key_naming_them() {
        let good = [
            ("api.crt", P256_CRT),
            ("api.key", P256_KEY),
            ("ca.crt", OTHER_CRT),
            ("client.crt", RSA_CRT),
            ("client.key", RSA_KEY),
        ];
        let (_dir, ok) = load_with_pem(good);
        let loaded = ok.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.files.len(), 5);

        for (file, bytes, at, why) in [
            ("api.crt", &b"garbage\n"[..], (8, 62), "cert_file: {dir}/api.crt: holds no certificate"),
            ("api.key", P256_CRT, (8, 81), "key_file: {dir}/api.key: holds no private key"),
            ("ca.crt", P256_KEY, (5, 21), "ca_file: {dir}/ca.crt: holds no certificate"),
            ("client.crt", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", (5, 40), "cert_file: {dir}/client.crt: certificate 1 is not a valid X.509 certificate"),
            // Swapped keys: each file is fine alone, the pairs are not.
            ("client.key", P256_KEY, (5, 62), "key_file: {dir}/client.key: the private key is not the key of the (first) certificate (cert_file: {dir}/client.crt)"),
        ] {
            let mut files = good;
            files.iter_mut().find(|(n, _)| *n == file).expect("a file").1 = bytes;
            let (dir, result) = load_with_pem(files);
            let errs = result.expect_err(file).0;
            assert_eq!(errs.len(), 1, "{file}: {errs:?}");
            let e = &errs[0];
            assert_eq!(e.file, dir.path().join("gateway.yaml"), "{e}");
            assert_eq!((e.line, e.column), at, "{e}");
            assert_eq!(e.kind, ErrorKind::InvalidReferencedFile);
            let why = why.replace("{dir}", &dir.path().display().to_string());
            assert!(e.message.starts_with(&why), "{file}: {e}");
        }

        // A key that matches no certificate of the listener, with a valid CA: only the pair is
        // refused.
        let mut files = good;
        files[1].1 = RSA_KEY;
        let (_dir, result) = load_with_pem(files);
        let errs = result.expect_err("mismatch").0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("is not the key of"), "{}", errs[0]);
    }

    #[test]
    fn errors_carry_their_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = load(&dir.path().join("nope.yaml")).unwrap_err().0;
        assert_eq!(missing[0].kind, ErrorKind::UnreadableFile);
        assert_eq!(missing[0].retry(), RetryType::Later);
        let file = Path::new("/etc/gw/gateway.yaml");
        let kinds = |src: &str| -> Vec<ErrorKind> {
            parse(src, file)
                .unwrap_err()
                .0
                .iter()
                .map(|e| e.kind)
                .collect()
        };
        assert_eq!(kinds("version: [\n"), [ErrorKind::Syntax]);
        assert_eq!(kinds("version: 2\n"), [ErrorKind::InvalidValue]);
        assert_eq!(
            kinds("version: 1\ngateways:\n  edge:\n    listeners: [{ name: http, port: 8080 }]\n    routes:\n      - { name: r, match: { prefix: / }, service: nope, auth: none }\n"),
            [ErrorKind::UnknownReference]
        );
        for kind in [
            ErrorKind::Syntax,
            ErrorKind::InvalidValue,
            ErrorKind::UnknownReference,
            ErrorKind::InvalidReferencedFile,
        ] {
            let e = ConfigError {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
                kind,
                message: String::new(),
            };
            assert_eq!(e.retry(), RetryType::AfterChange, "{kind:?}");
            assert_eq!(e.source_kind(), ErrorSource::Config);
        }
    }

    /// A config with one transcoded route naming `services` of `descriptor`'s bytes.
    fn load_grpc(
        descriptor: &[u8],
        services: &str,
    ) -> (tempfile::TempDir, Result<Loaded, ConfigErrors>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            format!("version: 1\nservices:\n  greeter: {{ endpoints: [127.0.0.1:50051], protocol: grpc }}\ngateways:\n  edge:\n    listeners: [{{ name: http, port: 8080 }}]\n    routes:\n      - name: r\n        match: {{ prefix: / }}\n        service: greeter\n        auth: none\n        grpc:\n          transcode:\n            descriptor: demo.pb\n            services: {services}\n"),
        )
        .expect("write");
        std::fs::write(dir.path().join("demo.pb"), descriptor).expect("write");
        let result = load(&config);
        (dir, result)
    }

    /// A descriptor set of `demo.proto` (service `demo.Greeter`, importing `imports`) and of
    /// `included`.
    fn demo_descriptor_with(imports: &[&str], included: &[&str]) -> Vec<u8> {
        use prost::Message as _;
        let mut file: Vec<prost_types::FileDescriptorProto> = included
            .iter()
            .map(|name| prost_types::FileDescriptorProto {
                name: Some(name.to_string()),
                ..Default::default()
            })
            .collect();
        file.push(prost_types::FileDescriptorProto {
            name: Some("demo.proto".into()),
            package: Some("demo".into()),
            dependency: imports.iter().map(|d| d.to_string()).collect(),
            service: vec![prost_types::ServiceDescriptorProto {
                name: Some("Greeter".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        prost_types::FileDescriptorSet { file }.encode_to_vec()
    }

    fn demo_descriptor() -> Vec<u8> {
        demo_descriptor_with(
            &["google/api/annotations.proto"],
            &["google/api/annotations.proto"],
        )
    }

    #[test]
    fn a_transcode_descriptor_is_read_and_checked() {
        let good = demo_descriptor();
        let (dir, loaded) = load_grpc(&good, "[demo.Greeter]");
        let loaded = loaded.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.files.get(&dir.path().join("demo.pb")), Some(&good));

        // An unknown service, at its entry in gateway.yaml, with the ones the file defines.
        let (_dir, result) = load_grpc(&good, "[demo.Greeter, demo.Greter]");
        let errs = result.expect_err("unknown service").0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (15, 38), "{errs:?}");
        assert_eq!(errs[0].kind, ErrorKind::UnknownReference);
        assert!(
            errs[0]
                .message
                .contains("unknown service `demo.Greter` (did you mean `demo.Greeter`?)"),
            "{errs:?}"
        );
        assert!(
            errs[0].message.contains("it defines: `demo.Greeter`"),
            "{errs:?}"
        );

        // Bytes that are no FileDescriptorSet, and an empty file, at the `descriptor` value.
        for bytes in [&b"not a descriptor set"[..], b""] {
            let (_dir, result) = load_grpc(bytes, "[demo.Greeter]");
            let errs = result.expect_err("a broken descriptor").0;
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!((errs[0].line, errs[0].column), (14, 25), "{errs:?}");
            assert_eq!(errs[0].kind, ErrorKind::InvalidReferencedFile);
            assert!(errs[0].message.starts_with("descriptor: "), "{errs:?}");
        }

        // A set built without its imports.
        let (_dir, result) = load_grpc(
            &demo_descriptor_with(&["google/api/annotations.proto"], &[]),
            "[demo.Greeter]",
        );
        let errs = result.expect_err("a set without its imports").0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (14, 25), "{errs:?}");
        assert!(
            errs[0]
                .message
                .contains("imports `google/api/annotations.proto` but does not include it"),
            "{errs:?}"
        );
    }
}
