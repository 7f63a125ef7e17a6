//! The checker: the writers' records grouped into holds, the holds that interleave where the
//! lease forbids it, and which faults were around each finding.
//!
//! Definitions (all times CLOCK_MONOTONIC nanoseconds of one host, so writers' and the
//! nemesis's clocks compare):
//! - A *hold* is one writer's run: the records of one `(agent, hold number)`, spanning from its
//!   first record to its last.
//! - A *violation* is a pair of holds on one volume, of two different agents, at least one of
//!   them read-write, whose spans meet: one agent used the volume while another wrote it. For a
//!   read-write hold of agent A this is "a record of another agent inside A's span", or A's
//!   span inside one of theirs; the *overlap* is the length of the spans' intersection.
//! - A *hand-over* is a pair of consecutive holds on one volume (in order of their first
//!   record) of two different agents, at least one read-write: the volume changed hands where
//!   the lease must order the two. Its *gap* is the next hold's first record less the previous
//!   one's last; the smallest gap of those that did not overlap is the margin the lease kept.
//! - A fault is *around* an instant or interval when its window — from its start to its end
//!   plus a settling time — meets it; a fault aimed at one agent counts only for findings that
//!   involve that agent, and one aimed at one volume only for that volume.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One record a writer appends: a newline, then `<agent> <rw|ro> <hold> <seq> <ns>;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The writing agent's index.
    pub agent: usize,
    /// Whether its lease is read-write.
    pub rw: bool,
    /// The agent's hold number (one per `dvdi run`).
    pub hold: u64,
    /// The record's number within the hold, from 0.
    pub seq: u64,
    /// CLOCK_MONOTONIC when it was written, in ns.
    pub ns: u64,
}

impl Record {
    /// The bytes a writer appends. A writer SIGKILLed in the middle of its write (when it is
    /// fenced) may leave only the start of them (the kernel stops a write between pages when
    /// a fatal signal is pending): the newline first keeps the next record on a line of its
    /// own, and the closing `;` tells a whole record from a torn one.
    pub fn entry(&self) -> String {
        let mode = if self.rw { "rw" } else { "ro" };
        format!(
            "\n{} {mode} {} {} {};",
            self.agent, self.hold, self.seq, self.ns
        )
    }

    /// Parses one line of [`Record::entry`]s; `None` for anything else (a torn record).
    pub fn parse(line: &str) -> Option<Record> {
        let mut f = line.strip_suffix(';')?.split_ascii_whitespace();
        let agent = f.next()?.parse().ok()?;
        let rw = match f.next()? {
            "rw" => true,
            "ro" => false,
            _ => return None,
        };
        let r = Record {
            agent,
            rw,
            hold: f.next()?.parse().ok()?,
            seq: f.next()?.parse().ok()?,
            ns: f.next()?.parse().ok()?,
        };
        f.next().is_none().then_some(r)
    }
}

/// The records in a log's text, and how many torn ones it holds (lines that are not whole
/// records: the start of a record whose writer was killed while writing it).
pub fn parse_log(text: &str) -> (Vec<Record>, usize) {
    let mut torn = 0;
    let mut records = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        match Record::parse(line) {
            Some(r) => records.push(r),
            None => torn += 1,
        }
    }
    (records, torn)
}

/// The records of one writer's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The agent's index.
    pub agent: usize,
    /// Read-write.
    pub rw: bool,
    /// The agent's hold number.
    pub hold: u64,
    /// Its first record's time.
    pub first: u64,
    /// Its last record's time.
    pub last: u64,
}

/// The holds in `records`, in order of their first record.
pub fn holds(records: &[Record]) -> Vec<Hold> {
    let mut by_hold: BTreeMap<(usize, u64), Hold> = BTreeMap::new();
    for r in records {
        by_hold
            .entry((r.agent, r.hold))
            .and_modify(|h| {
                h.first = h.first.min(r.ns);
                h.last = h.last.max(r.ns);
                h.rw |= r.rw;
            })
            .or_insert(Hold {
                agent: r.agent,
                rw: r.rw,
                hold: r.hold,
                first: r.ns,
                last: r.ns,
            });
    }
    let mut out: Vec<Hold> = by_hold.into_values().collect();
    out.sort_by_key(|h| (h.first, h.agent, h.hold));
    out
}

fn conflict(a: &Hold, b: &Hold) -> bool {
    a.agent != b.agent && (a.rw || b.rw)
}

/// Two holds that must not meet, and where they did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// The hold that began first.
    pub earlier: Hold,
    /// The hold that began inside it.
    pub later: Hold,
    /// Start of the overlap (the later hold's first record).
    pub from: u64,
    /// End of the overlap (the first of the two last records).
    pub to: u64,
}

