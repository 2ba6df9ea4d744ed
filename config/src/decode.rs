//! Decoding the positioned YAML tree into the typed [`model`](super::model), with validation.
//!
//! Decoding never stops at the first problem: every function records what it finds wrong and
//! returns `None` for a value it could not build, and its callers carry on with their siblings,
//! so one run reports everything a user has to fix. Cross references (services, providers,
//! plans) are checked against the *names* declared in the file, collected before decoding, so
//! that a mistake inside a service body does not also produce "unknown service" on every route
//! that uses it.
//!
//! An error reports its root cause, not its consequences: an unknown key, or name, that is close
//! to a valid one says "did you mean …?", and then what its absence would also cause is not
//! reported. A route with `servce: users` gets one error, the unknown key with its suggestion,
//! not a second one for the missing action; a misspelt `servces:` section still declares its
//! names, so the routes that name them do not each report an unknown service. Without a close
//! match, both the unknown key and the missing one are reported, in source order.
//!
//! What is valid but probably not meant becomes a warning: a header mapping entry named like a
//! key of the mapping that holds it (`plan_claim: tier` indented under a JWT provider's
//! `headers:`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::describe::{self as d, one_of, Object};
use super::grammar;
use super::model::*;
use super::suggest::{closest, did_you_mean};
use super::yaml::{Node, Pos, Scalar, Value};

/// A file the config names, and where, so the loader can position a read error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: PathBuf,
    pub pos: Pos,
    /// The key that named it, e.g. `cert_file`.
    pub key: &'static str,
    /// For a `grpc.transcode.descriptor`: the services the route names in it, and where, so
    /// the loader can check each against the file.
    pub services: Vec<(String, Pos)>,
}

/// A problem, before the file name is attached.
pub type Problem = (Pos, String);

/// A valid configuration, what it names, and what in it is valid but probably not meant.
pub struct Decoded {
    pub config: Config,
    pub files: Vec<FileRef>,
    /// Warnings, in the order found (the caller sorts them).
    pub warnings: Vec<Problem>,
}

/// Decodes and validates `root`. Relative paths are joined onto `base_dir`.
pub fn decode(root: Option<&Node>, base_dir: &Path) -> Result<Decoded, Vec<Problem>> {
    let mut cx = Ctx::new(base_dir);
    let config = cx.config(root);
    match config {
        Some(config) if cx.problems.is_empty() => Ok(Decoded {
            config,
            files: cx.files,
            warnings: cx.warnings,
        }),
        _ => {
            if cx.problems.is_empty() {
                // Every path that returns None records why; this guards against a future slip.
                cx.problems
                    .push((Pos::START, "invalid configuration".to_string()));
            }
            Err(cx.problems)
        }
    }
}

/// What an absent `circuit_breaker` stands for: its described default, decoded like a user's.
pub(crate) fn default_circuit_breaker() -> Option<CircuitBreaker> {
    let node = d::SERVICE.default_node("circuit_breaker")?;
    Ctx::new(Path::new("")).circuit_breaker(node, "circuit_breaker")
}

struct Ctx<'a> {
    base_dir: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    files: Vec<FileRef>,
    /// Names declared in the file, collected up front (see the module comment).
    services: BTreeSet<String>,
    jwt: BTreeSet<String>,
    api_keys: BTreeSet<String>,
    mtls: BTreeSet<String>,
    /// `rate_limits.plans` names, for the plans `auth.mtls` providers name.
    plan_names: BTreeSet<String>,
    /// While a gateway's routes are decoded: whether it has a listener with `client_ca_file`
    /// (true when its listeners did not decode, so their error is not repeated at every route).
    client_ca_listener: bool,
    has_rate_limits: bool,
    /// `rate_limits.counted_by: authz-service` (known before the gateways are decoded).
    counted_by_authz: bool,
    /// Route name → where it was first defined; names are unique across all gateways.
    route_names: HashMap<String, Pos>,
    /// Every JWT provider's claim header, known once `auth.jwt` is decoded.
    claim_headers: BTreeSet<String>,
    /// The `lb` of every service that decoded (services decode before gateways); `affinity`
    /// is checked against it.
    service_lbs: BTreeMap<String, LbPolicy>,
    /// The `protocol` of every service that decoded; `grpc` is checked against it.
    service_protocols: BTreeMap<String, Protocol>,
}

/// A mapping's entries with string keys, duplicates and unknown keys already reported.
struct Fields<'n> {
    pos: Pos,
    entries: Vec<Entry<'n>>,
    /// What the mapping is, for its keys' types and defaults.
    object: &'static Object,
    /// The keys of `object` that unknown keys of the mapping are misspellings of.
    misspelt: Vec<&'static str>,
}

#[derive(Clone, Copy)]
struct Entry<'n> {
    key: &'n str,
    key_pos: Pos,
    value: &'n Node,
}

impl<'n> Fields<'n> {
    fn entry(&self, key: &str) -> Option<Entry<'n>> {
        self.entries.iter().find(|e| e.key == key).copied()
    }

    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entry(key).map(|e| e.value)
    }

    /// True when an unknown key of the mapping is a misspelling of one of `keys`: what their
    /// absence causes is then not reported, as the unknown key's error names the fix.
    fn misspells(&self, keys: &[&str]) -> bool {
        self.misspelt.iter().any(|m| keys.contains(m))
    }

    /// The key's value, or when absent its described default: decoded by the same code either
    /// way, so a default is exactly what writing it would give.
    fn value(&self, key: &str) -> Option<&'n Node> {
        self.get(key).or_else(|| {
            let default = self.object.default_node(key);
            // Asking for the default of a key described without one is a slip in this file;
            // in a release build the configuration is reported invalid instead.
            debug_assert!(
                default.is_some(),
                "{}.{key} has no default in the description",
                self.object.title
            );
            default
        })
    }

    /// The key's integer bounds (`0..=u32::MAX` for a key described otherwise).
    fn bounds(&self, key: &str) -> (i64, i64) {
        match self.object.key(key).map(|k| &k.ty) {
            Some(d::Ty::Int { min, max }) => (*min, *max),
            _ => (0, d::U32_MAX),
        }
    }
}

fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| s.as_ref().to_string()).collect();
    if items.is_empty() {
        "(none defined)".to_string()
    } else {
        items.join(", ")
    }
}

