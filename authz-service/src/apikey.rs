//! API keys: O(1) lookup with a constant-time compare, and the `apikey create` / `apikey revoke`
//! edits of a keys file.
//!
//! A key is 32 random bytes (256 bits) shown once as `gwk_<base64url>`. With that much entropy a
//! plain SHA-256 digest is safe to store: there is nothing to brute-force, so no slow or salted
//! hash is needed, and the digest doubles as the lookup key.
//!
//! The file's records, format, reader and writer are `config::keys_file`'s (xds-server checks
//! every keys file with the same reader before it ships one); the file is rewritten atomically.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
pub use config::keys_file::{format_time, parse_time, KeyRecord, KeysFile};

/// What every key starts with, so secret scanners and people can recognise one.
pub const KEY_PREFIX: &str = "gwk_";
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("{0}")]
    Invalid(String),
    /// The file on disk does not read as a keys file (`path:line:col: message`).
    #[error("{0}:{1}")]
    Parse(String, config::keys_file::KeysFileError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("an API key with id {0:?} already exists")]
    DuplicateId(String),
    #[error("no API key with id {0:?}")]
    UnknownId(String),
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// The SHA-256 of a presented key.
pub fn digest_key(key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, key.as_bytes()).as_ref());
    out
}

/// The edits `apikey create` and `apikey revoke` make to a keys file.
pub trait Edit: Sized {
    /// Reads `path`; a missing file is an empty one (the first `create` makes it).
    fn load(path: &Path) -> Result<Self, KeysFileError>;
    /// Writes `path` atomically (a temporary file in the same directory, then a rename), so
    /// xds-server, which watches the file, never reads half of it.
    fn store(&self, path: &Path) -> Result<(), KeysFileError>;
    /// Adds a new key and returns its secret (to print once).
    fn create(&mut self, record: KeyRecord) -> Result<String, KeysFileError>;
    /// Marks a key revoked (kept in the file, so the id is not reused by accident).
    fn revoke(&mut self, id: &str, now: i64) -> Result<(), KeysFileError>;
}

impl Edit for KeysFile {
    fn load(path: &Path) -> Result<Self, KeysFileError> {
        match std::fs::read(path) {
            Ok(b) => {
                Self::parse(&b).map_err(|e| KeysFileError::Parse(path.display().to_string(), e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(KeysFileError::Io(path.display().to_string(), e)),
        }
    }

    fn store(&self, path: &Path) -> Result<(), KeysFileError> {
        let io = |e| KeysFileError::Io(path.display().to_string(), e);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    fn create(&mut self, mut record: KeyRecord) -> Result<String, KeysFileError> {
        if [&record.id, &record.plan, &record.tenant]
            .iter()
            .any(|v| v.chars().any(char::is_control))
            || record.id.is_empty()
        {
            return Err(KeysFileError::Invalid(
                "id, plan and tenant must be non-empty text without control characters".into(),
            ));
        }
        if self.keys.iter().any(|k| k.id == record.id) {
            return Err(KeysFileError::DuplicateId(record.id));
        }
        let mut raw = [0u8; KEY_BYTES];
        aws_lc_rs::rand::fill(&mut raw).map_err(|e| KeysFileError::Random(e.to_string()))?;
        let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        record.sha256 = digest_key(&key);
        self.keys.push(record);
        Ok(key)
    }

    fn revoke(&mut self, id: &str, now: i64) -> Result<(), KeysFileError> {
        let k = self
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| KeysFileError::UnknownId(id.to_string()))?;
        k.revoked.get_or_insert(now);
        Ok(())
    }
}

/// Why a presented key was refused. For the operator (metrics label, log line) only: the client
/// reads the same answer for all three, so it cannot tell a key that never existed from one that
/// did (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefused {
    /// No record has this key's digest.
    Unknown,
    /// The record is marked revoked (whether or not it has also expired).
    Revoked,
    /// The record's `expires` has passed.
    Expired,
}

impl KeyRefused {
    /// A stable, low-cardinality label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unknown => "unknown_key",
            Self::Revoked => "revoked_key",
            Self::Expired => "expired_key",
        }
    }
}

/// Lookup structure built from a keys file.
#[derive(Debug, Default)]
pub struct KeyStore {
    by_digest: HashMap<[u8; 32], KeyRecord>,
}

impl KeyStore {
    pub fn new(file: KeysFile) -> Self {
        Self {
            by_digest: file.keys.into_iter().map(|k| (k.sha256, k)).collect(),
        }
    }

    /// The active record for a presented key, or why there is none. The map lookup is O(1) on
    /// the digest; the stored digest is then compared in constant time, so even a hash-map
    /// implementation that compares keys byte by byte leaks nothing about the stored values.
    pub fn check(&self, presented: &str, now: i64) -> Result<&KeyRecord, KeyRefused> {
        let d = digest_key(presented);
        let rec = self.by_digest.get(&d).ok_or(KeyRefused::Unknown)?;
        aws_lc_rs::constant_time::verify_slices_are_equal(&rec.sha256, &d)
            .map_err(|_| KeyRefused::Unknown)?;
        if rec.revoked.is_some() {
            Err(KeyRefused::Revoked)
        } else if !rec.is_active(now) {
            Err(KeyRefused::Expired)
        } else {
            Ok(rec)
        }
    }

