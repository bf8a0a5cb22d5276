//! A service instrumented the way most Rust services are: `tracing` spans exported by the
//! real OpenTelemetry SDK (`opentelemetry_sdk` + `opentelemetry-otlp` over OTLP/HTTP,
//! configured by the standard `OTEL_*` environment variables) through `tracing-opentelemetry`,
//! with tprof's `TprofLayer` added after the OpenTelemetry layer and usdt-probes' feature
//! `opentelemetry` on: tprof's tasks are the service's spans.
//!
//! Usage: `otel-service [N]`. Prints `ready <pid>`, waits for a line on stdin, handles N
//! (default 3) "requests" as root `tracing` spans (each with a child span `db` that sleeps,
//! and an event), then one job made with the OpenTelemetry API and `usdt_probes::Task`,
//! flushes the exporter, prints `done`, and exits when stdin closes.

use std::io::BufRead;
use std::time::Duration;

use opentelemetry::trace::{Tracer, TracerProvider};
use tracing::info_span;
use tracing_subscriber::layer::SubscriberExt;
use usdt_probes::TprofLayer;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    // Protocol, endpoint and headers: OTEL_EXPORTER_OTLP_* (the SDK reads them).
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("otel-service: building the OTLP exporter: {e}");
            std::process::exit(1);
        }
    };
    // service.name: OTEL_SERVICE_NAME (the SDK's resource detectors read it).
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().build())
        .build();
    let tracer = provider.tracer("otel-service");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer.clone()))
        .with(TprofLayer::new());
    let _ = tracing::subscriber::set_global_default(subscriber);

    println!("ready {}", std::process::id());
    let stdin = std::io::stdin();
    let mut line = String::new();
    let _ = stdin.lock().read_line(&mut line);

    for i in 0..n {
        let span = info_span!("request", i);
        let _in = span.enter();
        info_span!("db").in_scope(|| std::thread::sleep(Duration::from_millis(15)));
        tracing::info!(rows = 3, "queried");
    }
    // The OpenTelemetry API directly: `Task::new` inside the span takes its ids.
    tracer.in_span("job", |_cx| {
        let _task = usdt_probes::Task::new("job");
        std::thread::sleep(Duration::from_millis(10));
    });
    if let Err(e) = provider.shutdown() {
        eprintln!("otel-service: flushing spans: {e}");
    }
    println!("done");
    let mut rest = String::new();
    while stdin.lock().read_line(&mut rest).is_ok_and(|n| n > 0) {
        rest.clear();
    }
}
