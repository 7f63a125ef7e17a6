//! A bounded pool of threads for calls that may block for minutes (a plugin attaching a volume).
//!
//! The module's calls arrive on the agent's libprocess threads, which must never block; each is
//! handed to this pool and answered from one of its threads. The pool never holds more than its
//! bound of call threads, whatever arrives: a call that finds every thread busy waits in a queue,
//! in order of arrival, and one that is still waiting at its deadline is refused with
//! [`Refused::Full`], which says what the threads are busy with (the oldest call, what it is
//! doing now, for how long). Threads are started as calls need them and leave after a while
//! without work.
//!
//! While calls wait, one more thread, the timekeeper, refuses each at its deadline (every call
//! thread may be stuck in a plugin that never answers); it leaves when nothing waits. A call may
//! fan out ([`in_parallel`]) onto threads of the same bound; when none is free its parts run one
//! after another on its own thread, so a part never waits for a thread and the bound holds.
//!
//! It must never run a call on the submitting thread, never block the submitter beyond starting a
//! thread, and never lose a call: each job is run or refused exactly once (a pool dropped with
//! calls waiting refuses them with [`Refused::ShutDown`]).

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a call thread waits for work before it leaves.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// A call handed to the pool: run with `Ok(())` on a pool thread, or told why it never ran.
type Job = Box<dyn FnOnce(Result<(), Refused>) + Send + 'static>;

/// Why a call never started.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    /// Every call thread stayed busy until the call's deadline.
    #[error(transparent)]
    Full(Box<PoolFull>),
    /// The pool was dropped (the isolator is going away) while the call waited.
    #[error("the isolator was shut down before the call started")]
    ShutDown,
    /// No call thread could be started, and none was left to run the call.
    #[error("no thread could be started to run the call: {0}")]
    NoThread(String),
}

/// What kept a call from starting: the pool's state when its deadline passed.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolFull {
    /// The pool's bound.
    pub threads: usize,
    /// Calls running then.
    pub running: usize,
    /// Other calls still waiting then.
    pub waiting: usize,
    /// How long this call waited.
    pub waited: Duration,
    /// The call running longest.
    pub oldest: Option<OldestCall>,
    /// What an operator can do, from the pool's owner (e.g. which parameter raises the bound).
    pub remedy: String,
}

/// The call that has been running longest.
#[derive(Debug, Clone, PartialEq)]
pub struct OldestCall {
    /// What it is (its owner's label: `prepare of container c1`).
    pub label: String,
    /// For how long it has run.
    pub running_for: Duration,
    /// What it is doing now, and since how long, if it said ([`note`]).
    pub doing: Option<(String, Duration)>,
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl fmt::Display for PoolFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let calls = |n: usize| if n == 1 { "call" } else { "calls" };
        write!(
            f,
            "the pool is full: all {} call threads are busy, {} {} already running",
            self.threads,
            self.running,
            calls(self.running)
        )?;
        if let Some(o) = &self.oldest {
            write!(f, ", the oldest for {} ({}", secs(o.running_for), o.label)?;
            match &o.doing {
                Some((what, since)) => write!(f, ", {what} for {})", secs(*since))?,
                None => write!(f, ", not in a backend call now)")?,
            }
        }
        if self.waiting > 0 {
            write!(f, "; {} more {} waiting", self.waiting, calls(self.waiting))?;
        }
        write!(f, "; {}", self.remedy)
    }
}

impl std::error::Error for PoolFull {}

/// What a running call says it is doing.
#[derive(Default)]
struct Activity(Mutex<Option<(String, Instant)>>);

impl Activity {
    fn set(&self, what: Option<String>) {
        *lock(&self.0) = what.map(|w| (w, Instant::now()));
    }

    fn get(&self, now: Instant) -> Option<(String, Duration)> {
        lock(&self.0)
            .as_ref()
            .map(|(w, since)| (w.clone(), now.saturating_duration_since(*since)))
    }
}

struct Waiting {
    label: String,
    since: Instant,
    deadline: Option<Instant>,
    job: Job,
}

struct Running {
    label: String,
    since: Instant,
    activity: Arc<Activity>,
}

