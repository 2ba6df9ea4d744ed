//! One request's exchange with Envoy's ext_proc filter, decided without I/O: each
//! [`ProcessingRequest`] in, one [`ProcessingResponse`] out. Every answer is built here,
//! refusals included, and each refusal says why in the spec's JSON error shape.
//!
//! What Envoy does with our answers: a headers or body answer lets the message continue, with
//! our mutations; a `mode_override` in a headers answer stops Envoy from buffering a body we
//! would not edit; an `ImmediateResponse` ends the request with our status and body (the
//! upstream never sees a refused request, the client never sees a refused response). A gRPC
//! error or a late answer is Envoy's 502 or 504 (`failure_mode_allow: false`), never a pass.

use std::sync::Arc;
use std::time::Instant;

use proto::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderMap, HeaderValue, HeaderValueOption,
};
use proto::pb::envoy::extensions::filters::http::ext_proc::v3::{
    processing_mode::BodySendMode, processing_mode::HeaderSendMode, ProcessingMode,
};
use proto::pb::envoy::r#type::v3::HttpStatus;
use proto::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, BodyMutation, BodyResponse,
    CommonResponse, HeaderMutation, HeadersResponse, HttpBody, HttpHeaders, ImmediateResponse,
    ProcessingRequest, ProcessingResponse,
};
use transform::{media, JsonEdits, Outcome};

use crate::metrics::Metrics;
use crate::policy::{Policy, RoutePlan};

/// The `details` of every answer we give ourselves; the gateway's local-reply mappers leave
/// replies with these alone (they rewrite only Envoy's own `ext_proc…` failures).
pub const REFUSAL_DETAILS: &str = "transform_refused";

/// Why the service answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No policy received yet: nothing says what this route must remove.
    NoPolicy,
    /// The route is not in the policy (or Envoy sent no route name).
    UnknownRoute,
    /// A request body nested deeper than the parser goes.
    RequestTooDeep,
    /// A response body nested deeper than the parser goes.
    ResponseTooDeep,
    /// A compressed JSON request body: its members cannot be edited.
    CompressedRequest,
    /// A compressed JSON response body (the upstream ignored the removed `Accept-Encoding`).
    CompressedResponse,
    /// A partial (206) JSON response: not a whole document, so it could hold anything.
    PartialResponse,
}

impl Refusal {
    /// (status, error, message, metric reason).
    fn parts(self) -> (u32, &'static str, &'static str, &'static str) {
        match self {
            Refusal::NoPolicy => (
                503,
                "unavailable",
                "transform service not ready",
                "no_policy",
            ),
            Refusal::UnknownRoute => (
                503,
                "unavailable",
                "transform service does not know the route yet",
                "unknown_route",
            ),
            Refusal::RequestTooDeep => (
                400,
                "bad_request",
                "JSON body nested too deeply",
                "too_deep",
            ),
            Refusal::ResponseTooDeep => (
                502,
                "bad_gateway",
                "upstream JSON nested too deeply to transform",
                "too_deep",
            ),
            Refusal::CompressedRequest => (
                415,
                "unsupported_media_type",
                "a compressed JSON body cannot be transformed; send it uncompressed",
                "compressed",
            ),
            Refusal::CompressedResponse => (
                502,
                "bad_gateway",
                "upstream sent a compressed body that cannot be transformed",
                "compressed",
            ),
            Refusal::PartialResponse => (
                502,
                "bad_gateway",
                "upstream sent a partial body that cannot be transformed",
                "partial",
            ),
        }
    }
}

/// The state of one request (one ext_proc stream).
pub struct Exchange {
    plan: Result<RoutePlan, Refusal>,
    metrics: Metrics,
    request_id: Option<String>,
    accept: Option<String>,
    request_type: Option<String>,
    response_type: Option<String>,
}

