//! authz-service's decision on one Check request built from the input (the route, the headers
//! as a map or as raw `header_map` bytes, the path with its query, a client certificate; see
//! `Input`),
//! against the fixed gateway's compiled policy: credential extraction from headers and the
//! query string, JWT and API-key checks, `require` rules, and the response built from it.
//!
//! Besides no panic: a request is allowed on a protected route only if it carried a
//! credential, and the query parameters to remove are ones the query has.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use authz_service::policy::Decision;
use authz_service::service::{AuthzService, Shared, ROUTE_EXTENSION};
use libfuzzer_sys::fuzz_target;
use proto::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use proto::pb::envoy::service::auth::v3::{attribute_context, AttributeContext, CheckRequest};

static SERVICE: LazyLock<AuthzService> = LazyLock::new(|| {
    let shared = Shared::new();
    shared
        .policy
        .store(Some(Arc::new(gateway_fuzz::auth_policy())));
    AuthzService::new(shared)
});

/// The input, as text lines (so seeds and dictionaries are readable): the route (the context
/// extension; `-` for none), then the path with its query, then one header per line as
/// `name: value`, where a line `:cert: <value>` is the client certificate instead. A leading
/// `~` sends the headers as `header_map` with raw bytes (as Envoy's `encode_raw_headers`
/// does), which may hold invalid UTF-8; otherwise they go in the string map, repaired.
struct Input {
    route: Option<String>,
    path: String,
    raw: bool,
    headers: Vec<(String, Vec<u8>)>,
    certificate: Option<String>,
}

impl Input {
    fn parse(data: &[u8]) -> Input {
        let (raw, data) = match data.split_first() {
            Some((b'~', rest)) => (true, rest),
            _ => (false, data),
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut lines = data.split(|b| *b == b'\n');
        let route = lines.next().filter(|r| *r != b"-").map(text);
        let path = lines.next().map(text).unwrap_or_default();
        let mut headers = Vec::new();
        let mut certificate = None;
        for line in lines {
            let (name, value) = match line.iter().position(|b| *b == b':') {
                Some(0) if line.starts_with(b":cert:") => {
                    certificate = Some(text(line[6..].trim_ascii_start()));
                    continue;
                }
                Some(i) => (&line[..i], line[i + 1..].trim_ascii_start()),
                None => (line, &b""[..]),
            };
            headers.push((text(name), value.to_vec()));
        }
        Input {
            route,
            path,
            raw,
            headers,
            certificate,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let mut context_extensions = HashMap::new();
    if let Some(r) = &input.route {
        context_extensions.insert(ROUTE_EXTENSION.to_string(), r.clone());
    }
    let headers = &input.headers;
    let mut http = attribute_context::HttpRequest {
        method: "GET".into(),
        path: input.path.clone(),
        ..Default::default()
    };
    if input.raw {
        http.header_map = Some(HeaderMap {
            headers: headers
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.clone(),
                    raw_value: v.clone(),
                    ..Default::default()
                })
                .collect(),
        });
    } else {
        http.headers = headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
    }
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            context_extensions,
            source: input.certificate.as_ref().map(|c| attribute_context::Peer {
                certificate: c.clone(),
                ..Default::default()
            }),
            request: Some(attribute_context::Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let (decision, request_id, limited) = futures::executor::block_on(SERVICE.decide(&req));
    // The answer sent, kept for a cached token (checked against a fresh one under the fuzz
    // build's debug assertions).
    let _ = authz_service::response::answer(&decision, &request_id, limited);

    if let Decision::Allow(allow) = &decision {
        let query = input.path.split_once('?').map_or("", |(_, q)| q);
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        for name in &allow.remove_query {
            assert!(
                query
                    .split('&')
                    .any(|p| p.split('=').next() == Some(name.as_str())),
                "removes {name:?}, which the query {query:?} does not have"
            );
        }
        if !allow.provider.is_empty() {
            let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
            assert!(
                has("authorization") || has("x-api-key") || !query.is_empty(),
                "allowed by {} without a credential: {:?}",
                allow.provider,
                String::from_utf8_lossy(data)
            );
        }
    }
});
