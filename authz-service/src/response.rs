//! Decisions → ext_authz `CheckResponse`: the one place that decides what Envoy is told.
//!
//! Every outcome, including malformed input, an unknown route and our own failures, becomes an
//! OK or a denied *response*, never a gRPC error: Envoy treats an error like an unreachable
//! service, and under `failure_mode_allow` (or `on_error: allow`) that lets the request through.

use proto::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use proto::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use proto::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use proto::pb::google::protobuf::Struct;
use proto::pb::google::rpc::Status;

use crate::policy::{Allow, Decision, Deny, DenyStatus};

/// google.rpc.Code values Envoy reads: OK lets the request through, anything else denies it.
const RPC_OK: i32 = 0;
const RPC_PERMISSION_DENIED: i32 = 7;
const RPC_UNAVAILABLE: i32 = 14;
const RPC_UNAUTHENTICATED: i32 = 16;

/// Keys of the dynamic metadata Envoy stores under the `envoy.filters.http.ext_authz`
/// namespace; the rate-limit descriptors read them.
pub use proto::authz::metadata;

/// The response for `decision` on a request whose `x-request-id` is `request_id`.
pub fn check_response(decision: &Decision, request_id: &str) -> CheckResponse {
    match decision {
        Decision::Allow(a) => allow(a),
        Decision::Deny(d) => deny(d, request_id),
    }
}

fn allow(a: &Allow) -> CheckResponse {
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
    // Empty values are left out: a rate-limit descriptor treats an absent key as "not set"
    // (and falls back to its default), while an empty string would be a value of its own.
    let dynamic_metadata = a.identity.as_ref().map(|id| {
        proto::string_struct(
            [
                (metadata::CLIENT_ID, id.client_id.as_str()),
                (metadata::PLAN, id.plan.as_str()),
                (metadata::TENANT, id.tenant.as_str()),
                (metadata::PROVIDER, a.provider.as_str()),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty()),
        )
    });
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