impl Exchange {
    /// `route` is the name the route's ext_proc override sends as gRPC metadata.
    pub fn new(policy: Option<Arc<Policy>>, route: Option<&str>, metrics: Metrics) -> Self {
        let plan = match (policy, route) {
            (None, _) => Err(Refusal::NoPolicy),
            (Some(p), Some(r)) => p.routes.get(r).cloned().ok_or(Refusal::UnknownRoute),
            (Some(_), None) => Err(Refusal::UnknownRoute),
        };
        Self {
            plan,
            metrics,
            request_id: None,
            accept: None,
            request_type: None,
            response_type: None,
        }
    }

    /// The answer to one message. `None` for a message we never ask for (trailers).
    pub fn step(&mut self, msg: ProcessingRequest) -> Option<ProcessingResponse> {
        use processing_request::Request;
        let answer = match msg.request? {
            Request::RequestHeaders(h) => self.request_headers(&h),
            Request::RequestBody(b) => self.request_body(&b),
            Request::ResponseHeaders(h) => self.response_headers(&h),
            Request::ResponseBody(b) => self.response_body(&b),
            Request::RequestTrailers(_) | Request::ResponseTrailers(_) => return None,
        };
        Some(match answer {
            Ok(r) => r,
            Err(refusal) => self.refuse(refusal),
        })
    }

    fn plan(&self) -> Result<&RoutePlan, Refusal> {
        self.plan.as_ref().map_err(|r| *r)
    }

    fn request_headers(&mut self, h: &HttpHeaders) -> Result<ProcessingResponse, Refusal> {
        // The request id first: a refusal's body carries it.
        self.request_id = header(h, "x-request-id");
        self.accept = header(h, "accept");
        self.request_type = header(h, "content-type");
        let plan = self.plan()?.clone();
        let json = self.request_type.as_deref().is_some_and(media::is_json);
        let mut edits_request = plan.request.is_some() && !h.end_of_stream;
        if edits_request && json && encoded(h) {
            return Err(Refusal::CompressedRequest);
        }
        if edits_request && !json {
            self.count("request", "skipped");
            edits_request = false;
        }
        let mut r = headers_answer(true, CommonResponse::default());
        if plan.request.is_some() && !edits_request {
            // Nothing to edit: do not make Envoy buffer the request body.
            r.mode_override = Some(mode(false, plan.edits_responses()));
        }
        Ok(r)
    }

    fn request_body(&mut self, b: &HttpBody) -> Result<ProcessingResponse, Refusal> {
        let plan = self.plan()?.clone();
        let Some(edits) = &plan.request else {
            return Ok(body_answer(true, CommonResponse::default()));
        };
        let outcome = self.run(edits, &b.body, self.request_type.clone(), false);
        match outcome {
            Outcome::TooDeep => Err(Refusal::RequestTooDeep),
            Outcome::Unchanged => {
                self.count("request", "unchanged");
                Ok(body_answer(true, CommonResponse::default()))
            }
            Outcome::Replaced { body, .. } => {
                self.count("request", "edited");
                Ok(body_answer(true, replaced(body, None, false)))
            }
        }
    }

    fn response_headers(&mut self, h: &HttpHeaders) -> Result<ProcessingResponse, Refusal> {
        let plan = self.plan()?.clone();
        self.response_type = header(h, "content-type");
        let json = self.response_type.as_deref().is_some_and(media::is_json);
        if !plan.edits_responses() {
            return Ok(headers_answer(false, CommonResponse::default()));
        }
        if json {
            if encoded(h) {
                return Err(Refusal::CompressedResponse);
            }
            if header(h, ":status").as_deref() == Some("206") {
                return Err(Refusal::PartialResponse);
            }
        }
        let mut common = CommonResponse::default();
        if plan.xml {
            // The answer depends on `Accept`: a cache must not serve one client's XML to another.
            common.header_mutation = Some(HeaderMutation {
                set_headers: vec![set_header("vary", "accept", true)],
                ..Default::default()
            });
        }
        let mut r = headers_answer(false, common);
        if !json || h.end_of_stream {
            if !json {
                self.count("response", "skipped");
            }
            r.mode_override = Some(mode(false, false));
        }
        Ok(r)
    }

