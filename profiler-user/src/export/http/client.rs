//! One HTTP/1.1 POST, over TCP or TLS, within a total deadline.
//!
//! RFC 9112 subset: `Content-Length` bodies, `Connection: close`, no redirects, no chunked
//! bodies sent. TLS is rustls on ring (no OpenSSL: the release binary is linked statically)
//! with the system's CA roots, read once per exporter from `SSL_CERT_FILE` / `SSL_CERT_DIR`
//! or the distribution's bundle (`/etc/ssl/certs`).
//!
//! The deadline is for the whole attempt (connect, TLS handshake, request, response): every
//! socket read and write gets the time left as its timeout, so a peer that answers one byte
//! at a time cannot hold the exporter longer than one deadline.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A parsed `http[s]://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// As written in the URL (brackets kept for IPv6): also the `Host` header.
    pub host: String,
    pub port: u16,
    pub path: String,
    /// https.
    pub tls: bool,
}

/// What every POST of an exporter carries besides its body.
#[derive(Clone, Debug)]
pub struct RequestOptions {
    pub content_type: &'static str,
    /// Extra headers (`--otlp-header`, `OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// Compress bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions { content_type: "application/json", headers: Vec::new(), gzip: false }
    }
}

impl Endpoint {
    /// Parses `url`; `default_path` replaces an empty or `/` path (e.g. `/v1/traces`). A
    /// URL without a scheme is taken as http.
    pub fn parse(url: &str, default_path: &str) -> anyhow::Result<Endpoint> {
        let (rest, tls) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, false),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (rest, true),
            Some((scheme, _)) => bail!("{url}: unsupported scheme {scheme:?} (http://host:port or https://host:port)"),
            None => (url, false),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                let port = authority[i + 1..].parse::<u16>().with_context(|| format!("{url}: bad port"))?;
                (&authority[..i], port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() || host.contains('@') {
            bail!("{url}: expected http://host:port");
        }
        let path = if path.is_empty() || path == "/" { default_path } else { path };
        Ok(Endpoint { host: host.to_string(), port, path: path.to_string(), tls })
    }

    /// The URL, for messages.
    pub fn url(&self) -> String {
        format!("{}://{}:{}{}", if self.tls { "https" } else { "http" }, self.host, self.port, self.path)
    }

    fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    fn connect(&self, deadline: Instant) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} resolves to no address", self.host));
        for addr in (self.bare_host(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, left(deadline)?) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One POST within `timeout` in all; returns the status code and the start of the
    /// response body. `tls` is required for an https endpoint.
    pub fn post(&self, body: &[u8], opts: &RequestOptions, tls: Option<&Arc<rustls::ClientConfig>>, timeout: Duration) -> io::Result<(u16, String)> {
        let deadline = Instant::now() + timeout;
        let tcp = self.connect(deadline)?;
        let _ = tcp.set_nodelay(true);
        let timed = Timed { s: tcp, deadline };
        if !self.tls {
            return self.exchange(timed, body, opts);
        }
        let cfg = tls.ok_or_else(|| io::Error::other("https endpoint without a TLS configuration"))?;
        let name = rustls::pki_types::ServerName::try_from(self.bare_host().to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {e}", self.host)))?;
        let conn = rustls::ClientConnection::new(Arc::clone(cfg), name).map_err(io::Error::other)?;
        self.exchange(rustls::StreamOwned::new(conn, timed), body, opts)
    }

    fn exchange<S: Read + Write>(&self, mut s: S, body: &[u8], opts: &RequestOptions) -> io::Result<(u16, String)> {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: tprof/{}\r\n",
            self.path,
            self.host,
            self.port,
            opts.content_type,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        if opts.gzip {
            head.push_str("Content-Encoding: gzip\r\n");
        }
        for (k, v) in &opts.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        s.flush()?;
        // Read the head and at most 1 KiB of body (for error messages).
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match s.read(&mut chunk) {
                Ok(n) => n,
                // A peer that closes without TLS close_notify, or a body cut short: what
                // came is enough for the status.
                Err(e) if !buf.is_empty() && buf.windows(4).any(|w| w == b"\r\n\r\n") && e.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e),
            };
            buf.extend_from_slice(&chunk[..n]);
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
            let done = match head_end {
                Some(h) => {
                    let len = content_length(&buf[..h]).unwrap_or(usize::MAX).min(1024);
                    buf.len() >= h + 4 + len
                }
                None => buf.len() > 16 * 1024,
            };
            if n == 0 || done {
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line in the response"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.chars().take(200).collect()).unwrap_or_default();
        Ok((status, body))
    }
}

/// The time left before `deadline`, or a TimedOut error once it passed.
fn left(deadline: Instant) -> io::Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "the export attempt's deadline passed"));
    }
    Ok(d)
}

/// A socket whose every read and write ends by the attempt's deadline.
struct Timed {
    s: TcpStream,
    deadline: Instant,
}

/// A socket timeout (EAGAIN) as what it is here: the attempt's deadline.
fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(io::ErrorKind::TimedOut, "the export attempt's deadline passed"),
        _ => e,
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.set_read_timeout(Some(left(self.deadline)?))?;
        self.s.read(buf).map_err(timed_out)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.set_write_timeout(Some(left(self.deadline)?))?;
        self.s.write(buf).map_err(timed_out)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

pub(super) fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
    })
}

/// A TLS client configuration trusting the system's CA roots (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` when set, else the distribution's bundle).
pub fn system_tls() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        bail!(
            "no CA certificates found for https (install ca-certificates, or set SSL_CERT_FILE){}",
            if why.is_empty() { String::new() } else { format!(": {}", why.join("; ")) }
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Validates `k=v` header pairs (`--otlp-header`, `OTEL_EXPORTER_OTLP_HEADERS`): names are
/// HTTP tokens, values have no control characters (no header injection).
pub fn check_header(k: &str, v: &str) -> anyhow::Result<()> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if k.is_empty() || !k.chars().all(token) {
        bail!("header name {k:?} is not an HTTP token");
    }
    if v.chars().any(|c| c.is_control()) {
        bail!("header {k}: the value has control characters");
    }
    Ok(())
}

/// gzip of `body`.
pub fn gzip(body: &[u8]) -> io::Result<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), flate2::Compression::fast());
    z.write_all(body)?;
    z.finish()
}
