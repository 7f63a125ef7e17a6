//! A small blocking HTTP/1.1 client for plugin sockets: POST with a JSON body, responses framed
//! by Content-Length, chunked encoding or the end of the connection, every step (connect, write,
//! each read) bounded by one [`Deadline`], and the connection kept for the next call when the
//! plugin allows it.
//!
//! It never panics on what a plugin sends: sizes are checked before they are added, bodies are
//! capped at [`MAX_BODY`], heads at 64 KiB.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use super::discovery::PluginAddr;

/// The size of `sockaddr_un.sun_path` on Linux.
const SUN_PATH_LEN: usize = 108;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// The media type of plugin protocol v1.2.
pub const ACCEPT: &str = "application/vnd.docker.plugins.v1.2+json";

/// A failed exchange; the caller adds which plugin and which call.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting failed (refused, no such socket, unreachable, …).
    #[error("connecting failed")]
    Connect(#[source] io::Error),
    /// The deadline passed before the answer was complete (connecting included).
    #[error("no complete answer within {after:?}")]
    Timeout {
        /// The time the whole call was given.
        after: Duration,
    },
    /// Reading or writing failed.
    #[error("the connection failed")]
    Io(#[source] io::Error),
    /// The connection closed before the answer was complete.
    #[error("the plugin closed the connection before the answer was complete")]
    Truncated,
    /// The answer is not HTTP/1.1.
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
    /// Whether the plugin was not (yet) listening: its socket refuses connections or does not
    /// exist yet. Worth retrying at activation, and only there.
    pub fn is_refused(&self) -> bool {
        matches!(self, HttpError::Connect(e)
            if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound))
    }

    /// For a refused connection ([`HttpError::is_refused`]): what the refusal was, in words.
    pub fn refusal(&self) -> &'static str {
        match self {
            HttpError::Connect(e) if e.kind() == io::ErrorKind::NotFound => {
                "its socket does not exist"
            }
            _ => "connection refused",
        }
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

/// The point in time by which a whole call (possibly several requests) must be done.
///
/// Socket timeouts are recomputed from it before every blocking step, so a plugin that trickles
/// bytes cannot stretch a call past it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    /// `total` from now.
    pub fn after(total: Duration) -> Self {
        Self {
            at: Instant::now() + total,
            total,
        }
    }

    /// Time left, or the timeout error once none is.
    pub fn left(&self) -> Result<Duration, HttpError> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.expired())
        } else {
            Ok(left)
        }
    }

    /// This deadline, or `limit` from now when that comes first.
    pub fn within(&self, limit: Duration) -> Self {
        let sooner = Instant::now() + limit;
        if sooner < self.at {
            Self {
                at: sooner,
                total: limit,
            }
        } else {
            *self
        }
    }

    /// Whether sleeping `pause` would still leave time before the deadline.
    pub fn allows(&self, pause: Duration) -> bool {
        Instant::now() + pause < self.at
    }

    /// The error a call that ran out of time fails with.
    pub fn expired(&self) -> HttpError {
        HttpError::Timeout { after: self.total }
    }

    fn arm(&self, stream: &Stream) -> Result<(), HttpError> {
        let left = self.left()?;
        stream.set_timeouts(left).map_err(HttpError::Io)
    }

    fn io(&self, e: io::Error) -> HttpError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.expired(),
            _ => HttpError::Io(e),
        }
    }
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

/// Connects to a unix socket within the deadline.
///
/// `UnixStream::connect` has no timeout, and connect(2) on a unix socket blocks while the
/// listener's backlog is full (a plugin that stopped accepting): the wait is bounded here by
/// `SO_SNDTIMEO`, which unix(7) applies to connect, set before connecting.
fn connect_unix(path: &Path, d: &Deadline) -> Result<UnixStream, HttpError> {
    // UnixAddr refuses a path too long for sun_path (one byte stays for the kernel's NUL); a NUL
    // inside the path would cut it short, so it is refused as well.
    let addr = if path.as_os_str().as_bytes().contains(&0) {
        Err(Errno::EINVAL)
    } else {
        UnixAddr::new(path)
    }
    .map_err(|e| {
        HttpError::Connect(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} cannot be a unix socket address ({e}); a unix socket path must be shorter \
                 than {} bytes and hold no NUL",
                path.display(),
                SUN_PATH_LEN
            ),
        ))
    })?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| HttpError::Connect(e.into()))?;
    let stream = UnixStream::from(fd);
    loop {
        stream
            .set_write_timeout(Some(d.left()?))
            .map_err(HttpError::Connect)?;
        match connect(stream.as_raw_fd(), &addr) {
            Ok(()) => return Ok(stream),
            Err(Errno::EINTR) => continue,
            // The backlog stayed full until SO_SNDTIMEO ran out.
            Err(Errno::EAGAIN | Errno::EINPROGRESS) => return Err(d.expired()),
            Err(e) => return Err(HttpError::Connect(e.into())),
        }
    }
}