/// Looks a key up without reporting anything; used to collect declared names up front.
fn child<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// The key of `object` that `unknown`, a key `object` does not have, most likely misspells.
fn misspelling(object: &'static Object, unknown: &str) -> Option<&'static str> {
    closest(unknown, object.key_names())
}

/// What the keys of `object.one_of` stand for, as "missing …" names it.
fn group_name(object: &'static Object) -> &'static str {
    if std::ptr::eq(object, &d::ROUTE) {
        "the action"
    } else if std::ptr::eq(object, &d::ROUTE_MATCH) {
        "the path condition"
    } else if std::ptr::eq(object, &d::JWT_PROVIDER) {
        "the signing keys"
    } else {
        "one of its keys"
    }
}

/// The value of `key` in `node`, a mapping of `object`, or when `key` is absent, the value of an
/// unknown key that misspells it. Declared names are collected through this, so that a misspelt
/// section is reported once, as an unknown key, and not again at every reference to its entries.
fn declared<'n>(node: Option<&'n Node>, key: &str, object: &'static Object) -> Option<&'n Node> {
    let Value::Map(entries) = &node?.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .or_else(|| {
            entries.iter().find(|(k, _)| {
                k.as_text()
                    .is_some_and(|t| object.key(t).is_none() && misspelling(object, t) == Some(key))
            })
        })
        .map(|(_, v)| v)
}

fn keys_of(node: Option<&Node>) -> BTreeSet<String> {
    match node.map(|n| &n.value) {
        Some(Value::Map(entries)) => entries
            .iter()
            .filter_map(|(k, _)| k.as_text().map(str::to_string))
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// Collects `Some` values, remembering whether any item failed.
struct All<T> {
    items: Vec<T>,
    ok: bool,
}

impl<T> All<T> {
    fn new() -> Self {
        Self {
            items: Vec::new(),
            ok: true,
        }
    }

    fn push(&mut self, item: Option<T>) {
        match item {
            Some(v) => self.items.push(v),
            None => self.ok = false,
        }
    }

    fn finish(self) -> Option<Vec<T>> {
        self.ok.then_some(self.items)
    }
}

impl<'a> Ctx<'a> {
    fn new(base_dir: &'a Path) -> Self {
        Ctx {
            base_dir,
            problems: Vec::new(),
            warnings: Vec::new(),
            files: Vec::new(),
            services: BTreeSet::new(),
            jwt: BTreeSet::new(),
            api_keys: BTreeSet::new(),
            mtls: BTreeSet::new(),
            plan_names: BTreeSet::new(),
            client_ca_listener: true,
            has_rate_limits: false,
            counted_by_authz: false,
            route_names: HashMap::new(),
            claim_headers: BTreeSet::new(),
            service_lbs: BTreeMap::new(),
            service_protocols: BTreeMap::new(),
        }
    }

    fn problem(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push((pos, message.into()));
    }

    fn expected(&mut self, node: &Node, what: &str, expected: &str) {
        let found = node.describe();
        let hint = match &node.value {
            Value::Scalar {
                kind: Scalar::Quoted,
                text,
            } if expected.contains("integer") && text.parse::<i64>().is_ok() => {
                " (write numbers without quotes)"
            }
            _ => "",
        };
        self.problem(
            node.pos,
            format!("{what}: expected {expected}, found {found}{hint}"),
        );
    }

    // ---- generic shapes -------------------------------------------------------------------

    /// A mapping with text keys; reports non-text and duplicate keys (keeping the first).
    fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<Vec<Entry<'n>>> {
        let Value::Map(raw) = &node.value else {
            self.expected(node, what, "a mapping");
            return None;
        };
        let mut entries: Vec<Entry<'n>> = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            let Some(key) = k
                .as_text()
                .filter(|_| !matches!(k.value, Value::Seq(_) | Value::Map(_)))
            else {
                self.expected(k, &format!("a key in {what}"), "a name");
                continue;
            };
            if let Some(first) = entries.iter().find(|e| e.key == key) {
                let line = first.key_pos.line;
                self.problem(
                    k.pos,
                    format!("{what}: duplicate key `{key}` (first given on line {line})"),
                );
                continue;
            }
            entries.push(Entry {
                key,
                key_pos: k.pos,
                value: v,
            });
        }
        Some(entries)
    }

    /// A mapping of `object`: reports unknown keys, with the key each one most likely misspells,
    /// and then what the mapping lacks.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        object: &'static Object,
    ) -> Option<Fields<'n>> {
        let entries = self.map(node, what)?;
        let mut known = Vec::with_capacity(entries.len());
        let mut misspelt = Vec::new();
        for e in entries {
            if object.key(e.key).is_some() {
                known.push(e);
                continue;
            }
            let suggestion = misspelling(object, e.key);
            misspelt.extend(suggestion);
            let allowed: Vec<&str> = object.key_names().collect();
            self.problem(
                e.key_pos,
                format!(
                    "{what}: unknown key `{}`{}; expected one of: {}",
                    e.key,
                    did_you_mean(suggestion),
                    allowed.join(", ")
                ),
            );
        }
        let f = Fields {
            pos: node.pos,
            entries: known,
            object,
            misspelt,
        };
        self.check_required(&f, what);
        Some(f)
    }

    /// Reports every key, or group of keys of which one is required, that `f` lacks, all at the
    /// mapping and in the order the description lists them: a mapping that lacks several things
    /// always lists them the same way, as a user would write them. An absence that a misspelt key
    /// explains is left to that key's error.
    fn check_required(&mut self, f: &Fields<'_>, what: &str) {
        let group = f.object.one_of;
        for (i, key) in f.object.keys.iter().enumerate() {
            let first_of_group = group.contains(&key.name)
                && !f.object.keys[..i].iter().any(|k| group.contains(&k.name));
            if first_of_group {
                if group.iter().all(|k| f.get(k).is_none()) && !f.misspells(group) {
                    self.problem(
                        f.pos,
                        format!(
                            "{what}: missing {}; give exactly one of {}",
                            group_name(f.object),
                            one_of(group)
                        ),
                    );
                }
                continue;
            }
            if f.get(key.name).is_some() || f.misspells(&[key.name]) {
                continue;
            }
            match key.absent {
                d::Absent::Required => self.problem(
                    f.pos,
                    format!("{what}: missing required key `{}`", key.name),
                ),
                d::Absent::RequiredExplained => {
                    let message = self.absence_explained(f.object, key.name, what);
                    self.problem(f.pos, message);
                }
                d::Absent::Nothing | d::Absent::Default(_) => {}
            }
        }
    }

    /// Why a key described as [`d::Absent::RequiredExplained`] must be given, and how.
    fn absence_explained(&self, object: &'static Object, key: &str, what: &str) -> String {
        if std::ptr::eq(object, &d::ROUTE) && key == "auth" {
            let names = self.provider_names();
            return format!(
                "{what}: missing required key `auth`; write \
                    `auth: none` explicitly to make the route \
                    public, or name the providers that may \
                    authenticate it (defined providers: {}). A route \
                    without `auth` is an error so that a forgotten \
                    line cannot open an endpoint",
                list(names)
            );
        }
        format!("{what}: missing required key `{key}`")
    }

    /// At most one of `keys`; reports the second and later ones. Returns the first present.
    fn at_most_one<'n>(&mut self, f: &Fields<'n>, keys: &[&str], what: &str) -> Option<Entry<'n>> {
        let present: Vec<Entry<'n>> = f
            .entries
            .iter()
            .filter(|e| keys.contains(&e.key))
            .copied()
            .collect();
        for extra in present.iter().skip(1) {
            self.problem(
                extra.key_pos,
                format!(
                    "{what}: `{}` cannot be combined with `{}`; give exactly one of {}",
                    extra.key,
                    present[0].key,
                    one_of(keys)
                ),
            );
        }
        present.first().copied()
    }

    fn seq<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.expected(node, what, "a list");
                None
            }
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.as_text() {
            Some(s) if !matches!(node.value, Value::Seq(_) | Value::Map(_)) => Some(s.to_string()),
            _ => {
                self.expected(node, what, "a string");
                None
            }
        }
    }

    fn nonempty(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what)?;
        if s.is_empty() {
            self.expected(node, what, "a non-empty string");
            return None;
        }
        Some(s)
    }

    fn strings(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        let items = self.seq(node, what)?;
        let mut all = All::new();
        for item in items {
            let s = self.nonempty(item, &format!("an entry of {what}"));
            all.push(s);
        }
        all.finish()
    }

    fn int(&mut self, node: &Node, what: &str) -> Option<i64> {
        match &node.value {
            Value::Scalar {
                kind: Scalar::Int(i),
                ..
            } => Some(*i),
            _ => {
                self.expected(node, what, "an integer");
                None
            }
        }
    }

    /// An integer in `lo..=hi`, converted to the field's type.
    fn int_in<T: TryFrom<i64>>(&mut self, node: &Node, what: &str, lo: i64, hi: i64) -> Option<T> {
        let i = self.int(node, what)?;
        if i < lo || i > hi {
            self.expected(node, what, &format!("an integer in {lo}..={hi}"));
            return None;
        }
        T::try_from(i).ok()
    }

    /// An integer key, its value or default, within its described bounds.
    fn int_key<T: TryFrom<i64>>(&mut self, f: &Fields<'_>, key: &str, what: &str) -> Option<T> {
        let (lo, hi) = f.bounds(key);
        let n = f.value(key)?;
        self.int_in(n, &format!("{what}.{key}"), lo, hi)
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar {
                kind: Scalar::Bool(b),
                ..
            } => Some(*b),
            _ => {
                self.expected(node, what, "true or false");
                None
            }
        }
    }

    /// [`Self::expected`] for a value that must be one of `words`: a string close to one of
    /// them gets "did you mean …?".
    fn expected_word(&mut self, node: &Node, what: &str, expected: &str, words: &[&str]) {
        let suggestion = match &node.value {
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } => closest(text, words.iter().copied()),
            _ => None,
        };
        match suggestion {
            None => self.expected(node, what, expected),
            Some(_) => self.problem(
                node.pos,
                format!(
                    "{what}: expected {expected}, found {}{}",
                    node.describe(),
                    did_you_mean(suggestion)
                ),
            ),
        }
    }

    fn choice<T: Copy>(&mut self, node: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let found = match &node.value {
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } => options
                .iter()
                .find(|(name, _)| name == text)
                .map(|(_, v)| *v),
            _ => None,
        };
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            let expected = format!("one of {}", names.join(" | "));
            self.expected_word(node, what, &expected, &names);
        }
        found
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let parsed = match &node.value {
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } => grammar::duration(text),
            _ => None,
        };
        if parsed.is_none() {
            let fractional =
                matches!(&node.value, Value::Scalar { text, .. } if text.contains('.'));
            if fractional {
                let found = node.describe();
                self.problem(
                    node.pos,
                    format!(
                        "{what}: expected {}, found {found} (whole \
                            numbers only: write 1500ms rather than 1.5s)",
                        grammar::DURATION_HINT
                    ),
                );
            } else if matches!(
                node.value,
                Value::Scalar {
                    kind: Scalar::Int(_),
                    ..
                }
            ) {
                let found = node.describe();
                self.problem(
                    node.pos,
                    format!(
                        "{what}: expected {}, found {found} (a unit is required, e.g. 5s)",
                        grammar::DURATION_HINT
                    ),
                );
            } else {
                self.expected(node, what, grammar::DURATION_HINT);
            }
        }
        parsed
    }

    /// Timeouts and intervals: zero would mean "never" or "always" to Envoy, never what a
    /// user meant.
    fn positive_duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let d = self.duration(node, what)?;
        if d.is_zero() {
            self.problem(
                node.pos,
                format!(
                    "{what}: must be longer than zero, found {}",
                    node.describe()
                ),
            );
            return None;
        }
        Some(d)
    }

    /// A duration key, its value or default; longer than zero where it is described so.
    fn duration_key(&mut self, f: &Fields<'_>, key: &str, what: &str) -> Option<Duration> {
        let n = f.value(key)?;
        let w = format!("{what}.{key}");
        match f.object.key(key).map(|k| &k.ty) {
            Some(d::Ty::Fmt(fmt)) if fmt.name == d::POSITIVE_DURATION.name => {
                self.positive_duration(n, &w)
            }
            _ => self.duration(n, &w),
        }
    }

    /// An enumerated key, its value or default, from the table the description names.
    fn choice_key<T: Copy>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let n = f.value(key)?;
        self.choice(n, &format!("{what}.{key}"), options)
    }

    fn rate(&mut self, node: &Node, what: &str) -> Option<Rate> {
        let parsed = match &node.value {
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } => grammar::rate(text),
            _ => Err("not a string".to_string()),
        };
        match parsed {
            Ok(r) => Some(r),
            Err(why) => {
                let found = node.describe();
                self.problem(
                    node.pos,
                    format!(
                        "{what}: expected {}, found {found}: {why}",
                        grammar::RATE_HINT
                    ),
                );
                None
            }
        }
    }

    /// A request-body limit in bytes: a plain integer or a [`grammar::size`]; at least one byte
    /// and at most what Envoy's 32-bit limit holds.
    fn size(&mut self, node: &Node, what: &str) -> Option<u32> {
        let bytes = match &node.value {
            Value::Scalar {
                kind: Scalar::Int(i),
                ..
            } => u64::try_from(*i).ok(),
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } => grammar::size(text),
            _ => None,
        };
        match bytes {
            Some(0) | None => {
                self.expected(node, what, grammar::SIZE_HINT);
                None
            }
            Some(b) => match u32::try_from(b) {
                Ok(b) => Some(b),
                Err(_) => {
                    self.problem(
                        node.pos,
                        format!(
                            "{what}: at most {} bytes (just under 4GiB), found {}",
                            u32::MAX,
                            node.describe()
                        ),
                    );
                    None
                }
            },
        }
    }

    /// A non-empty list of [`grammar::cidr`]s, each error at its entry. An empty list is refused:
    /// it could mean "nobody" as well as "anybody".
    fn cidrs(&mut self, node: &Node, what: &str) -> Option<Vec<Cidr>> {
        let items = self.seq(node, what)?;
        if items.is_empty() {
            self.expected(
                node,
                what,
                "a non-empty list of CIDRs (omit the key for no list)",
            );
            return None;
        }
        let mut all = All::new();
        for item in items {
            let c = match &item.value {
                Value::Scalar {
                    text,
                    kind: Scalar::Str | Scalar::Quoted,
                } => match grammar::cidr(text) {
                    Ok(c) => Some(c),
                    Err(why) => {
                        self.problem(
                            item.pos,
                            format!(
                                "{what}: expected {}, found {}: {why}",
                                grammar::CIDR_HINT,
                                item.describe()
                            ),
                        );
                        None
                    }
                },
                _ => {
                    self.expected(item, what, grammar::CIDR_HINT);
                    None
                }
            };
            all.push(c);
        }
        all.finish()
    }

    fn host_port(&mut self, node: &Node, what: &str) -> Option<HostPort> {
        let s = self.string(node, what)?;
        match grammar::host_port(&s) {
            Ok(hp) => Some(hp),
            Err(why) => {
                self.problem(
                    node.pos,
                    format!("{what}: expected host:port (IPv6 as [::1]:80), found \"{s}\": {why}"),
                );
                None
            }
        }
    }

    /// A path relative to the config file's directory, made absolute and remembered for the
    /// loader.
    fn file_path(&mut self, node: &Node, what: &str, key: &'static str) -> Option<PathBuf> {
        let s = self.nonempty(node, what)?;
        let path = self.base_dir.join(s);
        self.files.push(FileRef {
            path: path.clone(),
            pos: node.pos,
            key,
            services: Vec::new(),
        });
        Some(path)
    }

    fn header_name(&mut self, name: &str, pos: Pos, what: &str) -> Option<String> {
        if grammar::is_token(name) {
            Some(name.to_ascii_lowercase())
        } else {
            self.problem(
                pos,
                format!(
                    "{what}: `{name}` is not a valid HTTP header name \
                        (letters, digits and !#$%&'*+-.^_`|~ only)"
                ),
            );
            None
        }
    }

    fn header_names(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        let items = self.seq(node, what)?;
        let mut all = All::new();
        for item in items {
            let name = self
                .string(item, what)
                .and_then(|s| self.header_name(&s, item.pos, what));
            all.push(name);
        }
        all.finish()
    }

    fn methods(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        let items = self.seq(node, what)?;
        let mut all = All::new();
        for item in items {
            let m = self.string(item, what).and_then(|s| {
                if grammar::is_token(&s) {
                    Some(s.to_ascii_uppercase())
                } else {
                    self.expected(
                        item,
                        what,
                        "an HTTP method such as GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
                    );
                    None
                }
            });
            all.push(m);
        }
        all.finish()
    }

    fn regex(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what)?;
        // Envoy uses RE2; regex-syntax accepts the same syntax for everything gateway configs
        // use (it also rejects backreferences and lookaround, as RE2 does).
        match regex_syntax::parse(&s) {
            Ok(_) => Some(s),
            Err(e) => {
                let why = match &e {
                    regex_syntax::Error::Parse(e) => e.kind().to_string(),
                    regex_syntax::Error::Translate(e) => e.kind().to_string(),
                    _ => e.to_string(),
                };
                self.problem(
                    node.pos,
                    format!("{what}: invalid regular expression \"{s}\": {why}"),
                );
                None
            }
        }
    }

    fn url_path(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what)?;
        if !s.starts_with('/') {
            self.expected(node, what, "a path starting with `/`");
            return None;
        }
        Some(s)
    }

    // ---- the file -------------------------------------------------------------------------

    fn config(&mut self, root: Option<&Node>) -> Option<Config> {
        let Some(root) = root else {
            self.problem(
                Pos::START,
                "the file is empty; expected a mapping with at least `version: 1`",
            );
            return None;
        };
        let f = self.fields(root, "the top level", &d::TOP)?;

        let version = f.get("version").and_then(|n| {
            let v = self.int(n, "version")?;
            if v != 1 {
                self.problem(
                    n.pos,
                    format!("version: expected 1 (the only supported version), found {v}"),
                );
                return None;
            }
            Some(1)
        });

        let top = Some(root);
        self.services = keys_of(declared(top, "services", &d::TOP));
        let auth_names = declared(top, "auth", &d::TOP);
        self.jwt = keys_of(declared(auth_names, "jwt", &d::AUTH));
        self.api_keys = keys_of(declared(auth_names, "api_keys", &d::AUTH));
        self.mtls = keys_of(declared(auth_names, "mtls", &d::AUTH));
        let limits_names = declared(top, "rate_limits", &d::TOP);
        self.plan_names = keys_of(declared(limits_names, "plans", &d::RATE_LIMITS));
        self.has_rate_limits = declared(top, "rate_limits", &d::TOP).is_some();

        let auth_node = f.get("auth");
        let services = match f.get("services") {
            None => Some(BTreeMap::new()),
            Some(n) => self.services(n),
        };
        if let Some(services) = &services {
            self.service_lbs = services.iter().map(|(n, s)| (n.clone(), s.lb)).collect();
            self.service_protocols = services
                .iter()
                .map(|(n, s)| (n.clone(), s.protocol))
                .collect();
        }
        let auth = match auth_node {
            None => Some(None),
            Some(n) => self.auth(n).map(Some),
        };
        let rate_limits = match f.get("rate_limits") {
            None => Some(None),
            Some(n) => self.rate_limits(n).map(Some),
        };
        let gateways = match f.get("gateways") {
            None => Some(BTreeMap::new()),
            Some(n) => self.gateways(n),
        };
        let transform_service = f.value("transforms").and_then(|n| {
            let tf = self.fields(n, "transforms", &d::TRANSFORMS)?;
            let s = tf.value("service")?;
            self.transform_service(s, "transforms.service")
        });
        Some(Config {
            version: version?,
            services: services?,
            auth: auth?,
            rate_limits: rate_limits?,
            gateways: gateways?,
            transform_service: transform_service?,
        })
    }

    fn transform_service(&mut self, node: &Node, what: &str) -> Option<TransformService> {
        let f = self.fields(node, what, &d::TRANSFORM_SERVICE)?;
        let address = f
            .value("address")
            .and_then(|n| self.host_port(n, &format!("{what}.address")));
        let timeout = self.duration_key(&f, "timeout", what);
        let tls = match f.get("tls") {
            None => Some(None),
            Some(n) => self.upstream_tls(n, &format!("{what}.tls")).map(Some),
        };
        Some(TransformService {
            address: address?,
            timeout: timeout?,
            tls: tls?,
        })
    }

    // ---- services -------------------------------------------------------------------------

    fn services(&mut self, node: &Node) -> Option<BTreeMap<String, Service>> {
        let entries = self.map(node, "services")?;
        let mut all = All::new();
        for e in entries {
            if self.reserved_name(e.key, e.key_pos, "services") {
                all.push(None);
                continue;
            }
            let s = self.service(e.key, e.value);
            all.push(s.map(|s| (e.key.to_string(), s)));
        }
        all.finish().map(|v| v.into_iter().collect())
    }

    fn service(&mut self, name: &str, node: &Node) -> Option<Service> {
        let what = format!("services.{name}");
        let f = self.fields(node, &what, &d::SERVICE)?;
        let endpoints = f.get("endpoints").and_then(|n| {
            let w = format!("{what}.endpoints");
            let items = self.seq(n, &w)?;
            if items.is_empty() {
                self.problem(
                    n.pos,
                    format!("{w}: expected at least one host:port, found an empty list"),
                );
                return None;
            }
            let mut all = All::new();
            for item in items {
                let hp = self.host_port(item, &w);
                all.push(hp);
            }
            all.finish()
        });
        let protocol = self.choice_key(&f, "protocol", &what, &d::PROTOCOLS);
        let lb = self.choice_key(&f, "lb", &what, &d::LB_POLICIES);
        let connect_timeout = self.duration_key(&f, "connect_timeout", &what);
        let health_check = match f.get("health_check") {
            None => Some(None),
            Some(n) => self
                .health_check(n, &format!("{what}.health_check"))
                .map(Some),
        };
        let circuit_breaker = f
            .value("circuit_breaker")
            .and_then(|n| self.circuit_breaker(n, &format!("{what}.circuit_breaker")));
        let outlier_detection = match f.get("outlier_detection") {
            None => Some(None),
            Some(n) => self
                .outlier_detection(n, &format!("{what}.outlier_detection"))
                .map(Some),
        };
        let tls = match f.get("tls") {
            None => Some(None),
            Some(n) => self.upstream_tls(n, &format!("{what}.tls")).map(Some),
        };
        Some(Service {
            endpoints: endpoints?,
            protocol: protocol?,
            lb: lb?,
            connect_timeout: connect_timeout?,
            health_check: health_check?,
            circuit_breaker: circuit_breaker?,
            outlier_detection: outlier_detection?,
            tls: tls?,
        })
    }

    fn health_check(&mut self, node: &Node, what: &str) -> Option<HealthCheck> {
        let f = self.fields(node, what, &d::HEALTH_CHECK)?;
        let path = f
            .get("path")
            .and_then(|n| self.url_path(n, &format!("{what}.path")));
        let interval = self.duration_key(&f, "interval", what);
        let timeout = self.duration_key(&f, "timeout", what);
        let healthy = self.int_key(&f, "healthy", what);
        let unhealthy = self.int_key(&f, "unhealthy", what);
        Some(HealthCheck {
            path: path?,
            interval: interval?,
            timeout: timeout?,
            healthy: healthy?,
            unhealthy: unhealthy?,
        })
    }

    fn circuit_breaker(&mut self, node: &Node, what: &str) -> Option<CircuitBreaker> {
        let f = self.fields(node, what, &d::CIRCUIT_BREAKER)?;
        let max_connections = self.int_key(&f, "max_connections", what);
        let max_pending = self.int_key(&f, "max_pending", what);
        let max_requests = self.int_key(&f, "max_requests", what);
        let max_retries = self.int_key(&f, "max_retries", what);
        Some(CircuitBreaker {
            max_connections: max_connections?,
            max_pending: max_pending?,
            max_requests: max_requests?,
            max_retries: max_retries?,
        })
    }

    fn outlier_detection(&mut self, node: &Node, what: &str) -> Option<OutlierDetection> {
        let f = self.fields(node, what, &d::OUTLIER_DETECTION)?;
        let consecutive_5xx = self.int_key(&f, "consecutive_5xx", what);
        let interval = self.duration_key(&f, "interval", what);
        let ejection_time = self.duration_key(&f, "ejection_time", what);
        let max_ejection_percent = self.int_key(&f, "max_ejection_percent", what);
        Some(OutlierDetection {
            consecutive_5xx: consecutive_5xx?,
            interval: interval?,
            ejection_time: ejection_time?,
            max_ejection_percent: max_ejection_percent?,
        })
    }

    fn upstream_tls(&mut self, node: &Node, what: &str) -> Option<UpstreamTls> {
        let f = self.fields(node, what, &d::UPSTREAM_TLS)?;
        let sni = match f.get("sni") {
            None => Some(None),
            Some(n) => {
                let w = format!("{what}.sni");
                self.string(n, &w).and_then(|s| {
                    if grammar::is_dns_name(&s) {
                        Some(Some(s))
                    } else {
                        self.expected(n, &w, "a host name");
                        None
                    }
                })
            }
        };
        let ca_file = match f.get("ca_file") {
            None => Some(None),
            Some(n) => self
                .file_path(n, &format!("{what}.ca_file"), "ca_file")
                .map(Some),
        };
        let cert_file = f
            .get("cert_file")
            .map(|n| self.file_path(n, &format!("{what}.cert_file"), "cert_file"));
        let key_file = f
            .get("key_file")
            .map(|n| self.file_path(n, &format!("{what}.key_file"), "key_file"));
        let client_cert = match (cert_file, key_file) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => Some(Some(ClientCert {
                cert_file: cert?,
                key_file: key?,
            })),
            _ => {
                if !f.misspells(&["cert_file", "key_file"]) {
                    self.problem(
                        node.pos,
                        format!("{what}: `cert_file` and `key_file` go together"),
                    );
                }
                None
            }
        };
        Some(UpstreamTls {
            sni: sni?,
            ca_file: ca_file?,
            client_cert: client_cert?,
        })
    }

    // ---- auth -----------------------------------------------------------------------------

    /// `auth.service` or `rate_limits.service`: the same keys, each with its own defaults.
    fn policy_service(
        &mut self,
        node: &Node,
        what: &str,
        object: &'static Object,
    ) -> Option<PolicyService> {
        let f = self.fields(node, what, object)?;
        let address = f
            .value("address")
            .and_then(|n| self.host_port(n, &format!("{what}.address")));
        let timeout = self.duration_key(&f, "timeout", what);
        let on_error = self.choice_key(&f, "on_error", what, &d::ON_ERRORS);
        let tls = match f.get("tls") {
            None => Some(None),
            Some(n) => self.upstream_tls(n, &format!("{what}.tls")).map(Some),
        };
        Some(PolicyService {
            address: address?,
            timeout: timeout?,
            on_error: on_error?,
            tls: tls?,
        })
    }

    fn auth(&mut self, node: &Node) -> Option<Auth> {
        let f = self.fields(node, "auth", &d::AUTH)?;
        let service = f
            .value("service")
            .and_then(|n| self.policy_service(n, "auth.service", &d::AUTH_SERVICE));
        let mut seen: HashMap<String, Pos> = HashMap::new();
        let jwt = match f.get("jwt") {
            None => Some(BTreeMap::new()),
            Some(n) => self.providers(n, "auth.jwt", &mut seen, Self::jwt_provider),
        };
        self.claim_headers = jwt
            .iter()
            .flatten()
            .flat_map(|(_, p)| p.headers.iter().map(|(h, _)| h.clone()))
            .collect();
        let api_keys = match f.get("api_keys") {
            None => Some(BTreeMap::new()),
            Some(n) => self.providers(n, "auth.api_keys", &mut seen, Self::api_key_provider),
        };
        let mtls = match f.get("mtls") {
            None => Some(BTreeMap::new()),
            Some(n) => self.providers(n, "auth.mtls", &mut seen, Self::mtls_provider),
        };
        Some(Auth {
            service: service?,
            jwt: jwt?,
            api_keys: api_keys?,
            mtls: mtls?,
        })
    }

    fn mtls_provider(&mut self, node: &Node, what: &str) -> Option<MtlsProvider> {
        let f = self.fields(node, what, &d::MTLS_PROVIDER)?;
        let client_id = self.choice_key(&f, "client_id", what, &d::CERT_FIELDS);
        let plans = match f.get("plans") {
            None => Some(Vec::new()),
            Some(n) => {
                let w = format!("{what}.plans");
                self.map(n, &w).and_then(|entries| {
                    let mut all = All::new();
                    for e in entries {
                        let plan = self.plan_name(e.value, &format!("{w}.{}", e.key));
                        all.push(plan.map(|p| (e.key.to_string(), p)));
                    }
                    all.finish()
                })
            }
        };
        let default_plan = match f.get("default_plan") {
            None => Some(None),
            Some(n) => self.plan_name(n, &format!("{what}.default_plan")).map(Some),
        };
        Some(MtlsProvider {
            client_id: client_id?,
            plans: plans?,
            default_plan: default_plan?,
        })
    }

    /// A plan name a provider assigns: one of `rate_limits.plans` when the file defines any
    /// (without plans nothing limits by plan, and any name goes, as in keys files).
    fn plan_name(&mut self, node: &Node, what: &str) -> Option<String> {
        let p = self.nonempty(node, what)?;
        if self.plan_names.is_empty() || self.plan_names.contains(&p) {
            return Some(p);
        }
        let suggestion = closest(&p, self.plan_names.iter().map(String::as_str));
        let message = format!(
            "{what}: unknown plan `{p}`{}; expected one of the plans: {}",
            did_you_mean(suggestion),
            list(&self.plan_names)
        );
        self.problem(node.pos, message);
        None
    }

    /// Every provider name, JWT, API-key and mTLS, sorted.
    fn provider_names(&self) -> Vec<&String> {
        let all: BTreeSet<&String> = self
            .jwt
            .iter()
            .chain(self.api_keys.iter())
            .chain(self.mtls.iter())
            .collect();
        all.into_iter().collect()
    }

    /// A map of named providers. Names share one namespace across `jwt` and `api_keys` because
    /// routes refer to them by bare name.
    fn providers<T>(
        &mut self,
        node: &Node,
        what: &str,
        seen: &mut HashMap<String, Pos>,
        decode: fn(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<BTreeMap<String, T>> {
        let entries = self.map(node, what)?;
        let mut all = All::new();
        for e in entries {
            let mut ok = true;
            if e.key == "none" {
                self.problem(
                    e.key_pos,
                    format!(
                        "{what}: `none` cannot name a provider because \
                            `auth: none` means a public route"
                    ),
                );
                ok = false;
            }
            if let Some(first) = seen.get(e.key) {
                let line = first.line;
                self.problem(
                    e.key_pos,
                    format!(
                        "{what}: provider name `{}` is already used on \
                            line {line}; names must be unique across \
                            auth.jwt, auth.api_keys and auth.mtls because routes refer \
                            to them by name",
                        e.key
                    ),
                );
                ok = false;
            } else {
                seen.insert(e.key.to_string(), e.key_pos);
            }
            let p = decode(self, e.value, &format!("{what}.{}", e.key));
            all.push(p.filter(|_| ok).map(|p| (e.key.to_string(), p)));
        }
        all.finish().map(|v| v.into_iter().collect())
    }

    fn jwt_provider(&mut self, node: &Node, what: &str) -> Option<JwtProvider> {
        let f = self.fields(node, what, &d::JWT_PROVIDER)?;
        let issuer = f
            .get("issuer")
            .and_then(|n| self.nonempty(n, &format!("{what}.issuer")));
        let audiences = match f.get("audiences") {
            None => Some(Vec::new()),
            Some(n) => self.strings(n, &format!("{what}.audiences")),
        };

        let source = self.at_most_one(&f, d::JWT_PROVIDER.one_of, what);
        let uses_secret = source.is_some_and(|e| e.key == "secret_env");
        // Absent, `fields` reported it.
        let keys = match source {
            None => None,
            Some(e) => {
                let w = format!("{what}.{}", e.key);
                match e.key {
                    "jwks_file" => self.file_path(e.value, &w, "jwks_file").map(JwtKeys::File),
                    "jwks_url" => self.string(e.value, &w).and_then(|s| {
                        // Plain http would let anyone on the path serve their own keys; it is
                        // allowed only to this machine (local development, tests).
                        if grammar::is_http_url(&s)
                            && (s.starts_with("https://") || grammar::is_loopback_url(&s))
                        {
                            Some(JwtKeys::Url(s))
                        } else {
                            self.expected(
                                e.value,
                                &w,
                                "an https:// URL (http:// only for localhost, 127.0.0.1 or [::1])",
                            );
                            None
                        }
                    }),
                    _ => self.string(e.value, &w).and_then(|s| {
                        if grammar::is_env_name(&s) {
                            Some(JwtKeys::SecretEnv(s))
                        } else {
                            self.expected(
                                e.value,
                                &w,
                                "an environment variable name such as JWT_SECRET",
                            );
                            None
                        }
                    }),
                }
            }
        };

        let algorithms = f.get("algorithms").and_then(|n| {
            let w = format!("{what}.algorithms");
            let items = self.seq(n, &w)?;
            if items.is_empty() {
                self.problem(
                    n.pos,
                    format!(
                        "{w}: expected at least one algorithm, found an \
                            empty list; algorithms are never inferred from \
                            the token"
                    ),
                );
                return None;
            }
            let options: Vec<(&str, JwtAlgorithm)> =
                JwtAlgorithm::ALL.iter().map(|a| (a.as_str(), *a)).collect();
            let mut all = All::new();
            for item in items {
                let alg = self.choice(item, &w, &options).and_then(|a| {
                    // A JWKS holds public keys and a shared secret is only good for HMAC;
                    // mixing them is how "alg confusion" attacks start.
                    if a.is_hmac() && !uses_secret {
                        self.problem(
                            item.pos,
                            format!(
                                "{w}: {} needs a shared secret (`secret_env`); \
                                    JWKS keys only work with asymmetric algorithms",
                                a.as_str()
                            ),
                        );
                        None
                    } else if !a.is_hmac() && uses_secret {
                        self.problem(
                            item.pos,
                            format!(
                                "{w}: {} needs public keys (`jwks_file` or \
                                    `jwks_url`); `secret_env` only works with HS256, \
                                    HS384 or HS512",
                                a.as_str()
                            ),
                        );
                        None
                    } else {
                        Some(a)
                    }
                });
                all.push(alg);
            }
            let mut algs = all.finish()?;
            let mut seen = BTreeSet::new();
            algs.retain(|a| seen.insert(*a));
            Some(algs)
        });

        let clock_skew = f.value("clock_skew").and_then(|n| {
            let w = format!("{what}.clock_skew");
            let max = grammar::duration(d::MAX_CLOCK_SKEW).unwrap_or_default();
            self.duration(n, &w).and_then(|skew| {
                if skew <= max {
                    Some(skew)
                } else {
                    self.expected(
                        n,
                        &w,
                        &format!("a clock skew of at most {}", d::MAX_CLOCK_SKEW),
                    );
                    None
                }
            })
        });
        let headers = match f.get("headers") {
            None => Some(Vec::new()),
            Some(n) => self.header_map(n, &format!("{what}.headers"), true),
        };
        self.slipped_headers(&f, "headers", what, |header, claim| match claim {
            Some(claim) => {
                format!("the upstream header `{header}` is set from the claim `{claim}`")
            }
            None => format!("`{header}` is an upstream header"),
        });
        let client_claim = f
            .value("client_claim")
            .and_then(|n| self.nonempty(n, &format!("{what}.client_claim")));
        let plan_claim = f
            .value("plan_claim")
            .and_then(|n| self.nonempty(n, &format!("{what}.plan_claim")));
        let forward_token = f
            .value("forward_token")
            .and_then(|n| self.boolean(n, &format!("{what}.forward_token")));
        Some(JwtProvider {
            issuer: issuer?,
            audiences: audiences?,
            algorithms: algorithms?,
            keys: keys?,
            clock_skew: clock_skew?,
            headers: headers?,
            client_claim: client_claim?,
            plan_claim: plan_claim?,
            forward_token: forward_token?,
        })
    }

    /// Warns about each entry of the header mapping `f.<map_key>` that is named like a key of `f`
    /// itself, such as `plan_claim: tier` under a JWT provider's `headers:`. Such an entry is
    /// valid, so nothing else would say that it was probably meant one level up, where it would
    /// change what `f` does (there, `plan_claim: tier` picks every client's plan from the `tier`
    /// claim; here, it only names a header).
    /// `effect` says what the entry does as written, from the header name and the value's text.
    fn slipped_headers(
        &mut self,
        f: &Fields<'_>,
        map_key: &str,
        what: &str,
        effect: impl Fn(&str, Option<&str>) -> String,
    ) {
        let Some(Value::Map(entries)) = f.get(map_key).map(|n| &n.value) else {
            return;
        };
        for (k, v) in entries {
            let Some(name) = k.as_text() else {
                continue;
            };
            let Some(key) = f.object.key(&name.to_ascii_lowercase()) else {
                continue;
            };
            let value = v.as_text();
            let entry = match value {
                Some(value) => format!("{name}: {value}"),
                None => name.to_string(),
            };
            let meanwhile = match (f.entry(key.name), &key.absent) {
                (Some(e), _) => format!("is given on line {} as well", e.key_pos.line),
                (None, d::Absent::Default(default)) => format!("stays `{default}` (its default)"),
                (None, _) => "is not set".to_string(),
            };
            let key = key.name;
            let effect = effect(name, value);
            self.warnings.push((
                k.pos,
                format!(
                    "{what}.{map_key}: `{entry}` is a header here, but `{key}` is also a key one \
                     level up; did you mean it there, outside `{map_key}:`? As written, {effect}, \
                     and the key `{key}` {meanwhile}"
                ),
            ));
        }
    }

    /// `{header-name: value}` in file order, names lower-cased and unique after lower-casing.
    fn header_map(
        &mut self,
        node: &Node,
        what: &str,
        nonempty_values: bool,
    ) -> Option<Vec<(String, String)>> {
        let entries = self.map(node, what)?;
        let mut all = All::new();
        let mut seen: HashMap<String, Pos> = HashMap::new();
        for e in entries {
            let name = self.header_name(e.key, e.key_pos, what).and_then(|name| {
                if let Some(first) = seen.get(&name) {
                    let line = first.line;
                    self.problem(
                        e.key_pos,
                        format!(
                            "{what}: duplicate header `{name}` (first given \
                                on line {line}; header names are \
                                case-insensitive)"
                        ),
                    );
                    return None;
                }
                seen.insert(name.clone(), e.key_pos);
                Some(name)
            });
            let w = format!("{what}.{}", e.key);
            let value = if nonempty_values {
                self.nonempty(e.value, &w)
            } else {
                self.string(e.value, &w)
            };
            all.push(name.zip(value));
        }
        all.finish()
    }

    fn api_key_provider(&mut self, node: &Node, what: &str) -> Option<ApiKeyProvider> {
        let f = self.fields(node, what, &d::API_KEY_PROVIDER)?;
        let header = f.value("header").and_then(|n| {
            let w = format!("{what}.header");
            let name = self
                .string(n, &w)
                .and_then(|s| self.header_name(&s, n.pos, &w))?;
            // Identity headers are removed from every request before any filter (only
            // authz-service may set them), so a key sent in one would never arrive.
            let identity = proto::authz::header::CLIENT_HEADERS.contains(&name.as_str())
                || name == proto::authz::header::FAILURE_MODE_ALLOWED
                || self.claim_headers.contains(&name);
            if identity {
                self.problem(
                    n.pos,
                    format!(
                        "{w}: `{name}` is an identity header, which the gateway removes from \
                            every request before authentication; expected another header name"
                    ),
                );
                return None;
            }
            Some(name)
        });
        let query = match f.get("query") {
            None => Some(None),
            Some(n) => self.nonempty(n, &format!("{what}.query")).map(Some),
        };
        let keys_file = f
            .get("keys_file")
            .and_then(|n| self.file_path(n, &format!("{what}.keys_file"), "keys_file"));
        Some(ApiKeyProvider {
            header: header?,
            query: query?,
            keys_file: keys_file?,
        })
    }

    // ---- rate limits ----------------------------------------------------------------------

    fn rate_limits(&mut self, node: &Node) -> Option<RateLimits> {
        let f = self.fields(node, "rate_limits", &d::RATE_LIMITS)?;
        let service = f
            .value("service")
            .and_then(|n| self.policy_service(n, "rate_limits.service", &d::RATE_LIMIT_SERVICE));
        let plan_names = keys_of(declared(Some(node), "plans", &d::RATE_LIMITS));
        let plans = match f.get("plans") {
            None => Some(BTreeMap::new()),
            Some(n) => self.map(n, "rate_limits.plans").and_then(|entries| {
                let mut all = All::new();
                for e in entries {
                    let r = self.rate(e.value, &format!("rate_limits.plans.{}", e.key));
                    all.push(r.map(|r| (e.key.to_string(), r)));
                }
                all.finish()
                    .map(|v| v.into_iter().collect::<BTreeMap<_, _>>())
            }),
        };
        let default_plan = match f.get("default_plan") {
            None if f.misspells(&["default_plan"]) => None,
            None if !plan_names.is_empty() => {
                let pos = f.entry("plans").map_or(f.pos, |e| e.key_pos);
                self.problem(
                    pos,
                    format!(
                        "rate_limits: missing `default_plan`, which names \
                            the plan for clients whose token carries no \
                            plan; expected one of: {}",
                        list(&plan_names)
                    ),
                );
                None
            }
            None => Some(None),
            Some(n) => self.string(n, "rate_limits.default_plan").and_then(|p| {
                if plan_names.contains(&p) {
                    Some(Some(p))
                } else {
                    let suggestion = closest(&p, plan_names.iter().map(String::as_str));
                    self.problem(
                        n.pos,
                        format!(
                            "rate_limits.default_plan: unknown plan `{p}`{}; \
                                expected one of the plans: {}",
                            did_you_mean(suggestion),
                            list(&plan_names)
                        ),
                    );
                    None
                }
            }),
        };
        let anonymous = match f.get("anonymous") {
            None => Some(None),
            Some(n) => self.rate(n, "rate_limits.anonymous").map(Some),
        };
        let algorithm = self.choice_key(&f, "algorithm", "rate_limits", &d::ALGORITHMS);
        let counted_by = self.choice_key(&f, "counted_by", "rate_limits", &d::COUNTED_BY);
        self.counted_by_authz = counted_by == Some(CountedBy::AuthzService);
        Some(RateLimits {
            service: service?,
            plans: plans?,
            default_plan: default_plan?,
            anonymous: anonymous?,
            algorithm: algorithm?,
            counted_by: counted_by?,
        })
    }

    // ---- gateways -------------------------------------------------------------------------

    fn gateways(&mut self, node: &Node) -> Option<BTreeMap<String, Gateway>> {
        let entries = self.map(node, "gateways")?;
        let mut all = All::new();
        for e in entries {
            if self.reserved_name(e.key, e.key_pos, "gateways") {
                all.push(None);
                continue;
            }
            let g = self.gateway(e.key, e.value);
            all.push(g.map(|g| (e.key.to_string(), g)));
        }
        all.finish().map(|v| v.into_iter().collect())
    }

    /// The policy services' names are taken: they are the services' xDS node groups (a gateway
    /// of that name would receive their policy) and the clusters Envoy reaches them through (a
    /// service of that name would collide with it). Reports and returns true for such a name.
    fn reserved_name(&mut self, name: &str, pos: Pos, section: &str) -> bool {
        let reserved = d::RESERVED.contains(&name);
        if reserved {
            self.problem(
                pos,
                format!(
                    "{section}.{name}: this name is reserved for the gateway's own {name}; expected another name"
                ),
            );
        }
        reserved
    }

    fn gateway(&mut self, name: &str, node: &Node) -> Option<Gateway> {
        let what = format!("gateways.{name}");
        let f = self.fields(node, &what, &d::GATEWAY)?;
        let listeners = f
            .get("listeners")
            .and_then(|n| self.listeners(n, &format!("{what}.listeners")));
        let cors = match f.get("cors") {
            None => Some(None),
            Some(n) => self.cors(n, &format!("{what}.cors")).map(Some),
        };
        let client_ip = f.value("client_ip").and_then(|n| {
            let w = format!("{what}.client_ip");
            let cf = self.fields(n, &w, &d::CLIENT_IP)?;
            let trusted_hops = self.int_key(&cf, "trusted_hops", &w)?;
            Some(ClientIp { trusted_hops })
        });
        let access_log = self.choice_key(&f, "access_log", &what, &d::ACCESS_LOGS);
        let tracing = match f.get("tracing") {
            None => Some(None),
            Some(n) => self.tracing(name, n, &format!("{what}.tracing")).map(Some),
        };
        let max_body = match f.get("max_body") {
            None => Some(None),
            Some(n) => self.size(n, &format!("{what}.max_body")).map(Some),
        };
        let compression = match f.get("compression") {
            None => Some(None),
            Some(n) => self
                .compression(n, &format!("{what}.compression"))
                .map(Some),
        };
        let timeouts = f
            .value("timeouts")
            .and_then(|n| self.client_timeouts(n, &format!("{what}.timeouts")));
        let limits = f
            .value("limits")
            .and_then(|n| self.connection_limits(n, &format!("{what}.limits")));
        self.client_ca_listener = listeners.as_ref().is_none_or(|ls| {
            ls.iter()
                .any(|l| l.tls.as_ref().is_some_and(|t| t.client_certs.is_some()))
        });
        let routes = match f.get("routes") {
            None => Some(Vec::new()),
            Some(n) => {
                let w = format!("{what}.routes");
                self.seq(n, &w).and_then(|items| {
                    let mut all = All::new();
                    for (i, item) in items.iter().enumerate() {
                        let r = self.route(&w, i, item);
                        all.push(r);
                    }
                    all.finish()
                })
            }
        };
        Some(Gateway {
            listeners: listeners?,
            cors: cors?,
            client_ip: client_ip?,
            access_log: access_log?,
            tracing: tracing?,
            max_body: max_body?,
            compression: compression?,
            timeouts: timeouts?,
            limits: limits?,
            routes: routes?,
        })
    }

    fn tracing(&mut self, gateway: &str, node: &Node, what: &str) -> Option<Tracing> {
        let f = self.fields(node, what, &d::TRACING)?;
        let collector = f
            .get("collector")
            .and_then(|n| self.host_port(n, &format!("{what}.collector")));
        let sample = f
            .value("sample")
            .and_then(|n| self.percent(n, &format!("{what}.sample")));
        let service_name = match f.get("service_name") {
            None => Some(gateway.to_string()),
            Some(n) => self.nonempty(n, &format!("{what}.service_name")),
        };
        Some(Tracing {
            collector: collector?,
            sample_per_million: sample?,
            service_name: service_name?,
        })
    }

    fn compression(&mut self, node: &Node, what: &str) -> Option<Compression> {
        let f = self.fields(node, what, &d::COMPRESSION)?;
        let algorithms = f.value("algorithms").and_then(|n| {
            let w = format!("{what}.algorithms");
            let items = self.seq(n, &w)?;
            let mut all = All::new();
            let mut seen = Vec::new();
            for item in items {
                let a = self
                    .choice(item, &w, &d::COMPRESSION_ALGORITHMS)
                    .and_then(|a| {
                        if seen.contains(&a) {
                            self.problem(
                                item.pos,
                                format!(
                                    "{w}: `{}` is listed twice; list each algorithm once",
                                    a.token()
                                ),
                            );
                            return None;
                        }
                        seen.push(a);
                        Some(a)
                    });
                all.push(a);
            }
            let algorithms = all.finish()?;
            if algorithms.is_empty() {
                self.expected(n, &w, "at least one of zstd, br, gzip");
                return None;
            }
            Some(algorithms)
        });
        let min_bytes = f
            .value("min_bytes")
            .and_then(|n| self.size(n, &format!("{what}.min_bytes")));
        let content_types = f.value("content_types").and_then(|n| {
            let w = format!("{what}.content_types");
            let items = self.seq(n, &w)?;
            let mut all = All::new();
            for item in items {
                let t = self.string(item, &w).and_then(|s| {
                    if grammar::is_media_type(&s) {
                        Some(s.to_ascii_lowercase())
                    } else {
                        self.expected(
                            item,
                            &w,
                            "a media type such as application/json (type/subtype, without parameters)",
                        );
                        None
                    }
                });
                all.push(t);
            }
            let types = all.finish()?;
            if types.is_empty() {
                self.expected(n, &w, "at least one media type");
                return None;
            }
            Some(types)
        });
        Some(Compression {
            algorithms: algorithms?,
            min_bytes: min_bytes?,
            content_types: content_types?,
        })
    }

    fn client_timeouts(&mut self, node: &Node, what: &str) -> Option<ClientTimeouts> {
        let f = self.fields(node, what, &d::CLIENT_TIMEOUTS)?;
        let request_headers = self.duration_key(&f, "request_headers", what);
        let request = self.duration_key(&f, "request", what);
        let stream_idle = self.duration_key(&f, "stream_idle", what);
        let idle = self.duration_key(&f, "idle", what);
        Some(ClientTimeouts {
            request_headers: request_headers?,
            request: request?,
            stream_idle: stream_idle?,
            idle: idle?,
        })
    }

    fn connection_limits(&mut self, node: &Node, what: &str) -> Option<ConnectionLimits> {
        let f = self.fields(node, what, &d::CONNECTION_LIMITS)?;
        let buffer = f
            .value("connection_buffer")
            .and_then(|n| self.size(n, &format!("{what}.connection_buffer")));
        let max_concurrent_streams = self.int_key(&f, "max_concurrent_streams", what);
        let initial_stream_window = self.window(&f, "initial_stream_window", what);
        let initial_connection_window = self.window(&f, "initial_connection_window", what);
        Some(ConnectionLimits {
            buffer: buffer?,
            max_concurrent_streams: max_concurrent_streams?,
            initial_stream_window: initial_stream_window?,
            initial_connection_window: initial_connection_window?,
        })
    }

    /// An HTTP/2 flow-control window: a size within what HTTP/2 allows (RFC 9113 §6.9.2), which
    /// Envoy refuses outside of.
    fn window(&mut self, f: &Fields<'_>, key: &str, what: &str) -> Option<u32> {
        const MIN: u32 = 65_535;
        const MAX: u32 = 2_147_483_647;
        let n = f.value(key)?;
        let w = format!("{what}.{key}");
        let bytes = self.size(n, &w)?;
        if !(MIN..=MAX).contains(&bytes) {
            self.problem(
                n.pos,
                format!(
                    "{w}: expected at least {MIN} and at most {MAX} bytes, found {}",
                    n.describe()
                ),
            );
            return None;
        }
        Some(bytes)
    }

    fn listeners(&mut self, node: &Node, what: &str) -> Option<Vec<Listener>> {
        let items = self.seq(node, what)?;
        if items.is_empty() {
            self.problem(
                node.pos,
                format!("{what}: expected at least one listener, found an empty list"),
            );
            return None;
        }
        let mut all = All::new();
        let mut names: HashMap<String, Pos> = HashMap::new();
        let mut ports: HashMap<u16, Pos> = HashMap::new();
        // Listeners with `https_redirect: true`: what to call them, where, and whether they
        // have `tls` themselves.
        let mut redirects: Vec<(String, Pos, bool)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let w = format!("{what}[{i}]");
            let Some(f) = self.fields(item, &w, &d::LISTENER) else {
                all.push(None);
                continue;
            };
            let name = f.get("name").and_then(|n| {
                let name = self.nonempty(n, &format!("{w}.name"))?;
                if let Some(first) = names.get(&name) {
                    let line = first.line;
                    self.problem(
                        n.pos,
                        format!(
                            "{w}.name: duplicate listener name `{name}` \
                                (first used on line {line})"
                        ),
                    );
                    return None;
                }
                names.insert(name.clone(), n.pos);
                Some(name)
            });
            let address = f.value("address").and_then(|n| {
                self.string(n, &format!("{w}.address")).and_then(|s| {
                    let bare = s
                        .strip_prefix('[')
                        .and_then(|s| s.strip_suffix(']'))
                        .unwrap_or(&s);
                    match bare.parse::<IpAddr>() {
                        Ok(ip) => Some(ip.to_string()),
                        Err(_) => {
                            self.expected(
                                n,
                                &format!("{w}.address"),
                                "an IP address such as 0.0.0.0, 127.0.0.1 or ::",
                            );
                            None
                        }
                    }
                })
            });
            let port = f.get("port").and_then(|n| {
                let (lo, hi) = f.bounds("port");
                let port: u16 = self.int_in(n, &format!("{w}.port"), lo, hi)?;
                if let Some(first) = ports.get(&port) {
                    let line = first.line;
                    self.problem(
                        n.pos,
                        format!(
                            "{w}.port: port {port} is already used by another \
                                listener of this gateway (line {line})"
                        ),
                    );
                    return None;
                }
                ports.insert(port, n.pos);
                Some(port)
            });
            let tls = match f.get("tls") {
                None => Some(None),
                Some(n) => {
                    let tw = format!("{w}.tls");
                    self.fields(n, &tw, &d::LISTENER_TLS).and_then(|tf| {
                        let cert = tf.get("cert_file").and_then(|n| {
                            self.file_path(n, &format!("{tw}.cert_file"), "cert_file")
                        });
                        let key = tf
                            .get("key_file")
                            .and_then(|n| self.file_path(n, &format!("{tw}.key_file"), "key_file"));
                        let client_certs = self.client_certs(&tf, &tw);
                        Some(Some(ListenerTls {
                            cert_file: cert?,
                            key_file: key?,
                            client_certs: client_certs?,
                        }))
                    })
                }
            };
            let https_redirect = f.value("https_redirect").and_then(|n| {
                let on = self.boolean(n, &format!("{w}.https_redirect"))?;
                if on {
                    redirects.push((w.clone(), n.pos, f.get("tls").is_some()));
                }
                Some(on)
            });
            all.push((|| {
                Some(Listener {
                    name: name?,
                    address: address?,
                    port: port?,
                    tls: tls?,
                    https_redirect: https_redirect?,
                })
            })());
        }
        // The redirect names one port: the gateway's TLS listener's, so there must be exactly
        // one (counted from the file, so a TLS listener with an error elsewhere still counts).
        let tls_listeners = items.iter().filter(|i| child(i, "tls").is_some()).count();
        for (w, pos, own_tls) in redirects {
            if own_tls {
                self.problem(
                    pos,
                    format!(
                        "{w}.https_redirect: a TLS listener cannot redirect to HTTPS; set \
                            `https_redirect: true` on a plain listener"
                    ),
                );
            } else if tls_listeners != 1 {
                self.problem(
                    pos,
                    format!(
                        "{w}.https_redirect: needs exactly one TLS listener on the gateway to \
                            redirect to, found {tls_listeners}"
                    ),
                );
            }
        }
        all.finish()
    }

    /// `client_ca_file` and `client_cert` of a listener's `tls`.
    fn client_certs(&mut self, tf: &Fields<'_>, tw: &str) -> Option<Option<ClientCerts>> {
        let mode = tf.get("client_cert").map(|n| {
            let w = format!("{tw}.client_cert");
            (n.pos, self.choice(n, &w, &d::CLIENT_CERT_MODES))
        });
        let Some(ca) = tf.get("client_ca_file") else {
            if let Some((pos, _)) = mode {
                if !tf.misspells(&["client_ca_file"]) {
                    self.problem(
                        pos,
                        format!(
                            "{tw}.client_cert: needs `client_ca_file`, the CAs client \
                                certificates are verified against"
                        ),
                    );
                }
                return None;
            }
            return Some(None);
        };
        let ca_file = self.file_path(ca, &format!("{tw}.client_ca_file"), "client_ca_file");
        let required = match mode {
            None => Some(true),
            Some((_, m)) => m,
        };
        Some(Some(ClientCerts {
            ca_file: ca_file?,
            required: required?,
        }))
    }

    fn cors(&mut self, node: &Node, what: &str) -> Option<Cors> {
        let f = self.fields(node, what, &d::CORS)?;
        let origins = f.get("origins").and_then(|n| {
            let w = format!("{what}.origins");
            let items = self.seq(n, &w)?;
            if items.is_empty() {
                self.problem(
                    n.pos,
                    format!(
                        "{w}: expected at least one origin, found an \
                            empty list"
                    ),
                );
                return None;
            }
            let mut all = All::new();
            for item in items {
                let o = self.string(item, &w).and_then(|s| {
                    if s == "*" || grammar::is_origin(&s) {
                        Some(s)
                    } else {
                        self.expected(
                            item,
                            &w,
                            "`*` or an origin like https://app.example.com \
                                (scheme, host, optional port; no path)",
                        );
                        None
                    }
                });
                all.push(o);
            }
            all.finish()
        });
        let methods = match f.get("methods") {
            None => Some(Vec::new()),
            Some(n) => self.methods(n, &format!("{what}.methods")),
        };
        let headers = match f.get("headers") {
            None => Some(Vec::new()),
            Some(n) => self.header_names(n, &format!("{what}.headers")),
        };
        let max_age = match f.get("max_age") {
            None => Some(None),
            Some(n) => self.duration(n, &format!("{what}.max_age")).map(Some),
        };
        Some(Cors {
            origins: origins?,
            methods: methods?,
            headers: headers?,
            max_age: max_age?,
        })
    }

    // ---- routes ---------------------------------------------------------------------------

    fn route(&mut self, routes_what: &str, index: usize, node: &Node) -> Option<Route> {
        let fallback = format!("{routes_what}[{index}]");
        // Every error about the route, also about its keys, names it by its name when it has one.
        let what = match child(node, "name").and_then(Node::as_text) {
            Some(n) if !n.is_empty() => format!("route `{n}`"),
            _ => fallback.clone(),
        };
        let f = self.fields(node, &what, &d::ROUTE)?;
        let name_node = f.get("name");
        let name = name_node.and_then(|n| self.nonempty(n, &format!("{fallback}.name")));
        let name = name.zip(name_node).and_then(|(name, n)| {
            if let Some(first) = self.route_names.get(&name) {
                let line = first.line;
                self.problem(
                    n.pos,
                    format!(
                        "{what}: duplicate route name `{name}` (first \
                            used on line {line}); route names must be unique \
                            across all gateways"
                    ),
                );
                return None;
            }
            self.route_names.insert(name.clone(), n.pos);
            Some(name)
        });

        let matcher = f
            .get("match")
            .and_then(|n| self.route_match(n, &format!("{what}: match")));

        // Absent, `fields` reported it.
        let action = match self.at_most_one(&f, d::ROUTE.one_of, &what) {
            None => None,
            Some(e) => self.route_action(e, &what),
        };

        let rewrite = match f.entry("rewrite") {
            None => Some(None),
            Some(e) => {
                let w = format!("{what}: rewrite");
                let rewrite = self.fields(e.value, &w, &d::REWRITE).and_then(|rf| {
                    let prefix = rf.get("prefix")?;
                    self.url_path(prefix, &format!("{w}.prefix"))
                });
                let mut ok = rewrite.is_some();
                if matches!(
                    matcher,
                    Some(RouteMatch {
                        path: PathMatch::Exact(_) | PathMatch::Regex(_),
                        ..
                    })
                ) {
                    self.problem(
                        e.key_pos,
                        format!(
                            "{w}: a prefix rewrite needs a `prefix` match, \
                                but this route matches by `path` or `regex`"
                        ),
                    );
                    ok = false;
                }
                if matches!(
                    action,
                    Some(RouteAction::Respond(_) | RouteAction::Compose(_))
                ) {
                    self.problem(
                        e.key_pos,
                        format!(
                            "{w}: only routes that forward to `service` or \
                                `services` can rewrite the path"
                        ),
                    );
                    ok = false;
                }
                rewrite
                    .filter(|_| ok)
                    .map(|prefix| Some(Rewrite { prefix }))
            }
        };

        let auth = match f.get("auth") {
            // Absent, `fields` explained it.
            None => None,
            Some(n) => self.route_auth(n, &format!("{what}: auth")),
        };

        let require = match f.entry("require") {
            None => Some(None),
            Some(e) => {
                let w = format!("{what}: require");
                let r = self.fields(e.value, &w, &d::REQUIRE).and_then(|rf| {
                    let roles = match rf.get("roles") {
                        None => Some(Vec::new()),
                        Some(n) => self.strings(n, &format!("{w}.roles")),
                    };
                    let scopes = match rf.get("scopes") {
                        None => Some(Vec::new()),
                        Some(n) => self.strings(n, &format!("{w}.scopes")),
                    };
                    Some(Require {
                        roles: roles?,
                        scopes: scopes?,
                    })
                });
                if matches!(auth, Some(RouteAuth::None)) {
                    self.problem(
                        e.key_pos,
                        format!(
                            "{w}: claim checks need an authenticated route, \
                                but this route has `auth: none`"
                        ),
                    );
                    None
                } else {
                    r.map(Some)
                }
            }
        };

        let allow_ips = match f.get("allow_ips") {
            None => Some(Vec::new()),
            Some(n) => self.cidrs(n, &format!("{what}: allow_ips")),
        };
        let deny_ips = match f.get("deny_ips") {
            None => Some(Vec::new()),
            Some(n) => self.cidrs(n, &format!("{what}: deny_ips")),
        };

        let rate_limit = match f.get("rate_limit") {
            None => Some(RouteRateLimit::Default),
            Some(n) => self.route_rate_limit(n, &format!("{what}: rate_limit")),
        };

        // An action that failed to decode counts as forwarding: its own error is the one to fix.
        let composes = matches!(action, Some(RouteAction::Compose(_)));
        let forwards = !composes && !matches!(action, Some(RouteAction::Respond(_)));
        if composes {
            self.compose_route(&f, &what);
        }
        let timeout = match f.entry("timeout") {
            None => Some(None),
            Some(e) if composes => self
                .duration(e.value, &format!("{what}: timeout"))
                .and_then(|t| {
                    if t.is_zero() {
                        self.problem(
                            e.value.pos,
                            format!(
                                "{what}: timeout: a `compose` route needs a bounded answer; \
                                    `0s` (no timeout) is only for forwarding routes"
                            ),
                        );
                        return None;
                    }
                    Some(Some(t))
                }),
            Some(e) if !forwards => {
                self.problem(
                    e.key_pos,
                    format!(
                        "{what}: `timeout` only applies to routes that \
                            forward to `service` or `services`"
                    ),
                );
                None
            }
            // `0s` turns the timeout off, for long-lived streams.
            Some(e) => self
                .duration(e.value, &format!("{what}: timeout"))
                .map(Some),
        };
        let retries = match f.entry("retries") {
            None => Some(None),
            Some(e) if !forwards => {
                self.problem(
                    e.key_pos,
                    format!(
                        "{what}: `retries` only applies to routes that \
                            forward to `service` or `services`"
                    ),
                );
                None
            }
            Some(e) => self.retries(e.value, &format!("{what}: retries")).map(Some),
        };
        let max_body = match f.get("max_body") {
            None => Some(None),
            Some(n) => self.size(n, &format!("{what}: max_body")).map(Some),
        };
        let websocket = f
            .value("websocket")
            .and_then(|n| self.boolean(n, &format!("{what}: websocket")))
            .and_then(|on| {
                let Some(e) = f.entry("websocket").filter(|_| on) else {
                    return Some(on);
                };
                let mut ok = true;
                if !forwards {
                    self.problem(
                        e.key_pos,
                        format!(
                            "{what}: `websocket` only applies to routes that \
                                forward to `service` or `services`"
                        ),
                    );
                    ok = false;
                }
                if let Some(m) = f.entry("max_body") {
                    // Frames are a stream that never ends, not a body Envoy could buffer.
                    self.problem(
                        m.key_pos,
                        format!(
                            "{what}: `max_body` cannot be combined with \
                                `websocket: true` (a WebSocket's frames are not a request body)"
                        ),
                    );
                    ok = false;
                }
                ok.then_some(on)
            });
        let request_headers = match f.get("request_headers") {
            None => Some(HeaderChanges::default()),
            Some(n) => self.header_changes(n, &format!("{what}: request_headers")),
        };
        let response_headers = match f.get("response_headers") {
            None => Some(HeaderChanges::default()),
            Some(n) => self.header_changes(n, &format!("{what}: response_headers")),
        };
        let mirror = match f.entry("mirror") {
            None => Some(None),
            Some(e) if !forwards => {
                self.problem(
                    e.key_pos,
                    format!(
                        "{what}: `mirror` only applies to routes that \
                            forward to `service` or `services`"
                    ),
                );
                None
            }
            Some(e) => {
                let m = self.mirror(e.value, &format!("{what}: mirror"));
                match (f.entry("timeout"), &timeout) {
                    // Envoy gives a shadow request the route's timeout: without one, a mirror
                    // that never answers keeps every copy (and its buffered request) forever.
                    (Some(t), Some(Some(d))) if d.is_zero() => {
                        self.problem(
                            t.key_pos,
                            format!(
                                "{what}: `timeout: 0s` cannot be combined with `mirror` (a \
                                    shadow request would never end when the mirror does not \
                                    answer); give the route a timeout"
                            ),
                        );
                        None
                    }
                    _ => m.map(Some),
                }
            }
        };
        let affinity = match f.entry("affinity") {
            None => Some(None),
            Some(e) if !forwards => {
                self.problem(
                    e.key_pos,
                    format!(
                        "{what}: `affinity` only applies to routes that \
                            forward to `service` or `services`"
                    ),
                );
                None
            }
            Some(e) => {
                let w = format!("{what}: affinity");
                let a = self.affinity(e.value, &w);
                let unhashed = self.unhashed_services(action.as_ref());
                if !unhashed.is_empty() {
                    // Envoy accepts a hash policy on any cluster and ignores it unless the
                    // cluster balances by consistent hashing: affinity would silently not hold.
                    self.problem(
                        e.key_pos,
                        format!(
                            "{w}: needs `lb: ring_hash` or `lb: maglev` on every service of \
                                the route, but {} balance{} otherwise (Envoy would ignore the \
                                affinity there)",
                            list(unhashed.iter().map(|(s, lb)| format!("`{s}` (`lb: {lb}`)"))),
                            if unhashed.len() == 1 { "s" } else { "" }
                        ),
                    );
                    None
                } else {
                    a.map(Some)
                }
            }
        };
        let cache = match f.entry("cache") {
            None => Some(None),
            Some(e) => {
                let w = format!("{what}: cache");
                let c = self.fields(e.value, &w, &d::CACHE).and_then(|cf| {
                    let ttl = self.positive_duration(cf.get("ttl")?, &format!("{w}.ttl"))?;
                    Some(Cache { ttl })
                });
                let mut ok = true;
                if !forwards {
                    // Envoy's own answer needs no cache, and there is no upstream to fill it.
                    self.problem(
                        e.key_pos,
                        format!(
                            "{w}: only routes that forward to `service` or `services` can \
                                cache answers, but this route has `respond`"
                        ),
                    );
                    ok = false;
                }
                if websocket == Some(true) {
                    // An upgrade's answer is a connection, not a body that could be replayed.
                    self.problem(
                        e.key_pos,
                        format!("{w}: cannot be combined with `websocket: true`"),
                    );
                    ok = false;
                }
                c.filter(|_| ok).map(Some)
            }
        };
        let transform = match f.entry("transform") {
            None => Some(None),
            Some(e) if !forwards => {
                self.problem(
                    e.key_pos,
                    format!(
                        "{what}: `transform` only applies to routes that \
                            forward to `service` or `services`"
                    ),
                );
                None
            }
            Some(e) => self
                .transform(e.value, &format!("{what}: transform"))
                .map(Some),
        };
        let grpc = match f.entry("grpc") {
            None => Some(None),
            Some(e) => {
                let w = format!("{what}: grpc");
                let g = self.grpc(e.value, &w);
                let mut ok = true;
                let mut refuse = |cx: &mut Self, message: String| {
                    cx.problem(e.key_pos, message);
                    ok = false;
                };
                if !forwards {
                    refuse(
                        self,
                        format!(
                            "{w}: only routes that forward to `service` or `services` can \
                                bridge gRPC, but this route has `respond`"
                        ),
                    );
                }
                if websocket == Some(true) {
                    refuse(
                        self,
                        format!("{w}: cannot be combined with `websocket: true`"),
                    );
                }
                if f.entry("cache").is_some() {
                    // The cache fills itself past the filters that would translate the request.
                    refuse(self, format!("{w}: cannot be combined with `cache`"));
                }
                let http1 = self.http1_services(action.as_ref());
                if !http1.is_empty() {
                    refuse(
                        self,
                        format!(
                            "{w}: gRPC needs HTTP/2 to the upstream, but {} \
                                (set `protocol: grpc` or `http2` on the service)",
                            list(http1.iter().map(|s| format!("`{s}` has `protocol: http1`")))
                        ),
                    );
                }
                g.filter(|_| ok).map(Some)
            }
        };
        Some(Route {
            name: name?,
            matcher: matcher?,
            action: action?,
            rewrite: rewrite?,
            auth: auth?,
            require: require?,
            allow_ips: allow_ips?,
            deny_ips: deny_ips?,
            rate_limit: rate_limit?,
            timeout: timeout?,
            retries: retries?,
            max_body: max_body?,
            websocket: websocket?,
            request_headers: request_headers?,
            response_headers: response_headers?,
            mirror: mirror?,
            affinity: affinity?,
            cache: cache?,
            transform: transform?,
            grpc: grpc?,
        })
    }

    fn transform(&mut self, node: &Node, what: &str) -> Option<Transform> {
        let f = self.fields(node, what, &d::TRANSFORM)?;
        if f.get("request").is_none() && f.get("response").is_none() && f.misspelt.is_empty() {
            self.problem(
                f.pos,
                format!("{what}: nothing to transform; give `request`, `response` or both"),
            );
            return None;
        }
        let request = match f.get("request") {
            None => Some(None),
            Some(n) => {
                let w = format!("{what}.request");
                self.fields(n, &w, &d::TRANSFORM_REQUEST).and_then(|rf| {
                    // Absent, `fields` reported it.
                    let json = rf.get("json")?;
                    self.json_edits(json, &format!("{w}.json")).map(Some)
                })
            }
        };
        let (response, xml) = match f.get("response") {
            None => (Some(None), Some(false)),
            Some(n) => {
                let w = format!("{what}.response");
                match self.fields(n, &w, &d::TRANSFORM_RESPONSE) {
                    None => (None, None),
                    Some(rf) => {
                        let json = match rf.get("json") {
                            None => Some(None),
                            Some(j) => self.json_edits(j, &format!("{w}.json")).map(Some),
                        };
                        let xml = rf
                            .value("xml")
                            .and_then(|x| self.boolean(x, &format!("{w}.xml")));
                        (json, xml)
                    }
                }
            }
        };
        Some(Transform {
            request: request?,
            response: response?,
            xml: xml?,
        })
    }

    /// `remove`, `set`, `rename`, `envelope`: pointers checked (RFC 6901, by the parser
    /// transform-service uses), values as JSON text.
    fn json_edits(&mut self, node: &Node, what: &str) -> Option<JsonEdits> {
        let f = self.fields(node, what, &d::JSON_EDITS)?;
        let remove = match f.get("remove") {
            None => Some(Vec::new()),
            Some(n) => self.seq(n, &format!("{what}.remove")).and_then(|items| {
                let w = format!("{what}.remove");
                if items.is_empty() {
                    self.expected(n, &w, "a non-empty list of JSON Pointers");
                    return None;
                }
                let mut all = All::new();
                for item in items {
                    let p = self.pointer(item, &w);
                    all.push(p.map(|p| (p, item.pos)));
                }
                all.finish()
            }),
        };
        let set = match f.get("set") {
            None => Some(Vec::new()),
            Some(n) => {
                let w = format!("{what}.set");
                self.pointer_map(n, &w).and_then(|entries| {
                    let mut all = All::new();
                    for (p, pos, value) in entries {
                        let v = self.json_text(value, &format!("{w}.{p}"));
                        all.push(v.map(|v| (p, pos, v)));
                    }
                    all.finish()
                })
            }
        };
        let rename = match f.get("rename") {
            None => Some(Vec::new()),
            Some(n) => {
                let w = format!("{what}.rename");
                self.pointer_map(n, &w).and_then(|entries| {
                    let mut all = All::new();
                    for (from, pos, value) in entries {
                        let to = self.pointer(value, &format!("{w}.{from}"));
                        all.push(to.map(|to| (from, pos, to, value.pos)));
                    }
                    all.finish()
                })
            }
        };
        let envelope = match f.get("envelope") {
            None => Some(None),
            Some(n) => self.envelope(n, &format!("{what}.envelope")).map(Some),
        };
        let (remove, set, rename, envelope) = (remove?, set?, rename?, envelope?);
        let under = |p: &str, q: &str| p == q || p.starts_with(&format!("{q}/"));
        let mut ok = true;
        for (to_set, pos, _) in &set {
            if let Some((r, _)) = remove.iter().find(|(r, _)| under(to_set, r)) {
                // Removal runs first: the set would bring back (part of) what was removed.
                self.problem(
                    *pos,
                    format!(
                        "{what}.set: `{to_set}` is inside `{r}`, which `remove` deletes first \
                            (remove, set, rename, envelope is the order): setting it would bring \
                            `{r}` back; set it elsewhere or stop removing `{r}`"
                    ),
                );
                ok = false;
            }
        }
        for (from, pos, to, to_pos) in &rename {
            if let Some((r, _)) = remove.iter().find(|(r, _)| under(from, r)) {
                self.problem(
                    *pos,
                    format!(
                        "{what}.rename: `{from}` is inside `{r}`, which `remove` deletes first, \
                            so there is nothing left to rename"
                    ),
                );
                ok = false;
            }
            if under(to, from) {
                self.problem(
                    *to_pos,
                    format!("{what}.rename.{from}: the new place `{to}` is the member itself or inside it"),
                );
                ok = false;
            }
        }
        ok.then(|| JsonEdits {
            remove: remove.into_iter().map(|(p, _)| p).collect(),
            set: set.into_iter().map(|(p, _, v)| (p, v)).collect(),
            rename: rename.into_iter().map(|(a, _, b, _)| (a, b)).collect(),
            envelope,
        })
    }

    fn envelope(&mut self, node: &Node, what: &str) -> Option<Envelope> {
        let f = self.fields(node, what, &d::ENVELOPE)?;
        let field = f
            .get("field")
            .and_then(|n| self.nonempty(n, &format!("{what}.field")));
        let with = match f.get("with") {
            None => Some(Vec::new()),
            Some(n) => {
                let w = format!("{what}.with");
                self.map(n, &w).and_then(|entries| {
                    let mut all = All::new();
                    for e in entries {
                        let reserved = [d::ENVELOPE_REQUEST_ID]
                            .into_iter()
                            .chain(field.as_deref())
                            .find(|r| *r == e.key);
                        if let Some(r) = reserved {
                            self.problem(
                                e.key_pos,
                                format!(
                                    "{w}: `{r}` is already a member of the envelope (the body's \
                                        `field`, or the request id Envoy sets); choose another name"
                                ),
                            );
                            all.push(None);
                            continue;
                        }
                        let v = self.json_text(e.value, &format!("{w}.{}", e.key));
                        all.push(v.map(|v| (e.key.to_string(), v)));
                    }
                    all.finish()
                })
            }
        };
        Some(Envelope {
            field: field?,
            with: with?,
        })
    }

    /// A JSON Pointer (RFC 6901) to a member, checked by transform-service's own parser.
    fn pointer(&mut self, node: &Node, what: &str) -> Option<String> {
        let text = self.string(node, what)?;
        match transform::pointer::Pointer::parse(&text) {
            Ok(_) => Some(text),
            Err(e) => {
                self.problem(
                    node.pos,
                    format!("{what}: `{text}` is not a JSON Pointer: {e}"),
                );
                None
            }
        }
    }

    /// A mapping whose keys are JSON Pointers: (pointer, its position, value node).
    fn pointer_map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
    ) -> Option<Vec<(String, Pos, &'n Node)>> {
        let entries = self.map(node, what)?;
        if entries.is_empty() {
            self.expected(node, what, "a non-empty mapping of JSON Pointers");
            return None;
        }
        let mut all = All::new();
        for e in entries {
            let ok = match transform::pointer::Pointer::parse(e.key) {
                Ok(_) => true,
                Err(err) => {
                    self.problem(
                        e.key_pos,
                        format!("{what}: `{}` is not a JSON Pointer: {err}", e.key),
                    );
                    false
                }
            };
            all.push(ok.then(|| (e.key.to_string(), e.key_pos, e.value)));
        }
        all.finish()
    }

    /// Any YAML value as compact JSON text, keeping the mapping order and a number's text as
    /// written (a YAML integer beyond 64 bits, `1.10`), so the body gets exactly what the file
    /// says. The tree's depth is bounded by the YAML builder, so recursion here is safe.
    fn json_text(&mut self, node: &Node, what: &str) -> Option<String> {
        self.json_tree(node, what)
            .map(|v| String::from_utf8_lossy(&v.to_bytes()).into_owned())
    }

    fn json_tree(&mut self, node: &Node, what: &str) -> Option<transform::json::Value> {
        use transform::json::Value as J;
        match &node.value {
            Value::Scalar { text, kind } => match kind {
                Scalar::Null => Some(J::Null),
                Scalar::Bool(b) => Some(J::Bool(*b)),
                Scalar::Int(_) | Scalar::Float(_) => {
                    let as_written =
                        matches!(transform::json::parse(text.as_bytes()), Ok(J::Number(_)));
                    let canonical = match kind {
                        Scalar::Int(i) => Some(i.to_string()),
                        Scalar::Float(f) => serde_json::Number::from_f64(*f).map(|n| n.to_string()),
                        _ => None,
                    };
                    match (as_written, canonical) {
                        (true, _) => Some(J::Number(text.clone())),
                        (false, Some(c)) => Some(J::Number(c)),
                        (false, None) => {
                            self.expected(
                                node,
                                what,
                                "a value JSON can represent (no .inf or .nan)",
                            );
                            None
                        }
                    }
                }
                Scalar::Str | Scalar::Quoted => Some(J::String(text.clone())),
            },
            Value::Seq(items) => {
                let mut all = All::new();
                for item in items {
                    let v = self.json_tree(item, what);
                    all.push(v);
                }
                all.finish().map(J::Array)
            }
            Value::Map(_) => {
                let entries = self.map(node, what)?;
                let mut all = All::new();
                for e in entries {
                    let v = self.json_tree(e.value, what);
                    all.push(v.map(|v| (e.key.to_string(), v)));
                }
                all.finish().map(J::Object)
            }
        }
    }

    fn grpc(&mut self, node: &Node, what: &str) -> Option<Grpc> {
        let f = self.fields(node, what, &d::GRPC)?;
        let transcode = match f.get("transcode") {
            None => Some(None),
            Some(n) => self.transcode(n, &format!("{what}.transcode")).map(Some),
        };
        let web = f
            .value("web")
            .and_then(|n| self.boolean(n, &format!("{what}.web")));
        let (transcode, web) = (transcode?, web?);
        if transcode.is_none() && !web {
            self.problem(
                f.pos,
                format!("{what}: does nothing; set `transcode` or `web: true`, or remove it"),
            );
            return None;
        }
        Some(Grpc { transcode, web })
    }

    fn transcode(&mut self, node: &Node, what: &str) -> Option<Transcode> {
        let f = self.fields(node, what, &d::TRANSCODE)?;
        let descriptor = f
            .get("descriptor")
            .and_then(|n| self.file_path(n, &format!("{what}.descriptor"), "descriptor"));
        let services = f.get("services").and_then(|n| {
            let w = format!("{what}.services");
            let items = self.seq(n, &w)?;
            if items.is_empty() {
                self.expected(n, &w, "a non-empty list");
                return None;
            }
            let mut all = All::new();
            for item in items {
                all.push(
                    self.nonempty(item, &format!("an entry of {w}"))
                        .map(|s| (s, item.pos)),
                );
            }
            all.finish()
        });
        let (descriptor, services) = (descriptor?, services?);
        // The loader checks each service against the descriptor set it reads.
        if let Some(r) = self.files.iter_mut().rev().find(|r| r.path == descriptor) {
            r.services.extend(services.iter().cloned());
        }
        Some(Transcode {
            descriptor,
            services: services.into_iter().map(|(s, _)| s).collect(),
        })
    }

    /// The services of a forwarding action that speak HTTP/1.1 to their endpoints.
    fn http1_services(&self, action: Option<&RouteAction>) -> Vec<String> {
        let names: Vec<&str> = match action {
            Some(RouteAction::Service(s)) => vec![s.as_str()],
            Some(RouteAction::Weighted(ws)) => ws.iter().map(|(s, _)| s.as_str()).collect(),
            _ => Vec::new(),
        };
        names
            .into_iter()
            .filter(|s| self.service_protocols.get(*s) == Some(&Protocol::Http1))
            .map(str::to_string)
            .collect()
    }

    fn mirror(&mut self, node: &Node, what: &str) -> Option<Mirror> {
        let f = self.fields(node, what, &d::MIRROR)?;
        let service = f.get("service").and_then(|n| {
            let w = format!("{what}.service");
            let name = self.nonempty(n, &w)?;
            self.check_service(&name, n.pos, &w).then_some(name)
        });
        let per_million = f
            .value("percent")
            .and_then(|n| self.percent(n, &format!("{what}.percent")));
        Some(Mirror {
            service: service?,
            per_million: per_million?,
        })
    }

    fn percent(&mut self, node: &Node, what: &str) -> Option<u32> {
        let parsed = match &node.value {
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } => grammar::percent(text),
            _ => None,
        };
        if parsed.is_none() {
            let bare = matches!(
                node.value,
                Value::Scalar {
                    kind: Scalar::Int(_) | Scalar::Float(_),
                    ..
                }
            );
            if bare {
                let found = node.describe();
                self.problem(
                    node.pos,
                    format!(
                        "{what}: expected {}, found {found} (write the `%`)",
                        grammar::PERCENT_HINT
                    ),
                );
            } else {
                self.expected(node, what, grammar::PERCENT_HINT);
            }
        }
        parsed
    }

    fn affinity(&mut self, node: &Node, what: &str) -> Option<Affinity> {
        let f = self.fields(node, what, &d::AFFINITY)?;
        let ttl = f.entry("ttl");
        // Absent, `fields` reported it.
        let e = self.at_most_one(&f, d::AFFINITY.one_of, what)?;
        let w = format!("{what}.{}", e.key);
        if e.key == "header" {
            if let Some(t) = ttl {
                self.problem(
                    t.key_pos,
                    format!("{what}: `ttl` is the lifetime of the cookie Envoy sets; it only goes with `cookie`"),
                );
                return None;
            }
            let name = self.string(e.value, &w)?;
            return self
                .header_name(&name, e.value.pos, &w)
                .map(Affinity::Header);
        }
        let name = self.string(e.value, &w).and_then(|n| {
            if grammar::is_token(&n) {
                Some(n)
            } else {
                self.expected(
                    e.value,
                    &w,
                    "a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                );
                None
            }
        });
        let Some(t) = ttl else {
            self.problem(
                f.pos,
                format!(
                    "{what}: a `cookie` needs `ttl`, how long the client keeps the cookie \
                        Envoy sets (`0s` for a session cookie); without it Envoy never sets one"
                ),
            );
            return None;
        };
        let ttl = self.duration(t.value, &format!("{what}.ttl"));
        Some(Affinity::Cookie {
            name: name?,
            ttl: ttl?,
        })
    }

    /// The services of a forwarding action whose `lb` is not a consistent-hash balancer, with
    /// that `lb`'s word. Services that did not decode are left out (their errors are reported).
    fn unhashed_services(&self, action: Option<&RouteAction>) -> Vec<(String, &'static str)> {
        let names: Vec<&String> = match action {
            Some(RouteAction::Service(s)) => vec![s],
            Some(RouteAction::Weighted(ws)) => ws.iter().map(|(s, _)| s).collect(),
            _ => Vec::new(),
        };
        names
            .into_iter()
            .filter_map(|s| {
                let lb = *self.service_lbs.get(s)?;
                if matches!(lb, LbPolicy::RingHash | LbPolicy::Maglev) {
                    return None;
                }
                let word = d::LB_POLICIES.iter().find(|(_, l)| *l == lb)?.0;
                Some((s.clone(), word))
            })
            .collect()
    }

    fn route_match(&mut self, node: &Node, what: &str) -> Option<RouteMatch> {
        let f = self.fields(node, what, &d::ROUTE_MATCH)?;
        // Absent, `fields` reported it.
        let path = match self.at_most_one(&f, d::ROUTE_MATCH.one_of, what) {
            None => None,
            Some(e) => {
                let w = format!("{what}.{}", e.key);
                match e.key {
                    "path" => self.url_path(e.value, &w).map(PathMatch::Exact),
                    "prefix" => self.url_path(e.value, &w).map(PathMatch::Prefix),
                    _ => self.regex(e.value, &w).map(PathMatch::Regex),
                }
            }
        };
        let methods = match f.get("methods") {
            None => Some(Vec::new()),
            Some(n) => self.methods(n, &format!("{what}.methods")),
        };
        let headers = match f.get("headers") {
            None => Some(Vec::new()),
            Some(n) => self.value_matches(n, &format!("{what}.headers"), true),
        };
        self.slipped_headers(&f, "headers", what, |header, value| match value {
            Some(value) => {
                format!("the route takes only requests whose header `{header}` is `{value}`")
            }
            None => format!("the route takes only requests whose header `{header}` matches"),
        });
        let query = match f.get("query") {
            None => Some(Vec::new()),
            Some(n) => self.value_matches(n, &format!("{what}.query"), false),
        };
        let hosts = match f.get("hosts") {
            None => Some(Vec::new()),
            Some(n) => {
                let w = format!("{what}.hosts");
                self.seq(n, &w).and_then(|items| {
                    let mut all = All::new();
                    for item in items {
                        let h = self.string(item, &w).and_then(|s| {
                            let domain = s.strip_prefix("*.").unwrap_or(&s);
                            if grammar::is_dns_name(domain) && !domain.ends_with('.') {
                                // Host matching is case-insensitive; one spelling keeps
                                // translation output stable.
                                Some(s.to_ascii_lowercase())
                            } else {
                                self.expected(
                                    item,
                                    &w,
                                    "a host name like api.example.com or *.example.com (no port)",
                                );
                                None
                            }
                        });
                        all.push(h);
                    }
                    all.finish()
                })
            }
        };
        Some(RouteMatch {
            path: path?,
            methods: methods?,
            headers: headers?,
            query: query?,
            hosts: hosts?,
        })
    }

    fn value_matches(
        &mut self,
        node: &Node,
        what: &str,
        is_header: bool,
    ) -> Option<Vec<ValueMatch>> {
        let entries = self.map(node, what)?;
        let mut all = All::new();
        for e in entries {
            let name = if is_header {
                self.header_name(e.key, e.key_pos, what)
            } else if e.key.is_empty() {
                self.problem(
                    e.key_pos,
                    format!("{what}: expected a parameter name, found an empty key"),
                );
                None
            } else {
                Some(e.key.to_string())
            };
            let w = format!("{what}.{}", e.key);
            let value = match &e.value.value {
                Value::Map(_) => self.fields(e.value, &w, &d::REGEX_MATCH).and_then(|vf| {
                    let re = vf.get("regex")?;
                    self.regex(re, &format!("{w}.regex"))
                        .map(StringMatch::Regex)
                }),
                _ => match e.value.as_text() {
                    Some(s) if !matches!(e.value.value, Value::Seq(_)) => {
                        Some(StringMatch::Exact(s.to_string()))
                    }
                    _ => {
                        self.expected(e.value, &w, "an exact value or {regex: \"…\"}");
                        None
                    }
                },
            };
            all.push(
                name.zip(value)
                    .map(|(name, value)| ValueMatch { name, value }),
            );
        }
        all.finish()
    }

    fn route_action(&mut self, e: Entry<'_>, what: &str) -> Option<RouteAction> {
        let w = format!("{what}: {}", e.key);
        match e.key {
            "service" => {
                let name = self.nonempty(e.value, &w)?;
                self.check_service(&name, e.value.pos, &w)
                    .then_some(RouteAction::Service(name))
            }
            "services" => {
                let entries = self.map(e.value, &w)?;
                if entries.is_empty() {
                    self.expected(e.value, &w, "at least one `service: weight` entry");
                    return None;
                }
                let mut all = All::new();
                for s in entries {
                    let exists = self.check_service(s.key, s.key_pos, &w);
                    let weight: Option<u32> =
                        self.int_in(s.value, &format!("{w}.{}", s.key), 1, i64::from(u32::MAX));
                    all.push(weight.filter(|_| exists).map(|wt| (s.key.to_string(), wt)));
                }
                all.finish().map(RouteAction::Weighted)
            }
            "compose" => self.compose(e.value, &w).map(RouteAction::Compose),
            _ => self.respond(e.value, &w).map(RouteAction::Respond),
        }
    }

    /// `compose:` the parts, in file order.
    fn compose(&mut self, node: &Node, what: &str) -> Option<Vec<ComposePart>> {
        let entries = self.map(node, what)?;
        if entries.is_empty() {
            self.expected(node, what, "at least one `<part>: { service, path }` entry");
            return None;
        }
        let mut all = All::new();
        for e in entries {
            let w = format!("{what}.{}", e.key);
            let name_ok = if d::COMPOSE_RESERVED.contains(&e.key) {
                self.problem(
                    e.key_pos,
                    format!(
                        "{w}: `{}` is the answer's own member (failed parts are listed \
                            under it); give the part another name",
                        e.key
                    ),
                );
                false
            } else if e.key.is_empty()
                || !e
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                self.problem(
                    e.key_pos,
                    format!(
                        "{what}: part name `{}`: expected letters, digits, `_` and `-` \
                            (it becomes a member name of the JSON answer)",
                        e.key
                    ),
                );
                false
            } else {
                true
            };
            let part = self.fields(e.value, &w, &d::COMPOSE_PART).and_then(|pf| {
                let service = pf.get("service").and_then(|n| {
                    let sw = format!("{w}.service");
                    let name = self.nonempty(n, &sw)?;
                    self.check_service(&name, n.pos, &sw).then_some(name)
                });
                let path = pf
                    .get("path")
                    .and_then(|n| self.part_path(n, &format!("{w}.path")));
                Some((service?, path?))
            });
            all.push(part.filter(|_| name_ok).map(|(service, path)| ComposePart {
                name: e.key.to_string(),
                service,
                path,
            }));
        }
        all.finish()
    }

    /// A part's path: absolute, as Envoy sends it (printable ASCII, no space or `#`), and not
    /// `//…`, which many servers read as a host.
    fn part_path(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what)?;
        let printable = s.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if !s.starts_with('/') || s.starts_with("//") || !printable {
            self.expected(
                node,
                what,
                "an absolute path like /users/me or /orders?limit=5 (printable ASCII, \
                    percent-encoded where needed, no spaces, no `#`, not starting with `//`)",
            );
            return None;
        }
        Some(s)
    }

    /// The keys a `compose` route cannot have besides those only forwarding routes take: its
    /// answer is made in Envoy's Lua filter, before the router that would apply them, and it
    /// answers only `GET` (and `HEAD`).
    fn compose_route(&mut self, f: &Fields<'_>, what: &str) {
        for key in ["request_headers", "response_headers"] {
            if let Some(e) = f.entry(key) {
                self.problem(
                    e.key_pos,
                    format!(
                        "{what}: `{key}` cannot be combined with `compose` (the answer is \
                            made before the router that applies it; parts get the identity \
                            headers and `x-request-id`)"
                    ),
                );
            }
        }
        let methods = f
            .get("match")
            .and_then(|m| child(m, "methods"))
            .and_then(|m| match &m.value {
                Value::Seq(items) => Some(items),
                _ => None,
            });
        for item in methods.into_iter().flatten() {
            let Some(m) = item.as_text() else { continue };
            if !m.eq_ignore_ascii_case("GET") && !m.eq_ignore_ascii_case("HEAD") {
                self.problem(
                    item.pos,
                    format!(
                        "{what}: match.methods: a `compose` route answers only GET and HEAD, \
                            but `{m}` is listed"
                    ),
                );
            }
        }
    }

    fn check_service(&mut self, name: &str, pos: Pos, what: &str) -> bool {
        if self.services.contains(name) {
            return true;
        }
        let known = list(&self.services);
        let suggestion = did_you_mean(closest(name, self.services.iter().map(String::as_str)));
        self.problem(
            pos,
            format!("{what}: unknown service `{name}`{suggestion}; defined services: {known}"),
        );
        false
    }

    fn respond(&mut self, node: &Node, what: &str) -> Option<Respond> {
        let f = self.fields(node, what, &d::RESPOND)?;
        let status = f.get("status").and_then(|n| {
            let (lo, hi) = f.bounds("status");
            self.int_in(n, &format!("{what}.status"), lo, hi)
        });
        let body = match self.at_most_one(&f, &["json", "body"], what) {
            None => Some(RespondBody::Empty),
            Some(e) if e.key == "json" => self
                .json(e.value, &format!("{what}.json"))
                .map(RespondBody::Json),
            Some(e) => self
                .string(e.value, &format!("{what}.body"))
                .map(RespondBody::Text),
        };
        Some(Respond {
            status: status?,
            body: body?,
        })
    }

    /// Any YAML value as JSON. The tree's depth is bounded by the YAML builder, so recursion
    /// here is safe.
    fn json(&mut self, node: &Node, what: &str) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        match &node.value {
            Value::Scalar { text, kind } => match kind {
                Scalar::Null => Some(J::Null),
                Scalar::Bool(b) => Some(J::Bool(*b)),
                Scalar::Int(i) => Some(J::from(*i)),
                Scalar::Float(f) => match serde_json::Number::from_f64(*f) {
                    Some(n) => Some(J::Number(n)),
                    None => {
                        self.expected(node, what, "a value JSON can represent (no .inf or .nan)");
                        None
                    }
                },
                Scalar::Str | Scalar::Quoted => Some(J::String(text.clone())),
            },
            Value::Seq(items) => {
                let mut all = All::new();
                for item in items {
                    let v = self.json(item, what);
                    all.push(v);
                }
                all.finish().map(J::Array)
            }
            Value::Map(_) => {
                let entries = self.map(node, what)?;
                let mut all = All::new();
                for e in entries {
                    let v = self.json(e.value, what);
                    all.push(v.map(|v| (e.key.to_string(), v)));
                }
                all.finish().map(|v| J::Object(v.into_iter().collect()))
            }
        }
    }

    fn route_auth(&mut self, node: &Node, what: &str) -> Option<RouteAuth> {
        let expectation = "`none`, a provider name, or a list of provider names";
        match &node.value {
            Value::Seq(items) => {
                if items.is_empty() {
                    self.expected(
                        node,
                        what,
                        &format!("{expectation} (write `auth: none` for a public route)"),
                    );
                    return None;
                }
                let mut all = All::new();
                for item in items {
                    let p = self.string(item, what).and_then(|name| {
                        if name == "none" {
                            self.problem(
                                item.pos,
                                format!(
                                    "{what}: `none` cannot be combined with \
                                        providers; write `auth: none` on its own"
                                ),
                            );
                            return None;
                        }
                        self.check_provider(&name, item.pos, what).then_some(name)
                    });
                    all.push(p);
                }
                let mut names = all.finish()?;
                let mut seen = BTreeSet::new();
                names.retain(|n| seen.insert(n.clone()));
                Some(RouteAuth::Providers(names))
            }
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } => {
                if text == "none" {
                    Some(RouteAuth::None)
                } else if text.is_empty() {
                    self.expected(node, what, expectation);
                    None
                } else {
                    self.check_provider(text, node.pos, what)
                        .then(|| RouteAuth::Providers(vec![text.clone()]))
                }
            }
            _ => {
                self.expected(node, what, expectation);
                None
            }
        }
    }

    fn check_provider(&mut self, name: &str, pos: Pos, what: &str) -> bool {
        if self.mtls.contains(name) && !self.client_ca_listener {
            self.problem(
                pos,
                format!(
                    "{what}: `{name}` is an auth.mtls provider, which needs a verified client \
                        certificate, but no listener of this gateway asks for one; give a TLS \
                        listener `client_ca_file`, or name another provider"
                ),
            );
            return false;
        }
        if self.jwt.contains(name) || self.api_keys.contains(name) || self.mtls.contains(name) {
            return true;
        }
        let known = self.provider_names();
        let suggestion = did_you_mean(closest(name, known.iter().map(|s| s.as_str())));
        let message = if known.is_empty() {
            format!(
                "{what}: unknown auth provider `{name}`; no \
                    providers are defined (add one under auth.jwt, \
                    auth.api_keys or auth.mtls, or write `auth: none`)"
            )
        } else {
            format!(
                "{what}: unknown auth provider `{name}`{suggestion}; defined providers: {}",
                list(known)
            )
        };
        self.problem(pos, message);
        false
    }

    fn route_rate_limit(&mut self, node: &Node, what: &str) -> Option<RouteRateLimit> {
        let expectation =
            "`plan`, `none`, or a list of `plan` and {limit: <rate>, per: <key>} items";
        match &node.value {
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } if text == "plan" => Some(RouteRateLimit::Limits(vec![LimitRef::Plan])),
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } if text == "none" => Some(RouteRateLimit::None),
            Value::Seq(items) if !items.is_empty() => {
                let mut all = All::new();
                for item in items {
                    let l = self.limit_ref(item, what, expectation);
                    all.push(l);
                }
                let limits = all.finish()?;
                let by_address = limits.iter().any(|l| {
                    matches!(
                        l,
                        LimitRef::Limit {
                            per: Per::Ip | Per::Header(_),
                            ..
                        }
                    )
                });
                if self.counted_by_authz && by_address && limits.contains(&LimitRef::Plan) {
                    self.problem(
                        node.pos,
                        format!(
                            "{what}: with `rate_limits.counted_by: authz-service` a route \
                                cannot combine `plan` with a limit per ip or per header: \
                                authz-service counts the plan and ratelimit-service the \
                                other, so one request could be charged by one and refused \
                                by the other; move the per-ip or per-header limit to its \
                                own route, or count every limit in ratelimit-service"
                        ),
                    );
                    return None;
                }
                Some(RouteRateLimit::Limits(limits))
            }
            _ => {
                self.expected_word(node, what, expectation, &["plan", "none"]);
                None
            }
        }
    }

    fn limit_ref(&mut self, node: &Node, what: &str, expectation: &str) -> Option<LimitRef> {
        match &node.value {
            Value::Scalar {
                text,
                kind: Scalar::Str | Scalar::Quoted,
            } if text == "plan" => Some(LimitRef::Plan),
            Value::Map(_) => {
                let f = self.fields(node, what, &d::LIMIT)?;
                let rate = f
                    .get("limit")
                    .and_then(|n| self.rate(n, &format!("{what}.limit")));
                let per = f
                    .value("per")
                    .and_then(|n| self.per(n, &format!("{what}.per")));
                if !self.has_rate_limits {
                    self.problem(
                        node.pos,
                        format!(
                            "{what}: a `limit` needs a `rate_limits` section, \
                                which tells Envoy where ratelimit-service runs; \
                                add `rate_limits: {{}}` to use the defaults"
                        ),
                    );
                    return None;
                }
                Some(LimitRef::Limit {
                    rate: rate?,
                    per: per?,
                })
            }
            _ => {
                self.expected_word(node, what, expectation, &["plan"]);
                None
            }
        }
    }

    fn per(&mut self, node: &Node, what: &str) -> Option<Per> {
        let words: Vec<&str> = d::PER_WORDS.iter().map(|(w, _)| *w).collect();
        let expectation = format!("one of {} | header:<name>", words.join(" | "));
        let expectation = expectation.as_str();
        let Value::Scalar {
            text,
            kind: Scalar::Str | Scalar::Quoted,
        } = &node.value
        else {
            self.expected(node, what, expectation);
            return None;
        };
        if let Some((_, per)) = d::PER_WORDS.iter().find(|(w, _)| w == text) {
            return Some(per.clone());
        }
        match text.strip_prefix("header:") {
            Some(h) => self.header_name(h, node.pos, what).map(Per::Header),
            None => {
                self.expected_word(node, what, expectation, &words);
                None
            }
        }
    }

    fn retries(&mut self, node: &Node, what: &str) -> Option<Retries> {
        let f = self.fields(node, what, &d::RETRIES)?;
        let attempts = self.int_key(&f, "attempts", what);
        let on = match f.value("on") {
            None => None,
            Some(n) => {
                let w = format!("{what}.on");
                self.seq(n, &w).and_then(|items| {
                    if items.is_empty() {
                        self.expected(n, &w, "at least one retry condition or status code");
                        return None;
                    }
                    let mut all = All::new();
                    for item in items {
                        let r = match &item.value {
                            Value::Scalar {
                                kind: Scalar::Int(_),
                                ..
                            } => self.int_in(item, &w, 100, 599).map(RetryOn::Status),
                            Value::Scalar {
                                text,
                                kind: Scalar::Str | Scalar::Quoted,
                            } if d::RETRY_CONDITIONS.contains(&text.as_str()) => {
                                Some(RetryOn::Condition(text.clone()))
                            }
                            _ => {
                                self.expected_word(
                                    item,
                                    &w,
                                    &format!(
                                        "an HTTP status code (100..=599) or one of {}",
                                        d::RETRY_CONDITIONS.join(" | ")
                                    ),
                                    &d::RETRY_CONDITIONS,
                                );
                                None
                            }
                        };
                        all.push(r);
                    }
                    all.finish()
                })
            }
        };
        let per_try_timeout = match f.get("per_try_timeout") {
            None => Some(None),
            Some(n) => self
                .positive_duration(n, &format!("{what}.per_try_timeout"))
                .map(Some),
        };
        Some(Retries {
            attempts: attempts?,
            on: on?,
            per_try_timeout: per_try_timeout?,
        })
    }

    fn header_changes(&mut self, node: &Node, what: &str) -> Option<HeaderChanges> {
        let f = self.fields(node, what, &d::HEADER_CHANGES)?;
        let set = match f.get("set") {
            None => Some(Vec::new()),
            Some(n) => self.header_map(n, &format!("{what}.set"), false),
        };
        self.slipped_headers(&f, "set", what, |header, value| match value {
            Some(value) => format!("the header `{header}` is set to `{value}`"),
            None => format!("the header `{header}` is set"),
        });
        let remove = match f.get("remove") {
            None => Some(Vec::new()),
            Some(n) => self.header_names(n, &format!("{what}.remove")),
        };
        Some(HeaderChanges {
            set: set?,
            remove: remove?,
        })
    }
}