#[derive(Default)]
struct State {
    /// Calls waiting for a thread, by ticket (arrival order).
    waiting: BTreeMap<u64, Waiting>,
    /// The deadlines of waiting calls, soonest first.
    deadlines: BTreeSet<(Instant, u64)>,
    next_ticket: u64,
    /// Calls running, by start order (the oldest first).
    running: BTreeMap<u64, Running>,
    next_start: u64,
    /// Threads counted against the bound: call threads (busy or idle) and fan-out helpers.
    threads: usize,
    /// Call threads waiting for work.
    idle: usize,
    /// Call threads started that have not yet looked for work.
    starting: usize,
    /// Idle call threads asked to leave, their place in the bound given to a helper already.
    retire: usize,
    /// The timekeeper is running.
    timekeeper: bool,
    closed: bool,
    /// Calls refused so far (full, or shut down).
    refused: u64,
}

impl State {
    /// Waiting calls that no idle or starting call thread will take.
    fn uncovered(&self) -> usize {
        let takers = self.idle.saturating_sub(self.retire) + self.starting;
        self.waiting.len().saturating_sub(takers)
    }

    /// How many call threads to start so that every waiting call has one, within the bound
    /// (counted as started).
    fn fill(&mut self, max: usize) -> usize {
        let start = self.uncovered().min(max.saturating_sub(self.threads));
        self.threads += start;
        self.starting += start;
        start
    }

    fn take(&mut self, ticket: u64) -> Option<Waiting> {
        let w = self.waiting.remove(&ticket)?;
        if let Some(d) = w.deadline {
            self.deadlines.remove(&(d, ticket));
        }
        Some(w)
    }

    /// Every waiting call, taken out of the queue (counted as refused).
    fn take_all(&mut self) -> Vec<Job> {
        let tickets: Vec<u64> = self.waiting.keys().copied().collect();
        let jobs: Vec<Job> = tickets
            .into_iter()
            .filter_map(|t| self.take(t))
            .map(|w| w.job)
            .collect();
        self.refused += u64::try_from(jobs.len()).unwrap_or(u64::MAX);
        jobs
    }

    fn full(&self, max: usize, since: Instant, remedy: &str, now: Instant) -> Box<PoolFull> {
        Box::new(PoolFull {
            threads: max,
            running: self.running.len(),
            waiting: self.waiting.len(),
            waited: now.saturating_duration_since(since),
            oldest: self.running.values().next().map(|r| OldestCall {
                label: r.label.clone(),
                running_for: now.saturating_duration_since(r.since),
                doing: r.activity.get(now),
            }),
            remedy: remedy.to_owned(),
        })
    }
}

struct Shared {
    name: String,
    max: usize,
    remedy: String,
    state: Mutex<State>,
    /// Call threads wait here for work.
    work: Condvar,
    /// The timekeeper waits here for the next deadline.
    time: Condvar,
}

/// What a thread of the pool is running: its pool (for [`in_parallel`]) and its call's activity.
#[derive(Clone)]
struct Current {
    shared: Arc<Shared>,
    activity: Arc<Activity>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The pool's state is changed only in short sections that cannot panic half way (no user
    // code runs under the lock), so a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Says what the current call is doing now (`Some`), or that it is between steps (`None`), for
/// the message of a call refused while this one runs. Does nothing outside a pool's thread.
pub fn note(doing: Option<String>) {
    CURRENT.with(|c| {
        if let Some(c) = c.borrow().as_ref() {
            c.activity.set(doing);
        }
    });
}

/// Statistics of a pool at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Calls running.
    pub running: u64,
    /// Calls waiting for a thread.
    pub waiting: u64,
    /// Calls refused since the pool started.
    pub refused: u64,
}

