//! A small blocking HTTP/1.1 client for plugin sockets: POST with a JSON body, responses with
//! Content-Length, chunked encoding or close-delimited bodies, every read and write bounded by
//! one deadline, and the connection kept for the next call when the plugin allows it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::discovery::PluginAddr;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// The media type of plugin protocol v1.2.
pub const ACCEPT: &str = "application/vnd.docker.plugins.v1.2+json";

/// A failed exchange; the caller adds which plugin and which call.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting failed.
    #[error("connecting failed")]
    Connect(#[source] io::Error),
    /// The deadline passed.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// Reading or writing failed.
    #[error("the connection failed")]
    Io(#[source] io::Error),
    /// The connection closed before the answer was complete.
    #[error("the plugin closed the connection before the answer was complete")]
    Truncated,
    /// The answer is not HTTP.
    #[error("the answer is not valid HTTP/1.1: {0}")]
    Malformed(&'static str),
    /// The answer is too large.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

impl HttpError {
    /// Whether the plugin was not (yet) listening: worth retrying at activation.
    pub fn is_refused(&self) -> bool {
        matches!(self, HttpError::Connect(e)
            if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound))
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body, decoded from chunks where chunked.
    pub body: Vec<u8>,
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection with what has been read from it but not yet consumed.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    fn arm(&self, stream: &Stream) -> Result<(), HttpError> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout(self.total));
        }
        stream.set_timeouts(left).map_err(HttpError::Io)
    }

    fn io(&self, e: io::Error) -> HttpError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Timeout(self.total),
            _ => HttpError::Io(e),
        }
    }
}

impl Conn {
    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self, d: &Deadline) -> Result<usize, HttpError> {
        d.arm(&self.stream)?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(d.io(e)),
            }
        }
    }

    /// Takes exactly `n` bytes.
    fn take(&mut self, n: usize, d: &Deadline) -> Result<Vec<u8>, HttpError> {
        while self.buf.len() < n {
            if self.fill(d)? == 0 {
                return Err(HttpError::Truncated);
            }
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    fn line(&mut self, d: &Deadline) -> Result<Vec<u8>, HttpError> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(i + 2, d)?;
                return Ok(line[..i].to_vec());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::Malformed("a chunk line is too long"));
            }
            if self.fill(d)? == 0 {
                return Err(HttpError::Truncated);
            }
        }
    }
}

/// Reads one response; returns it and whether the connection may be used again.
fn read_response(conn: &mut Conn, d: &Deadline) -> Result<(Response, bool), HttpError> {
    let (status, head_len, length, chunked, mut keep) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&conn.buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.ok_or(HttpError::Malformed("no status code"))?;
                let mut length = None;
                let mut chunked = false;
                // HTTP/1.1 keeps the connection unless told otherwise; 1.0 closes it.
                let mut keep = resp.version == Some(1);
                for h in resp.headers.iter() {
                    let value = std::str::from_utf8(h.value)
                        .map_err(|_| HttpError::Malformed("a header is not UTF-8"))?
                        .trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = Some(
                            value
                                .parse::<usize>()
                                .map_err(|_| HttpError::Malformed("bad Content-Length"))?,
                        );
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = value.to_ascii_lowercase().contains("chunked");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        keep = !value.eq_ignore_ascii_case("close");
                    }
                }
                break (status, len, length, chunked, keep);
            }
            Ok(httparse::Status::Partial) => {
                if conn.buf.len() > MAX_HEAD {
                    return Err(HttpError::TooLarge { limit: MAX_HEAD });
                }
                if conn.fill(d)? == 0 {
                    return Err(if conn.buf.is_empty() {
                        HttpError::Truncated
                    } else {
                        HttpError::Malformed("the head ends early")
                    });
                }
            }
            Err(_) => {
                return Err(HttpError::Malformed(
                    "the status line or a header is invalid",
                ))
            }
        }
    };
    conn.take(head_len, d)?;
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line = conn.line(d)?;
            let size = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
                .ok_or(HttpError::Malformed("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !conn.line(d)?.is_empty() {}
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(HttpError::TooLarge { limit: MAX_BODY });
            }
            body.extend(conn.take(size, d)?);
            if !conn.line(d)?.is_empty() {
                return Err(HttpError::Malformed("a chunk is longer than its size"));
            }
        }
        body
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(HttpError::TooLarge { limit: MAX_BODY });
        }
        conn.take(n, d)?
    } else {
        // Close-delimited.
        keep = false;
        while conn.fill(d)? > 0 {
            if conn.buf.len() > MAX_BODY {
                return Err(HttpError::TooLarge { limit: MAX_BODY });
            }
        }
        std::mem::take(&mut conn.buf)
    };
    Ok((Response { status, body }, keep))
}

