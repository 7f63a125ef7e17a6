//! The core's calls (`mesos_dvdi::calls`) over a fixture, as the module makes them, with their
//! answers delivered to channels the test waits on.

use std::sync::{mpsc, Arc};

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::calls::{traced, CallError, Calls};
use mesos_dvdi::isolator::{CleanupError, LaunchPlan, PrepareError};
use mesos_dvdi::metrics::Metrics;
use mesos_dvdi::mount::Host;

use super::isolator::Fixture;

/// The fixture's isolator behind the module's pools, its backends traced as the module's are.
pub fn calls(fx: &Fixture) -> Calls {
    let registry = Registry::new(fx.config.clone(), Arc::new(Host));
    Calls::new(
        fx.isolator_with(traced(Arc::new(registry))),
        Arc::new(Metrics::default()),
    )
}

/// Where a prepare's answer arrives.
pub type Prepared = mpsc::Receiver<Result<LaunchPlan, CallError<PrepareError>>>;

/// Starts a prepare of container `id` using `volume` (of the default driver); returns at once.
pub fn prepare(calls: &Calls, fx: &Fixture, id: &str, volume: &str) -> Prepared {
    prepare_env(calls, fx, id, &[("DVDI_VOLUME_NAME", volume)])
}

/// Starts a prepare of container `id` with environment `env`; returns at once.
pub fn prepare_env(calls: &Calls, fx: &Fixture, id: &str, env: &[(&str, &str)]) -> Prepared {
    let (tx, rx) = mpsc::channel();
    calls.prepare(id.to_owned(), fx.input(id, env, false), move |r| {
        let _ = tx.send(r);
    });
    rx
}

/// Starts a cleanup of container `id`; returns at once.
pub fn cleanup(calls: &Calls, id: &str) -> mpsc::Receiver<Result<(), CallError<CleanupError>>> {
    let (tx, rx) = mpsc::channel();
    calls.cleanup(id.to_owned(), move |r| {
        let _ = tx.send(r);
    });
    rx
}