    fn response_body(&mut self, b: &HttpBody) -> Result<ProcessingResponse, Refusal> {
        let plan = self.plan()?.clone();
        let edits = plan.response.clone().unwrap_or_default();
        let xml = plan.xml && media::prefers_xml(self.accept.as_deref());
        let outcome = self.run(&edits, &b.body, self.response_type.clone(), xml);
        match outcome {
            Outcome::TooDeep => Err(Refusal::ResponseTooDeep),
            Outcome::Unchanged => {
                self.count("response", "unchanged");
                Ok(body_answer(false, CommonResponse::default()))
            }
            Outcome::Replaced { body, xml } => {
                self.count("response", if xml { "xml" } else { "edited" });
                let content_type = xml.then_some("application/xml; charset=utf-8");
                Ok(body_answer(false, replaced(body, content_type, plan.xml)))
            }
        }
    }

    fn run(
        &self,
        edits: &JsonEdits,
        body: &[u8],
        content_type: Option<String>,
        xml: bool,
    ) -> Outcome {
        let started = Instant::now();
        let out = edits.apply_to_body(
            body,
            content_type.as_deref(),
            self.request_id.as_deref(),
            xml,
        );
        self.metrics
            .transform_seconds
            .observe(started.elapsed().as_secs_f64());
        out
    }

    fn count(&self, direction: &str, outcome: &str) {
        self.metrics
            .bodies
            .with_label_values(&[direction, outcome])
            .inc();
    }

