//! An OTLP/HTTP trace receiver on loopback (what a collector's port 4318 does for traces): it
//! decodes every `POST /v1/traces` and keeps the spans, so tests can follow one trace across the
//! API and the worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

use crate::serve;

/// One received span, ids in lower-case hex as in a `traceparent`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    /// The attributes of the resource that sent it (`service.name`, `service.version`, …).
    pub resource: HashMap<String, String>,
}

#[derive(Debug)]
pub struct OtlpReceiver {
    port: u16,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    server: actix_web::dev::ServerHandle,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

async fn traces(body: web::Bytes, spans: web::Data<Arc<Mutex<Vec<ReceivedSpan>>>>) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut received = Vec::new();
    for resource in request.resource_spans {
        let attributes: HashMap<String, String> = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .map(|a| {
                let value = text(a.value.as_ref().and_then(|v| v.value.as_ref()));
                (a.key.clone(), value)
            })
            .collect();
        let service = attributes.get("service.name").cloned().unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|a| (a.key, text(a.value.as_ref().and_then(|v| v.value.as_ref()))))
                        .collect(),
                    resource: attributes.clone(),
                });
            }
        }
    }
    spans.lock().expect("not poisoned").extend(received);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let data = web::Data::new(spans.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .route("/v1/traces", web::post().to(traces))
        })
        .workers(1);
        let (port, server) = serve::on_loopback(server, "127.0.0.1", "the OTLP receiver");
        Self {
            port,
            spans,
            server,
        }
    }

    /// What `telemetry.otlp_endpoint` should be.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("not poisoned").clone()
    }

    /// Waits until `done` holds for the spans received so far (exporters send in batches).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let server = self.server.clone();
        drop(server.stop(false));
    }
}
