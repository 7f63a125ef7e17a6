//! `dvdi leases` and the coordination part of `dvdi status`: what ZooKeeper says about volume
//! leases, read through a session of this command's own.

use mesos_dvdi::config::Config;
use mesos_dvdi::coord::zk::{ZkCoordinator, ZkTarget};
use mesos_dvdi::coord::{format_since, CoordError, Coordinator, Lease};

use crate::table;

/// Why the cluster's leases could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LeasesError {
    /// `coordination` is `none`.
    #[error("coordination is off (no leases to list); set --coordination zk://host:port/path or the coordination parameter in --config")]
    Off,
    /// No session within the session timeout.
    #[error("not connected to ZooKeeper at {target} after {secs} s{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    NotConnected {
        /// Where.
        target: ZkTarget,
        /// How long it tried.
        secs: u64,
        /// The last connection error.
        detail: Option<String>,
    },
    /// Reading them failed.
    #[error(transparent)]
    Coord(#[from] CoordError),
}

/// A connected coordinator for `config`, or why there is none.
fn connect(config: &Config) -> Result<ZkCoordinator, LeasesError> {
    let target = config.coordination.clone().ok_or(LeasesError::Off)?;
    let coord = ZkCoordinator::start(
        target.clone(),
        config.agent_name.clone(),
        config.lease_session_timeout,
    );
    if coord.wait_connected(config.lease_session_timeout) {
        Ok(coord)
    } else {
        Err(LeasesError::NotConnected {
            target,
            secs: config.lease_session_timeout.as_secs(),
            detail: coord.status().last_error,
        })
    }
}

fn row(l: &Lease) -> Vec<String> {
    vec![
        l.volume.driver.to_string(),
        l.volume.name.to_string(),
        match l.mode {
            mesos_dvdi::coord::LeaseMode::ReadWrite => "rw".to_owned(),
            mesos_dvdi::coord::LeaseMode::ReadOnly => "ro".to_owned(),
        },
        l.holder.agent.clone(),
        l.holder.host.clone(),
        l.holder.pid.to_string(),
        format_since(l.holder.since),
    ]
}

const HEADERS: [&str; 7] = ["DRIVER", "NAME", "MODE", "AGENT", "HOST", "PID", "SINCE"];

/// `dvdi leases [--json]`: every lease in the cluster.
pub fn leases(config: &Config, json: bool) -> Result<(), LeasesError> {
    let coord = connect(config)?;
    let leases = coord.leases()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&leases).expect("leases serialise")
        );
    } else if leases.is_empty() {
        println!(
            "no leases under {}",
            config.coordination.as_ref().expect("connected")
        );
    } else {
        let rows: Vec<Vec<String>> = leases.iter().map(row).collect();
        print!("{}", table::render(&HEADERS, &rows, table::stdout_width()));
    }
    Ok(())
}

/// The coordination lines of `dvdi status`: whether ZooKeeper answers and which leases this
/// agent holds there. Nothing when coordination is off.
pub fn status_section(config: &Config) -> Vec<String> {
    let Some(target) = &config.coordination else {
        return Vec::new();
    };
    let mut lines = vec![String::new()];
    match connect(config).and_then(|c| Ok((c.leases()?, c.status()))) {
        Ok((leases, status)) => {
            let mine: Vec<&Lease> = leases
                .iter()
                .filter(|l| l.holder.agent == config.agent_name)
                .collect();
            lines.push(format!(
                "coordination: {target} as agent {:?}: connected (session {} of this command); {} lease(s) held by this agent",
                config.agent_name,
                status.session.as_deref().unwrap_or("?"),
                mine.len()
            ));
            if !mine.is_empty() {
                let rows: Vec<Vec<String>> = mine.into_iter().map(row).collect();
                lines.extend(table::render(&HEADERS, &rows, table::stdout_width()).lines().map(str::to_owned));
            }
        }
        Err(e) => lines.push(format!(
            "coordination: {target} as agent {:?}: NOT CONNECTED: {}; leased volumes are refused until it is back",
            config.agent_name,
            mesos_dvdi::error::render_chain(&e)
        )),
    }
    lines
}
