//! The description of `gateway.yaml`: every object, its keys, each key's type or value format,
//! default and one-line doc, and the value grammars. The one home of these facts.
//!
//! Everything else is derived from it: the decoder ([`super::decode`]) takes its unknown-key and
//! required-key checks from here, and when a key is absent it decodes the key's default, written
//! here as the YAML text a user would write, through the very code that decodes a user's value;
//! the JSON Schema and the reference ([`super::schema`]) render it; the model's few `Default`s
//! are decoded from it. Adding a key is one [`Key`] line here, its model field, its decoding
//! (when its shape is not one the decoder already reads) and its translation.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use super::model::{
    AccessLog, Algorithm, CertField, CompressionAlgorithm, CountedBy, JwtAlgorithm, LbPolicy,
    OnError, Per, Protocol, COMPOSE_FALLBACK_CLUSTER,
};
use super::yaml::{self, Node};

// ---- value formats ----------------------------------------------------------------------------

/// Which YAML scalars a format's decoder reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalars {
    /// Strings only: a duration written `5` is an error.
    String,
    /// Any scalar, read as text: a header name `1` is the text "1".
    Text,
    /// A string in the format, or a plain integer (a size `1024` is 1024 bytes).
    StringOrInt,
}

/// A string grammar: emitted once under the schema's `$defs`, listed once in the reference, and
/// named by the keys that use it.
pub(crate) struct Format {
    pub name: &'static str,
    /// How the reference names it.
    pub title: &'static str,
    pub description: &'static str,
    /// Mirrors the decoder's grammar (`config::grammar`); the tests compare them on a corpus.
    pub pattern: &'static str,
    pub scalars: Scalars,
    pub examples: &'static [&'static str],
}

// The patterns mirror `config::grammar`; the tests compare them with the decoder on a corpus.
// A whole number and a unit; `1.5s` is rejected on purpose (write `1500ms`).
pub(crate) const DURATION: Format = Format {
    name: "duration",
    title: "duration",
    description: "A whole number and a unit: ms, s, m, h or d.",
    pattern: "^[0-9]+(ms|s|m|h|d)$",
    scalars: Scalars::String,
    examples: &["250ms", "5s", "1m", "1h", "1d"],
};
// Timeouts and intervals: zero would mean "never" or "always" to Envoy.
pub(crate) const POSITIVE_DURATION: Format = Format {
    name: "positiveDuration",
    title: "duration > 0",
    description: "A duration longer than zero: a whole number and a unit (ms, s, m, h or d).",
    pattern: "^0*[1-9][0-9]*(ms|s|m|h|d)$",
    scalars: Scalars::String,
    examples: &["250ms", "5s", "1m"],
};
pub(crate) const RATE: Format = Format {
    name: "rate",
    title: "rate",
    description: "N requests per window: N/second|minute|hour|day (also s, min, h, d) or N/<duration>, N at least 1, the window at most 2^52 ms (about 142,000 years).",
    pattern: "^0*[1-9][0-9]*/(second|minute|hour|day|s|min|h|d|0*[1-9][0-9]*(ms|s|m|h|d))$",
    scalars: Scalars::String,
    examples: &["100/minute", "5/s", "100/30s"],
};
pub(crate) const HOST_PORT: Format = Format {
    name: "hostPort",
    title: "host:port",
    description: "A host (IP address or DNS name, IPv6 in brackets) and a port in 1..65535.",
    pattern: concat!(
        r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?",
        r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?)",
        ":0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    ),
    scalars: Scalars::String,
    examples: &["127.0.0.1:3001", "users.internal:443", "[::1]:8080"],
};
pub(crate) const HEADER_NAME: Format = Format {
    name: "headerName",
    title: "header name",
    description:
        "An HTTP header name (an RFC 9110 token of letters, digits and !#$%&'*+-.^_|~), matched case-insensitively.",
    pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
    scalars: Scalars::Text,
    examples: &["x-user-id", "authorization"],
};
pub(crate) const METHOD: Format = Format {
    name: "method",
    title: "HTTP method",
    description: "An HTTP method (an RFC 9110 token), matched in upper case.",
    pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
    scalars: Scalars::Text,
    examples: &["GET", "POST"],
};
pub(crate) const URL_PATH: Format = Format {
    name: "urlPath",
    title: "URL path",
    description: "A URL path starting with `/`.",
    pattern: "^/",
    scalars: Scalars::Text,
    examples: &["/api/v1/users", "/health"],
};
pub(crate) const HOST_NAME: Format = Format {
    name: "hostName",
    title: "host name",
    description: "A DNS name: dot-separated labels of letters, digits, `-` and `_`.",
    pattern: concat!(
        r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?",
        r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
    ),
    scalars: Scalars::Text,
    examples: &["users.internal"],
};
pub(crate) const HOST_MATCH: Format = Format {
    name: "hostMatch",
    title: "host pattern",
    description:
        "A host name, optionally starting with `*.` to match every subdomain, without a port.",
    pattern: concat!(
        r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?",
        r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$"
    ),
    scalars: Scalars::Text,
    examples: &["api.example.com", "*.example.com"],
};
pub(crate) const ORIGIN: Format = Format {
    name: "origin",
    title: "origin",
    description: "`*`, or an origin: scheme, host and optional port, without a path.",
    pattern: concat!(
        r"^(\*|[A-Za-z0-9+.-]+://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?",
        r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?)(:[0-9]+)?)$"
    ),
    scalars: Scalars::Text,
    examples: &["https://app.example.com", "http://localhost:3000", "*"],
};
pub(crate) const IP_ADDRESS: Format = Format {
    name: "ipAddress",
    title: "IP address",
    description: "An IPv4 or IPv6 address (IPv6 with or without brackets).",
    pattern: concat!(
        r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*",
        r"|\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\])$"
    ),
    scalars: Scalars::Text,
    examples: &["0.0.0.0", "127.0.0.1", "::"],
};
pub(crate) const JWKS_URL: Format = Format {
    name: "jwksUrl",
    title: "JWKS URL",
    description: "An https:// URL, or an http:// URL to localhost, 127.0.0.1 or [::1].",
    pattern: concat!(
        r"^(https://[^/?#\s]+([/?#].*)?",
        r"|http://(localhost|127\.0\.0\.1|\[::1\])(:[^/?#\s]*)?([/?#].*)?)$"
    ),
    scalars: Scalars::Text,
    examples: &["https://auth.example.com/.well-known/jwks.json"],
};
pub(crate) const ENV_NAME: Format = Format {
    name: "envName",
    title: "environment variable",
    description: "An environment variable name: a letter or `_`, then letters, digits and `_`.",
    pattern: "^[A-Za-z_][A-Za-z0-9_]*$",
    scalars: Scalars::Text,
    examples: &["JWT_SECRET"],
};
pub(crate) const PER_HEADER: Format = Format {
    name: "perHeader",
    title: "header:<name>",
    description:
        "`header:` followed by a header name: one bucket per value of that request header.",
    pattern: "^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
    scalars: Scalars::String,
    examples: &["header:x-tenant-id"],
};

// Request-body limits (spec §8): bytes, or a whole number of KiB, MiB or GiB; Envoy holds the
// limit in 32 bits, so at most 4294967295 bytes.
pub(crate) const SIZE: Format = Format {
    name: "size",
    title: "size",
    description: "A number of bytes: a whole number, alone (bytes) or with KiB, MiB or GiB (powers of 1024); at least 1, at most 4294967295 bytes.",
    pattern: "^0*[1-9][0-9]*(KiB|MiB|GiB)?$",
    scalars: Scalars::StringOrInt,
    examples: &["512KiB", "1MiB", "20MiB", "65536"],
};

// IP lists (spec §8). The pattern is looser than the decoder (it cannot check IPv6 or octet
// values); the decoder also refuses an address with bits set past its prefix.
pub(crate) const CIDR: Format = Format {
    name: "cidr",
    title: "CIDR",
    description: "An IPv4 or IPv6 network, `address/prefix` with no address bits set past the prefix, or a single address (`/32` or `/128`).",
    pattern: concat!(
        r"^([0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?",
        r"|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(/[0-9]{1,3})?)$"
    ),
    scalars: Scalars::String,
    examples: &["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"],
};

