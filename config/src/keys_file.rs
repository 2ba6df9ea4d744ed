//! The API-key file an `api_keys` provider names in `keys_file`: its records, its strict reader
//! (every error with a line and column, over the positioned YAML tree of `yaml`) and its writer.
//!
//! `load` reads every keys file with this reader, so `xds-server validate` and a reload refuse a
//! file authz-service could not use; authz-service reads the copy it is sent with the same code,
//! and its `apikey create` / `apikey revoke` write files with [`KeysFile::render`].
//!
//! The format (digests only; keys themselves are never stored):
//!
//! ```yaml
//! version: 1
//! keys:
//!   - id: "partner-a"
//!     sha256: "9f86d0…"                  # 64 hex digits: the SHA-256 of the key
//!     plan: "pro"                        # optional
//!     roles: ["reader"]                  # optional
//!     scopes: ["orders:read"]            # optional
//!     tenant: "acme"                     # optional
//!     created: "2026-01-01T00:00:00Z"
//!     expires: "2026-04-01T00:00:00Z"   # optional
//!     revoked: "2026-02-01T00:00:00Z"   # optional
//! ```
//!
//! The writer puts every value in JSON-style quotes, so no YAML surprise can change a value's
//! type. The reader is as strict as gateway.yaml's: an unknown or repeated key and a value of
//! the wrong type are errors, because a lax reader turned hand edits into active keys
//! (`revoked: true`, `expires: 1735689600` and a misspelt `revoke:` all used to be ignored).
//! Text fields take any YAML string, quoted or plain; `sha256` also takes a plain digest that
//! happens to read as a number; times are RFC 3339 strings.

use std::collections::HashSet;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::yaml::{self, Node, Pos, Scalar, Value};

/// The only format version.
pub const VERSION: i64 = 1;

/// Every key a record may have, for "expected one of" messages.
const RECORD_KEYS: [&str; 9] = [
    "id", "sha256", "plan", "roles", "scopes", "tenant", "created", "expires", "revoked",
];

/// A problem in a keys file, at a 1-based line and column of that file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct KeysFileError {
    pub line: usize,
    pub column: usize,
    pub message: String,
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

fn error(pos: Pos, message: impl Into<String>) -> KeysFileError {
    KeysFileError {
        line: pos.line,
        column: pos.column,
        message: message.into(),
    }
}

/// A 1-based line and column in a keys file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub line: usize,
    pub column: usize,
}

impl KeysFile {
    /// Reads a keys file; an empty file (or one of comments only) holds no keys.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeysFileError> {
        Self::parse_located(bytes).map(|(file, _)| file)
    }

    /// [`Self::parse`], also returning where each record's `plan` value is (in record order;
    /// `None` for a record without one), for checks that need more than the file:
    /// `config::load` refuses a plan gateway.yaml does not define, at that position.
    pub fn parse_located(bytes: &[u8]) -> Result<(Self, Vec<Option<At>>), KeysFileError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| error(Pos::START, format!("the keys file is not UTF-8: {e}")))?;
        let root = yaml::parse(text).map_err(|e| error(e.pos, e.message))?;
        let Some(root) = root else {
            return Ok((Self::default(), Vec::new()));
        };
        let mut version = None;
        let mut list: &[Node] = &[];
        for (key, value) in entries(&root, "the keys file", &["version", "keys"])? {
            match key {
                "version" => version = Some(value),
                _ => match &value.value {
                    Value::Seq(items) => list = items,
                    Value::Scalar {
                        kind: Scalar::Null, ..
                    } => {}
                    _ => return Err(expected(value, "keys", "a list")),
                },
            }
        }
        match version.map(|v| &v.value) {
            Some(Value::Scalar {
                kind: Scalar::Int(VERSION),
                ..
            }) => {}
            Some(_) => {
                let v = version.unwrap_or(&root);
                return Err(expected(v, "version", "1"));
            }
            None => return Err(error(root.pos, "expected `version: 1`")),
        }
        let mut keys = Vec::with_capacity(list.len());
        let mut plans = Vec::with_capacity(list.len());
        let mut ids = HashSet::new();
        let mut digests = HashSet::new();
        for (i, node) in list.iter().enumerate() {
            let (rec, plan_at) = record(node, i)?;
            if !ids.insert(rec.id.clone()) {
                return Err(error(
                    node.pos,
                    format!("keys[{i}]: id {:?} is repeated", rec.id),
                ));
            }
            // One key, one record: a second record for the same digest could otherwise undo a
            // revocation (the last record would win the lookup).
            if !digests.insert(rec.sha256) {
                return Err(error(node.pos, format!("keys[{i}]: sha256 is repeated")));
            }
            keys.push(rec);
            plans.push(plan_at);
        }
        Ok((Self { keys }, plans))
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
}