/// A bounded pool of call threads (see the module's documentation).
pub struct Pool {
    shared: Arc<Shared>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.shared.name)
            .field("max", &self.shared.max)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of at most `threads` call threads (at least one), named `name` (threads are named
    /// after it: `name`, `name-part`, `name-timer`; Linux keeps 15 bytes of a thread's name).
    /// `remedy` ends the message of a refused call: what an operator can do about a full pool.
    pub fn new(name: &str, threads: usize, remedy: &str) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                max: threads.max(1),
                remedy: remedy.to_owned(),
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                time: Condvar::new(),
            }),
        }
    }

    /// The bound: at most this many call threads at once.
    pub fn threads(&self) -> usize {
        self.shared.max
    }

    /// The pool's counts now.
    pub fn stats(&self) -> PoolStats {
        let s = lock(&self.shared.state);
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        PoolStats {
            running: count(s.running.len()),
            waiting: count(s.waiting.len()),
            refused: s.refused,
        }
    }

    /// Hands `job` to the pool and returns at once. `job` runs on a pool thread with `Ok(())`
    /// as soon as one is free (calls start in order of arrival), or is called with why it never
    /// ran: at `deadline` if it is still waiting then (on the timekeeper's thread), or when the
    /// pool is dropped. `label` names the call in the messages of other calls refused while it
    /// runs. A panic in `job` is caught and logged; the thread lives on.
    pub fn submit(
        &self,
        label: String,
        deadline: Option<Instant>,
        job: impl FnOnce(Result<(), Refused>) + Send + 'static,
    ) {
        let shared = &self.shared;
        let mut s = lock(&shared.state);
        if s.closed {
            s.refused += 1;
            drop(s);
            job(Err(Refused::ShutDown));
            return;
        }
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        let now = Instant::now();
        s.waiting.insert(
            ticket,
            Waiting {
                label,
                since: now,
                deadline,
                job: Box::new(job),
            },
        );
        let mut wake_timekeeper = false;
        if let Some(d) = deadline {
            wake_timekeeper = s.deadlines.first().is_none_or(|(first, _)| d < *first);
            s.deadlines.insert((d, ticket));
        }
        let start = s.fill(shared.max);
        // Calls are left waiting even once the idle and starting threads have taken theirs.
        let start_timekeeper = s.uncovered() > 0 && !s.deadlines.is_empty() && !s.timekeeper;
        if start_timekeeper {
            s.timekeeper = true;
        }
        if s.idle > 0 {
            if s.retire > 0 {
                // A signalled thread may be one that leaves: wake them all.
                shared.work.notify_all();
            } else {
                shared.work.notify_one();
            }
        }
        drop(s);
        if wake_timekeeper {
            shared.time.notify_one();
        }
        for _ in 0..start {
            spawn_worker(shared);
        }
        if start_timekeeper {
            spawn_timekeeper(shared);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut s = lock(&shared.state);
        s.closed = true;
        let jobs = s.take_all();
        drop(s);
        shared.work.notify_all();
        shared.time.notify_all();
        // Calls running go on (they hold what they need); their threads leave afterwards.
        for job in jobs {
            run_guarded(&shared.name, || job(Err(Refused::ShutDown)));
        }
    }
}

/// Runs `f`, logging a panic instead of unwinding out of a pool thread.
fn run_guarded(pool: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        log::error!(
            "{pool}: a call panicked outside its own guard: {}",
            panic_message(payload.as_ref())
        );
    }
}

/// The message a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn spawn_worker(shared: &Arc<Shared>) {
    let for_thread = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(shared.name.clone())
        .spawn(move || worker(&for_thread));
    if let Err(e) = spawned {
        let mut s = lock(&shared.state);
        s.threads -= 1;
        s.starting -= 1;
        // The threads left take the waiting calls; with none left, none would ever start.
        let stranded = if s.threads == 0 {
            s.take_all()
        } else {
            Vec::new()
        };
        drop(s);
        log::error!("{}: cannot start a call thread: {e}", shared.name);
        for job in stranded {
            run_guarded(&shared.name, || job(Err(Refused::NoThread(e.to_string()))));
        }
    }
}

fn worker(shared: &Arc<Shared>) {
    let mut s = lock(&shared.state);
    s.starting -= 1;
    loop {
        // Leaving to make room for a helper comes first: that helper already runs in our place.
        if s.retire > 0 {
            s.retire -= 1;
            return;
        }
        if let Some(ticket) = s.waiting.keys().next().copied() {
            let w = s.take(ticket).expect("a waiting call");
            if s.deadlines.is_empty() && s.timekeeper {
                // Nothing left for it to watch: let it leave now rather than at its last alarm.
                shared.time.notify_one();
            }
            let now = Instant::now();
            if w.deadline.is_some_and(|d| d <= now) {
                // The timekeeper has not got to it yet: it is refused all the same.
                let full = s.full(shared.max, w.since, &shared.remedy, now);
                s.refused += 1;
                drop(s);
                run_guarded(&shared.name, || (w.job)(Err(Refused::Full(full))));
                s = lock(&shared.state);
                continue;
            }
            let start = s.next_start;
            s.next_start += 1;
            let activity = Arc::new(Activity::default());
            s.running.insert(
                start,
                Running {
                    label: w.label,
                    since: now,
                    activity: Arc::clone(&activity),
                },
            );
            drop(s);
            CURRENT.with(|c| {
                *c.borrow_mut() = Some(Current {
                    shared: Arc::clone(shared),
                    activity,
                })
            });
            run_guarded(&shared.name, || (w.job)(Ok(())));
            CURRENT.with(|c| *c.borrow_mut() = None);
            s = lock(&shared.state);
            s.running.remove(&start);
            continue;
        }
        if s.closed {
            s.threads -= 1;
            return;
        }
        s.idle += 1;
        let (next, timeout) = shared
            .work
            .wait_timeout(s, IDLE_EXIT)
            .unwrap_or_else(|p| p.into_inner());
        s = next;
        s.idle -= 1;
        if timeout.timed_out() && s.waiting.is_empty() && s.retire == 0 {
            s.threads -= 1;
            return;
        }
    }
}