// Compression's `content_types`: a media type without parameters, as Envoy's matcher compares
// it (parameters such as `; charset=utf-8` are ignored on the response, letter case too).
pub(crate) const MEDIA_TYPE: Format = Format {
    name: "mediaType",
    title: "media type",
    description: "A media type `type/subtype` (RFC 9110 tokens), without parameters; matched ignoring letter case and the response's parameters.",
    pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+/[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
    scalars: Scalars::Text,
    examples: &["application/json", "text/html"],
};

// Mirrored shares (spec §8): Envoy's finest fraction is a millionth, so at most 4 decimals.
pub(crate) const PERCENT: Format = Format {
    name: "percent",
    title: "percentage",
    description: "A share from 0% to 100%, decimals allowed (at most 4): `10%`, `0.5%`.",
    pattern: r"^(([0-9]{1,2}|0[0-9]{2})(\.[0-9]{1,4})?|100(\.0{1,4})?)%$",
    scalars: Scalars::String,
    examples: &["10%", "0.5%", "100%"],
};
pub(crate) const COOKIE_NAME: Format = Format {
    name: "cookieName",
    title: "cookie name",
    description:
        "A cookie name (an RFC 6265 token of letters, digits and !#$%&'*+-.^_|~), matched case-sensitively.",
    pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
    scalars: Scalars::Text,
    examples: &["route", "gw_affinity"],
};

// RFC 6901, never the whole document: `~` only as `~0` or `~1`.
pub(crate) const JSON_POINTER: Format = Format {
    name: "jsonPointer",
    title: "JSON Pointer",
    description: "A JSON Pointer (RFC 6901) to a member or array element: `/`-separated names, `~1` for a `/` and `~0` for a `~` inside a name, a decimal index or `-` (one past the end) in an array.",
    pattern: "^(/([^~/]|~[01])*)+$",
    scalars: Scalars::Text,
    examples: &["/internal_id", "/user/full_name", "/items/0", "/a~1b"],
};

pub(crate) const FORMATS: &[&Format] = &[
    &DURATION,
    &POSITIVE_DURATION,
    &RATE,
    &HOST_PORT,
    &HEADER_NAME,
    &METHOD,
    &URL_PATH,
    &HOST_NAME,
    &HOST_MATCH,
    &ORIGIN,
    &IP_ADDRESS,
    &JWKS_URL,
    &ENV_NAME,
    &PER_HEADER,
    &SIZE,
    &CIDR,
    &MEDIA_TYPE,
    &PERCENT,
    &COOKIE_NAME,
    &JSON_POINTER,
];

// ---- types ------------------------------------------------------------------------------------

/// The largest count the decoder accepts for ports' siblings: weights, limits, thresholds.
pub(crate) const U32_MAX: i64 = u32::MAX as i64;

/// One spelling of an enumeration: the word a user writes.
pub(crate) trait Word: Sync {
    fn word(&self) -> &'static str;
}

impl Word for &'static str {
    fn word(&self) -> &'static str {
        self
    }
}

/// A decoder's table: the word and the model value it stands for.
impl<T: Sync> Word for (&'static str, T) {
    fn word(&self) -> &'static str {
        self.0
    }
}

impl Word for JwtAlgorithm {
    fn word(&self) -> &'static str {
        self.as_str()
    }
}

/// The words of an enumeration, in order; implemented by the decoder's own tables, so the
/// schema's `enum` and the decoder's choices are one list.
pub(crate) trait Words: Sync {
    fn words(&self) -> Vec<&'static str>;
}

impl<W: Word, const N: usize> Words for [W; N] {
    fn words(&self) -> Vec<&'static str> {
        self.iter().map(Word::word).collect()
    }
}

/// The keys of a map section.
#[derive(Clone, Copy)]
pub(crate) enum Names {
    /// Any name.
    Any,
    /// A non-empty name (query parameters).
    NonEmpty,
    /// Header names.
    Header,
    /// Any name except these, which the decoder reserves.
    Except(&'static [&'static str]),
}

/// A key's type: what the schema checks and the reference names.
pub(crate) enum Ty {
    /// Any scalar, read as text (`nonempty`: not "").
    Text {
        nonempty: bool,
    },
    /// A string grammar from [`FORMATS`].
    Fmt(&'static Format),
    /// An integer in `min..=max`; the decoder takes its bounds from here.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// Exactly this integer.
    IntConst(i64),
    /// One of these words.
    Enum(&'static dyn Words),
    List {
        item: &'static Ty,
        nonempty: bool,
    },
    Map {
        names: Names,
        value: &'static Ty,
        nonempty: bool,
    },
    Obj(&'static Object),
    AnyOf(&'static [Ty]),
    /// Any YAML value.
    Any,
}

const TEXT: Ty = Ty::Text { nonempty: false };
const NONEMPTY: Ty = Ty::Text { nonempty: true };

const fn int(min: i64) -> Ty {
    Ty::Int { min, max: U32_MAX }
}

const fn list(item: &'static Ty) -> Ty {
    Ty::List {
        item,
        nonempty: false,
    }
}

const fn nonempty_list(item: &'static Ty) -> Ty {
    Ty::List {
        item,
        nonempty: true,
    }
}

const fn map(names: Names, value: &'static Ty) -> Ty {
    Ty::Map {
        names,
        value,
        nonempty: false,
    }
}

/// What applies when a key is absent.
pub(crate) enum Absent {
    /// Nothing: the key's feature is off, or its list or map is empty.
    Nothing,
    /// The decoder reports `missing required key`.
    Required,
    /// Required, but the decoder explains its absence itself (`auth` on a route says how to
    /// make a route public).
    RequiredExplained,
    /// This YAML text, decoded as if the user had written it.
    Default(&'static str),
}

/// One key of an object.
pub(crate) struct Key {
    pub name: &'static str,
    pub ty: Ty,
    pub absent: Absent,
    /// One sentence, from the spec.
    pub doc: &'static str,
}

const fn key(name: &'static str, ty: Ty, absent: Absent, doc: &'static str) -> Key {
    Key {
        name,
        ty,
        absent,
        doc,
    }
}

impl Key {
    /// The key's doc with its placeholder filled in.
    pub fn doc(&self) -> String {
        self.doc.replace("{MAX_CLOCK_SKEW}", MAX_CLOCK_SKEW)
    }
}

use Absent::{Default as Is, Nothing as Optional, Required};

/// A mapping with a fixed set of keys.
pub(crate) struct Object {
    /// Its name under the schema's `$defs`.
    pub name: &'static str,
    /// Where it sits in the file, e.g. `services.<name>.health_check`.
    pub title: &'static str,
    /// `{one_of}` in it stands for [`Object::one_of`], as prose.
    pub doc: &'static str,
    /// In the order the decoder lists them when it meets an unknown key.
    pub keys: &'static [Key],
    /// Keys of which exactly one must be given (the decoder says "give exactly one of …").
    pub one_of: &'static [&'static str],
}

impl Object {
    pub fn key(&self, name: &str) -> Option<&'static Key> {
        // `keys` is `'static`; the indirection through `self` only shortens it.
        let keys: &'static [Key] = self.keys;
        keys.iter().find(|k| k.name == name)
    }

    pub fn key_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.keys.iter().map(|k| k.name)
    }

    pub fn required(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.keys
            .iter()
            .filter(|k| matches!(k.absent, Absent::Required | Absent::RequiredExplained))
            .map(|k| k.name)
    }

    /// The object's doc with its placeholder filled in.
    pub fn doc(&self) -> String {
        self.doc.replace("{one_of}", &one_of(self.one_of))
    }

    /// The objects this one's keys lead to, in key order.
    pub fn children(&self) -> Vec<&'static Object> {
        let mut out = Vec::new();
        for k in self.keys {
            k.ty.objects(&mut out);
        }
        out
    }

    /// The parsed default of `key`, when it has one.
    pub fn default_node(&self, key: &str) -> Option<&'static Node> {
        let nodes: &'static BTreeMap<_, Option<Node>> = &DEFAULT_NODES;
        nodes
            .iter()
            .find(|((object, k), _)| *object == self.name && *k == key)
            .and_then(|(_, node)| node.as_ref())
    }
}

impl Ty {
    /// The objects this type leads to, in order.
    pub fn objects(&self, out: &mut Vec<&'static Object>) {
        match self {
            Ty::Obj(o) => out.push(o),
            Ty::List { item, .. } => item.objects(out),
            Ty::Map { value, .. } => value.objects(out),
            Ty::AnyOf(alternatives) => alternatives.iter().for_each(|t| t.objects(out)),
            _ => {}
        }
    }
}

/// `a, b or c`, in backticks (for messages and docs).
pub(crate) fn one_of(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => format!("`{one}`"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|s| format!("`{s}`")).collect();
            format!("{} or `{last}`", init.join(", "))
        }
    }
}

/// Every object, in reading order: depth first from the top level, each once.
pub(crate) fn objects() -> Vec<&'static Object> {
    fn visit(o: &'static Object, out: &mut Vec<&'static Object>) {
        if out.iter().any(|seen| std::ptr::eq(*seen, o)) {
            return;
        }
        out.push(o);
        for child in o.children() {
            visit(child, out);
        }
    }
    let mut out = Vec::new();
    visit(&TOP, &mut out);
    out
}

/// Every default, parsed once: (object, key) → the tree of its text, or `None` where the text
/// is not YAML (a test refuses that).
static DEFAULT_NODES: LazyLock<BTreeMap<(&'static str, &'static str), Option<Node>>> =
    LazyLock::new(|| {
        let mut nodes = BTreeMap::new();
        for o in objects() {
            for k in o.keys {
                if let Absent::Default(text) = k.absent {
                    nodes.insert((o.name, k.name), yaml::parse(text).ok().flatten());
                }
            }
        }
        nodes
    });