    /// The active record for a presented key, if any.
    pub fn find(&self, presented: &str, now: i64) -> Option<&KeyRecord> {
        self.check(presented, now).ok()
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// `--expires`: an RFC 3339 time, or a duration from `now` (`90d`, `12h`, `30m`, `45s`).
pub fn parse_expiry(s: &str, now: i64) -> Option<i64> {
    if let Some(t) = parse_time(s) {
        return Some(t);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)?.checked_add(now).filter(|_| n > 0)
}

/// For `apikey create --config`: a warning when `plan` is not one of gateway.yaml's
/// `rate_limits.plans`, or when the file cannot be checked; `None` when the plan is defined (or
/// the config defines no plans, so nothing limits by plan). Only a warning: the keys file may be
/// written ahead of the config that defines the plan. gateway.yaml is decoded without reading
/// the files it names, which may live on another machine.
pub fn plan_warning(config_path: &Path, plan: &str) -> Option<String> {
    let shown = config_path.display();
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) => return Some(format!("cannot read {shown}: {e}; the plan is not checked")),
    };
    let cfg = match config::parse(&text, config_path) {
        Ok(c) => c,
        Err(e) => {
            return Some(format!(
                "{shown} does not validate ({} errors, `xds-server validate` lists them); the plan is not checked",
                e.0.len()
            ))
        }
    };
    let plans = cfg.rate_limits.map(|r| r.plans).unwrap_or_default();
    if plan.is_empty() || plans.is_empty() || plans.contains_key(plan) {
        return None;
    }
    let defined: Vec<&str> = plans.keys().map(String::as_str).collect();
    Some(format!(
        "plan {plan:?} is not one of {shown}'s rate_limits.plans ({}); xds-server refuses a keys \
         file with such a key, so define the plan before the file is deployed",
        defined.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            sha256: [0; 32],
            plan: "pro".into(),
            roles: vec!["reader".into(), "a \"quoted\": role".into()],
            scopes: vec![],
            tenant: String::new(),
            created: 1_700_000_000,
            expires: None,
            revoked: None,
        }
    }

    #[test]
    fn create_revoke_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let mut f = KeysFile::load(&path).unwrap();
        assert!(f.keys.is_empty());
        let k1 = f.create(record("a")).unwrap();
        let mut r = record("b");
        r.expires = Some(1_800_000_000);
        r.tenant = "acme".into();
        r.scopes = vec!["read".into()];
        let k2 = f.create(r).unwrap();
        assert!(k1.starts_with(KEY_PREFIX) && k1.len() == KEY_PREFIX.len() + 43);
        assert_ne!(k1, k2);
        assert!(matches!(
            f.create(record("a")),
            Err(KeysFileError::DuplicateId(_))
        ));
        f.store(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&k1[KEY_PREFIX.len()..]),
            "the secret is never stored"
        );
        let back = KeysFile::load(&path).unwrap();
        assert_eq!(back, f);

        let store = KeyStore::new(back.clone());
        assert_eq!(
            store.find(&k1, 1_750_000_000).map(|r| r.id.as_str()),
            Some("a")
        );
        assert_eq!(
            store.find(&k2, 1_750_000_000).map(|r| r.tenant.as_str()),
            Some("acme")
        );
        assert_eq!(
            store.check(&k2, 1_800_000_000).unwrap_err(),
            KeyRefused::Expired
        );
        assert_eq!(store.check("gwk_nope", 0).unwrap_err(), KeyRefused::Unknown);
        assert_eq!(store.check("", 0).unwrap_err(), KeyRefused::Unknown);

        let mut f = back;
        f.revoke("a", 1_760_000_000).unwrap();
        assert!(matches!(
            f.revoke("zzz", 0),
            Err(KeysFileError::UnknownId(_))
        ));
        f.store(&path).unwrap();
        let store = KeyStore::new(KeysFile::load(&path).unwrap());
        assert_eq!(
            store.check(&k1, 1_750_000_000).unwrap_err(),
            KeyRefused::Revoked
        );
    }

    #[test]
    fn a_broken_file_on_disk_is_refused_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        std::fs::write(
            &path,
            "version: 1\nkeys:\n  - { id: a, sha256: \"00\", revoke: x }\n",
        )
        .unwrap();
        let e = KeysFile::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:3:", path.display())), "{e}");
        assert!(e.contains("unknown key `revoke`"), "{e}");
    }

    #[test]
    fn expiry_accepts_times_and_durations() {
        assert_eq!(parse_expiry("2026-01-01T00:00:00Z", 0), Some(1_767_225_600));
        assert_eq!(parse_expiry("90d", 100), Some(100 + 90 * 86_400));
        assert_eq!(parse_expiry("12h", 0), Some(43_200));
        assert_eq!(parse_expiry("0d", 0), None);
        assert_eq!(parse_expiry("soon", 0), None);
        assert_eq!(parse_expiry("5y", 0), None);
    }
}
