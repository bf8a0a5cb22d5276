//! Exporters: sinks that turn finished tasks into the formats people already look at.
//! Each is a [`crate::sink::Sink`]; the session can run several at once.

pub mod html;
pub mod http;
pub mod otlp;
pub mod perfetto;
pub mod zipkin;
