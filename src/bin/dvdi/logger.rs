//! `dvdi`'s logger: what the core logs (a plugin that is not listening yet, a loop device the
//! kernel has not detached, a lease lost) goes to stderr as `dvdi: warning: …`, like dvdi's own
//! messages.
//!
//! Warnings and errors by default. `-v` adds info (each mount and unmount), `-vv` debug, `-vvv`
//! trace. `RUST_LOG` sets the level instead of the default (`RUST_LOG=error`, `RUST_LOG=off`
//! quiet it), by target too (`RUST_LOG=warn,mesos_dvdi::coord=debug`); `-v` only ever raises it.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

/// The level for targets starting with a prefix; the longest matching prefix wins.
struct Logger {
    default: LevelFilter,
    by_target: Vec<(String, LevelFilter)>,
    /// The least the verbosity flags ask for.
    floor: LevelFilter,
}

impl Logger {
    fn level_for(&self, target: &str) -> LevelFilter {
        let configured = self
            .by_target
            .iter()
            .filter(|(prefix, _)| target.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.default, |(_, level)| *level);
        configured.max(self.floor)
    }

    fn max_level(&self) -> LevelFilter {
        self.by_target
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, Ord::max)
            .max(self.floor)
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let label = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        // Where a debug line comes from helps; a warning reads as a sentence of its own.
        let line = if record.level() >= log::Level::Debug {
            format!("dvdi: {label}: [{}] {}\n", record.target(), record.args())
        } else {
            format!("dvdi: {label}: {}\n", record.args())
        };
        // One write per line, so lines from threads do not interleave; a closed stderr is no
        // reason to fail.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Why a `RUST_LOG` value was not understood.
#[derive(Debug, PartialEq, Eq)]
pub struct BadDirective(String);

impl std::fmt::Display for BadDirective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RUST_LOG: {:?} is not a level (off, error, warn, info, debug, trace) or TARGET=LEVEL; using warn",
            self.0
        )
    }
}

/// Parses `RUST_LOG`: comma-separated `LEVEL` (the default) and `TARGET=LEVEL` directives.
fn parse(spec: &str) -> Result<(LevelFilter, Vec<(String, LevelFilter)>), BadDirective> {
    let mut default = LevelFilter::Warn;
    let mut by_target = Vec::new();
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bad = || BadDirective(directive.to_owned());
        match directive.split_once('=') {
            Some((target, level)) => {
                by_target.push((target.to_owned(), level.parse().map_err(|_| bad())?));
            }
            None => default = directive.parse().map_err(|_| bad())?,
        }
    }
    Ok((default, by_target))
}

/// The level `-v` given `verbose` times asks for at least.
fn floor(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::Off,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger, from `RUST_LOG` and the number of `-v` flags. Called once, first thing.
pub fn install(verbose: u8) {
    let (parsed, problem) = match std::env::var("RUST_LOG") {
        Ok(spec) => match parse(&spec) {
            Ok(p) => (p, None),
            Err(e) => ((LevelFilter::Warn, Vec::new()), Some(e)),
        },
        Err(_) => ((LevelFilter::Warn, Vec::new()), None),
    };
    let logger = Logger {
        default: parsed.0,
        by_target: parsed.1,
        floor: floor(verbose),
    };
    let max = logger.max_level();
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(max);
    }
    if let Some(e) = problem {
        log::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_sets_levels_by_target_and_verbosity_only_raises_them() {
        let (default, by_target) = parse("error,mesos_dvdi::coord=debug").unwrap();
        let l = Logger {
            default,
            by_target,
            floor: floor(0),
        };
        assert_eq!(l.level_for("mesos_dvdi::backend"), LevelFilter::Error);
        assert_eq!(l.level_for("mesos_dvdi::coord::zk"), LevelFilter::Debug);
        assert_eq!(l.max_level(), LevelFilter::Debug);
        let l = Logger {
            floor: floor(1),
            ..l
        };
        assert_eq!(l.level_for("mesos_dvdi::backend"), LevelFilter::Info);
        assert_eq!(l.level_for("mesos_dvdi::coord"), LevelFilter::Debug);
        assert_eq!(parse("").unwrap(), (LevelFilter::Warn, Vec::new()));
        assert_eq!(parse("OFF").unwrap().0, LevelFilter::Off);
        assert!(parse("loud").is_err());
        assert!(parse("x=loud").is_err());
    }
}