/// A mapping's entries by key, refusing anything but a mapping, keys that are not `allowed`
/// and keys given twice.
fn entries<'n>(
    node: &'n Node,
    what: &str,
    allowed: &[&'static str],
) -> Result<Vec<(&'static str, &'n Node)>, KeysFileError> {
    let Value::Map(map) = &node.value else {
        return Err(error(
            node.pos,
            format!("{what}: expected a mapping; found {}", node.describe()),
        ));
    };
    let mut out: Vec<(&'static str, &Node)> = Vec::with_capacity(map.len());
    for (k, v) in map {
        let name = match &k.value {
            Value::Scalar { text, .. } => text.as_str(),
            _ => return Err(error(k.pos, format!("{what}: keys must be plain names"))),
        };
        let Some(name) = allowed.iter().copied().find(|a| *a == name) else {
            return Err(error(
                k.pos,
                format!(
                    "{what}: unknown key `{name}`; expected one of: {}",
                    allowed.join(", ")
                ),
            ));
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(error(k.pos, format!("{what}: `{name}` is given twice")));
        }
        out.push((name, v));
    }
    Ok(out)
}

fn expected(node: &Node, what: &str, want: &str) -> KeysFileError {
    error(
        node.pos,
        format!("{what}: expected {want}; found {}", node.describe()),
    )
}

/// A YAML string (quoted or plain), never a number, boolean or empty value.
fn string<'n>(node: &'n Node, what: &str) -> Result<&'n str, KeysFileError> {
    match &node.value {
        Value::Scalar {
            text,
            kind: Scalar::Str | Scalar::Quoted,
        } => Ok(text),
        _ => Err(expected(node, what, "a string")),
    }
}

/// Text that becomes an upstream header value (ids, plans and tenants).
fn header_text(node: &Node, what: &str) -> Result<String, KeysFileError> {
    let s = string(node, what)?;
    if s.chars().any(char::is_control) {
        return Err(error(
            node.pos,
            format!("{what} contains control characters"),
        ));
    }
    Ok(s.to_string())
}

