//! API keys: the keys file (digests only), O(1) lookup with a constant-time compare, and the
//! `apikey create` / `apikey revoke` edits.
//!
//! A key is 32 random bytes (256 bits) shown once as `gwk_<base64url>`. With that much entropy a
//! plain SHA-256 digest is safe to store: there is nothing to brute-force, so no slow or salted
//! hash is needed, and the digest doubles as the lookup key.
//!
//! The file is YAML (every value a JSON-style quoted string, so no YAML surprise can change a
//! value's type), rewritten atomically:
//!
//! ```yaml
//! version: 1
//! keys:
//!   - id: "partner-a"
//!     sha256: "9f86d0…"
//!     plan: "pro"
//!     roles: ["reader"]
//!     created: "2026-01-01T00:00:00Z"
//!     expires: "2026-04-01T00:00:00Z"   # optional
//!     revoked: "2026-02-01T00:00:00Z"   # optional
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use yaml_rust2::{Yaml, YamlLoader};

/// What every key starts with, so secret scanners and people can recognise one.
pub const KEY_PREFIX: &str = "gwk_";
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("an API key with id {0:?} already exists")]
    DuplicateId(String),
    #[error("no API key with id {0:?}")]
    UnknownId(String),
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub sha256: [u8; 32],
    pub plan: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub tenant: String,
    /// Seconds since the epoch.
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
}

impl KeyRecord {
    /// Usable at `now` (seconds since the epoch): not revoked and not expired.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|e| now < e)
    }
}

/// The parsed keys file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeysFile {
    /// In file order.
    pub keys: Vec<KeyRecord>,
}

/// The SHA-256 of a presented key.
pub fn digest_key(key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, key.as_bytes()).as_ref());
    out
}