// ---- enumerations -----------------------------------------------------------------------------

pub(crate) const PROTOCOLS: [(&str, Protocol); 3] = [
    ("http1", Protocol::Http1),
    ("http2", Protocol::Http2),
    ("grpc", Protocol::Grpc),
];
pub(crate) const LB_POLICIES: [(&str, LbPolicy); 5] = [
    ("round_robin", LbPolicy::RoundRobin),
    ("least_request", LbPolicy::LeastRequest),
    ("random", LbPolicy::Random),
    ("ring_hash", LbPolicy::RingHash),
    ("maglev", LbPolicy::Maglev),
];
pub(crate) const ON_ERRORS: [(&str, OnError); 2] =
    [("allow", OnError::Allow), ("deny", OnError::Deny)];
pub(crate) const ALGORITHMS: [(&str, Algorithm); 3] = [
    ("sliding_window", Algorithm::SlidingWindow),
    ("approximate", Algorithm::Approximate),
    ("fixed", Algorithm::Fixed),
];
pub(crate) const COUNTED_BY: [(&str, CountedBy); 2] = [
    ("ratelimit-service", CountedBy::RatelimitService),
    ("authz-service", CountedBy::AuthzService),
];
pub(crate) const ACCESS_LOGS: [(&str, AccessLog); 3] = [
    ("json", AccessLog::Json),
    ("text", AccessLog::Text),
    ("off", AccessLog::Off),
];
/// Compression algorithms by their `Accept-Encoding` token.
pub(crate) const COMPRESSION_ALGORITHMS: [(&str, CompressionAlgorithm); 3] = [
    ("zstd", CompressionAlgorithm::Zstd),
    ("br", CompressionAlgorithm::Brotli),
    ("gzip", CompressionAlgorithm::Gzip),
];
/// `per` words; `header:<name>` is the one that takes a value.
pub(crate) const PER_WORDS: [(&str, Per); 5] = [
    ("client", Per::Client),
    ("user", Per::User),
    ("ip", Per::Ip),
    ("route", Per::Route),
    ("tenant", Per::Tenant),
];

/// `client_cert` words: whether a listener with `client_ca_file` refuses clients without one.
pub(crate) const CLIENT_CERT_MODES: [(&str, bool); 2] = [("required", true), ("optional", false)];
/// `auth.mtls.<name>.client_id` words.
pub(crate) const CERT_FIELDS: [(&str, CertField); 3] = [
    ("subject", CertField::Subject),
    ("uri_san", CertField::UriSan),
    ("dns_san", CertField::DnsSan),
];

/// Envoy's `x-envoy-retry-on` conditions that make sense in a route's retry policy.
pub(crate) const RETRY_CONDITIONS: [&str; 11] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

/// The largest `clock_skew` accepted (every token lives that much longer; beyond a few minutes
/// it is a mistake). Written as a duration and read by the decoder's grammar.
pub(crate) const MAX_CLOCK_SKEW: &str = "5m";

/// Names no service or gateway may take: the policy services' xDS node groups and clusters
/// (`proto::group::ALL`), and the cluster of `compose` routes.
pub(crate) const RESERVED: &[&str] = &[
    proto::group::AUTHZ,
    proto::group::RATELIMIT,
    proto::group::TRANSFORM,
    COMPOSE_FALLBACK_CLUSTER,
    proto::TRACING_CLUSTER,
];

// ---- objects ----------------------------------------------------------------------------------