fn strings(node: &Node, what: &str) -> Result<Vec<String>, KeysFileError> {
    let Value::Seq(items) = &node.value else {
        return Err(expected(node, what, "a list of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, n)| string(n, &format!("{what}[{i}]")).map(str::to_string))
        .collect()
}

fn time(node: &Node, what: &str) -> Result<i64, KeysFileError> {
    let s = match &node.value {
        Value::Scalar {
            text,
            kind: Scalar::Str | Scalar::Quoted,
        } => text,
        _ => {
            return Err(expected(
                node,
                what,
                "an RFC 3339 time such as \"2026-01-01T00:00:00Z\"",
            ))
        }
    };
    parse_time(s).ok_or_else(|| error(node.pos, format!("{what} is not an RFC 3339 time")))
}

/// One record, and where its `plan` value is.
fn record(node: &Node, i: usize) -> Result<(KeyRecord, Option<At>), KeysFileError> {
    let what = format!("keys[{i}]");
    let fields = entries(node, &what, &RECORD_KEYS)?;
    let at = |name: &str| format!("{what}.{name}");
    let mut rec = KeyRecord {
        id: String::new(),
        sha256: [0; 32],
        plan: String::new(),
        roles: Vec::new(),
        scopes: Vec::new(),
        tenant: String::new(),
        created: 0,
        expires: None,
        revoked: None,
    };
    let mut plan_at = None;
    for required in ["id", "sha256"] {
        if !fields.iter().any(|(n, _)| *n == required) {
            return Err(error(node.pos, format!("{what}: missing {required}")));
        }
    }
    for (name, v) in fields {
        match name {
            "id" => {
                rec.id = header_text(v, &at(name))?;
                if rec.id.is_empty() {
                    return Err(error(v.pos, format!("{} is empty", at(name))));
                }
            }
            "sha256" => {
                // A digest of decimal digits only would read as a number when unquoted.
                let hex = match &v.value {
                    Value::Scalar {
                        text,
                        kind: Scalar::Str | Scalar::Quoted | Scalar::Int(_) | Scalar::Float(_),
                    } => text,
                    _ => return Err(expected(v, &at(name), "64 hex digits")),
                };
                hex::decode_to_slice(hex, &mut rec.sha256)
                    .map_err(|_| error(v.pos, format!("{} must be 64 hex digits", at(name))))?;
            }
            "plan" => {
                rec.plan = header_text(v, &at(name))?;
                plan_at = Some(At {
                    line: v.pos.line,
                    column: v.pos.column,
                });
            }
            "tenant" => rec.tenant = header_text(v, &at(name))?,
            "roles" => rec.roles = strings(v, &at(name))?,
            "scopes" => rec.scopes = strings(v, &at(name))?,
            "created" => rec.created = time(v, &at(name))?,
            "expires" => rec.expires = Some(time(v, &at(name))?),
            _ => rec.revoked = Some(time(v, &at(name))?),
        }
    }
    Ok((rec, plan_at))
}

/// An RFC 3339 time as seconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Seconds since the epoch as RFC 3339 (UTC).
pub fn format_time(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn parse(src: &str) -> Result<KeysFile, KeysFileError> {
        KeysFile::parse(src.as_bytes())
    }

    #[test]
    fn what_the_writer_writes_reads_back() {
        let file = KeysFile {
            keys: vec![KeyRecord {
                id: "a \"quoted\": id".into(),
                sha256: [7; 32],
                plan: "pro".into(),
                roles: vec!["reader".into(), "a: role".into()],
                scopes: vec!["read".into()],
                tenant: "acme".into(),
                created: 1_700_000_000,
                expires: Some(1_800_000_000),
                revoked: Some(1_750_000_000),
            }],
        };
        assert_eq!(parse(&file.render()).unwrap(), file);
        assert_eq!(
            parse(&KeysFile::default().render()).unwrap(),
            KeysFile::default()
        );
        assert!(parse("").unwrap().keys.is_empty());
        assert!(parse("# nothing yet\n").unwrap().keys.is_empty());
        // Plain strings are strings; so is a plain time (YAML 1.2 has no timestamp type).
        let plain = parse(&format!(
            "version: 1\nkeys:\n  - {{ id: a, sha256: {DIGEST}, plan: free, created: 2026-01-01T00:00:00Z }}\n"
        ))
        .unwrap();
        assert_eq!(plain.keys[0].created, 1_767_225_600);
    }

    #[test]
    fn hand_edits_of_the_wrong_type_or_name_are_errors_with_positions() {
        let head = format!("version: 1\nkeys:\n  - id: \"a\"\n    sha256: \"{DIGEST}\"\n");
        for (line, why) in [
            (
                "    revoked: true\n",
                "keys[0].revoked: expected an RFC 3339 time",
            ),
            (
                "    expires: 1735689600\n",
                "keys[0].expires: expected an RFC 3339 time",
            ),
            (
                "    revoke: \"2026-01-01T00:00:00Z\"\n",
                "unknown key `revoke`",
            ),
            ("    revoked:\n", "found an empty value"),
            (
                "    roles: reader\n",
                "keys[0].roles: expected a list of strings",
            ),
            ("    roles: [1]\n", "keys[0].roles[0]: expected a string"),
            ("    plan: 3\n", "keys[0].plan: expected a string"),
            ("    id: \"b\"\n", "`id` is given twice"),
        ] {
            let e = parse(&format!("{head}{line}")).unwrap_err();
            assert_eq!(e.line, 5, "{line}: {e}");
            assert!(e.message.contains(why), "{line}: {e}");
        }
        let e = parse("version: 1\nkey: []\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("unknown key `key`"), "{e}");
    }

    #[test]
    fn plans_are_located() {
        let (file, at) = KeysFile::parse_located(
            format!("version: 1\nkeys:\n  - id: a\n    sha256: \"{DIGEST}\"\n    plan:   gold\n  - {{ id: b, sha256: \"{}\" }}\n", "1".repeat(64)).as_bytes(),
        )
        .unwrap();
        assert_eq!(file.keys[0].plan, "gold");
        assert_eq!(
            at,
            [
                Some(At {
                    line: 5,
                    column: 13
                }),
                None
            ]
        );
    }

    #[test]
    fn bad_files_are_refused() {
        for (src, why) in [
            ("version: 2\nkeys: []\n", "version"),
            ("version: \"1\"\nkeys: []\n", "version"),
            ("keys: []\n", "version: 1"),
            ("version: 1\nkeys: {}\n", "list"),
            ("version: 1\nkeys:\n  - { sha256: \"00\" }\n", "missing id"),
            ("version: 1\nkeys:\n  - { id: a, sha256: \"zz\" }\n", "hex"),
            ("version: 1\nkeys:\n  - { id: \"\", sha256: \"zz\" }\n", "empty"),
            (
                &format!("version: 1\nkeys:\n  - {{ id: a, sha256: \"{DIGEST}\", created: yesterday }}\n"),
                "RFC 3339",
            ),
            (
                &format!("version: 1\nkeys:\n  - {{ id: a, sha256: \"{DIGEST}\" }}\n  - {{ id: a, sha256: \"{DIGEST}\" }}\n"),
                "repeated",
            ),
            (
                &format!("version: 1\nkeys:\n  - {{ id: a, sha256: \"{DIGEST}\" }}\n  - {{ id: b, sha256: \"{DIGEST}\" }}\n"),
                "sha256 is repeated",
            ),
            ("version: 1\nkeys:\n  - { id: \"a\\nb\", sha256: \"00\" }\n", "control characters"),
            ("version: [\n", "invalid YAML"),
            ("- 1\n", "expected a mapping"),
        ] {
            let e = parse(src).unwrap_err().to_string();
            assert!(e.contains(why), "{src}: {e}");
        }
        assert!(KeysFile::parse(&[0xff, 0xfe]).is_err());
    }
}
