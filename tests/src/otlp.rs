//! An OpenTelemetry collector for tests: a real OTLP/gRPC `TraceService` on a free port that
//! keeps every span it is sent, for the tracing tests to read back (spec §10), or only counts
//! them by service, for the gateway benchmark's long runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// One received span, with ids as lowercase hex (as `traceparent` writes them).
#[derive(Debug, Clone)]
pub struct Span {
    /// The resource's `service.name`.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// Every attribute, its value as text.
    pub attributes: Vec<(String, String)>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default, Clone)]
struct Received {
    /// Every span, unless the collector only counts.
    spans: Arc<Mutex<Vec<Span>>>,
    /// Spans received, by the resource's `service.name`.
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    keep: bool,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut all = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(|a| text(a.value.as_ref()))
                .unwrap_or_default();
            let n: usize = rs.scope_spans.iter().map(|ss| ss.spans.len()).sum();
            *counts.entry(service.clone()).or_default() += n as u64;
            if !self.keep {
                continue;
            }
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                all.push(Span {
                    service: service.clone(),
                    name: s.name,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    attributes: s.attributes.iter().map(kv).collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn kv(a: &KeyValue) -> (String, String) {
    (a.key.clone(), text(a.value.as_ref()))
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The running collector; stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// A collector that keeps every span ([`spans`](Self::spans)).
    pub async fn start() -> Collector {
        Self::start_keeping(true).await
    }

    /// A collector that only counts the spans it is sent ([`count`](Self::count)): a long
    /// benchmark run at `sample: 100%` would otherwise hold every span in memory.
    pub async fn start_counting() -> Collector {
        Self::start_keeping(false).await
    }

    async fn start_keeping(keep: bool) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP collector");
        let addr = listener.local_addr().expect("collector address");
        let received = Received {
            keep,
            ..Received::default()
        };
        let service = TraceServiceServer::new(received.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Collector {
            addr,
            received,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` names for this collector.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans received so far from `service` (the resource's `service.name`), kept or not.
    pub fn count(&self, service: &str) -> u64 {
        self.received
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .copied()
            .unwrap_or(0)
    }

    /// Every span received so far (none from a [`start_counting`](Self::start_counting) one).
    pub fn spans(&self) -> Vec<Span> {
        self.received
            .spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