#[rustfmt::skip]
pub(crate) static TOP: Object = Object {
    name: "gateway.yaml",
    title: "gateway.yaml",
    doc: "The whole file. Unknown keys, unknown references, duplicate names, bad durations and rates are errors; `xds-server validate` reports each with its line and column.",
    keys: &[
        key("version", Ty::IntConst(1), Required, "Version of the file format; must be 1."),
        key("services", map(Names::Except(RESERVED), &Ty::Obj(&SERVICE)), Optional, "Upstream services by name; each becomes an Envoy cluster with its endpoints."),
        key("auth", Ty::Obj(&AUTH), Optional, "Where Envoy finds authz-service, and the JWT and API-key providers that routes name in `auth`."),
        key("rate_limits", Ty::Obj(&RATE_LIMITS), Optional, "Where Envoy finds ratelimit-service, and the plans and limits it enforces; routes with a `limit` need this section."),
        key("gateways", map(Names::Except(RESERVED), &Ty::Obj(&GATEWAY)), Optional, "One entry per group of Envoy proxies; an Envoy whose bootstrap node.cluster is the entry's name gets it."),
        key("transforms", Ty::Obj(&TRANSFORMS), Is("{}"), "Where Envoy finds transform-service, which runs the routes' `transform`s; used only by gateways with such a route."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static TRANSFORMS: Object = Object {
    name: "transforms",
    title: "transforms",
    doc: "transform-service, which edits the bodies of routes with `transform` (Envoy's ext_proc). It fails closed: there is no `on_error`, a transform that cannot run is never skipped.",
    keys: &[
        key("service", Ty::Obj(&TRANSFORM_SERVICE), Is("{}"), "Where Envoy finds transform-service."),
    ],
    one_of: &[],
};

/// The service's own default listen address (spec §7).
#[rustfmt::skip]
pub(crate) static TRANSFORM_SERVICE: Object = Object {
    name: "transformService",
    title: "transforms.service",
    doc: "Where Envoy finds transform-service (its ext_proc gRPC service).",
    keys: &[
        key("address", Ty::Fmt(&HOST_PORT), Is("127.0.0.1:9003"), "Address of transform-service as host:port."),
        key("timeout", Ty::Fmt(&POSITIVE_DURATION), Is("1s"), "How long Envoy waits for each answer of transform-service (headers, then body, per direction); on a route whose `timeout` is shorter, the answers of one request together never take longer than that `timeout`. Late: 504 JSON."),
        key("tls", Ty::Obj(&UPSTREAM_TLS), Optional, "TLS from Envoy to transform-service; with `cert_file` and `key_file`, for a transform-service started with `--tls-cert --tls-key --client-ca`."),
    ],
    one_of: &[],
};

// ---- services

#[rustfmt::skip]
pub(crate) static SERVICE: Object = Object {
    name: "service",
    title: "services.<name>",
    doc: "An upstream service: an Envoy cluster and its endpoints. Every cluster (the policy services' too) buffers at most 32 KiB per upstream connection, and `http2` and `grpc` upstreams get HTTP/2 windows of 64 KiB per stream and 1 MiB per connection: Envoy's edge-proxy values, so a client that stops reading cannot make Envoy hold much of an upstream's response; these are fixed.",
    keys: &[
        key("endpoints", nonempty_list(&Ty::Fmt(&HOST_PORT)), Required, "Upstream addresses as host:port; a DNS name is resolved by Envoy."),
        key("protocol", Ty::Enum(&PROTOCOLS), Is("http1"), "Protocol Envoy speaks to the upstream."),
        key("lb", Ty::Enum(&LB_POLICIES), Is("round_robin"), "Load-balancing policy across the endpoints."),
        key("connect_timeout", Ty::Fmt(&POSITIVE_DURATION), Is("2s"), "How long Envoy waits to open a connection to an endpoint."),
        key("health_check", Ty::Obj(&HEALTH_CHECK), Optional, "Active HTTP health checks of every endpoint; omitted, endpoints are not actively checked."),
        key("circuit_breaker", Ty::Obj(&CIRCUIT_BREAKER), Is("{}"), "Limits on connections, pending requests, requests and retries in flight to the service."),
        key("outlier_detection", Ty::Obj(&OUTLIER_DETECTION), Optional, "Ejects endpoints that keep answering 5xx; omitted, no endpoint is ejected."),
        key("tls", Ty::Obj(&UPSTREAM_TLS), Optional, "TLS from Envoy to the upstream; omitted, Envoy connects in plain text."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static HEALTH_CHECK: Object = Object {
    name: "healthCheck",
    title: "services.<name>.health_check",
    doc: "Active HTTP health checking: Envoy requests `path` on every endpoint.",
    keys: &[
        key("path", Ty::Fmt(&URL_PATH), Required, "Path Envoy requests on each endpoint."),
        key("interval", Ty::Fmt(&POSITIVE_DURATION), Is("5s"), "Time between two checks of an endpoint."),
        key("timeout", Ty::Fmt(&POSITIVE_DURATION), Is("1s"), "How long a check may take before it counts as failed."),
        key("healthy", int(1), Is("2"), "Consecutive passed checks after which an endpoint counts as healthy."),
        key("unhealthy", int(1), Is("3"), "Consecutive failed checks after which an endpoint counts as unhealthy."),
    ],
    one_of: &[],
};

// A zero connection or request limit would reject every request; zero retries is a legitimate
// "never retry concurrently".
#[rustfmt::skip]
pub(crate) static CIRCUIT_BREAKER: Object = Object {
    name: "circuitBreaker",
    title: "services.<name>.circuit_breaker",
    doc: "Limits on what is in flight to the service at once; beyond them Envoy fails fast with 503.",
    keys: &[
        key("max_connections", int(1), Is("1024"), "Most connections open to the service at once."),
        key("max_pending", int(1), Is("1024"), "Most requests waiting for a connection at once."),
        key("max_requests", int(1), Is("1024"), "Most requests in flight to the service at once."),
        key("max_retries", int(0), Is("3"), "Most retries in flight to the service at once."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static OUTLIER_DETECTION: Object = Object {
    name: "outlierDetection",
    title: "services.<name>.outlier_detection",
    doc: "Passive health checking: endpoints that keep failing are ejected for a while.",
    keys: &[
        key("consecutive_5xx", int(1), Is("5"), "Consecutive 5xx responses after which an endpoint is ejected."),
        key("interval", Ty::Fmt(&POSITIVE_DURATION), Is("10s"), "Time between two ejection sweeps."),
        key("ejection_time", Ty::Fmt(&POSITIVE_DURATION), Is("30s"), "Base time an ejected endpoint stays out of the load-balancing set."),
        key("max_ejection_percent", Ty::Int { min: 0, max: 100 }, Is("50"), "Largest share of the endpoints, in percent, that may be ejected at once."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static UPSTREAM_TLS: Object = Object {
    name: "upstreamTls",
    title: "services.<name>.tls",
    doc: "TLS from Envoy to the upstream (also `auth.service.tls` and `rate_limits.service.tls`).",
    keys: &[
        key("sni", Ty::Fmt(&HOST_NAME), Optional, "Server name sent to the upstream, and with `ca_file` the name its certificate must carry."),
        key("ca_file", NONEMPTY, Optional, "PEM file of the CAs that sign the upstream's certificate (at least one X.509 certificate), relative to this file; omitted, the certificate is not verified."),
        key("cert_file", NONEMPTY, Optional, "PEM client certificate Envoy presents to the upstream (mTLS), leaf first, relative to this file; requires `key_file`, which must be the leaf's key."),
        key("key_file", NONEMPTY, Optional, "PEM private key of `cert_file` (exactly one, unencrypted), relative to this file; requires `cert_file`."),
    ],
    one_of: &[],
};

// ---- auth

#[rustfmt::skip]
pub(crate) static AUTH: Object = Object {
    name: "auth",
    title: "auth",
    doc: "Authentication: where Envoy finds authz-service, and the providers routes name in `auth`. Provider names are shared by `jwt`, `api_keys` and `mtls` and must be unique across them.",
    keys: &[
        key("service", Ty::Obj(&AUTH_SERVICE), Is("{}"), "Where Envoy finds authz-service, and what it does when that is unreachable."),
        key("jwt", map(Names::Except(&["none"]), &Ty::Obj(&JWT_PROVIDER)), Optional, "JWT providers by name."),
        key("api_keys", map(Names::Except(&["none"]), &Ty::Obj(&API_KEY_PROVIDER)), Optional, "API-key providers by name."),
        key("mtls", map(Names::Except(&["none"]), &Ty::Obj(&MTLS_PROVIDER)), Optional, "Client-certificate providers by name; a route may name one only on a gateway with a `client_ca_file` listener."),
    ],
    one_of: &[],
};

/// Where Envoy finds authz-service when `service:` is omitted: the service's own default listen
/// address (spec §7).
#[rustfmt::skip]
pub(crate) static AUTH_SERVICE: Object = Object {
    name: "authService",
    title: "auth.service",
    doc: "Where Envoy finds authz-service (its ext_authz gRPC service).",
    keys: &[
        key("address", Ty::Fmt(&HOST_PORT), Is("127.0.0.1:9001"), "Address of authz-service as host:port."),
        key("timeout", Ty::Fmt(&POSITIVE_DURATION), Is("200ms"), "How long Envoy waits for an authorization decision."),
        key("on_error", Ty::Enum(&ON_ERRORS), Is("deny"), "What Envoy does when authz-service fails or is late: `deny` answers 503, `allow` lets the request through unauthenticated: the upstream gets no identity header (client-sent copies are removed on every route either way), no credential, and `x-envoy-auth-failure-mode-allowed: true`."),
        key("tls", Ty::Obj(&UPSTREAM_TLS), Optional, "TLS from Envoy to authz-service; with `cert_file` and `key_file`, for an authz-service started with `--tls-cert --tls-key --client-ca`."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static JWT_PROVIDER: Object = Object {
    name: "jwtProvider",
    title: "auth.jwt.<name>",
    doc: "A JWT provider. Give exactly one of {one_of} for the signing keys; HS256, HS384 and HS512 work only with `secret_env`, the other algorithms only with a JWKS.",
    keys: &[
        key("issuer", NONEMPTY, Required, "The `iss` claim a token must carry."),
        key("audiences", list(&NONEMPTY), Optional, "Accepted `aud` values, any one of which must be present; omitted, `aud` is not checked."),
        key("algorithms", nonempty_list(&Ty::Enum(&JwtAlgorithm::ALL)), Required, "Accepted signing algorithms; never inferred from the token."),
        key("jwks_file", NONEMPTY, Optional, "JWKS file with the provider's public keys, relative to this file."),
        key("jwks_url", Ty::Fmt(&JWKS_URL), Optional, "URL of the provider's JWKS, refreshed every 5 minutes and refetched when a token names an unknown key."),
        key("secret_env", Ty::Fmt(&ENV_NAME), Optional, "Environment variable of authz-service that holds the HS* shared secret (at least 32 bytes)."),
        key("clock_skew", Ty::Fmt(&DURATION), Is("30s"), "Tolerance when checking `exp` and `nbf`, at most {MAX_CLOCK_SKEW}."),
        key("headers", map(Names::Header, &NONEMPTY), Optional, "Upstream headers set from claims: header name → claim name, or a JSON Pointer starting with `/` into nested claims; arrays are comma-joined, and an array with an element containing `,` is not forwarded (it would read as more elements)."),
        key("client_claim", NONEMPTY, Is("sub"), "Claim that identifies the client for rate limiting."),
        key("plan_claim", NONEMPTY, Is("plan"), "Claim that picks the rate-limit plan; when missing, or naming a plan `rate_limits.plans` does not define, `rate_limits.default_plan` applies and is the plan the upstream is told."),
        key("forward_token", Ty::Bool, Is("false"), "Whether the Authorization header reaches the upstream; false removes it. While no provider sets it, `auth: none` routes remove Authorization too."),
    ],
    one_of: &["jwks_file", "jwks_url", "secret_env"],
};

#[rustfmt::skip]
pub(crate) static API_KEY_PROVIDER: Object = Object {
    name: "apiKeyProvider",
    title: "auth.api_keys.<name>",
    doc: "An API-key provider: keys are looked up by hash in `keys_file`.",
    keys: &[
        key("header", Ty::Fmt(&HEADER_NAME), Is("x-api-key"), "Request header that carries the key."),
        key("query", NONEMPTY, Optional, "Query parameter that may carry the key instead; it is removed from the forwarded URL on every route."),
        key("keys_file", NONEMPTY, Required, "File of key hashes written by `authz-service apikey create`, relative to this file; a key that is not revoked or expired must name a plan of `rate_limits.plans` (when it defines any) or none."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static MTLS_PROVIDER: Object = Object {
    name: "mtlsProvider",
    title: "auth.mtls.<name>",
    doc: "A client-certificate provider: a certificate Envoy verified against a listener's `client_ca_file` is the credential, like a JWT or an API key; a request that arrived without one (a plain listener, or `client_cert: optional`) is not accepted by it.",
    keys: &[
        key("client_id", Ty::Enum(&CERT_FIELDS), Is("subject"), "What in the certificate is the client id (`x-client-id`, per-client limits): the `subject` as an RFC 2253 string such as `CN=partner-a,O=Partners` (as `x-forwarded-client-cert` shows it), the first `uri_san` or the first `dns_san`; a certificate without it is refused."),
        key("plans", map(Names::NonEmpty, &NONEMPTY), Optional, "Plan by client id: client id → a plan of `rate_limits.plans`."),
        key("default_plan", NONEMPTY, Optional, "Plan of a client id `plans` does not list; omitted, `rate_limits.default_plan`."),
    ],
    one_of: &[],
};

// ---- rate limits

#[rustfmt::skip]
pub(crate) static RATE_LIMITS: Object = Object {
    name: "rateLimits",
    title: "rate_limits",
    doc: "Rate limiting: where Envoy finds ratelimit-service, and the limits it enforces. Write `rate_limits: {}` for the defaults.",
    keys: &[
        key("service", Ty::Obj(&RATE_LIMIT_SERVICE), Is("{}"), "Where Envoy finds ratelimit-service, and what it does when that is unreachable."),
        key("plans", map(Names::Any, &Ty::Fmt(&RATE)), Optional, "Limit per authenticated client, by plan name. A token naming another plan is limited as `default_plan`, and the upstream's `x-client-plan` says `default_plan` too."),
        key("default_plan", NONEMPTY, Optional, "Plan of clients whose credentials name none, or name a plan `plans` does not define; required when `plans` is not empty."),
        key("anonymous", Ty::Fmt(&RATE), Optional, "Limit per client IP on routes with `auth: none`; omitted, they are not limited."),
        key("algorithm", Ty::Enum(&ALGORITHMS), Is("sliding_window"), "How requests are counted: an exact sliding window, a two-window approximation, or clock-aligned fixed windows. A 429's `Retry-After` is at most the limit's window, except with `approximate`, where the previous window's count still weighs and the wait can be longer."),
        key("counted_by", Ty::Enum(&COUNTED_BY), Is("ratelimit-service"), "Which service counts the limits of authenticated routes. `authz-service` counts them inside the ext_authz call and answers the 429 itself, which saves Envoy its second gRPC call per request; authz-service then needs the same `--redis` as ratelimit-service. Routes with a limit `per: ip` or `per: header:<name>` still ask ratelimit-service, and such a route cannot also carry `plan`, which would split the plan's counter between the two services."),
    ],
    one_of: &[],
};

/// The service's own default listen address (spec §7).
#[rustfmt::skip]
pub(crate) static RATE_LIMIT_SERVICE: Object = Object {
    name: "rateLimitService",
    title: "rate_limits.service",
    doc: "Where Envoy finds ratelimit-service (its rate-limit gRPC service).",
    keys: &[
        key("address", Ty::Fmt(&HOST_PORT), Is("127.0.0.1:9002"), "Address of ratelimit-service as host:port."),
        key("timeout", Ty::Fmt(&POSITIVE_DURATION), Is("50ms"), "How long Envoy waits for a rate-limit decision."),
        key("on_error", Ty::Enum(&ON_ERRORS), Is("allow"), "What Envoy does when ratelimit-service fails or is late: `allow` fails open, `deny` answers 503."),
        key("tls", Ty::Obj(&UPSTREAM_TLS), Optional, "TLS from Envoy to ratelimit-service; with `cert_file` and `key_file`, for a ratelimit-service started with `--tls-cert --tls-key --client-ca`."),
    ],
    one_of: &[],
};

// ---- gateways

#[rustfmt::skip]
pub(crate) static GATEWAY: Object = Object {
    name: "gateway",
    title: "gateways.<name>",
    doc: "What one group of Envoy proxies serves: listeners, CORS, access log and routes.",
    keys: &[
        key("listeners", nonempty_list(&Ty::Obj(&LISTENER)), Required, "Addresses and ports the gateway's Envoys accept clients on."),
        key("cors", Ty::Obj(&CORS), Optional, "CORS policy for every route of the gateway; omitted, Envoy does not answer CORS requests."),
        key("client_ip", Ty::Obj(&CLIENT_IP), Is("{}"), "Which address is the client's, for per-IP limits, `allow_ips` / `deny_ips` and the access log."),
        key("access_log", Ty::Enum(&ACCESS_LOGS), Is("json"), "Format of Envoy's access log on stdout, or `off`; the path is logged without its query (which may carry an API key), whatever the status."),
        key("tracing", Ty::Obj(&TRACING), Optional, "OpenTelemetry traces of the gateway's requests, exported by Envoy over OTLP/gRPC; omitted, Envoy traces nothing (a client's `traceparent` still reaches the upstream unchanged)."),
        key("max_body", Ty::Fmt(&SIZE), Optional, "Largest request body of every route without its own `max_body` (`websocket` routes excepted): Envoy buffers the body and answers a larger one, with a content-length or chunked, over HTTP/1.1 or HTTP/2, with 413 before the upstream sees the request; omitted, bodies are streamed and not limited."),
        key("compression", Ty::Obj(&COMPRESSION), Optional, "Compresses responses for clients that accept it; omitted, responses pass as the upstream sent them."),
        key("timeouts", Ty::Obj(&CLIENT_TIMEOUTS), Is("{}"), "How long Envoy waits on a client before it gives up on the request or connection."),
        key("limits", Ty::Obj(&CONNECTION_LIMITS), Is("{}"), "What one client connection may hold in Envoy: buffered bytes, HTTP/2 streams and windows."),
        key("routes", list(&Ty::Obj(&ROUTE)), Optional, "Routes, tried in file order; the first that matches wins."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static TRACING: Object = Object {
    name: "tracing",
    title: "gateways.<name>.tracing",
    doc: "Envoy starts a W3C trace (`traceparent`, `tracestate`) for a sampled share of the requests, or continues the one a client sent (its sampled flag is kept), exports its spans over OTLP/gRPC to `collector`, and sends the upstream a `traceparent` of the same trace; authz-service and ratelimit-service continue it in their own spans (exported where `OTEL_EXPORTER_OTLP_ENDPOINT` is set).",
    keys: &[
        key("collector", Ty::Fmt(&HOST_PORT), Required, "OTLP/gRPC address (host:port, plain HTTP/2) of the OpenTelemetry collector Envoy sends its spans to."),
        key("sample", Ty::Fmt(&PERCENT), Is("100%"), "Share of the requests without a client-sent `traceparent` that start a sampled trace; `0%` starts none."),
        key("service_name", NONEMPTY, Optional, "`service.name` of Envoy's spans; omitted, the gateway's name."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static CLIENT_IP: Object = Object {
    name: "clientIp",
    title: "gateways.<name>.client_ip",
    doc: "How Envoy finds the client's address. With `trusted_hops: 0` it is the TCP peer and a client-sent `x-forwarded-for` changes nothing. Behind N load balancers that each append the address they saw, `trusted_hops: N` makes it the Nth `x-forwarded-for` entry from the right (a missing or unreadable entry falls back to the TCP peer); entries a client wrote itself sit further left and are ignored. Envoy then also trusts the balancers' `x-forwarded-proto`, and nothing checks that the TCP peer is one of them: the listener must be reachable only through them.",
    keys: &[
        key("trusted_hops", int(0), Is("0"), "Proxies in front of Envoy whose `x-forwarded-for` entries are trusted; 0 uses the TCP peer."),
    ],
    one_of: &[],
};

/// Types worth compressing that browsers and API clients send `Accept-Encoding` for; images,
/// video and archives are compressed already.
#[rustfmt::skip]
pub(crate) static COMPRESSION: Object = Object {
    name: "compression",
    title: "gateways.<name>.compression",
    doc: "Response compression by Envoy for every route of the gateway, negotiated by the request's `Accept-Encoding`: the algorithm with the client's highest q-value wins, and among equal ones the first of `algorithms`; `q=0` refuses one, `*` stands for any other, and a client accepting none of them gets the response as it is. Responses that already have a `Content-Encoding`, carry `Cache-Control: no-transform`, have another type, or declare a `content-length` under `min_bytes` pass unchanged (a streamed response without a length is compressed whatever its size); a compressed response loses its `content-length` and a strong `ETag`, and gets `Vary: Accept-Encoding`. The upstream never sees `Accept-Encoding`: Envoy compresses, so an upstream cannot choose an encoding the client did not prefer.",
    keys: &[
        key("algorithms", nonempty_list(&Ty::Enum(&COMPRESSION_ALGORITHMS)), Is("[zstd, br, gzip]"), "Encodings offered, in order of preference, each at most once: `zstd`, `br` (Brotli), `gzip`."),
        key("min_bytes", Ty::Fmt(&SIZE), Is("1KiB"), "Responses with a smaller `content-length` are not compressed (compressing them saves little and costs CPU)."),
        key("content_types", nonempty_list(&Ty::Fmt(&MEDIA_TYPE)), Is("[application/json, application/javascript, application/xml, image/svg+xml, text/css, text/html, text/javascript, text/plain, text/xml]"), "Response media types that are compressed; any other passes unchanged."),
    ],
    one_of: &[],
};

/// Edge defaults: Envoy's own "edge proxy" best-practice values, plus a header timeout (Envoy
/// has none by default, so a client sending headers byte by byte held a connection forever).
#[rustfmt::skip]
pub(crate) static CLIENT_TIMEOUTS: Object = Object {
    name: "clientTimeouts",
    title: "gateways.<name>.timeouts",
    doc: "Client-side timeouts of every listener of the gateway; `0s` turns one off. A request that runs out of time gets 408 (a stream that already has response headers is reset).",
    keys: &[
        key("request_headers", Ty::Fmt(&DURATION), Is("10s"), "How long a client may take to send a request's headers: slow-header clients are cut off instead of holding a connection."),
        key("request", Ty::Fmt(&DURATION), Is("300s"), "How long a client may take to send a whole request, body included (the response is not limited by it)."),
        key("stream_idle", Ty::Fmt(&DURATION), Is("300s"), "How long a request (or WebSocket) may stay without traffic in either direction; raise it for long polls and quiet WebSockets."),
        key("idle", Ty::Fmt(&DURATION), Is("1h"), "How long a client connection with no request in flight stays open."),
    ],
    one_of: &[],
};

/// Envoy's defaults (1 MiB buffers, 1024 streams of 16 MiB windows per connection) let one
/// connection pin gigabytes; these are the values of Envoy's edge-proxy guide.
#[rustfmt::skip]
pub(crate) static CONNECTION_LIMITS: Object = Object {
    name: "connectionLimits",
    title: "gateways.<name>.limits",
    doc: "Resource limits of every client connection of the gateway.",
    keys: &[
        key("connection_buffer", Ty::Fmt(&SIZE), Is("32KiB"), "Bytes Envoy buffers per client connection before it stops reading from it (`max_body` buffering is separate)."),
        key("max_concurrent_streams", Ty::Int { min: 1, max: 2_147_483_647 }, Is("100"), "HTTP/2 requests one connection may have open at once."),
        key("initial_stream_window", Ty::Fmt(&SIZE), Is("64KiB"), "HTTP/2 flow-control window of one request, at least 65535 bytes and at most 2147483647."),
        key("initial_connection_window", Ty::Fmt(&SIZE), Is("1MiB"), "HTTP/2 flow-control window of a whole connection, at least 65535 bytes and at most 2147483647."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static LISTENER: Object = Object {
    name: "listener",
    title: "gateways.<name>.listeners[]",
    doc: "A port the gateway's Envoys listen on.",
    keys: &[
        key("name", NONEMPTY, Required, "Listener name, unique within the gateway."),
        key("address", Ty::Fmt(&IP_ADDRESS), Is("0.0.0.0"), "IP address to listen on."),
        key("port", Ty::Int { min: 1, max: 65_535 }, Required, "TCP port to listen on, unique within the gateway."),
        key("tls", Ty::Obj(&LISTENER_TLS), Optional, "Terminates TLS with this certificate; omitted, the listener speaks plain HTTP."),
        key("https_redirect", Ty::Bool, Is("false"), "On a plain listener: every request gets 301 to `https://<host without port>[:<port of the gateway's one TLS listener, omitted when 443>]<path and query>`, without auth, limits or a route (a Host that is not a plain host name or IP address gets 400)."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static LISTENER_TLS: Object = Object {
    name: "listenerTls",
    title: "gateways.<name>.listeners[].tls",
    doc: "The certificate a listener presents to clients.",
    keys: &[
        key("cert_file", NONEMPTY, Required, "PEM certificate chain, leaf first, relative to this file; `key_file` must be the leaf's key."),
        key("key_file", NONEMPTY, Required, "PEM private key (exactly one, unencrypted: RSA of at least 2048 bits, ECDSA P-256, P-384 or P-521, or Ed25519), relative to this file."),
        key("client_ca_file", NONEMPTY, Optional, "PEM file of the CAs client certificates must be signed by (at least one X.509 certificate), relative to this file: the handshake asks for a client certificate, the upstream gets `x-forwarded-client-cert` (hash, subject, URI and DNS names) and `auth.mtls` providers can use it; omitted, no certificate is asked for."),
        key("client_cert", Ty::Enum(&CLIENT_CERT_MODES), Optional, "With `client_ca_file`: `required` (the default) refuses the handshake without a valid certificate, `optional` lets a client without one through; a presented certificate that does not verify is refused either way."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static CORS: Object = Object {
    name: "cors",
    title: "gateways.<name>.cors",
    doc: "Cross-origin resource sharing, answered by Envoy for every route of the gateway.",
    keys: &[
        key("origins", nonempty_list(&Ty::Fmt(&ORIGIN)), Required, "Allowed origins, or `*` for any."),
        key("methods", list(&Ty::Fmt(&METHOD)), Optional, "Allowed request methods."),
        key("headers", list(&Ty::Fmt(&HEADER_NAME)), Optional, "Allowed request headers."),
        key("max_age", Ty::Fmt(&DURATION), Optional, "How long a browser may cache the answer to a preflight request."),
    ],
    one_of: &[],
};

// ---- routes

#[rustfmt::skip]
pub(crate) static ROUTE: Object = Object {
    name: "route",
    title: "gateways.<name>.routes[]",
    doc: "A route: a match, exactly one action ({one_of}), and an explicit `auth`. `timeout`, `retries` and `rewrite` apply only to routes that forward to `service` or `services` (`timeout` also to `compose`).",
    keys: &[
        key("name", NONEMPTY, Required, "Route name, unique across all gateways."),
        key("match", Ty::Obj(&ROUTE_MATCH), Required, "Which requests the route takes."),
        key("service", NONEMPTY, Optional, "Forwards to this service."),
        key("services", Ty::Map { names: Names::Any, value: &int(1), nonempty: true }, Optional, "Splits traffic across services by weight, e.g. for a canary."),
        key("respond", Ty::Obj(&RESPOND), Optional, "Answers from Envoy itself, without an upstream."),
        key("compose", Ty::Map { names: Names::Except(COMPOSE_RESERVED), value: &Ty::Obj(&COMPOSE_PART), nonempty: true }, Optional, "Answers `GET` with one JSON object built by Envoy from several upstream calls, one member per part (file order); see `compose part`."),
        key("rewrite", Ty::Obj(&REWRITE), Optional, "Rewrites the matched path prefix before forwarding."),
        key("auth", Ty::AnyOf(&[Ty::Enum(&["none"]), NONEMPTY, nonempty_list(&NONEMPTY)]), Absent::RequiredExplained, "`none` for a public route, or the provider (or list of providers, any one of which must accept) that authenticates it."),
        key("require", Ty::Obj(&REQUIRE), Optional, "Roles and scopes the authenticated client must all have."),
        key("allow_ips", nonempty_list(&Ty::Fmt(&CIDR)), Optional, "Client networks admitted to the route (the client IP as `client_ip` defines it); any other address gets 403 before authz-service is asked."),
        key("deny_ips", nonempty_list(&Ty::Fmt(&CIDR)), Optional, "Client networks refused with 403 before authz-service is asked, also when `allow_ips` admits them (deny wins)."),
        key("rate_limit", Ty::AnyOf(&[Ty::Enum(&["plan", "none"]), nonempty_list(&Ty::AnyOf(&[Ty::Enum(&["plan"]), Ty::Obj(&LIMIT)]))]), Optional, "`plan` (the default on authenticated routes), `none`, or a list of `plan` and `{limit, per}` items that all apply."),
        key("timeout", Ty::Fmt(&DURATION), Optional, "How long Envoy waits for the upstream's whole response; `0s`: no limit (long-lived streams). On a `websocket` route it bounds the wait for the upgrade's answer only: an open WebSocket is closed by either side, or after `timeouts.stream_idle` without a frame in either direction."),
        key("retries", Ty::Obj(&RETRIES), Optional, "When and how often Envoy retries a failed request."),
        key("max_body", Ty::Fmt(&SIZE), Optional, "Largest request body of this route, overriding the gateway's `max_body`; a larger one gets 413."),
        key("websocket", Ty::Bool, Is("false"), "Forwards WebSocket upgrades (HTTP/1.1 `Upgrade: websocket`); auth and rate limits apply to the upgrade request, then frames flow both ways. An upgrade on any other route gets 403. The gateway's `max_body` does not apply to the route, and the route may not set one."),
        key("request_headers", Ty::Obj(&HEADER_CHANGES), Optional, "Headers set or removed on the request before it reaches the upstream."),
        key("response_headers", Ty::Obj(&HEADER_CHANGES), Optional, "Headers set or removed on the response before it reaches the client."),
        key("mirror", Ty::Obj(&MIRROR), Optional, "Also sends a share of the route's requests to another service (shadowing); the client only ever gets the route's own answer."),
        key("affinity", Ty::Obj(&AFFINITY), Optional, "Keeps a client on one endpoint by hashing a header or cookie; every service of the route needs `lb: ring_hash` or `maglev`."),
        key("cache", Ty::Obj(&CACHE), Optional, "Envoy keeps the route's `200` answers to `GET` and `HEAD` and replays them (with `age`) until `ttl` runs out; omitted, nothing is cached."),
        key("transform", Ty::Obj(&TRANSFORM), Optional, "Edits JSON request and response bodies (and turns JSON responses into XML for clients that prefer it), in transform-service, which Envoy calls on this route only."),
        key("grpc", Ty::Obj(&GRPC), Optional, "gRPC bridges done by Envoy on this route: REST/JSON transcoding and gRPC-Web. Every service of the route must have `protocol: http2` or `grpc`."),
    ],
    one_of: &["service", "services", "respond", "compose"],
};

/// Part names no `compose` part may take: the answer's own member.
pub(crate) const COMPOSE_RESERVED: &[&str] = &["errors"];

#[rustfmt::skip]
pub(crate) static COMPOSE_PART: Object = Object {
    name: "composePart",
    title: "gateways.<name>.routes[].compose.<part>",
    doc: "One call of a `compose` route. Envoy calls the parts one after another with `GET`, the part's `path` (the client's own path and query are not passed on), `:authority` the service name, and the request's `x-request-id` and verified identity headers (`x-client-id`, `x-client-plan`, `x-auth-provider`, every `auth.jwt.*.headers` entry; never a client's copy), after auth and rate limits have admitted the request. A part name is letters, digits, `_` and `-`, and not `errors`. A part whose answer is a 2xx with a valid JSON body (at most 1MiB, `content-type` JSON or absent) is embedded byte for byte; any other part becomes `null` and is listed under `errors` with `status`: its own status when not 2xx, `504` when the route's `timeout` ran out before or during the call (a part is not started with less than 5ms left), `503` when the service could not be reached, `502` when a 2xx body is not JSON or too large. Then the answer carries `x-compose-complete: false` (`true` otherwise). The route's `timeout` (default 15s, never `0s`) bounds the whole answer. Other methods get 405 JSON; a failure of the composition itself gets 502 JSON, never a partial body.",
    keys: &[
        key("service", NONEMPTY, Required, "Service the part is fetched from."),
        key("path", Ty::Fmt(&URL_PATH), Required, "Absolute path of the call, with its query string if any (`/orders?limit=5`)."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static MIRROR: Object = Object {
    name: "mirror",
    title: "gateways.<name>.routes[].mirror",
    doc: "Request mirroring (Envoy shadowing) on a forwarding route: the copy goes to `service` with `-shadow` appended to its Host (`api.example.com-shadow`), carries the same body and `x-request-id`, and its answer is discarded. The copy is sent without waiting for it, so a slow, failing or stopped mirror never delays or changes the client's answer; a copy times out with the route's `timeout` (Envoy's 15s when the route sets none), so a mirrored route may not set `timeout: 0s`. Which requests are copied is drawn at random per request: a client cannot choose to be mirrored or not.",
    keys: &[
        key("service", NONEMPTY, Required, "Service that receives the copies."),
        key("percent", Ty::Fmt(&PERCENT), Is("100%"), "Share of the route's requests copied."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static CACHE: Object = Object {
    name: "cache",
    title: "gateways.<name>.routes[].cache",
    doc: "A response cache in each Envoy, for a forwarding route without `websocket`. Envoy stores `200` answers to `GET` and `HEAD` for `ttl`, or for the upstream's shorter `Cache-Control: max-age` (or `s-maxage`), and replays them with an `age` header; an answer with `Cache-Control: no-store` or `private`, or with a `Vary` header, is never stored, and a request with `Cache-Control: no-cache` is always sent to the upstream. The key is method, host, path and query; on an authenticated route also the verified client (`x-auth-provider` and `x-client-id` as authz-service set them), so no client is ever served another client's answer. Auth and rate limits run before the cache, on hits too. A request sent with `Authorization` (a provider with `forward_token`) or a conditional header (`If-Modified-Since`, `If-Range`) is never cached. Upstream requests that fill the cache carry no client address in `x-forwarded-for`.",
    keys: &[
        key("ttl", Ty::Fmt(&POSITIVE_DURATION), Required, "The longest an answer is replayed."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static GRPC: Object = Object {
    name: "grpc",
    title: "gateways.<name>.routes[].grpc",
    doc: "Envoy's gRPC bridges for a forwarding route to a gRPC upstream, without `websocket`, `cache` or `respond`. `transcode` maps REST/JSON requests to gRPC methods by their `google.api.http` annotations: a gRPC error becomes its HTTP status with the status as a JSON body; a REST request that maps to no method is a `404`, and bad JSON, a value of the wrong type or a query parameter that names no field a `400`, none of them sent upstream; a JSON body field the method's message does not define is dropped (Envoy's transcoder has no option to refuse it); gRPC requests pass unchanged. `web: true` turns gRPC-Web requests (`application/grpc-web`, `application/grpc-web+proto`, `application/grpc-web-text`) into gRPC and the answer back. Auth and rate limits run first, on the client's request.",
    keys: &[
        key("transcode", Ty::Obj(&TRANSCODE), Optional, "REST/JSON to gRPC transcoding; omitted, none."),
        key("web", Ty::Bool, Is("false"), "Accept gRPC-Web requests on this route."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static TRANSCODE: Object = Object {
    name: "transcode",
    title: "gateways.<name>.routes[].grpc.transcode",
    doc: "The gRPC-JSON transcoder. The descriptor set is read with gateway.yaml and sent to Envoy; editing it is applied like an edit of gateway.yaml. Build it with `protoc --include_imports --descriptor_set_out=FILE` (or any compiler that writes a `FileDescriptorSet`).",
    keys: &[
        key("descriptor", NONEMPTY, Required, "A binary `google.protobuf.FileDescriptorSet`, relative to this file; it must hold every service of `services` and the `google.api.http` annotations of their methods."),
        key("services", list(&NONEMPTY), Required, "The fully qualified gRPC services (`package.Service`) transcoded on this route."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static AFFINITY: Object = Object {
    name: "affinity",
    title: "gateways.<name>.routes[].affinity",
    doc: "Session affinity: the consistent-hash balancer (`lb: ring_hash` or `maglev`, required on every service of the route) hashes {one_of}, so requests with the same value land on the same endpoint while it is healthy; when endpoints change, about 1/N of the values move. A client chooses its value, so it can move between endpoints only as the hash spreads values, never name one. Without the header the request is balanced as on any hashed route (by client IP).",
    keys: &[
        key("header", Ty::Fmt(&HEADER_NAME), Optional, "Request header whose value is hashed."),
        key("cookie", Ty::Fmt(&COOKIE_NAME), Optional, "Cookie whose value is hashed; when a request has none, Envoy picks a value and sets the cookie (HttpOnly, Path=/, SameSite=Lax, and Secure on TLS listeners) on the response."),
        key("ttl", Ty::Fmt(&DURATION), Optional, "Max-Age of the cookie Envoy sets, required with `cookie`; `0s` makes it a session cookie."),
    ],
    one_of: &["header", "cookie"],
};

#[rustfmt::skip]
pub(crate) static TRANSFORM: Object = Object {
    name: "transform",
    title: "gateways.<name>.routes[].transform",
    doc: "Body transforms on a forwarding route, done by transform-service (Envoy's ext_proc filter, on this route only). Only JSON bodies are edited (`application/json` or `application/*+json`, any letter case and parameters); other bodies, and bodies that are not valid JSON, pass unchanged; `content-length` always matches the body sent. Bodies up to 4 MiB are transformed: a larger request body gets 413, a larger response 502. A transform that cannot run (transform-service down, late or without its policy) answers 502 or 503 JSON, never the untransformed body. `Accept-Encoding` and `Range` are not forwarded on a route that transforms responses, so the upstream sends a whole, uncompressed body to transform (gateway `compression` still compresses the result); a compressed or partial JSON answer is refused with 502.",
    keys: &[
        key("request", Ty::Obj(&TRANSFORM_REQUEST), Optional, "Edits of the request body before the upstream sees it."),
        key("response", Ty::Obj(&TRANSFORM_RESPONSE), Optional, "Edits of the response body before the client sees it."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static TRANSFORM_REQUEST: Object = Object {
    name: "transformRequest",
    title: "gateways.<name>.routes[].transform.request",
    doc: "Request body transforms.",
    keys: &[
        key("json", Ty::Obj(&JSON_EDITS), Required, "Edits of a JSON request body."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static TRANSFORM_RESPONSE: Object = Object {
    name: "transformResponse",
    title: "gateways.<name>.routes[].transform.response",
    doc: "Response body transforms: the JSON edits first, then XML.",
    keys: &[
        key("json", Ty::Obj(&JSON_EDITS), Optional, "Edits of a JSON response body."),
        key("xml", Ty::Bool, Is("false"), "A client whose `Accept` gives `application/xml` a higher q-value than `application/json` gets the (edited) JSON as XML (`content-type: application/xml`): root element `response`, object members as elements, an array's items each as its member's element (`item` inside another array or at the top), names that are not XML names escaped `_xHHHH_`. Equal q-values, `*/*` and no `Accept` keep JSON."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static JSON_EDITS: Object = Object {
    name: "jsonEdits",
    title: "gateways.<name>.routes[].transform.{request,response}.json",
    doc: "Edits of a JSON body, applied in this order whatever the order written: `remove`, `set`, `rename`, `envelope`. A member whose name appears twice in a body counts as one: `remove` deletes every copy, `set` replaces the first and drops the rest, `rename` moves the last. An edit whose path is absent, or runs through a string, number or null, changes nothing. Numbers, member order and text the edits do not touch are kept exactly (`9223372036854775809` stays that, `1.10` too); the body is sent compact (no whitespace). JSON nested deeper than 128 levels is refused: 400 for a request, 502 for a response.",
    keys: &[
        key("remove", nonempty_list(&Ty::Fmt(&JSON_POINTER)), Optional, "Members or elements deleted."),
        key("set", Ty::Map { names: Names::Any, value: &Ty::Any, nonempty: true }, Optional, "JSON Pointer → value (any YAML value, as JSON): set, creating missing parent objects; an array element by index, or appended with `-`."),
        key("rename", Ty::Map { names: Names::Any, value: &Ty::Fmt(&JSON_POINTER), nonempty: true }, Optional, "JSON Pointer → JSON Pointer: the member moves (its parents created as with `set`)."),
        key("envelope", Ty::Obj(&ENVELOPE), Optional, "Wraps the edited body: `{\"<field>\": <body>, <with…>, \"request_id\": \"<x-request-id>\"}`."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static ENVELOPE: Object = Object {
    name: "envelope",
    title: "gateways.<name>.routes[].transform.{request,response}.json.envelope",
    doc: "The object the edited body is wrapped in.",
    keys: &[
        key("field", NONEMPTY, Required, "The member that holds the body."),
        key("with", Ty::Map { names: Names::Except(&[ENVELOPE_REQUEST_ID]), value: &Ty::Any, nonempty: false }, Optional, "Members added after the body, in this order (`request_id` is always added last, from the request's `x-request-id`)."),
    ],
    one_of: &[],
};

/// The member every envelope ends with.
pub(crate) const ENVELOPE_REQUEST_ID: &str = "request_id";

#[rustfmt::skip]
pub(crate) static ROUTE_MATCH: Object = Object {
    name: "routeMatch",
    title: "gateways.<name>.routes[].match",
    doc: "Which requests a route takes: exactly one path condition ({one_of}), and optionally methods, headers, query parameters and hosts, all of which must match.",
    keys: &[
        key("path", Ty::Fmt(&URL_PATH), Optional, "The whole path, without the query, equals this, ignoring letter case (`/Health` matches `/health`); paths with `;`, a segment ending in `.`, a space at a segment's edge or an encoded control character are refused with 400 before any route."),
        key("prefix", Ty::Fmt(&URL_PATH), Optional, "The path starts with this, segment by segment and ignoring letter case: `/api` matches `/api`, `/API/x` and `/api/x` but not `/apix` (ambiguous paths never reach a route, see `path`)."),
        key("regex", NONEMPTY, Optional, "An RE2 regular expression the whole path must match, case-sensitively unless it starts with `(?i)` (write that on protected routes, as `path` and `prefix` ignore case)."),
        key("methods", list(&Ty::Fmt(&METHOD)), Optional, "HTTP methods; omitted, any method."),
        key("headers", map(Names::Header, &Ty::AnyOf(&[TEXT, Ty::Obj(&REGEX_MATCH)])), Optional, "Request headers that must match: name → exact value, or name → `{regex: …}`."),
        key("query", map(Names::NonEmpty, &Ty::AnyOf(&[TEXT, Ty::Obj(&REGEX_MATCH)])), Optional, "Query parameters that must match: name → exact value, or name → `{regex: …}`."),
        key("hosts", list(&Ty::Fmt(&HOST_MATCH)), Optional, "Host names the request's Host header must name, ignoring letter case, a port (empty too) and a trailing dot (`Admin.example.com.:8080` is `admin.example.com`); omitted, any host."),
    ],
    one_of: &["path", "prefix", "regex"],
};

#[rustfmt::skip]
pub(crate) static REGEX_MATCH: Object = Object {
    name: "regexMatch",
    title: "gateways.<name>.routes[].match.{headers,query}.<name>",
    doc: "A header or query-parameter value matched by a regular expression.",
    keys: &[key("regex", NONEMPTY, Required, "An RE2 regular expression the whole value must match.")],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static RESPOND: Object = Object {
    name: "respond",
    title: "gateways.<name>.routes[].respond",
    doc: "A response Envoy sends itself, with a JSON body, a text body or none.",
    keys: &[
        key("status", Ty::Int { min: 200, max: 599 }, Required, "HTTP status code."),
        key("json", Ty::Any, Optional, "Body sent as JSON with content-type application/json."),
        key("body", TEXT, Optional, "Body sent as-is with content-type text/plain."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static REWRITE: Object = Object {
    name: "rewrite",
    title: "gateways.<name>.routes[].rewrite",
    doc: "A path rewrite; only for routes that match by `prefix` and forward.",
    keys: &[key("prefix", Ty::Fmt(&URL_PATH), Required, "Replaces the matched `prefix`, so `/api/v1/users/42` can become `/users/42`.")],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static REQUIRE: Object = Object {
    name: "require",
    title: "gateways.<name>.routes[].require",
    doc: "Claim checks on an authenticated route; every listed value must be present, otherwise the client gets 403.",
    keys: &[
        key("roles", list(&NONEMPTY), Optional, "Roles the client must all have (the `roles` claim)."),
        key("scopes", list(&NONEMPTY), Optional, "Scopes the client must all have (the `scope` or `scp` claim)."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static LIMIT: Object = Object {
    name: "limit",
    title: "gateways.<name>.routes[].rate_limit[]",
    doc: "A limit of a route, counted per client, IP, route, tenant or header value.",
    keys: &[
        key("limit", Ty::Fmt(&RATE), Required, "Requests allowed per window."),
        key("per", Ty::AnyOf(&[Ty::Enum(&PER_WORDS), Ty::Fmt(&PER_HEADER)]), Is("client"), "What gets its own bucket: the authenticated `client` (`user` is its alias for JWT), the client `ip`, the whole `route`, the `tenant`, or a `header:<name>` value. Requests without the value (no header, no tenant, no identity) share one bucket of the limit that no value can reach; `client` and `tenant` buckets are per auth provider and id (docs/rate-limit-keys.md)."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static RETRIES: Object = Object {
    name: "retries",
    title: "gateways.<name>.routes[].retries",
    doc: "Envoy's retry policy for a forwarding route.",
    keys: &[
        key("attempts", int(1), Is("1"), "Retries after the first try."),
        key("on", nonempty_list(&Ty::AnyOf(&[Ty::Int { min: 100, max: 599 }, Ty::Enum(&RETRY_CONDITIONS)])), Is("[connect-failure, reset, 503]"), "What triggers a retry: Envoy retry-on conditions and HTTP status codes."),
        key("per_try_timeout", Ty::Fmt(&POSITIVE_DURATION), Optional, "How long each try may take; omitted, only the route's `timeout` applies."),
    ],
    one_of: &[],
};

#[rustfmt::skip]
pub(crate) static HEADER_CHANGES: Object = Object {
    name: "headerChanges",
    title: "gateways.<name>.routes[].{request,response}_headers",
    doc: "Headers set or removed on a request or response.",
    keys: &[
        key("set", map(Names::Header, &TEXT), Optional, "Headers to set, replacing any value already there: name → value."),
        key("remove", list(&Ty::Fmt(&HEADER_NAME)), Optional, "Names of headers to remove."),
    ],
    one_of: &[],
};

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_and_docs_are_sentences() {
        let mut names = BTreeSet::new();
        for o in objects() {
            assert!(names.insert(o.name), "object `{}` described twice", o.name);
            let keys: BTreeSet<&str> = o.key_names().collect();
            assert_eq!(
                keys.len(),
                o.keys.len(),
                "{}: a key described twice",
                o.title
            );
            for k in o.one_of {
                assert!(
                    keys.contains(k),
                    "{}: `{k}` of one_of is not a key",
                    o.title
                );
            }
            for k in o.keys {
                let d = k.doc();
                assert!(
                    d.len() > 10 && d.ends_with('.') && !d.contains("{MAX_CLOCK_SKEW}"),
                    "{}.{}: a doc is one sentence ending with a period",
                    o.title,
                    k.name
                );
            }
        }
    }

    #[test]
    fn every_default_decodes() {
        // Every object that has a default, with each such key absent: the decoder decodes every
        // default text through the code that decodes a user's value.
        let src = "version: 1
services:
  a:
    endpoints: [127.0.0.1:1]
    health_check: { path: /h }
    outlier_detection: {}
auth:
  jwt: { j: { issuer: i, jwks_file: f, algorithms: [RS256] } }
  api_keys: { k: { keys_file: f } }
rate_limits: {}
gateways:
  g:
    listeners: [{ name: h, port: 1 }]
    routes:
      - name: r
        match: { prefix: / }
        service: a
        auth: none
        rate_limit: [{ limit: 1/s }]
        retries: {}
";
        let config = crate::parse(src, std::path::Path::new("/gateway.yaml"));
        let config = config.unwrap_or_else(|e| panic!("{e}"));
        let service = &config.services["a"];
        assert_eq!(service.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(service.circuit_breaker.max_retries, 3);
        let route = &config.gateways["g"].routes[0];
        let retries = route.retries.as_ref().map(|r| r.on.len());
        assert_eq!(retries, Some(3));
    }

    #[test]
    fn every_default_is_yaml() {
        for o in objects() {
            for k in o.keys {
                if let Absent::Default(text) = k.absent {
                    assert!(
                        o.default_node(k.name).is_some(),
                        "{}.{}: the default `{text}` is not YAML",
                        o.title,
                        k.name
                    );
                }
            }
        }
    }
}