impl Violation {
    /// The overlap's length in ns.
    pub fn overlap(&self) -> u64 {
        self.to - self.from
    }
}

/// Every violating pair among `holds` (sorted as [`holds`] returns them).
pub fn violations(holds: &[Hold]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, a) in holds.iter().enumerate() {
        for b in holds[i + 1..].iter().take_while(|b| b.first <= a.last) {
            if conflict(a, b) {
                out.push(Violation {
                    earlier: *a,
                    later: *b,
                    from: b.first,
                    to: a.last.min(b.last),
                });
            }
        }
    }
    out
}

/// Each hand-over among `holds`: the two holds.
pub fn hand_overs(holds: &[Hold]) -> Vec<(Hold, Hold)> {
    holds
        .windows(2)
        .filter(|w| conflict(&w[0], &w[1]))
        .map(|w| (w[0], w[1]))
        .collect()
}

/// What the nemesis does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Every idle agent starts a hold at the same moment.
    SimultaneousStart,
    /// One agent's ZooKeeper traffic blackholed (connections kept open), then healed.
    Partition,
    /// The ensemble's leader SIGKILLed, restarted after a while.
    LeaderKilled,
    /// One ensemble member SIGSTOPped, then SIGCONTed.
    ServerPaused,
    /// The plugin answers Mount and Unmount slowly.
    SlowPlugin,
    /// One agent's process SIGSTOPped (its command keeps running), then SIGCONTed.
    AgentPaused,
    /// One agent's process SIGKILLed, restarted (`dvdi gc`, then its next hold).
    AgentKilled,
}

impl Kind {
    /// Every kind, in the table's order.
    pub const ALL: [Kind; 7] = [
        Kind::SimultaneousStart,
        Kind::Partition,
        Kind::LeaderKilled,
        Kind::ServerPaused,
        Kind::SlowPlugin,
        Kind::AgentPaused,
        Kind::AgentKilled,
    ];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SimultaneousStart => "simultaneous start",
            Kind::Partition => "agent partitioned",
            Kind::LeaderKilled => "zk leader killed",
            Kind::ServerPaused => "zk server paused",
            Kind::SlowPlugin => "slow plugin",
            Kind::AgentPaused => "agent paused",
            Kind::AgentKilled => "agent SIGKILLed",
        }
    }

    /// Whether the lease must hold through it. An agent process stopped or killed cannot fence
    /// anything while it is not running: the README states that limit, and the overlap it
    /// allows is measured, not asserted.
    pub fn asserted(self) -> bool {
        !matches!(self, Kind::AgentPaused | Kind::AgentKilled)
    }
}

/// One fault as injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What it was.
    pub kind: Kind,
    /// The agent it was aimed at, if one.
    pub agent: Option<usize>,
    /// The volume it was aimed at, if one.
    pub volume: Option<usize>,
    /// When it began.
    pub start: u64,
    /// When it was undone (its start, for an instant fault).
    pub end: u64,
}

/// A fault kind and what it was aimed at: (kind, agent, volume).
type Aim = (Kind, Option<usize>, Option<usize>);

/// Fault windows, merged per kind and aim, to ask quickly whether a kind was around.
struct Windows {
    by_aim: BTreeMap<Aim, Vec<(u64, u64)>>,
}

impl Windows {
    fn new(faults: &[Fault], settle: u64) -> Windows {
        let mut by_aim: BTreeMap<_, Vec<(u64, u64)>> = BTreeMap::new();
        for f in faults {
            by_aim
                .entry((f.kind, f.agent, f.volume))
                .or_default()
                .push((f.start, f.end + settle));
        }
        for w in by_aim.values_mut() {
            w.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(w.len());
            for &(s, e) in w.iter() {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            *w = merged;
        }
        Windows { by_aim }
    }

    /// Whether a fault of `kind` was around `[from, to]` on `volume`, involving one of `agents`.
    fn around(&self, kind: Kind, volume: usize, agents: &[usize], from: u64, to: u64) -> bool {
        let aims = agents.iter().map(|&a| Some(a)).chain([None]);
        aims.flat_map(|a| [(kind, a, Some(volume)), (kind, a, None)])
            .filter_map(|key| self.by_aim.get(&key))
            .any(|w| {
                // The first window that ends at or after `from`: it is around if it starts by `to`.
                let i = w.partition_point(|&(_, e)| e < from);
                w.get(i).is_some_and(|&(s, _)| s <= to)
            })
    }

    /// The kinds around `[from, to]`.
    fn kinds(&self, volume: usize, agents: &[usize], from: u64, to: u64) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|&k| self.around(k, volume, agents, from, to))
            .collect()
    }
}

