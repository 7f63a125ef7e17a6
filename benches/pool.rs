//! The module's calls on the core's bounded pool (`call_threads`, its default), as the shim makes
//! them (`mesos_dvdi::calls::Calls`: handed to the pool, answered through a callback).
//!
//! - `calls vs 100 ms plugin/N`: N containers, each with a volume of its own, prepared at once
//!   against an in-process plugin whose Mount takes 100 ms; wall time from the first call to the
//!   last answer. N = 1 is the floor: one plugin latency. `.../thread per call, 512` is the same
//!   512 prepares the way the shim made them before the pool, each on a thread of its own;
//!   `.../instant plugin, 512` the same 512 prepares against the same plugin without its 100 ms
//!   (the work of the prepares themselves, the module's and the plugin's, on this machine).
//! - `figure: ...` lines (not criterion's): a burst of 10,000 prepares on 10,000 volumes against
//!   a plugin that answers Plugin.Activate and never anything else (a test double, run as a
//!   separate process so that its threads are not counted), with a 2 s mount timeout so that the
//!   burst ends: this process's `Threads:` (/proc/self/status) before the burst and at its
//!   peak (sampled every millisecond until every call has its answer), how long handing the
//!   10,000 calls to the pool took (what a libprocess thread spends), and how many calls were
//!   refused because the pool stayed full past their deadline.
//!
//! Run: `cargo bench --bench pool` (as root; work directories on tmpfs, as in production), or
//! `python3 benches/repeat.py --runs 5 --bench pool`, which also summarises the figure lines.

// criterion_group!/criterion_main! are not used (the burst is no criterion benchmark), but
// criterion's own items stay undocumented.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use mesos_dvdi::calls::{CallError, Calls};
use mesos_dvdi::config::Config;
use mesos_dvdi::error::render_chain;
use mesos_dvdi::isolator::ContainerInput;
use mesos_dvdi::pool::Refused;
use mesos_dvdi::spec::DriverName;
use mesos_dvdi::state::Owner;

#[path = "../tests/support/plugin.rs"]
#[allow(dead_code)]
mod plugin;

#[path = "support/instant.rs"]
mod instant;

use instant::{input, scratch};

/// Set in the environment of this program's copy that serves the never-answering plugin.
const NEVER_PLUGIN: &str = "DVDI_BENCH_NEVER_ANSWERING_PLUGIN";

fn calls_for(dir: &Path, driver: &str, adjust: impl FnOnce(&mut Config)) -> Calls {
    let mut config = Config {
        work_dir: dir.join("work"),
        plugin_dirs: vec![dir.join("plugins")],
        default_driver: DriverName::new(driver).unwrap(),
        legacy_checkpoint: Vec::new(),
        ..Config::default()
    };
    adjust(&mut config);
    Calls::open(config).unwrap()
}

fn slow_plugin(c: &mut Criterion) {
    let mut group = c.benchmark_group("calls vs 100 ms plugin");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    let dir = scratch();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    // Mount points under /dev (where the tmpfs scratch is) are refused as a system tree.
    let volumes = tempfile::tempdir().unwrap();
    let fast = plugin::memory_plugin(volumes.path().to_owned());
    let _instant = plugin::TestPlugin::unix(
        &dir.path().join("plugins/instant.sock"),
        plugin::memory_plugin(volumes.path().join("instant")),
    );
    let _server = plugin::TestPlugin::unix(&dir.path().join("plugins/slow.sock"), move |req| {
        if req.path == "/VolumeDriver.Mount" {
            // The plugin's own work (an attach), not synchronisation.
            std::thread::sleep(Duration::from_millis(100));
        }
        fast(req)
    });
    let calls = calls_for(dir.path(), "slow", |_| {});
    let inputs: Vec<_> = (0..512)
        .map(|i| input(dir.path(), &format!("v{i}"), false))
        .collect();
    let instant: Vec<_> = (0..512)
        .map(|i| {
            let mut inp = input(dir.path(), &format!("i{i}"), false);
            inp.env
                .push((b"DVDI_VOLUME_DRIVER".to_vec(), b"instant".to_vec()));
            inp
        })
        .collect();
    let mut round = 0u64;
    for n in [1usize, 512] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let ids: Vec<String> = (0..n).map(|i| format!("r{round}-{i}")).collect();
                    total += prepare_all(&calls, &ids, &inputs);
                    clean_up(&calls, &ids);
                }
                total
            })
        });
    }
    group.bench_function("instant plugin, 512", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let ids: Vec<String> = (0..512).map(|i| format!("r{round}-{i}")).collect();
                total += prepare_all(&calls, &ids, &instant);
                clean_up(&calls, &ids);
            }
            total
        })
    });
    group.bench_function("thread per call, 512", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let ids: Vec<String> = (0..512).map(|i| format!("r{round}-{i}")).collect();
                let isolator = calls.isolator();
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (id, inp) in ids.iter().zip(&inputs) {
                        s.spawn(move || isolator.prepare(id, Owner::Mesos, inp).unwrap());
                    }
                });
                total += start.elapsed();
                clean_up(&calls, &ids);
            }
            total
        })
    });
    group.finish();
}