fn spawn_timekeeper(shared: &Arc<Shared>) {
    let for_thread = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(format!("{}-timer", shared.name))
        .spawn(move || timekeeper(&for_thread));
    if let Err(e) = spawned {
        lock(&shared.state).timekeeper = false;
        // Waiting calls are then refused late, by the next call thread that frees up.
        log::error!("{}: cannot start the timekeeper thread: {e}", shared.name);
    }
}

/// Refuses each waiting call at its deadline; leaves when no call with a deadline waits.
fn timekeeper(shared: &Arc<Shared>) {
    let mut s = lock(&shared.state);
    loop {
        let Some(&(deadline, ticket)) = s.deadlines.first() else {
            s.timekeeper = false;
            return;
        };
        let now = Instant::now();
        if deadline > now {
            s = shared
                .time
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        let w = s
            .take(ticket)
            .expect("a deadline belongs to a waiting call");
        let full = s.full(shared.max, w.since, &shared.remedy, now);
        s.refused += 1;
        drop(s);
        run_guarded(&shared.name, || (w.job)(Err(Refused::Full(full))));
        s = lock(&shared.state);
    }
}

/// A place in the bound held by a fan-out helper, given back when dropped.
struct HelperSlot(Arc<Shared>);

impl HelperSlot {
    /// A place for one more thread, if the bound allows one now: a free one, or an idle call
    /// thread's, which is asked to leave.
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let mut s = lock(&shared.state);
        if s.closed {
            return None;
        }
        if s.threads < shared.max {
            s.threads += 1;
        } else if s.idle > s.retire && s.waiting.is_empty() {
            s.retire += 1;
            shared.work.notify_all();
        } else {
            return None;
        }
        Some(Self(Arc::clone(shared)))
    }
}

impl Drop for HelperSlot {
    fn drop(&mut self) {
        let shared = &self.0;
        let mut s = lock(&shared.state);
        s.threads -= 1;
        // Calls may have queued while this place was taken.
        let start = s.fill(shared.max);
        drop(s);
        for _ in 0..start {
            spawn_worker(shared);
        }
    }
}