    /// The one place a refusal becomes an answer: the spec's JSON error body with the request
    /// id, and `details` the gateway's local-reply mappers leave alone.
    fn refuse(&self, refusal: Refusal) -> ProcessingResponse {
        let (status, error, message, reason) = refusal.parts();
        self.metrics.refusals.with_label_values(&[reason]).inc();
        tracing::debug!(reason, request_id = ?self.request_id, "refused");
        let mut body = transform::json::Value::Object(vec![
            ("error".into(), transform::json::Value::String(error.into())),
            (
                "message".into(),
                transform::json::Value::String(message.into()),
            ),
            (
                "request_id".into(),
                self.request_id
                    .as_deref()
                    .map(|id| {
                        let id: String = id.chars().take(proto::MAX_REQUEST_ID_CHARS).collect();
                        transform::json::Value::String(id)
                    })
                    .unwrap_or(transform::json::Value::Null),
            ),
        ])
        .to_bytes();
        body.push(b'\n');
        ProcessingResponse {
            response: Some(processing_response::Response::ImmediateResponse(
                ImmediateResponse {
                    status: Some(HttpStatus {
                        code: status as i32,
                    }),
                    headers: Some(HeaderMutation {
                        set_headers: vec![set_header("content-type", "application/json", false)],
                        ..Default::default()
                    }),
                    body,
                    details: REFUSAL_DETAILS.to_string(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }
}

/// The first value of header `name` (lower case), as text. Envoy sends values as bytes
/// (`raw_value`); older Envoys in `value`.
fn header(h: &HttpHeaders, name: &str) -> Option<String> {
    let map: &HeaderMap = h.headers.as_ref()?;
    let mut values = map
        .headers
        .iter()
        .filter(|v| v.key.eq_ignore_ascii_case(name))
        .map(|v| {
            if v.raw_value.is_empty() {
                v.value.clone()
            } else {
                String::from_utf8_lossy(&v.raw_value).into_owned()
            }
        });
    let first = values.next()?;
    // Several `Accept` lines are one list (RFC 9110 §5.3).
    Some(values.fold(first, |acc, v| format!("{acc},{v}")))
}

/// A `content-encoding` other than `identity`.
fn encoded(h: &HttpHeaders) -> bool {
    header(h, "content-encoding").is_some_and(|e| {
        e.split(',')
            .any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"))
    })
}

fn set_header(key: &str, value: &str, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: if append {
            HeaderAppendAction::AppendIfExistsOrAdd
        } else {
            HeaderAppendAction::OverwriteIfExistsOrAdd
        } as i32,
        ..Default::default()
    }
}

/// A new body with its `content-length` (and `content-type` when it changed). Envoy holds the
/// headers of a buffered message until its body is answered, so these still apply.
fn replaced(body: Vec<u8>, content_type: Option<&str>, vary: bool) -> CommonResponse {
    let mut set = vec![set_header("content-length", &body.len().to_string(), false)];
    if let Some(ct) = content_type {
        set.push(set_header("content-type", ct, false));
    }
    if vary {
        set.push(set_header("vary", "accept", true));
    }
    CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers: set,
            // The body is whole again: any framing the upstream chose no longer applies.
            remove_headers: vec!["transfer-encoding".to_string()],
        }),
        body_mutation: Some(BodyMutation {
            mutation: Some(body_mutation::Mutation::Body(body)),
        }),
        ..Default::default()
    }
}

/// The processing mode for the rest of a stream: whether Envoy still buffers the request body
/// and sends the response.
fn mode(request_body: bool, responses: bool) -> ProcessingMode {
    let body = |on: bool| {
        if on {
            BodySendMode::Buffered
        } else {
            BodySendMode::None
        }
    } as i32;
    ProcessingMode {
        request_header_mode: HeaderSendMode::Send as i32,
        response_header_mode: if responses {
            HeaderSendMode::Send
        } else {
            HeaderSendMode::Skip
        } as i32,
        request_body_mode: body(request_body),
        response_body_mode: body(responses),
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    }
}

fn headers_answer(request: bool, common: CommonResponse) -> ProcessingResponse {
    let h = HeadersResponse {
        response: Some(common),
    };
    ProcessingResponse {
        response: Some(if request {
            processing_response::Response::RequestHeaders(h)
        } else {
            processing_response::Response::ResponseHeaders(h)
        }),
        ..Default::default()
    }
}

fn body_answer(request: bool, common: CommonResponse) -> ProcessingResponse {
    let b = BodyResponse {
        response: Some(common),
    };
    ProcessingResponse {
        response: Some(if request {
            processing_response::Response::RequestBody(b)
        } else {
            processing_response::Response::ResponseBody(b)
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use processing_request::Request;
    use processing_response::Response;

    use super::*;

    fn headers(pairs: &[(&str, &str)], end: bool) -> HttpHeaders {
        HttpHeaders {
            headers: Some(HeaderMap {
                headers: pairs
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.to_string(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            end_of_stream: end,
            ..Default::default()
        }
    }

    fn msg(r: Request) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(r),
            ..Default::default()
        }
    }

    fn policy() -> Arc<Policy> {
        let edits = JsonEdits::compile(&["/secret".into()], &[], &[], None).unwrap();
        Arc::new(Policy {
            routes: HashMap::from([
                (
                    "t".to_string(),
                    RoutePlan {
                        request: Some(edits.clone()),
                        response: Some(edits),
                        xml: true,
                    },
                ),
                ("plain".to_string(), RoutePlan::default()),
            ]),
        })
    }

    fn immediate(r: Option<ProcessingResponse>) -> (i32, String) {
        match r.and_then(|r| r.response) {
            Some(Response::ImmediateResponse(i)) => (
                i.status.map_or(0, |s| s.code),
                String::from_utf8(i.body).unwrap(),
            ),
            other => panic!("not an immediate response: {other:?}"),
        }
    }

    fn new_body(r: Option<ProcessingResponse>) -> (Vec<(String, String)>, Option<String>) {
        let common = match r.and_then(|r| r.response) {
            Some(Response::RequestBody(b) | Response::ResponseBody(b)) => b.response.unwrap(),
            other => panic!("not a body answer: {other:?}"),
        };
        let set = common
            .header_mutation
            .map(|m| {
                m.set_headers
                    .into_iter()
                    .map(|h| {
                        let h = h.header.unwrap();
                        (h.key, String::from_utf8(h.raw_value).unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = match common.body_mutation.and_then(|m| m.mutation) {
            Some(body_mutation::Mutation::Body(b)) => Some(String::from_utf8(b).unwrap()),
            _ => None,
        };
        (set, body)
    }

    #[test]
    fn without_a_policy_or_a_known_route_every_request_is_refused() {
        for (p, route) in [
            (None, Some("t")),
            (Some(policy()), Some("ghost")),
            (Some(policy()), None),
        ] {
            let mut x = Exchange::new(p, route, Metrics::new());
            let (status, body) = immediate(x.step(msg(Request::RequestHeaders(headers(
                &[("x-request-id", "rid")],
                true,
            )))));
            assert_eq!(status, 503);
            assert!(
                body.contains(r#""error":"unavailable""#) && body.contains(r#""request_id":"rid""#),
                "{body}"
            );
        }
    }

    #[test]
    fn a_response_is_edited_and_turned_into_xml_with_its_new_length() {
        let mut x = Exchange::new(Some(policy()), Some("t"), Metrics::new());
        x.step(msg(Request::RequestHeaders(headers(
            &[
                ("accept", "application/xml;q=0.9"),
                ("accept", "application/json;q=0.8"),
            ],
            true,
        ))));
        let r = x.step(msg(Request::ResponseHeaders(headers(
            &[
                (":status", "200"),
                ("content-type", "Application/JSON; charset=utf-8"),
            ],
            false,
        ))));
        assert!(
            r.unwrap().mode_override.is_none(),
            "the body must be buffered"
        );
        let (set, body) = new_body(x.step(msg(Request::ResponseBody(HttpBody {
            body: br#"{"secret":1,"id":2}"#.to_vec(),
            end_of_stream: true,
            ..Default::default()
        }))));
        let body = body.unwrap();
        assert!(body.ends_with("<response><id>2</id></response>"), "{body}");
        assert!(set.contains(&("content-length".into(), body.len().to_string())));
        assert!(set.contains(&(
            "content-type".into(),
            "application/xml; charset=utf-8".into()
        )));
    }

    #[test]
    fn compressed_partial_and_deep_bodies_are_refused_not_passed() {
        let start = |x: &mut Exchange| {
            x.step(msg(Request::RequestHeaders(headers(&[], true))));
        };
        let mut x = Exchange::new(Some(policy()), Some("t"), Metrics::new());
        start(&mut x);
        let (s, _) = immediate(x.step(msg(Request::ResponseHeaders(headers(
            &[
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            false,
        )))));
        assert_eq!(s, 502);
        let mut x = Exchange::new(Some(policy()), Some("t"), Metrics::new());
        start(&mut x);
        let (s, _) = immediate(x.step(msg(Request::ResponseHeaders(headers(
            &[(":status", "206"), ("content-type", "application/json")],
            false,
        )))));
        assert_eq!(s, 502);
        let mut x = Exchange::new(Some(policy()), Some("t"), Metrics::new());
        x.step(msg(Request::RequestHeaders(headers(
            &[("content-type", "application/json")],
            false,
        ))));
        let deep = "[".repeat(10_000);
        let (s, body) = immediate(x.step(msg(Request::RequestBody(HttpBody {
            body: deep.into_bytes(),
            end_of_stream: true,
            ..Default::default()
        }))));
        assert_eq!(s, 400, "{body}");
        let mut x = Exchange::new(Some(policy()), Some("t"), Metrics::new());
        let (s, _) = immediate(x.step(msg(Request::RequestHeaders(headers(
            &[
                ("content-type", "application/json"),
                ("content-encoding", "GZIP"),
            ],
            false,
        )))));
        assert_eq!(s, 415);
    }

    #[test]
    fn other_bodies_are_not_buffered() {
        let mut x = Exchange::new(Some(policy()), Some("t"), Metrics::new());
        let r = x
            .step(msg(Request::RequestHeaders(headers(
                &[("content-type", "text/plain")],
                false,
            ))))
            .unwrap();
        let m = r.mode_override.expect("request body skipped");
        assert_eq!(m.request_body_mode, BodySendMode::None as i32);
        assert_eq!(m.response_body_mode, BodySendMode::Buffered as i32);
        let r = x
            .step(msg(Request::ResponseHeaders(headers(
                &[("content-type", "application/xml")],
                false,
            ))))
            .unwrap();
        assert_eq!(
            r.mode_override.unwrap().response_body_mode,
            BodySendMode::None as i32
        );
    }
}
