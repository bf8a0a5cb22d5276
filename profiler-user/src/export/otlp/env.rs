//! The OTLP exporter's standard configuration: flags first, then the environment variables
//! every OpenTelemetry SDK reads (<https://opentelemetry.io/docs/specs/otel/protocol/exporter/>):
//! `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `..._HEADERS`, `..._PROTOCOL`, `..._COMPRESSION`
//! and `..._TIMEOUT` (the `TRACES_` variant wins). The environment is passed in as a lookup
//! function, so tests need not touch the process's own.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::SpanOptions;
use crate::export::http::{check_header, Config};

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `OTEL_EXPORTER_OTLP_TRACES_{name}`, else `OTEL_EXPORTER_OTLP_{name}`; empty is unset.
fn var(env: Env<'_>, name: &str) -> Option<String> {
    env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
        .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The endpoint: `flag`, else the traces endpoint (as is), else the base endpoint with
/// `v1/traces` appended to its path.
pub fn endpoint(flag: Option<&str>, env: Env<'_>) -> Option<String> {
    if let Some(f) = flag {
        return Some(f.to_string());
    }
    if let Some(t) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(|v| !v.trim().is_empty()) {
        return Some(t.trim().to_string());
    }
    let base = env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|v| v.trim().to_string()).filter(|v| !v.is_empty())?;
    Some(if base.ends_with('/') { format!("{base}v1/traces") } else { format!("{base}/v1/traces") })
}

/// `%XX` decoded (the header values' encoding in `OTEL_EXPORTER_OTLP_HEADERS`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one `k=v` header.
fn header(kv: &str) -> Result<(String, String)> {
    let (k, v) = kv.split_once('=').with_context(|| format!("header {kv:?}: expected key=value"))?;
    let (k, v) = (k.trim().to_string(), percent_decode(v.trim()));
    check_header(&k, &v)?;
    Ok((k, v))
}

/// Headers, protocol, compression and timeout from the flags and the environment.
pub fn options(flag_headers: &[String], protocol: Option<&str>, compression: Option<&str>, env: Env<'_>) -> Result<SpanOptions> {
    let mut http = Config::default();
    if let Some(list) = var(env, "HEADERS") {
        for kv in list.split(',').filter(|s| !s.trim().is_empty()) {
            http.request.headers.push(header(kv).context("OTEL_EXPORTER_OTLP_HEADERS")?);
        }
    }
    for kv in flag_headers {
        let (k, v) = header(kv).context("--otlp-header")?;
        // A flag replaces the environment's value of the same header.
        http.request.headers.retain(|(k2, _)| !k2.eq_ignore_ascii_case(&k));
        http.request.headers.push((k, v));
    }
    let binary = match protocol.map(str::to_string).or_else(|| var(env, "PROTOCOL")).as_deref() {
        None | Some("http/json") => false,
        Some("http/protobuf") => true,
        Some("grpc") => bail!("OTLP over gRPC is not supported: use http/protobuf (the Collector's port 4318)"),
        Some(p) => bail!("unknown OTLP protocol {p:?}: http/protobuf or http/json"),
    };
    http.request.gzip = match compression.map(str::to_string).or_else(|| var(env, "COMPRESSION")).as_deref() {
        None | Some("none") => false,
        Some("gzip") => true,
        Some(c) => bail!("unknown OTLP compression {c:?}: gzip or none"),
    };
    if let Some(ms) = var(env, "TIMEOUT") {
        let ms: u64 = ms.parse().with_context(|| format!("OTEL_EXPORTER_OTLP_TIMEOUT={ms}: milliseconds expected"))?;
        http.timeout = Duration::from_millis(ms.max(1));
    }
    Ok(SpanOptions { http, binary, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn endpoints_follow_the_spec() {
        let none = env(&[]);
        assert_eq!(endpoint(None, &none), None);
        assert_eq!(endpoint(Some("http://a:1"), &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://b")])).as_deref(), Some("http://a:1"));
        assert_eq!(endpoint(None, &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://b:4318")])).as_deref(), Some("https://b:4318/v1/traces"));
        assert_eq!(endpoint(None, &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://b/otlp/")])).as_deref(), Some("http://b/otlp/v1/traces"));
        let both = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://b"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/x")]);
        assert_eq!(endpoint(None, &both).as_deref(), Some("http://c/x"));
    }

    #[test]
    fn headers_protocol_compression_and_timeout() {
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%20ecret, x-team = a"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]);
        let o = options(&["x-team=b".into()], None, None, &e).expect("options");
        assert_eq!(o.http.request.headers, [("api-key".to_string(), "s ecret".to_string()), ("x-team".into(), "b".into())]);
        assert!(o.binary && o.http.request.gzip);
        assert_eq!(o.http.timeout, Duration::from_millis(2500));
        let o = options(&[], Some("http/json"), Some("none"), &e).expect("flags win");
        assert!(!o.binary && !o.http.request.gzip);
        assert!(options(&["bad header=x".into()], None, None, &env(&[])).is_err());
        assert!(options(&["k=a\r\nInjected: 1".into()], None, None, &env(&[])).is_err());
        assert!(options(&[], Some("grpc"), None, &env(&[])).is_err());
    }
}