/// `f` over `items`, results in order, the items in parallel as far as the current pool's bound
/// allows: each item but the first gets a thread of its own while the bound has room, and the
/// rest run one after another on the calling thread. Outside a pool's thread (the `dvdi` CLI,
/// tests), every item but the first gets a thread of its own. Helpers report their activity as
/// the calling call's.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let current = CURRENT.with(|c| c.borrow().clone());
    let f = &f;
    std::thread::scope(|scope| {
        let mut helpers = Vec::new();
        let mut inline = vec![0];
        for (i, item) in items.iter().enumerate().skip(1) {
            let slot = match &current {
                Some(c) => match HelperSlot::take(&c.shared) {
                    Some(slot) => Some(slot),
                    None => {
                        inline.push(i);
                        continue;
                    }
                },
                None => None,
            };
            let name = current.as_ref().map_or_else(
                || "dvdi-part".to_owned(),
                |c| format!("{}-part", c.shared.name),
            );
            let inherited = current.clone();
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || {
                    let _slot = slot;
                    CURRENT.with(|c| *c.borrow_mut() = inherited);
                    f(item)
                });
            match spawned {
                Ok(handle) => helpers.push((i, handle)),
                Err(e) => {
                    log::warn!(
                        "cannot start a thread for part of a call (run in turn instead): {e}"
                    );
                    inline.push(i);
                }
            }
        }
        let mut results: Vec<Option<R>> = items.iter().map(|_| None).collect();
        for i in inline {
            results[i] = Some(f(&items[i]));
        }
        for (i, handle) in helpers {
            results[i] = Some(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        results
            .into_iter()
            .map(|r| r.expect("every item ran"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A job that says what it does (as the core's backend calls do), reports it started,
    /// then holds its thread until told to go on.
    fn held(
        started: &mpsc::Sender<usize>,
        n: usize,
    ) -> (
        impl FnOnce(Result<(), Refused>) + Send + 'static,
        mpsc::Sender<()>,
    ) {
        let (go, wait) = mpsc::channel::<()>();
        let started = started.clone();
        let job = move |r: Result<(), Refused>| {
            r.expect("started");
            note(Some(format!("in step {n}")));
            started.send(n).unwrap();
            let _ = wait.recv();
        };
        (job, go)
    }

    #[test]
    fn calls_beyond_the_bound_wait_and_start_in_order_of_arrival() {
        let pool = Pool::new("t-order", 1, "r");
        let (started, seen) = mpsc::channel();
        let (first, go_first) = held(&started, 1);
        pool.submit("one".into(), None, first);
        assert_eq!(seen.recv().unwrap(), 1);
        let mut gos = Vec::new();
        for n in 2..=4 {
            let (job, go) = held(&started, n);
            pool.submit(format!("call {n}"), None, job);
            gos.push(go);
        }
        assert_eq!(pool.stats().waiting, 3);
        go_first.send(()).unwrap();
        for (n, go) in (2..=4).zip(gos) {
            assert_eq!(seen.recv().unwrap(), n);
            go.send(()).unwrap();
        }
    }

    #[test]
    fn a_call_still_waiting_at_its_deadline_is_refused_naming_the_oldest_call() {
        let pool = Pool::new("t-full", 1, "raise the bound");
        let (started, seen) = mpsc::channel();
        let (first, go_first) = held(&started, 1);
        pool.submit("the stuck call".into(), None, first);
        seen.recv().unwrap();
        let (tx, rx) = mpsc::channel();
        // The stuck call holds the only thread until after this one's deadline.
        pool.submit(
            "late".into(),
            Some(Instant::now() + Duration::from_millis(50)),
            move |r| tx.send(r).unwrap(),
        );
        let refused = rx.recv().unwrap().unwrap_err();
        go_first.send(()).unwrap();
        let Refused::Full(full) = &refused else {
            panic!("{refused:?}")
        };
        assert_eq!((full.threads, full.running, full.waiting), (1, 1, 0));
        let text = refused.to_string();
        assert!(
            text.starts_with("the pool is full: all 1 call threads are busy, 1 call already running, the oldest for "),
            "{text}"
        );
        assert!(text.contains("(the stuck call, in step 1 for "), "{text}");
        assert!(text.ends_with("; raise the bound"), "{text}");
        assert_eq!(pool.stats().refused, 1);
    }

    #[test]
    fn dropping_the_pool_refuses_waiting_calls() {
        let (started, seen) = mpsc::channel();
        let (first, go_first) = held(&started, 1);
        let (tx, rx) = mpsc::channel();
        {
            let pool = Pool::new("t-drop", 1, "r");
            pool.submit("one".into(), None, first);
            seen.recv().unwrap();
            pool.submit("two".into(), None, move |r| tx.send(r).unwrap());
        }
        assert_eq!(rx.recv().unwrap(), Err(Refused::ShutDown));
        go_first.send(()).unwrap();
    }

    #[test]
    fn a_panicking_call_leaves_the_thread_serving() {
        let pool = Pool::new("t-panic", 1, "r");
        pool.submit("boom".into(), None, |_| panic!("boom"));
        let (tx, rx) = mpsc::channel();
        pool.submit("after".into(), None, move |r| tx.send(r).unwrap());
        assert_eq!(rx.recv().unwrap(), Ok(()));
    }

    #[test]
    fn in_parallel_keeps_order_and_runs_parts_in_turn_when_the_bound_is_reached() {
        let squares = in_parallel(&[1, 2, 3, 4], |n| n * n);
        assert_eq!(squares, [1, 4, 9, 16]);
        // A pool of one: no room for helpers, so every part runs on the call's own thread.
        let pool = Pool::new("t-part", 1, "r");
        let (tx, rx) = mpsc::channel();
        pool.submit("fan".into(), None, move |_| {
            let me = std::thread::current().id();
            let threads = in_parallel(&[1, 2, 3], |_| std::thread::current().id());
            tx.send(threads.iter().all(|t| *t == me)).unwrap();
        });
        assert!(rx.recv().unwrap());
    }
}