/// The addresses of `host:port`. A literal address is parsed on the spot; a host name is looked
/// up on a thread of its own, waited for no longer than the call may take: getaddrinfo has no
/// timeout of its own, and a name server that does not answer would hold the call through all
/// of the resolver's retries. A late answer is dropped with its thread.
fn resolve(hostport: &str, d: &Deadline) -> Result<Vec<SocketAddr>, HttpError> {
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (tx, rx) = mpsc::channel();
    let name = hostport.to_owned();
    std::thread::Builder::new()
        .name("dvdi-resolve".into())
        .spawn(move || {
            let found = name.to_socket_addrs().map(Iterator::collect);
            let _ = tx.send(found);
        })
        .map_err(HttpError::Connect)?;
    match rx.recv_timeout(d.left()?) {
        Ok(found) => found.map_err(HttpError::Connect),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(d.expired()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(HttpError::Connect(io::Error::other(
            format!("looking up {hostport} ended without an answer"),
        ))),
    }
}

fn connect_tcp(hostport: &str, d: &Deadline) -> Result<TcpStream, HttpError> {
    let addrs = resolve(hostport, d)?;
    let mut last = io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        format!("{hostport} resolves to no address"),
    );
    for sa in addrs {
        match TcpStream::connect_timeout(&sa, d.left()?) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(d.expired())
            }
            Err(e) => last = e,
        }
    }
    Err(HttpError::Connect(last))
}

/// A connection with what has been read from it but not yet consumed.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// Bytes read during the current exchange: a reused connection that fails with none may be
    /// retried, one that delivered even a byte of an answer may not.
    received: usize,
}

impl Conn {
    fn new(stream: Stream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            received: 0,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self, d: &Deadline) -> Result<usize, HttpError> {
        d.arm(&self.stream)?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.received += n;
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
        let mut searched = 0;
        loop {
            // Resume the search where the last one stopped (one byte back: a CR may end it).
            if let Some(i) = self.buf[searched..].windows(2).position(|w| w == b"\r\n") {
                let mut line = self.take(searched + i + 2, d)?;
                line.truncate(searched + i);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::Malformed("a chunk line is too long"));
            }
            searched = self.buf.len().saturating_sub(1);
            if self.fill(d)? == 0 {
                return Err(HttpError::Truncated);
            }
        }
    }
}

/// What the head says about the body.
struct Head {
    status: u16,
    len: usize,
    length: Option<usize>,
    chunked: bool,
    keep: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::Malformed("too many headers"))
        }
        Err(_) => {
            return Err(HttpError::Malformed(
                "the status line or a header is invalid",
            ))
        }
    };
    let status = resp.code.ok_or(HttpError::Malformed("no status code"))?;
    let mut head = Head {
        status,
        len,
        length: None,
        chunked: false,
        // HTTP/1.1 keeps the connection unless told otherwise; 1.0 closes it.
        keep: resp.version == Some(1),
    };
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Malformed("a header is not UTF-8"))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            head.length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| HttpError::Malformed("bad Content-Length"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.keep = !value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(head))
}

fn read_chunked(conn: &mut Conn, d: &Deadline) -> Result<Vec<u8>, HttpError> {
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
            return Ok(body);
        }
        // Checked: a plugin may announce any size, up to usize::MAX.
        if body.len().checked_add(size).is_none_or(|n| n > MAX_BODY) {
            return Err(HttpError::TooLarge { limit: MAX_BODY });
        }
        body.extend(conn.take(size, d)?);
        if !conn.line(d)?.is_empty() {
            return Err(HttpError::Malformed("a chunk is longer than its size"));
        }
    }
}

