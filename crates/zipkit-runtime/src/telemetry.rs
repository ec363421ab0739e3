//! One `init` per process: logs (an env filter; JSON lines in production, each with the
//! `trace_id` and `span_id` it happened in; pretty locally) and traces (OpenTelemetry spans of
//! zipkit's own code, exported over OTLP/HTTP when `telemetry.otlp_endpoint` is set, otherwise
//! kept only for their ids). `traceparent` / `inject` carry a trace across RabbitMQ (and through
//! PostgreSQL for the sweeper and webhooks): one trace runs from the request to the last part.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `[telemetry]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,zipkit_worker=debug`; `RUST_LOG` overrides it.
    pub filter: String,
    /// Base URL of an OTLP/HTTP receiver (a collector's port 4318); spans go to
    /// `<endpoint>/v1/traces`. Unset or empty: no span leaves the process.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Headers for the receiver, `name=value` pairs separated by commas (the format of
    /// `OTEL_EXPORTER_OTLP_HEADERS`), e.g. an API key. A secret: never logged.
    #[serde(default)]
    pub otlp_headers: Option<SecretString>,
    /// `service.name` of exported spans; the binary's name when unset.
    #[serde(default)]
    pub service_name: Option<String>,
    /// The deployment environment exported spans carry (`deployment.environment.name`), e.g.
    /// `production`; unset or empty: none.
    #[serde(default)]
    pub environment: Option<String>,
    /// Share of new traces exported (0 to 1). A request that arrives with a sampled
    /// `traceparent` is always followed.
    #[serde(default = "all")]
    pub trace_sample_ratio: f64,
}

fn all() -> f64 {
    1.0
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.otlp_headers: {0}")]
    Headers(String),
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(String),
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Where log lines go: a service logs to standard output (what container runtimes collect); a
/// command whose standard output is its result (`migrate --output json`) logs to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Installs the global subscriber; later calls (tests starting several apps) are no-ops.
pub fn init(
    service: &'static str,
    settings: &TelemetrySettings,
    stream: LogStream,
) -> Result<(), TelemetryError> {
    if PROVIDER.get().is_some() {
        return Ok(());
    }
    let provider = tracer_provider(service, settings)?;
    let tracer = provider.tracer("zipkit");
    let exporting = settings
        .otlp_endpoint
        .as_deref()
        .is_some_and(|e| !e.is_empty());

    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let (writer, terminal) = match stream {
        LogStream::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        LogStream::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let logs = match settings.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(writer)
            .with_filter(log_filter)
            .boxed(),
        // Colour codes only for a person at a terminal: in a log file they are noise.
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(terminal)
            .with_writer(writer)
            .with_filter(log_filter)
            .boxed(),
    };
    // What the log level hides is still traced: zipkit's own spans, and its warnings as span
    // events. Nothing from dependencies (their spans would flood the trace).
    let traced = filter::filter_fn(|meta| {
        meta.target().starts_with("zipkit")
            && if meta.is_span() {
                *meta.level() <= Level::INFO
            } else {
                *meta.level() <= Level::WARN
            }
    });
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_filter(traced);
    let result = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    if result.is_ok() {
        let _ = PROVIDER.set(provider);
        tracing::info!(
            service,
            exporting_traces = exporting,
            "telemetry initialised"
        );
    }
    Ok(())
}

/// Sends the spans still buffered (at exit; the exporter otherwise sends every few seconds).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("flushing traces failed: {e}");
    }
}

/// What every exported span says of the process: its service's name and version, and the
/// deployment environment when one is set.
fn resource(name: String, environment: Option<&str>) -> Resource {
    let mut builder = Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Some(environment) = environment.filter(|e| !e.is_empty()) {
        builder = builder.with_attribute(KeyValue::new(
            "deployment.environment.name",
            environment.to_owned(),
        ));
    }
    builder.build()
}

fn tracer_provider(
    service: &'static str,
    settings: &TelemetrySettings,
) -> Result<SdkTracerProvider, TelemetryError> {
    let name = settings
        .service_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| service.to_owned());
    let ratio = settings.trace_sample_ratio.clamp(0.0, 1.0);
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource(name, settings.environment.as_deref()));
    if let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        let headers = match &settings.otlp_headers {
            Some(headers) => parse_headers(headers.expose_secret())?,
            None => HashMap::new(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_headers(headers)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// `a=1,b=two` → {a: 1, b: two}; values may be percent-encoded as in `OTEL_EXPORTER_OTLP_HEADERS`.
fn parse_headers(raw: &str) -> Result<HashMap<String, String>, TelemetryError> {
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                TelemetryError::Headers("expected name=value pairs separated by commas".into())
            })?;
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|_| TelemetryError::Headers("a value is not UTF-8 once decoded".into()))?;
            Ok((name.trim().to_owned(), value.into_owned()))
        })
        .collect()
}

/// The W3C `traceparent` of `span` (for a message header or a row), when it is being traced.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span a `traceparent` names (when it is valid), so a trace
/// continues across a process boundary.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Renames `span` once its name is known (an HTTP span learns its route after routing);
/// `otel.name` only counts before the span starts.
pub fn rename(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
}

/// Marks `span` failed (an HTTP 5xx, say) for trace views that colour errors.
pub fn mark_error(span: &tracing::Span, description: String) {
    span.set_status(opentelemetry::trace::Status::error(description));
}

/// The JSON formatter's line with the current span's `trace_id` and `span_id` added, so a log
/// line leads to its trace.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let current = tracing::Span::current();
        let context = if current.is_none() {
            None
        } else {
            let cx = current.context();
            let span = cx.span();
            let ids = span.span_context();
            ids.is_valid()
                .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
        };
        match (context, line.rfind('}')) {
            (Some((trace, span)), Some(end)) => write!(
                writer,
                "{},\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"{}",
                &line[..end],
                &line[end..]
            ),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_headers_are_read_like_the_standard_variable() {
        let parsed = parse_headers("api-key=s3cr%3Det, x-team = ops ,").expect("valid");
        assert_eq!(parsed["api-key"], "s3cr=et");
        assert_eq!(parsed["x-team"], "ops");
        assert!(parse_headers("novalue").is_err());
        assert!(parse_headers("a=%ff").is_err());
    }
}