/// Prepares `ids` with `inputs` at once through the pool; the time until the last answer.
fn prepare_all(calls: &Calls, ids: &[String], inputs: &[ContainerInput]) -> Duration {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    for (id, inp) in ids.iter().zip(inputs) {
        let tx = tx.clone();
        calls.prepare(id.clone(), inp.clone(), move |r| {
            tx.send(r.map(|_| ())).unwrap();
        });
    }
    for _ in ids {
        rx.recv().unwrap().unwrap();
    }
    start.elapsed()
}

fn clean_up(calls: &Calls, ids: &[String]) {
    let (tx, rx) = mpsc::channel();
    for id in ids {
        let tx = tx.clone();
        calls.cleanup(id.clone(), move |r| tx.send(r).unwrap());
    }
    for _ in ids {
        rx.recv().unwrap().unwrap();
    }
}

/// `Threads:` of /proc/self/status.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn hung_burst() {
    const BURST: usize = 10_000;
    let dir = scratch();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let socket = plugins.join("never.sock");
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .env(NEVER_PLUGIN, &socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The plugin says when it listens.
    let mut ready = [0u8; 1];
    server
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();

    let calls = calls_for(dir.path(), "never", |c| {
        c.mount_timeout = Duration::from_secs(2);
    });
    let bound = calls.isolator().config().call_threads;
    let inputs: Vec<_> = (0..BURST)
        .map(|i| input(dir.path(), &format!("h{i}"), false))
        .collect();
    let before = threads();
    let answered = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let first_refusal = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    for (i, inp) in inputs.into_iter().enumerate() {
        let (answered, refused) = (Arc::clone(&answered), Arc::clone(&refused));
        let first_refusal = Arc::clone(&first_refusal);
        calls.prepare(format!("h{i}"), inp, move |r| {
            if let Err(
                e @ CallError::NotStarted {
                    source: Refused::Full(_),
                    ..
                },
            ) = &r
            {
                refused.fetch_add(1, Ordering::Relaxed);
                first_refusal
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| render_chain(e));
            }
            answered.fetch_add(1, Ordering::Relaxed);
        });
    }
    let handed = start.elapsed();
    let mut peak = threads();
    while answered.load(Ordering::Relaxed) < BURST {
        std::thread::sleep(Duration::from_millis(1));
        peak = peak.max(threads());
    }
    let took = start.elapsed();
    let _ = server.kill();
    let _ = server.wait();
    println!("figure: hung plugin, 10,000 prepares: Threads before = {before} threads");
    println!("figure: hung plugin, 10,000 prepares: Threads at peak = {peak} threads");
    println!(
        "figure: hung plugin, 10,000 prepares: peak - before (bound {bound} + timekeeper) = {} threads",
        peak - before
    );
    println!(
        "figure: hung plugin, 10,000 prepares: handing them to the pool, per call = {:.2} µs",
        handed.as_secs_f64() * 1e6 / BURST as f64
    );
    println!(
        "figure: hung plugin, 10,000 prepares: refused, the pool full past their deadline = {} calls",
        refused.load(Ordering::Relaxed)
    );
    println!(
        "figure: hung plugin, 10,000 prepares: until every call had its answer = {:.2} s",
        took.as_secs_f64()
    );
    let first = first_refusal.lock().unwrap().take();
    if let Some(message) = first {
        println!("the first refusal: {message}");
    }
}

/// The plugin that answers Plugin.Activate and never anything else (a test double), in a process
/// of its own; it lives until killed.
fn never_answering_plugin(socket: &Path) -> ! {
    let listener = UnixListener::bind(socket).unwrap();
    std::io::stdout().write_all(b"r").unwrap();
    std::io::stdout().flush().unwrap();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || converse(conn));
    }
    std::process::exit(0)
}

fn converse(mut conn: UnixStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= n + len {
                let activate = req.path == Some("/Plugin.Activate");
                buf.drain(..n + len);
                if activate {
                    let body = r#"{"Implements":["VolumeDriver"]}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
                continue;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(got) => buf.extend_from_slice(&chunk[..got]),
        }
    }
}

fn main() {
    if let Some(socket) = std::env::var_os(NEVER_PLUGIN) {
        never_answering_plugin(Path::new(&socket));
    }
    let mut c = Criterion::default().configure_from_args();
    slow_plugin(&mut c);
    c.final_summary();
    hung_burst();
}
