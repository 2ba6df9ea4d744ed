//! Traces of every process (spec §10): `tracing` spans exported over OTLP/gRPC when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the other `OTEL_*` variables the OpenTelemetry SDK reads
//! apply too: `OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`, …), and the W3C trace context a
//! gRPC caller (Envoy) sent, continued by the span that answers it. Without the variable nothing
//! is exported, no exporter runs, and [`call_span`] makes no span.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::side::LogFormat;

/// The variable that turns exporting on (the OpenTelemetry SDKs' standard name).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// True once spans are exported: [`call_span`] makes no span otherwise.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Keeps the exporter running; dropping it (at the end of `main`) flushes the spans not yet sent.
#[must_use = "dropping it stops the exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// The exporter's own one-thread runtime: the gRPC channel to the collector lives there, so
    /// a slow or absent collector never holds a worker of the service, and the set-up needs no
    /// runtime of the caller's (every binary installs this before it starts its own).
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("telemetry: flushing spans at exit failed: {e}");
            }
        }
    }
}

/// Installs the global `tracing` subscriber of every binary: `RUST_LOG` filter (default `info`),
/// log lines on stderr (text coloured only when stderr is a terminal: a log file, a pipe or
/// `docker logs` would otherwise be full of ANSI escape codes), and, where
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer exporting spans as `service`
/// (unless `OTEL_SERVICE_NAME` names another).
pub fn install(format: LogFormat, service: &str) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (otel, telemetry) = match exporter(service) {
        Ok(Some((provider, runtime))) => {
            let tracer = provider.tracer(service.to_string());
            EXPORTING.store(true, Ordering::Relaxed);
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                Telemetry {
                    provider: Some(provider),
                    _runtime: Some(runtime),
                },
            )
        }
        Ok(None) => (None, disabled()),
        Err(e) => {
            // Tracing is an aid, not the service: start without it and say why.
            eprintln!("telemetry: {ENDPOINT_ENV} is set but the exporter cannot start ({e}); no spans are exported");
            (None, disabled())
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    telemetry
}

fn disabled() -> Telemetry {
    Telemetry {
        provider: None,
        _runtime: None,
    }
}

type Exporter = (SdkTracerProvider, tokio::runtime::Runtime);

/// The OTLP/gRPC exporter and its batch processor, or `None` without the variable.
fn exporter(service: &str) -> Result<Option<Exporter>, Box<dyn std::error::Error>> {
    if std::env::var_os(ENDPOINT_ENV).is_none_or(|v| v.is_empty()) {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()?;
    // The endpoint, headers, timeout and compression come from the `OTEL_EXPORTER_OTLP_*`
    // variables; the channel is created (lazily connected) on the exporter's runtime.
    let exporter = {
        let _in = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?
    };
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| service.to_string());
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(name).build())
        .with_batch_exporter(exporter)
        .build();
    Ok(Some((provider, runtime)))
}

/// The span of one call Envoy makes (a Check, a ShouldRateLimit), made by `make` and made a
/// child of the W3C trace context (`traceparent`, `tracestate`) in `metadata`, the gRPC headers
/// Envoy sends with the call of a traced request. Without a context (or with one that does not
/// parse) the span starts a trace of its own; never an error.
///
/// When spans are not exported this is `Span::none()`, and `make` is not called: a span nobody
/// exports would still cost every call its creation and the log layer's formatting of each
/// field (about a tenth of a check's instructions, measured by `scripts/bench callgrind`).
/// Log lines inside the call carry their own fields.
pub fn call_span(
    make: impl FnOnce() -> tracing::Span,
    metadata: &tonic::metadata::MetadataMap,
) -> tracing::Span {
    if !EXPORTING.load(Ordering::Relaxed) {
        return tracing::Span::none();
    }
    let span = make();
    let cx = TraceContextPropagator::new().extract(&Metadata(metadata));
    // Fails only for a disabled (filtered out) span, which leaves nothing to parent.
    let _ = span.set_parent(cx);
    span
}

struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