/// One row of the findings table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Row {
    /// Faults of this kind injected.
    pub injected: usize,
    /// Hand-overs with this kind around.
    pub hand_overs: usize,
    /// The shortest gap among those that did not overlap (the next holder's first record less
    /// the previous one's last, in ns): the margin the lease kept.
    pub closest: Option<u64>,
    /// Records written with this kind around.
    pub records: usize,
    /// Violations with this kind around.
    pub violations: usize,
    /// The largest of their overlaps, in ns.
    pub largest_overlap: u64,
}

impl Row {
    fn add_hand_over(&mut self, gap: Option<u64>) {
        self.hand_overs += 1;
        if let Some(gap) = gap {
            self.closest = Some(self.closest.map_or(gap, |c| c.min(gap)));
        }
    }

    fn add_violation(&mut self, v: &Violation) {
        self.violations += 1;
        self.largest_overlap = self.largest_overlap.max(v.overlap());
    }
}

/// A violation and the fault kinds around it.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The volume's index.
    pub volume: usize,
    /// The two holds and their overlap.
    pub violation: Violation,
    /// The kinds around it.
    pub kinds: Vec<Kind>,
}

impl Finding {
    /// Whether a fault the lease cannot cover (the README's stated limit) involves it.
    pub fn excused(&self) -> bool {
        self.kinds.iter().any(|k| !k.asserted())
    }
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// A row per fault kind.
    pub by_kind: BTreeMap<Kind, Row>,
    /// What happened with no fault around.
    pub quiet: Row,
    /// Everything.
    pub total: Row,
    /// Every violation.
    pub findings: Vec<Finding>,
}

/// Checks each volume's records (`volumes[v]`, any order) against the faults, a fault's effects
/// counting as its own for `settle` ns after it ends.
pub fn check(volumes: &[Vec<Record>], faults: &[Fault], settle: u64) -> Report {
    let windows = Windows::new(faults, settle);
    let mut report = Report::default();
    for k in Kind::ALL {
        report.by_kind.insert(k, Row::default());
    }
    for f in faults {
        report
            .by_kind
            .get_mut(&f.kind)
            .expect("every kind")
            .injected += 1;
        report.total.injected += 1;
    }
    for (v, records) in volumes.iter().enumerate() {
        let each = |report: &mut Report, agents: &[usize], from, to, add: &dyn Fn(&mut Row)| {
            let kinds = windows.kinds(v, agents, from, to);
            for k in &kinds {
                add(report.by_kind.get_mut(k).expect("every kind"));
            }
            if kinds.is_empty() {
                add(&mut report.quiet);
            }
            add(&mut report.total);
            kinds
        };
        for r in records {
            each(&mut report, &[r.agent], r.ns, r.ns, &|row| row.records += 1);
        }
        let holds = holds(records);
        for (a, b) in hand_overs(&holds) {
            let (from, to) = (a.last.min(b.first), b.first);
            let gap = b.first.checked_sub(a.last);
            each(&mut report, &[a.agent, b.agent], from, to, &|row| {
                row.add_hand_over(gap)
            });
        }
        for violation in violations(&holds) {
            let agents = [violation.earlier.agent, violation.later.agent];
            let kinds = each(&mut report, &agents, violation.from, violation.to, &|row| {
                row.add_violation(&violation)
            });
            report.findings.push(Finding {
                volume: v,
                violation,
                kinds,
            });
        }
    }
    report
}

/// Milliseconds with one decimal.
pub fn ms(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e6)
}

impl Report {
    /// The violations no stated limit excuses.
    pub fn unexcused(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| !f.excused()).collect()
    }

    /// The findings table; `bound` says, for each measured kind, what bounds its overlap.
    pub fn table(&self, bound: impl Fn(Kind) -> String) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>10} {:>10} {:>9} {:>10} {:>10}  goal",
            "fault kind",
            "injected",
            "hand-overs",
            "closest ms",
            "records",
            "violations",
            "largest ms"
        );
        let rows = std::iter::once(("no fault around", &self.quiet, "0 (asserted)".to_owned()))
            .chain(self.by_kind.iter().map(|(&k, row)| {
                let goal = if k.asserted() {
                    "0 (asserted)".to_owned()
                } else {
                    format!("measured; {}", bound(k))
                };
                (k.name(), row, goal)
            }))
            .chain([("all", &self.total, String::new())]);
        for (name, row, goal) in rows {
            let largest = if row.violations == 0 {
                "-".to_owned()
            } else {
                ms(row.largest_overlap)
            };
            let closest = row.closest.map_or("-".to_owned(), ms);
            let _ = writeln!(
                out,
                "{name:<20} {:>8} {:>10} {closest:>10} {:>9} {:>10} {largest:>10}  {goal}",
                row.injected, row.hand_overs, row.records, row.violations
            );
        }
        out
    }
}
