//! Logs and traces for SPLAI's binaries.
//!
//! Logs always go to stderr, coloured only when stderr is a terminal and `NO_COLOR` is unset,
//! so `2> file` captures them as plain text and stdout stays for a program's output. Spans are exported over OTLP/HTTP only when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is set, so a
//! cluster without a collector pays nothing. Every span about a job joins the job's W3C trace
//! (`join_trace`): the gateway's request, the operator's job and task spans and the agent's
//! execution share one trace ID.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The process's logging and, when configured, trace export. Keep it alive for the life of the
/// process: dropping it flushes the spans not yet sent.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Whether the environment asks for trace export.
pub fn export_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Where spans go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Export {
    /// Nowhere: logs only.
    Off,
    /// Where the standard `OTEL_EXPORTER_OTLP_*` variables say.
    FromEnv,
    /// To this OTLP/HTTP traces URL, such as `http://collector:4318/v1/traces`.
    To(String),
}

impl Export {
    /// `FromEnv` when `export_configured()`, else `Off`.
    pub fn from_env() -> Export {
        if export_configured() {
            Export::FromEnv
        } else {
            Export::Off
        }
    }
}

/// Why logging or span export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("setting up OTLP export (check the OTEL_EXPORTER_OTLP_* variables): {0}")]
    Exporter(String),
    #[error("installing the log subscriber (is another one installed already?): {0}")]
    Subscriber(String),
}

impl Telemetry {
    /// Installs the global subscriber as the environment asks: logs filtered by `RUST_LOG`
    /// (default `info`), as JSON lines when `json`, and OTLP export of spans when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. `service` is the `service.name` unless
    /// `OTEL_SERVICE_NAME` says otherwise.
    pub fn init(service: &'static str, json: bool) -> Result<Telemetry, TelemetryError> {
        Telemetry::init_with(service, json, Export::from_env())
    }

    pub fn init_with(
        service: &'static str,
        json: bool,
        export: Export,
    ) -> Result<Telemetry, TelemetryError> {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let provider = match export {
            Export::Off => None,
            Export::FromEnv | Export::To(_) => {
                // Fails only when a provider is already installed, which is as good.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
                if let Export::To(url) = &export {
                    builder = builder.with_endpoint(url);
                }
                let exporter = builder
                    .build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
                let mut resource = Resource::builder();
                if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
                    resource = resource.with_service_name(service);
                }
                Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(resource.build())
                        .build(),
                )
            }
        };
        if let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
        }
        // Each layer filters for itself: RUST_LOG quiets the logs without losing spans, and
        // only SPLAI's own spans are exported (not every HTTP client's).
        let otel = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("splai"))
                .with_filter(Targets::new().with_target("splai", LevelFilter::INFO))
        });
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let logs = if json {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour)
                .with_filter(filter)
                .boxed()
        };
        let installed = tracing_subscriber::registry()
            .with(logs)
            .with(otel)
            .try_init();
        installed.map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
        EXPORTING.store(provider.is_some(), Ordering::Relaxed);
        Ok(Telemetry { provider })
    }

    /// Whether spans leave the process.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown() {
                eprintln!("flushing spans to the OTLP endpoint failed: {e}");
            }
        }
    }
}

/// Whether this process exports spans; callers may skip building spans nobody reads.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Records a span that already happened, from `start_ms` to `end_ms` (milliseconds since the Unix
/// epoch), in the trace `parent` names (a `traceparent` or a bare trace ID, as for `join_trace`).
/// For what a driver learns after the fact, such as an attempt's run from its report. Does
/// nothing when spans are not exported or `parent` is malformed.
pub fn record_span(
    name: &'static str,
    parent: &str,
    start_ms: u64,
    end_ms: u64,
    attributes: Vec<(&'static str, String)>,
) {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span as _, Tracer as _};
    if !exporting() {
        return;
    }
    let Some(cx) = remote_context(parent) else {
        return;
    };
    let at = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let tracer = opentelemetry::global::tracer("splai");
    let mut span = tracer
        .span_builder(name)
        .with_start_time(at(start_ms))
        .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
        .start_with_context(&tracer, &cx);
    span.end_with_timestamp(at(end_ms.max(start_ms)));
}

fn remote_context(traceparent: &str) -> Option<opentelemetry::Context> {
    let header = if traceparent.len() == 32 {
        // The format needs a parent span ID; this one names no real span.
        format!("00-{traceparent}-0000000000000001-01")
    } else {
        traceparent.to_owned()
    };
    let carrier = HashMap::from([("traceparent".to_owned(), header)]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the remote span in `traceparent`, a W3C `traceparent` value
/// (`00-<trace id>-<span id>-<flags>`). A bare 32-hex-digit trace ID also works: the span then
/// starts the trace's local part. Returns false, changing nothing, for a malformed value.
pub fn join_trace(span: &tracing::Span, traceparent: &str) -> bool {
    match remote_context(traceparent) {
        Some(cx) => span.set_parent(cx).is_ok(),
        None => false,
    }
}

/// The trace ID of `span` as 32 lowercase hex digits, when it is exported.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace ID in a W3C `traceparent` value, if it is well-formed (lowercase hex) and not all
/// zeros.
pub fn trace_id_in(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Lowercase only, as W3C Trace Context requires (and as the propagator that `join_trace`
    // uses accepts): an uppercase value would name one trace here and another there.
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0');
    ok.then(|| trace.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_gives_its_trace_id_and_bad_ones_give_none() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            trace_id_in(tp).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        ] {
            assert_eq!(trace_id_in(bad), None, "{bad}");
        }
    }
}