/// Reads one response; returns it and whether the connection may be used again.
fn read_response(conn: &mut Conn, d: &Deadline) -> Result<(Response, bool), HttpError> {
    let head = loop {
        if let Some(head) = parse_head(&conn.buf)? {
            break head;
        }
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
    };
    conn.take(head.len, d)?;
    let mut keep = head.keep;
    // RFC 9112 §6.3: these never have a body, whatever their headers say.
    let body = if matches!(head.status, 100..=199 | 204 | 304) {
        Vec::new()
    } else if head.chunked {
        read_chunked(conn, d)?
    } else if let Some(n) = head.length {
        if n > MAX_BODY {
            return Err(HttpError::TooLarge { limit: MAX_BODY });
        }
        conn.take(n, d)?
    } else {
        // Neither length nor chunks: the body runs to the end of the connection.
        keep = false;
        while conn.fill(d)? > 0 {
            if conn.buf.len() > MAX_BODY {
                return Err(HttpError::TooLarge { limit: MAX_BODY });
            }
        }
        std::mem::take(&mut conn.buf)
    };
    Ok((
        Response {
            status: head.status,
            body,
        },
        keep,
    ))
}

/// A client for one plugin address, keeping one idle connection for the next call.
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
        Ok(Conn::new(match &self.addr {
            PluginAddr::Unix(p) => Stream::Unix(connect_unix(p, d)?),
            PluginAddr::Tcp(a) => Stream::Tcp(connect_tcp(a, d)?),
        }))
    }

    /// POSTs `body` (JSON) to `path`, within `timeout`.
    pub fn post(&self, path: &str, body: &[u8], timeout: Duration) -> Result<Response, HttpError> {
        self.post_by(path, body, &Deadline::after(timeout))
    }

    /// POSTs `body` (JSON) to `path`, done by `d`.
    ///
    /// A kept-alive connection the plugin closed while it was idle fails before a byte of the
    /// answer arrives; then, and only then, the request is sent once more on a new connection
    /// (the plugin cannot have acted on it: a plugin answers before it closes).
    pub fn post_by(&self, path: &str, body: &[u8], d: &Deadline) -> Result<Response, HttpError> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: plugin\r\nUser-Agent: mesos-dvdi\r\nAccept: {ACCEPT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (mut conn, reused) = match idle {
            Some(c) => (c, true),
            None => (self.connect(d)?, false),
        };
        let (resp, keep) = match Self::exchange(&mut conn, &request, d) {
            Err(HttpError::Truncated | HttpError::Io(_)) if reused && conn.received == 0 => {
                conn = self.connect(d)?;
                Self::exchange(&mut conn, &request, d)?
            }
            other => other?,
        };
        // Bytes beyond the answer would be read as the next answer: never reuse such a
        // connection.
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
        request: &[u8],
        d: &Deadline,
    ) -> Result<(Response, bool), HttpError> {
        conn.received = 0;
        d.arm(&conn.stream)?;
        conn.stream.write_all(request).map_err(|e| d.io(e))?;
        read_response(conn, d)
    }
}

/// Parses a complete response from raw bytes, as if the plugin had sent them and closed the
/// connection (for tests and fuzzing).
pub fn parse_response_bytes(bytes: &[u8]) -> Result<Response, HttpError> {
    let (a, b) = UnixStream::pair().map_err(HttpError::Io)?;
    let mut conn = Conn::new(Stream::Unix(a));
    conn.buf = bytes.to_vec();
    // The peer is gone: a short answer reads as truncated, never as a wait.
    drop(b);
    read_response(&mut conn, &Deadline::after(Duration::from_secs(5))).map(|(r, _)| r)
}

#[cfg(test)]
mod tests {
    //! The response reader against raw bytes written into the other end of a socket pair, in
    //! the pieces a plugin might send them in.

    use super::*;