/// A client for one plugin address, keeping one idle connection.
pub struct Client {
    addr: PluginAddr,
    idle: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("addr", &self.addr).finish()
    }
}

impl Client {
    /// A client for `addr`; nothing is connected until the first call.
    pub fn new(addr: PluginAddr) -> Self {
        Self {
            addr,
            idle: Mutex::new(None),
        }
    }

    /// The plugin's address.
    pub fn addr(&self) -> &PluginAddr {
        &self.addr
    }

    fn connect(&self, d: &Deadline) -> Result<Conn, HttpError> {
        let left = d.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout(d.total));
        }
        let stream = match &self.addr {
            PluginAddr::Unix(p) => {
                Stream::Unix(UnixStream::connect(p).map_err(HttpError::Connect)?)
            }
            PluginAddr::Tcp(a) => {
                let addrs: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(a.as_str())
                    .map_err(HttpError::Connect)?
                    .collect();
                let mut last = io::Error::from(io::ErrorKind::AddrNotAvailable);
                let mut stream = None;
                for sa in addrs {
                    match TcpStream::connect_timeout(&sa, left) {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                Stream::Tcp(stream.ok_or(HttpError::Connect(last))?)
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// POSTs `body` (JSON) to `path`, within `timeout`.
    pub fn post(&self, path: &str, body: &[u8], timeout: Duration) -> Result<Response, HttpError> {
        let d = Deadline {
            at: Instant::now() + timeout,
            total: timeout,
        };
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: plugin\r\nUser-Agent: mesos-dvdi\r\nAccept: {ACCEPT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).take();
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect(&d)?,
        };
        let result = Self::exchange(&mut conn, &request, body, &d);
        let (resp, keep) = match result {
            // An idle connection the plugin closed meanwhile: nothing of this request reached it,
            // so it is safe to send it once more on a fresh connection.
            Err(HttpError::Truncated) | Err(HttpError::Io(_))
                if was_reused && conn.buf.is_empty() =>
            {
                let mut fresh = self.connect(&d)?;
                let r = Self::exchange(&mut fresh, &request, body, &d)?;
                conn = fresh;
                r
            }
            other => other?,
        };
        if keep && conn.buf.is_empty() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.is_none() {
                *idle = Some(conn);
            }
        }
        Ok(resp)
    }

    fn exchange(
        conn: &mut Conn,
        head: &str,
        body: &[u8],
        d: &Deadline,
    ) -> Result<(Response, bool), HttpError> {
        d.arm(&conn.stream)?;
        conn.stream
            .write_all(head.as_bytes())
            .and_then(|()| conn.stream.write_all(body))
            .map_err(|e| d.io(e))?;
        read_response(conn, d)
    }
}

/// Parses a complete response from raw bytes (for tests and fuzzing).
pub fn parse_response_bytes(bytes: &[u8]) -> Result<Response, HttpError> {
    let (a, mut b) = UnixStream::pair().map_err(HttpError::Io)?;
    let mut conn = Conn {
        stream: Stream::Unix(a),
        buf: bytes.to_vec(),
    };
    // Close the writer so a short answer reads as truncated, not as a hang.
    let _ = b.flush();
    drop(b);
    let d = Deadline {
        at: Instant::now() + Duration::from_secs(5),
        total: Duration::from_secs(5),
    };
    read_response(&mut conn, &d).map(|(r, _)| r)
}