impl KeysFile {
    pub fn parse(bytes: &[u8]) -> Result<Self, KeysFileError> {
        let inv = |m: String| KeysFileError::Invalid(m);
        let text = std::str::from_utf8(bytes).map_err(|_| inv("not UTF-8".into()))?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let docs = YamlLoader::load_from_str(text).map_err(|e| inv(e.to_string()))?;
        let Some(doc) = docs.first() else {
            return Ok(Self::default());
        };
        if doc["version"].as_i64() != Some(1) {
            return Err(inv("expected `version: 1`".into()));
        }
        let list = match &doc["keys"] {
            Yaml::Array(a) => a.as_slice(),
            Yaml::BadValue | Yaml::Null => &[],
            _ => return Err(inv("`keys` must be a list".into())),
        };
        let mut keys = Vec::with_capacity(list.len());
        let mut ids = std::collections::HashSet::new();
        let mut digests = std::collections::HashSet::new();
        for (i, k) in list.iter().enumerate() {
            let at = |m: &str| inv(format!("keys[{i}]: {m}"));
            let s = |name: &str| k[name].as_str().map(str::to_string);
            let id = s("id").ok_or_else(|| at("missing id"))?;
            // Ids, plans and tenants become upstream header values.
            for (name, v) in [
                ("id", Some(id.clone())),
                ("plan", s("plan")),
                ("tenant", s("tenant")),
            ] {
                if v.is_some_and(|v| v.chars().any(char::is_control)) {
                    return Err(at(&format!("{name} contains control characters")));
                }
            }
            if !ids.insert(id.clone()) {
                return Err(at(&format!("id {id:?} is repeated")));
            }
            let hex = s("sha256").ok_or_else(|| at("missing sha256"))?;
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(&hex, &mut sha256)
                .map_err(|_| at("sha256 must be 64 hex digits"))?;
            // One key, one record: a second record for the same digest could otherwise undo a
            // revocation (the last record would win the lookup).
            if !digests.insert(sha256) {
                return Err(at("sha256 is repeated"));
            }
            let time = |name: &str| -> Result<Option<i64>, KeysFileError> {
                match s(name) {
                    None => Ok(None),
                    Some(t) => parse_time(&t)
                        .map(Some)
                        .ok_or_else(|| at(&format!("{name} is not an RFC 3339 time"))),
                }
            };
            let list = |name: &str| -> Vec<String> {
                k[name]
                    .as_vec()
                    .map(|v| {
                        v.iter()
                            .filter_map(|r| r.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            keys.push(KeyRecord {
                sha256,
                plan: s("plan").unwrap_or_default(),
                roles: list("roles"),
                scopes: list("scopes"),
                tenant: s("tenant").unwrap_or_default(),
                created: time("created")?.unwrap_or(0),
                expires: time("expires")?,
                revoked: time("revoked")?,
                id,
            });
        }
        Ok(Self { keys })
    }

    /// The file's text. Every string goes through JSON quoting, which YAML reads back verbatim.
    pub fn render(&self) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let mut out = String::from(
            "# API keys for authz-service, written by `authz-service apikey`.\n\
             # Only SHA-256 digests are stored; a key is shown once, when it is created.\n\
             version: 1\nkeys:\n",
        );
        if self.keys.is_empty() {
            out.truncate(out.len() - 1);
            out.push_str(" []\n");
        }
        for k in &self.keys {
            out.push_str(&format!("  - id: {}\n", q(&k.id)));
            out.push_str(&format!("    sha256: \"{}\"\n", hex::encode(k.sha256)));
            out.push_str(&format!("    plan: {}\n", q(&k.plan)));
            let roles: Vec<String> = k.roles.iter().map(|r| q(r)).collect();
            out.push_str(&format!("    roles: [{}]\n", roles.join(", ")));
            if !k.scopes.is_empty() {
                let scopes: Vec<String> = k.scopes.iter().map(|r| q(r)).collect();
                out.push_str(&format!("    scopes: [{}]\n", scopes.join(", ")));
            }
            if !k.tenant.is_empty() {
                out.push_str(&format!("    tenant: {}\n", q(&k.tenant)));
            }
            out.push_str(&format!("    created: \"{}\"\n", format_time(k.created)));
            if let Some(e) = k.expires {
                out.push_str(&format!("    expires: \"{}\"\n", format_time(e)));
            }
            if let Some(r) = k.revoked {
                out.push_str(&format!("    revoked: \"{}\"\n", format_time(r)));
            }
        }
        out
    }

    /// Reads `path`; a missing file is an empty one (the first `create` makes it).
    pub fn load(path: &Path) -> Result<Self, KeysFileError> {
        match std::fs::read(path) {
            Ok(b) => Self::parse(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(KeysFileError::Io(path.display().to_string(), e)),
        }
    }

    /// Writes `path` atomically (a temporary file in the same directory, then a rename), so
    /// xds-server, which watches the file, never reads half of it.
    pub fn store(&self, path: &Path) -> Result<(), KeysFileError> {
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

    /// Adds a new key and returns its secret (to print once).
    pub fn create(&mut self, mut record: KeyRecord) -> Result<String, KeysFileError> {
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

    /// Marks a key revoked (kept in the file, so the id is not reused by accident).
    pub fn revoke(&mut self, id: &str, now: i64) -> Result<(), KeysFileError> {
        let k = self
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| KeysFileError::UnknownId(id.to_string()))?;
        k.revoked.get_or_insert(now);
        Ok(())
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

    /// The active record for a presented key, if any. The map lookup is O(1) on the digest; the
    /// stored digest is then compared in constant time, so even a hash-map implementation that
    /// compares keys byte by byte leaks nothing about the stored values.
    pub fn find(&self, presented: &str, now: i64) -> Option<&KeyRecord> {
        let d = digest_key(presented);
        let rec = self.by_digest.get(&d)?;
        aws_lc_rs::constant_time::verify_slices_are_equal(&rec.sha256, &d).ok()?;
        rec.is_active(now).then_some(rec)
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

pub fn parse_time(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

pub fn format_time(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
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
    fn a_digest_may_appear_only_once() {
        let digest = "ab".repeat(32);
        let file = format!(
            "version: 1\nkeys:\n  - {{ id: a, sha256: {digest}, plan: free, created: 2026-01-01T00:00:00Z, revoked: 2026-02-01T00:00:00Z }}\n  - {{ id: b, sha256: {digest}, plan: free, created: 2026-01-01T00:00:00Z }}\n"
        );
        let err = KeysFile::parse(file.as_bytes()).expect_err("a repeated digest");
        assert!(err.to_string().contains("sha256 is repeated"), "{err}");
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
        assert!(store.find(&k2, 1_800_000_000).is_none(), "expired");
        assert!(store.find("gwk_nope", 0).is_none());
        assert!(store.find("", 0).is_none());

        let mut f = back;
        f.revoke("a", 1_760_000_000).unwrap();
        assert!(matches!(
            f.revoke("zzz", 0),
            Err(KeysFileError::UnknownId(_))
        ));
        f.store(&path).unwrap();
        let store = KeyStore::new(KeysFile::load(&path).unwrap());
        assert!(store.find(&k1, 1_750_000_000).is_none(), "revoked");
    }

    #[test]
    fn bad_files_are_refused() {
        for (src, why) in [
            ("version: 2\nkeys: []\n", "version"),
            ("version: 1\nkeys: {}\n", "list"),
            ("version: 1\nkeys:\n  - { sha256: \"00\" }\n", "missing id"),
            ("version: 1\nkeys:\n  - { id: a, sha256: \"zz\" }\n", "hex"),
            ("version: 1\nkeys:\n  - { id: a, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\", created: yesterday }\n", "RFC 3339"),
            ("version: 1\nkeys:\n  - { id: a, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\" }\n  - { id: a, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\" }\n", "repeated"),
            ("version: 1\nkeys:\n  - { id: \"a\\nb\", sha256: \"00\" }\n", "control characters"),
            ("version: [\n", ""),
        ] {
            let e = KeysFile::parse(src.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{src}: {e}");
        }
        assert!(KeysFile::parse(b"").unwrap().keys.is_empty());
        assert!(KeysFile::parse(&[0xff, 0xfe]).is_err());
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