    fn conn() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Conn::new(Stream::Unix(a)), b)
    }

    fn read(conn: &mut Conn) -> Result<(Response, bool), HttpError> {
        read_response(conn, &Deadline::after(Duration::from_secs(30)))
    }

    /// Writes `bytes` one at a time from another thread, then closes when `close`.
    fn trickle(mut peer: UnixStream, bytes: &'static [u8], close: bool) -> UnixStream {
        let keep = peer.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in bytes {
                if peer.write_all(std::slice::from_ref(b)).is_err() {
                    return;
                }
            }
            if close {
                let _ = peer.shutdown(std::net::Shutdown::Write);
            }
        });
        keep
    }

    #[test]
    fn content_length_answer_sent_byte_by_byte() {
        let (mut c, peer) = conn();
        let _peer = trickle(
            peer,
            b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"Mountpoint\":\"\"}",
            false,
        );
        let (r, keep) = read(&mut c).unwrap();
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"{\"Mountpoint\":\"\"}"[..])
        );
        assert!(keep, "HTTP/1.1 without Connection: close is kept alive");
    }

    #[test]
    fn chunked_answer_sent_byte_by_byte_with_extensions_and_trailers() {
        let (mut c, peer) = conn();
        let _peer = trickle(
            peer,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n{\"E\r\n6\r\nrr\":\"\"\r\n1\r\n}\r\n0\r\nX-T: 1\r\n\r\n",
            false,
        );
        let (r, keep) = read(&mut c).unwrap();
        assert_eq!(r.body, b"{\"Err\":\"\"}");
        assert!(keep);
    }

    #[test]
    fn two_pipelined_answers_on_one_connection_are_read_apart() {
        let (mut c, mut peer) = conn();
        peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n").unwrap();
        assert_eq!(read(&mut c).unwrap().0.body, b"{}");
        let (second, _) = read(&mut c).unwrap();
        assert_eq!((second.status, &second.body[..]), (500, &b"[]"[..]));
        assert!(c.buf.is_empty());
    }

    #[test]
    fn body_without_framing_runs_to_the_close_and_ends_reuse() {
        let (mut c, peer) = conn();
        let _peer = trickle(peer, b"HTTP/1.1 200 OK\r\n\r\n{\"a\":1}", true);
        let (r, keep) = read(&mut c).unwrap();
        assert_eq!(r.body, b"{\"a\":1}");
        assert!(!keep);
    }

    #[test]
    fn connection_close_header_ends_reuse() {
        let (mut c, mut peer) = conn();
        peer.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert!(!read(&mut c).unwrap().1);
        let (mut c, mut peer) = conn();
        peer.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert!(!read(&mut c).unwrap().1, "HTTP/1.0 closes by default");
    }

    #[test]
    fn no_content_has_no_body_even_on_a_kept_alive_connection() {
        let (mut c, mut peer) = conn();
        peer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        // The peer stays open: reading to the close would wait for ever.
        let (r, keep) = read(&mut c).unwrap();
        assert_eq!((r.status, r.body.len(), keep), (204, 0, true));
    }

    #[test]
    fn silence_past_the_deadline_is_a_timeout() {
        let (mut c, mut peer) = conn();
        peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{")
            .unwrap();
        let e = read_response(&mut c, &Deadline::after(Duration::from_millis(50))).unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e:?}");
    }

    #[test]
    fn close_mid_body_is_truncated_and_counts_what_arrived() {
        let (mut c, mut peer) = conn();
        peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{")
            .unwrap();
        drop(peer);
        assert!(matches!(read(&mut c), Err(HttpError::Truncated)));
        assert!(c.received > 0);
    }

    #[test]
    fn close_before_any_byte_is_truncated_with_nothing_received() {
        let (mut c, peer) = conn();
        drop(peer);
        assert!(matches!(read(&mut c), Err(HttpError::Truncated)));
        assert_eq!(c.received, 0);
    }

    #[test]
    fn hostile_sizes_are_errors_not_panics() {
        for (raw, what) in [
            (
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\nffffffffffffffff\r\n"[..],
                "chunk size near usize::MAX",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000001\r\n",
                "one chunk over the cap",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
                "Content-Length usize::MAX",
            ),
        ] {
            assert!(
                matches!(parse_response_bytes(raw), Err(HttpError::TooLarge { .. })),
                "{what}"
            );
        }
        assert!(matches!(
            parse_response_bytes(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"
            ),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn endless_head_is_refused() {
        let mut raw = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        raw.resize(MAX_HEAD + 10, b'a');
        assert!(matches!(
            parse_response_bytes(&raw),
            Err(HttpError::TooLarge { .. })
        ));
    }

    #[test]
    fn chunk_data_longer_than_its_size_is_malformed() {
        assert!(matches!(
            parse_response_bytes(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n"
            ),
            Err(HttpError::Malformed(_))
        ));
    }
}
