//! Test Docker volume plugins served from inside the test process (test doubles: they exist to
//! produce faults a real plugin will not produce on demand — hangs, garbage, truncated answers —
//! and to count connections and calls).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// One request as the plugin saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The path, e.g. `/VolumeDriver.Mount`.
    pub path: String,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The body, parsed.
    pub body: serde_json::Value,
}

/// What the plugin does with a request.
pub enum Reply {
    /// A JSON answer with this status, Content-Length framed.
    Json(u16, serde_json::Value),
    /// A JSON answer in chunked encoding, split into chunks of this many bytes.
    Chunked(serde_json::Value, usize),
    /// A JSON answer like [`Reply::Json`] (HTTP/1.1, no `Connection: close`: the client may
    /// keep the connection), then close it, as a plugin that drops idle connections does.
    JsonThenClose(u16, serde_json::Value),
    /// These bytes, then close the connection.
    RawThenClose(Vec<u8>),
    /// Never answer (until the server is dropped).
    Hang,
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    requests: Mutex<Vec<Request>>,
    connections: AtomicUsize,
    stopping: AtomicBool,
    stop: (Mutex<bool>, Condvar),
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A plugin serving on a unix socket or a loopback TCP port until dropped.
pub struct TestPlugin {
    shared: Arc<Shared>,
    addr: Addr,
    /// A second handle of the listening socket: shutting it down wakes the accept loop, whatever
    /// became of the socket's path.
    wake: std::os::fd::OwnedFd,
    accept: Option<JoinHandle<()>>,
}

#[derive(Clone)]
enum Addr {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

fn read_request(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let path = req.path?.to_owned();
            let mut len = 0;
            let mut accept = None;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    len = std::str::from_utf8(h.value).ok()?.parse().ok()?;
                }
                if h.name.eq_ignore_ascii_case("accept") {
                    accept = Some(String::from_utf8_lossy(h.value).into_owned());
                }
            }
            while buf.len() < n + len {
                let mut chunk = [0u8; 4096];
                let got = stream.read(&mut chunk).ok()?;
                if got == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..got]);
            }
            let body = serde_json::from_slice(&buf[n..n + len]).unwrap_or(serde_json::Value::Null);
            buf.drain(..n + len);
            return Some(Request { path, accept, body });
        }
        let mut chunk = [0u8; 4096];
        let got = stream.read(&mut chunk).ok()?;
        if got == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

fn json_answer(status: u16, v: &serde_json::Value) -> Vec<u8> {
    let body = v.to_string();
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve<S: Read + Write>(mut stream: S, shared: &Shared) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut stream, &mut buf) {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        shared.requests.lock().unwrap().push(req.clone());
        let bytes = match (shared.handler)(&req) {
            Reply::Json(status, v) => json_answer(status, &v),
            Reply::JsonThenClose(status, v) => {
                let _ = stream.write_all(&json_answer(status, &v));
                return;
            }
            Reply::Chunked(v, size) => {
                let body = v.to_string().into_bytes();
                let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for c in body.chunks(size.max(1)) {
                    out.extend(format!("{:x}\r\n", c.len()).into_bytes());
                    out.extend(c);
                    out.extend(b"\r\n");
                }
                out.extend(b"0\r\n\r\n");
                out
            }
            Reply::RawThenClose(bytes) => {
                let _ = stream.write_all(&bytes);
                return;
            }
            Reply::Hang => {
                let (lock, cv) = &shared.stop;
                let mut stopped = lock.lock().unwrap();
                while !*stopped {
                    stopped = cv.wait(stopped).unwrap();
                }
                return;
            }
        };
        if stream.write_all(&bytes).is_err() {
            return;
        }
    }
}

