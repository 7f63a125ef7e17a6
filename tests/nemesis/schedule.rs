//! The nemesis: a seeded random schedule of faults, alone and overlapping, each undone after a
//! random while; every fault is recorded with its CLOCK_MONOTONIC window for the checker.
//!
//! At most one fault at a time is aimed at each agent, and at most one at the ensemble (a
//! quorum always remains, so a live agent can always reach ZooKeeper through its other
//! proxies); every other combination may happen.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::agents::Agents;
use crate::check::{Fault, Kind};
use crate::cluster::{Cluster, PLUGIN_VOLUME};
use crate::support::zookeeper::ZkEnsemble;
use crate::{monotonic_ns, Rng, SESSION_SECS};

/// `d` in ns.
pub fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("durations fit u64 ns")
}

/// How many of `faults` met another one (their windows from start to end).
pub fn overlapping(faults: &[Fault]) -> usize {
    faults
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            faults
                .iter()
                .enumerate()
                .any(|(j, g)| *i != j && f.start <= g.end && g.start <= f.end)
        })
        .count()
}

/// How a fault in progress is undone.
#[derive(Debug, Clone, Copy)]
enum Undo {
    Heal(usize),
    ResumeAgent(usize),
    RestartServer(usize),
    ResumeServer(usize),
    FastPlugin,
}

/// A fault in progress.
struct Active {
    fault: Fault,
    until: Instant,
    undo: Undo,
}

/// The schedule's state: what it acts on, and what it did.
pub struct Nemesis<'a> {
    cluster: &'a Cluster,
    zk: &'a mut ZkEnsemble,
    agents: &'a Agents,
    rng: Rng,
    started: Instant,
    active: Vec<Active>,
    done: Vec<Fault>,
}

