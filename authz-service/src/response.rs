//! Decisions → ext_authz `CheckResponse`: the one place that decides what Envoy is told.
//!
//! Every outcome, including malformed input, an unknown route and our own failures, becomes an
//! OK or a denied *response*, never a gRPC error: Envoy treats an error like an unreachable
//! service, and under `failure_mode_allow` (or `on_error: allow`) that lets the request through.

use bytes::Bytes;
use prost::Message;
use proto::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use proto::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use proto::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use proto::pb::google::protobuf::Struct;
use proto::pb::google::rpc::Status;

use crate::limits::Verdict;
use crate::policy::{Allow, Decision, Deny, DenyStatus};

/// google.rpc.Code values Envoy reads: OK lets the request through, anything else denies it.
const RPC_OK: i32 = 0;
const RPC_PERMISSION_DENIED: i32 = 7;
const RPC_RESOURCE_EXHAUSTED: i32 = 8;
const RPC_UNAVAILABLE: i32 = 14;
const RPC_UNAUTHENTICATED: i32 = 16;

/// Keys of the dynamic metadata Envoy stores under the `envoy.filters.http.ext_authz`
/// namespace; the rate-limit descriptors read them.
pub use proto::authz::metadata;

/// What the endpoint sends for one Check: a message to encode, or an identity's OK answer
/// encoded on an earlier Check ([`crate::policy::OkAnswer`]).
// Boxing the message would cost every answer built afresh an allocation, to save copying 272
// bytes into the encoder once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Message(CheckResponse),
    Encoded(Bytes),
}

impl Answer {
    /// The message itself (decoding an encoded answer again).
    pub fn into_message(self) -> Result<CheckResponse, tonic::Status> {
        match self {
            Answer::Message(m) => Ok(m),
            Answer::Encoded(b) => CheckResponse::decode(b)
                .map_err(|e| tonic::Status::internal(format!("a kept answer: {e}"))),
        }
    }
}

/// [`check_response`], taken from the identity's [`crate::policy::OkAnswer`] when it can be:
/// a request let through on a cached token, with no query parameters to remove and no limit
/// counted here. Only cached (JWT) identities keep one; an API key's or a certificate's
/// identity is made for one request and would never send its answer twice.
pub fn answer(decision: &Decision, request_id: &str, verdict: Option<Verdict>) -> Answer {
    match (decision, verdict) {
        (Decision::Allow(a), None) if a.token_cache_hit.is_some() && a.remove_query.is_empty() => {
            match &a.identity {
                Some(id) => {
                    let kept = id
                        .ok_answer
                        .get_or_init(|| allow(a, None, Vec::new()).encode_to_vec().into());
                    // In debug builds (every test) each kept answer sent is checked against the
                    // one that would be built for this request.
                    debug_assert_eq!(
                        CheckResponse::decode(kept.clone()).ok(),
                        Some(allow(a, None, Vec::new())),
                        "a kept answer differs from a fresh one"
                    );
                    Answer::Encoded(kept)
                }
                None => Answer::Message(allow(a, None, Vec::new())),
            }
        }
        (decision, verdict) => Answer::Message(check_response(decision, request_id, verdict)),
    }
}

/// The response for `decision` on a request whose `x-request-id` is `request_id`, and, when
/// the route's limits are counted here, their `verdict` on the accepted request.
pub fn check_response(
    decision: &Decision,
    request_id: &str,
    verdict: Option<Verdict>,
) -> CheckResponse {
    match (decision, verdict) {
        (Decision::Deny(d), _) => deny(d, request_id),
        (Decision::Allow(a), None) => allow(a, None, Vec::new()),
        (Decision::Allow(a), Some(Verdict::Admit { headers, outcome })) => allow(
            a,
            Some(outcome),
            headers.into_iter().map(overwrite).collect(),
        ),
        (Decision::Allow(a), Some(Verdict::OverLimit { headers, body })) => CheckResponse {
            status: Some(Status {
                code: RPC_RESOURCE_EXHAUSTED,
                message: "rate limit exceeded".into(),
                ..Default::default()
            }),
            // The access log still names the client and the plan that was over its limit.
            dynamic_metadata: Some(identity_metadata(a, Some("over_limit"))),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: StatusCode::TooManyRequests as i32,
                }),
                headers: headers.into_iter().map(overwrite).collect(),
                // The limiter's body is JSON it wrote itself.
                body: String::from_utf8(body)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            })),
        },
        (Decision::Allow(a), Some(Verdict::Unavailable)) => {
            let mut r = deny(
                &Deny {
                    status: DenyStatus::Unavailable,
                    message: "rate-limit service unavailable",
                    reason: "ratelimit_store",
                    provider: a.provider.clone(),
                    challenge: None,
                },
                request_id,
            );
            r.dynamic_metadata = Some(identity_metadata(a, Some("error")));
            r
        }
    }
}

/// The identity an allowed request carries into Envoy's metadata, and the rate-limit outcome
/// when the limits were counted here. Empty values are left out: a rate-limit descriptor
/// treats an absent key as "not set" (and falls back to its default), while an empty string
/// would be a value of its own.
fn identity_metadata(a: &Allow, outcome: Option<&str>) -> Struct {
    let id = a.identity.as_ref();
    proto::string_struct(
        [
            (metadata::CLIENT_ID, id.map_or("", |i| i.client_id.as_str())),
            (metadata::PLAN, id.map_or("", |i| i.plan.as_str())),
            (metadata::TENANT, id.map_or("", |i| i.tenant.as_str())),
            (metadata::PROVIDER, a.provider.as_str()),
            (metadata::RATE_LIMIT, outcome.unwrap_or("")),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty()),
    )
}

fn overwrite(h: HeaderValue) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(h),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn allow(
    a: &Allow,
    outcome: Option<&str>,
    response_headers: Vec<HeaderValueOption>,
) -> CheckResponse {
    let headers = a
        .set_headers
        .iter()
        .map(|(k, v)| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            // Replace whatever the client sent under the same name.
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        })
        .collect();
    let dynamic_metadata =
        (a.identity.is_some() || outcome.is_some()).then(|| identity_metadata(a, outcome));
    CheckResponse {
        status: Some(Status {
            code: RPC_OK,
            ..Default::default()
        }),
        dynamic_metadata,
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove: a.remove_headers.clone(),
            query_parameters_to_remove: a.remove_query.clone(),
            response_headers_to_add: response_headers,
            ..Default::default()
        })),
    }
}

fn deny(d: &Deny, request_id: &str) -> CheckResponse {
    let (code, http, error) = match d.status {
        DenyStatus::Unauthorized => (
            RPC_UNAUTHENTICATED,
            StatusCode::Unauthorized,
            "unauthorized",
        ),
        DenyStatus::Forbidden => (RPC_PERMISSION_DENIED, StatusCode::Forbidden, "forbidden"),
        DenyStatus::Unavailable => (
            RPC_UNAVAILABLE,
            StatusCode::ServiceUnavailable,
            "unavailable",
        ),
    };
    let body = serde_json::json!({
        "error": error,
        "message": d.message,
        "request_id": request_id,
    })
    .to_string();
    let mut headers = vec![header("content-type", "application/json")];
    if let Some(c) = &d.challenge {
        headers.push(header("www-authenticate", c));
    }
    CheckResponse {
        status: Some(Status {
            code,
            message: d.message.to_string(),
            ..Default::default()
        }),
        dynamic_metadata: None::<Struct>,
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http as i32 }),
            headers,
            body,
        })),
    }
}

fn header(k: &str, v: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: k.to_string(),
            value: v.to_string(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}