impl TestPlugin {
    fn start(listener: Listener, addr: Addr, handler: Box<Handler>) -> Self {
        let wake = match &listener {
            Listener::Unix(l) => std::os::fd::OwnedFd::from(l.try_clone().expect("clone listener")),
            Listener::Tcp(l) => std::os::fd::OwnedFd::from(l.try_clone().expect("clone listener")),
        };
        let shared = Arc::new(Shared {
            handler,
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop: (Mutex::new(false), Condvar::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || loop {
            let conn: Box<dyn FnOnce(&Shared) + Send> = match &listener {
                Listener::Unix(l) => match l.accept() {
                    Ok((c, _)) => Box::new(move |sh| serve(c, sh)),
                    Err(_) => return,
                },
                Listener::Tcp(l) => match l.accept() {
                    Ok((c, _)) => Box::new(move |sh| serve(c, sh)),
                    Err(_) => return,
                },
            };
            if s.stopping.load(Ordering::SeqCst) {
                return;
            }
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s2 = Arc::clone(&s);
            std::thread::spawn(move || conn(&s2));
        });
        Self {
            shared,
            addr,
            wake,
            accept: Some(accept),
        }
    }

    /// Serves `handler` on a unix socket at `path`.
    pub fn unix(path: &Path, handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).expect("bind test plugin socket");
        Self::start(
            Listener::Unix(l),
            Addr::Unix(path.to_owned()),
            Box::new(handler),
        )
    }

    /// Serves `handler` on 127.0.0.1 (a free port).
    pub fn tcp(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = l.local_addr().unwrap();
        Self::start(Listener::Tcp(l), Addr::Tcp(addr), Box::new(handler))
    }

    /// `host:port` of a TCP plugin.
    pub fn tcp_addr(&self) -> String {
        match &self.addr {
            Addr::Tcp(a) => a.to_string(),
            Addr::Unix(p) => panic!("{} is a unix socket", p.display()),
        }
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Paths requested so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }

    /// How many requests for `path` (e.g. `/VolumeDriver.Get`) arrived so far.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let (lock, cv) = &self.shared.stop;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        // Wake the accept loop (accept fails once the socket is shut down), so it sees `stopping`.
        // SAFETY: `wake` is an open socket descriptor this struct owns; shutdown(2) only changes
        // the socket's state.
        unsafe {
            libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&self.wake), libc::SHUT_RDWR);
        }
        if let Addr::Unix(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// A well-behaved volume plugin kept in memory: volumes are directories under `root`, mounts are
/// counted per ID (as REX-Ray does). Answers every endpoint of the protocol.
pub fn memory_plugin(root: PathBuf) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let volumes: Mutex<BTreeMap<String, (serde_json::Value, Vec<String>)>> = Mutex::default();
    move |req| {
        let name = req.body["Name"].as_str().unwrap_or("").to_owned();
        let mut vols = volumes.lock().unwrap();
        let ok = |v: serde_json::Value| Reply::Json(200, v);
        let err = |m: &str| Reply::Json(500, serde_json::json!({ "Err": m }));
        let mp = root.join(&name).to_string_lossy().into_owned();
        match req.path.as_str() {
            "/Plugin.Activate" => ok(serde_json::json!({"Implements": ["VolumeDriver"]})),
            "/VolumeDriver.Capabilities" => {
                ok(serde_json::json!({"Capabilities": {"Scope": "global"}}))
            }
            "/VolumeDriver.Create" => {
                vols.entry(name.clone())
                    .or_insert_with(|| (req.body["Opts"].clone(), Vec::new()));
                ok(serde_json::json!({"Err": ""}))
            }
            "/VolumeDriver.Remove" => match vols.remove(&name) {
                Some(_) => ok(serde_json::json!({"Err": ""})),
                None => err("no such volume"),
            },
            "/VolumeDriver.Get" => match vols.get(&name) {
                Some((_, ids)) => ok(serde_json::json!({"Volume": {
                    "Name": name, "Mountpoint": if ids.is_empty() { String::new() } else { mp },
                    "Status": {"mounts": ids.len()}}, "Err": ""})),
                None => err("no such volume"),
            },
            "/VolumeDriver.List" => ok(serde_json::json!({"Volumes":
                vols.keys().map(|n| serde_json::json!({"Name": n})).collect::<Vec<_>>(), "Err": ""})),
            "/VolumeDriver.Mount" => match vols.get_mut(&name) {
                Some((_, ids)) => {
                    std::fs::create_dir_all(&mp).unwrap();
                    ids.push(req.body["ID"].as_str().unwrap_or("").to_owned());
                    ok(serde_json::json!({"Mountpoint": mp, "Err": ""}))
                }
                None => err("no such volume"),
            },
            "/VolumeDriver.Path" => match vols.get(&name) {
                Some((_, ids)) if !ids.is_empty() => {
                    ok(serde_json::json!({"Mountpoint": mp, "Err": ""}))
                }
                Some(_) => ok(serde_json::json!({"Mountpoint": "", "Err": ""})),
                None => err("no such volume"),
            },
            "/VolumeDriver.Unmount" => match vols.get_mut(&name) {
                Some((_, ids)) => {
                    let id = req.body["ID"].as_str().unwrap_or("");
                    match ids.iter().position(|i| i == id) {
                        Some(i) => {
                            ids.remove(i);
                            ok(serde_json::json!({"Err": ""}))
                        }
                        None => err("unknown mount ID"),
                    }
                }
                None => err("no such volume"),
            },
            _ => Reply::Json(404, serde_json::json!({"Err": "not implemented"})),
        }
    }
}