impl<'a> Nemesis<'a> {
    /// A nemesis acting on `cluster`, the ensemble `zk` and the agents, its choices from `rng`.
    pub fn new(
        cluster: &'a Cluster,
        zk: &'a mut ZkEnsemble,
        agents: &'a Agents,
        rng: Rng,
    ) -> Nemesis<'a> {
        Nemesis {
            cluster,
            zk,
            agents,
            rng,
            started: Instant::now(),
            active: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Injects faults for `length` (ending early if the agents stop), undoes every one still
    /// in progress, and returns them all in order of their start.
    pub fn run(mut self, length: Duration) -> Vec<Fault> {
        let end = self.started + length;
        let mut next = self.started + self.gap();
        loop {
            let now = Instant::now();
            let due: Vec<usize> = (0..self.active.len())
                .filter(|&i| self.active[i].until <= now)
                .collect();
            for i in due.into_iter().rev() {
                let a = self.active.swap_remove(i);
                self.undo(a);
            }
            if now >= end || self.agents.stopped() {
                break;
            }
            if now >= next {
                self.inject();
                next = Instant::now() + self.gap();
            }
            let wake = self
                .active
                .iter()
                .map(|a| a.until)
                .chain([next, end])
                .min()
                .expect("at least two instants");
            // The schedule's own pace (the workload), not a wait for anything.
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
        while let Some(a) = self.active.pop() {
            self.undo(a);
        }
        self.done.sort_by_key(|f| f.start);
        self.done
    }

    /// The pause between two faults' starts.
    fn gap(&mut self) -> Duration {
        self.rng
            .duration(Duration::from_millis(500), Duration::from_millis(4000))
    }

    /// How long a fault lasts: from half a session (often harmless) to three (sessions expire).
    fn length(&mut self) -> Duration {
        let session = Duration::from_secs(SESSION_SECS);
        self.rng.duration(session / 2, session * 3)
    }

    fn log(&self, what: &str) {
        println!(
            "nemesis: +{:.1} s {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Starts one fault of a kind that can start now, if any.
    fn inject(&mut self) {
        let busy_agent = |a: &Active, i: usize| a.fault.agent == Some(i);
        let free_agents: Vec<usize> = (0..crate::AGENTS)
            .filter(|&i| !self.active.iter().any(|a| busy_agent(a, i)))
            .collect();
        let ensemble_free = !self
            .active
            .iter()
            .any(|a| matches!(a.fault.kind, Kind::LeaderKilled | Kind::ServerPaused));
        let plugin_free = !self.active.iter().any(|a| a.fault.kind == Kind::SlowPlugin);
        let eligible: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| match k {
                Kind::SimultaneousStart => true,
                Kind::Partition | Kind::AgentPaused | Kind::AgentKilled => !free_agents.is_empty(),
                Kind::LeaderKilled | Kind::ServerPaused => ensemble_free,
                Kind::SlowPlugin => plugin_free,
            })
            .collect();
        let kind = eligible
            [usize::try_from(self.rng.between(0, eligible.len() as u64 - 1)).expect("index")];
        let agent = if free_agents.is_empty() {
            0
        } else {
            free_agents
                [usize::try_from(self.rng.between(0, free_agents.len() as u64 - 1)).expect("index")]
        };
        let length = self.length();
        let mut fault = Fault {
            kind,
            agent: None,
            volume: None,
            start: monotonic_ns(),
            end: 0,
        };
        let undo = match kind {
            Kind::SimultaneousStart => {
                self.agents.start_all_idle();
                None
            }
            Kind::Partition => {
                fault.agent = Some(agent);
                self.cluster.partition(agent);
                Some(Undo::Heal(agent))
            }
            Kind::AgentPaused => {
                fault.agent = Some(agent);
                if !self.agents.signal(agent, Signal::SIGSTOP) {
                    return; // between two holds: nothing to pause
                }
                Some(Undo::ResumeAgent(agent))
            }
            Kind::AgentKilled => {
                fault.agent = Some(agent);
                if !self.agents.signal(agent, Signal::SIGKILL) {
                    return;
                }
                None
            }
            Kind::LeaderKilled => {
                let Some(leader) = self.zk.leader() else {
                    return; // an election is under way
                };
                self.zk.kill(leader);
                Some(Undo::RestartServer(leader))
            }
            Kind::ServerPaused => {
                let member =
                    usize::try_from(self.rng.between(0, self.zk.len() as u64 - 1)).expect("index");
                self.zk.pause(member);
                Some(Undo::ResumeServer(member))
            }
            Kind::SlowPlugin => {
                fault.volume = Some(PLUGIN_VOLUME);
                let delay = self
                    .rng
                    .duration(Duration::from_millis(200), Duration::from_millis(1500));
                self.cluster.slow_plugin(delay);
                Some(Undo::FastPlugin)
            }
        };
        let target = match (undo, fault.agent) {
            (Some(Undo::RestartServer(m) | Undo::ResumeServer(m)), _) => format!(" (server {m})"),
            (_, Some(a)) => format!(" ({})", Cluster::agent_name(a)),
            _ => String::new(),
        };
        match undo {
            Some(undo) => {
                self.log(&format!(
                    "{}{target} for {} ms",
                    kind.name(),
                    length.as_millis()
                ));
                self.active.push(Active {
                    fault,
                    until: Instant::now() + length,
                    undo,
                });
            }
            None => {
                self.log(&format!("{}{target}", kind.name()));
                fault.end = fault.start;
                self.done.push(fault);
            }
        }
    }

    fn undo(&mut self, a: Active) {
        match a.undo {
            Undo::Heal(i) => self.cluster.heal(i),
            Undo::ResumeAgent(i) => {
                self.agents.signal(i, Signal::SIGCONT);
            }
            Undo::RestartServer(m) => self.zk.restart(m),
            Undo::ResumeServer(m) => self.zk.resume(m),
            Undo::FastPlugin => self.cluster.slow_plugin(Duration::ZERO),
        }
        let mut fault = a.fault;
        fault.end = monotonic_ns();
        self.done.push(fault);
    }
}
