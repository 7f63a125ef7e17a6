//! `dvdi`: inspect, repair and use mesos-dvdi volumes from the command line.
//!
//! The CLI shares the module's core: its global flags are the module's parameters and go through
//! the same parser ([`Config::from_params`]), so the two can never disagree.

mod envfile;
mod leases;
mod run;
mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use mesos_dvdi::config::{Config, ConfigError};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{self, VolumeSpec};
use mesos_dvdi::state::{StateError, Store};

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::isolator::{Isolator, IsolatorError};
use mesos_dvdi::mount::Host;

const EXAMPLES: &str = "\
Examples:
  # Check a Marathon app's volumes before deploying it
  dvdi resolve --env-file app.json

  # Give a command the volumes a task would get (data persists from run to run)
  dvdi run --default-driver local -e DVDI_VOLUME_NAME=demo \\
      -e DVDI_VOLUME_CONTAINERPATH=/tmp/demo -- sh -c 'date >> /tmp/demo/log; cat /tmp/demo/log'

  # Which plugins discovery finds, and whether they answer
  dvdi plugins

  # What is mounted on this agent, for whom, and what failed
  dvdi status

  # Which agent holds which volume across the cluster (with --coordination zk://…)
  dvdi leases --coordination zk://zk1:2181,zk2:2181/dvdi

  # Release what dead `dvdi run` processes held and retry failed unmounts (show first)
  dvdi gc --dry-run && dvdi gc

  # Check environment variables as a task would set them
  dvdi resolve -e DVDI_VOLUME_NAME=pgdata -e DVDI_VOLUME_CONTAINERPATH=/var/lib/postgresql --json";

/// Inspect, repair and use mesos-dvdi external volumes.
#[derive(Debug, Parser)]
#[command(name = "dvdi", version, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// The module's parameters (DESIGN §6), as flags. Flags override `--config`.
#[derive(Debug, Args)]
struct Global {
    /// Read parameters from a JSON object of module parameters (as in isolator.json)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Checkpoint root; --state-dir is another spelling [module: work_dir or state_dir; default
    /// /var/run/mesos/isolators/dvdi]
    #[arg(long, global = true, value_name = "DIR", visible_alias = "state-dir")]
    work_dir: Option<String>,
    /// Driver when a volume names none [default_driver; default rexray]
    #[arg(long, global = true, value_name = "DRIVER")]
    default_driver: Option<String>,
    /// How non-built-in drivers are reached: plugin or dvdcli [backend; default plugin]
    #[arg(long, global = true, value_name = "KIND")]
    backend: Option<String>,
    /// The dvdcli program, for --backend dvdcli [dvdcli_path; default /usr/bin/dvdcli]
    #[arg(long, global = true, value_name = "PATH")]
    dvdcli: Option<String>,
    /// Plugin discovery directory, in order; repeatable [plugin_dirs]
    #[arg(long, global = true, value_name = "DIR")]
    plugin_dir: Vec<String>,
    /// The built-in local driver's root [local_root; default /var/lib/dvdi/local]
    #[arg(long, global = true, value_name = "DIR")]
    local_root: Option<String>,
    /// The built-in loop driver's root [loop_root; default /var/lib/dvdi/loop]
    #[arg(long, global = true, value_name = "DIR")]
    loop_root: Option<String>,
    /// Seconds a mount may take [mount_timeout_secs; default 120]
    #[arg(long, global = true, value_name = "SECS")]
    mount_timeout: Option<String>,
    /// Seconds an unmount may take [unmount_timeout_secs; default 600]
    #[arg(long, global = true, value_name = "SECS")]
    unmount_timeout: Option<String>,
    /// A driver tasks may name; repeatable (default: all) [allowed_drivers]
    #[arg(long, global = true, value_name = "DRIVER")]
    allow_driver: Vec<String>,
    /// Leases across agents: none or zk://host:port[,host:port...]/path [coordination; default none]
    #[arg(long, global = true, value_name = "URL")]
    coordination: Option<String>,
    /// This agent's name in leases [agent_name; default the host name]
    #[arg(long, global = true, value_name = "NAME")]
    agent_name: Option<String>,
    /// ZooKeeper session timeout in seconds [lease_session_timeout_secs; default 10]
    #[arg(long, global = true, value_name = "SECS")]
    lease_session_timeout: Option<String>,
    /// Seconds a prepare waits for a lease held elsewhere [lease_wait_secs; default 30]
    #[arg(long, global = true, value_name = "SECS")]
    lease_wait: Option<String>,
    /// A driver whose volumes are leased whatever its scope; repeatable [lease_drivers]
    #[arg(long, global = true, value_name = "DRIVER")]
    lease_driver: Vec<String>,
    /// Who mounts DOCKER_VOLUME entries: handle (dvdi) or ignore (another isolator)
    /// [docker_volumes; default handle]
    #[arg(long, global = true, value_name = "WHO")]
    docker_volumes: Option<String>,
    /// A directory plugin and dvdcli mount points must lie under; repeatable (default: anywhere
    /// but / and the system trees) [plugin_mount_roots]
    #[arg(long, global = true, value_name = "DIR")]
    plugin_mount_root: Vec<String>,
    /// Seconds a plugin that refuses connections is retried [plugin_connect_secs; default 15]
    #[arg(long, global = true, value_name = "SECS")]
    plugin_connect_timeout: Option<String>,
    /// The original module's checkpoint, shown by `status` when it cannot be imported;
    /// repeatable; '' for none [legacy_checkpoint; default: the original's four locations]
    #[arg(long, global = true, value_name = "FILE")]
    legacy_checkpoint: Vec<String>,
    /// How many of the module's calls may run at once, each on a thread of its own; dvdi itself
    /// makes one call at a time [call_threads; default 512]
    #[arg(long, global = true, value_name = "N")]
    call_threads: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Resolve a task's volumes as the module would, and show them (exit 2 when invalid)
    #[command(after_help = EXAMPLES)]
    Resolve(ResolveArgs),
    /// Run a command with the volumes a task with this environment would get, in its own mount
    /// namespace; exits with the command's status (125 when dvdi itself fails)
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// List the plugins discovery finds, with their address and whether they answer
    #[command(after_help = EXAMPLES)]
    Plugins(JsonArg),
    /// Show the mount table: volumes, host mount points, users, errors
    #[command(after_help = EXAMPLES)]
    Status(JsonArg),
    /// List every volume lease in the cluster (with --coordination): volume, mode, holding
    /// agent, since when
    #[command(after_help = EXAMPLES)]
    Leases(JsonArg),
    /// Release what dead `dvdi run` processes held, retry failed unmounts, remount vanished
    /// mounts still in use (references of Mesos containers are left to the agent)
    #[command(after_help = EXAMPLES)]
    Gc(GcArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Chroot the command into this root file system (container paths are inside it)
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Where relative container paths lie (the sandbox) [default: the current directory]
    #[arg(long, value_name = "DIR")]
    sandbox: Option<PathBuf>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// A task's volumes, as `-e` variables and an env file.
#[derive(Debug, Args)]
struct InputArgs {
    /// A task environment variable, NAME=VALUE; repeatable, later ones win
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// NAME=VALUE lines, or a Marathon app definition (JSON); read before -e
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

impl InputArgs {
    fn read(&self) -> Result<envfile::TaskInput, CliError> {
        let mut input = match &self.env_file {
            Some(path) => envfile::read(path)?,
            None => envfile::TaskInput::default(),
        };
        for e in &self.env {
            let (k, v) = e
                .split_once('=')
                .ok_or_else(|| CliError::BadEnvArg(e.clone()))?;
            input.env.push((k.to_owned(), v.to_owned()));
        }
        Ok(input)
    }
}

#[derive(Debug, Args)]
struct JsonArg {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GcArgs {
    /// Report what would be done, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ResolveArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

/// A failure that ends the command with exit status 2.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{flag}")]
    Flag {
        flag: &'static str,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    EnvFile(#[from] envfile::EnvFileError),
    #[error("-e {0:?}: expected NAME=VALUE")]
    BadEnvArg(String),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Isolator(#[from] IsolatorError),
    #[error(transparent)]
    Leases(#[from] leases::LeasesError),
    #[error("{0} problem(s) remain; see above")]
    Unresolved(usize),
    #[error("cannot tell the current directory (the default --sandbox)")]
    Cwd(#[source] std::io::Error),
}

impl Global {
    /// The configuration: defaults, then `--config`, then flags; all through one parser.
    fn config(&self) -> Result<Config, CliError> {
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        if let Some(file) = &self.config {
            for (k, v) in Config::params_from_json_file(file)? {
                params.insert(k, v);
            }
        }
        // (module parameter, flag, value)
        let flags = [
            ("work_dir", "--work-dir", self.work_dir.clone()),
            (
                "default_driver",
                "--default-driver",
                self.default_driver.clone(),
            ),
            ("backend", "--backend", self.backend.clone()),
            ("dvdcli_path", "--dvdcli", self.dvdcli.clone()),
            (
                "plugin_dirs",
                "--plugin-dir",
                (!self.plugin_dir.is_empty()).then(|| self.plugin_dir.join(":")),
            ),
            ("local_root", "--local-root", self.local_root.clone()),
            ("loop_root", "--loop-root", self.loop_root.clone()),
            (
                "mount_timeout_secs",
                "--mount-timeout",
                self.mount_timeout.clone(),
            ),
            (
                "unmount_timeout_secs",
                "--unmount-timeout",
                self.unmount_timeout.clone(),
            ),
            (
                "allowed_drivers",
                "--allow-driver",
                (!self.allow_driver.is_empty()).then(|| self.allow_driver.join(",")),
            ),
            ("coordination", "--coordination", self.coordination.clone()),
            ("agent_name", "--agent-name", self.agent_name.clone()),
            (
                "lease_session_timeout_secs",
                "--lease-session-timeout",
                self.lease_session_timeout.clone(),
            ),
            ("lease_wait_secs", "--lease-wait", self.lease_wait.clone()),
            (
                "lease_drivers",
                "--lease-driver",
                (!self.lease_driver.is_empty()).then(|| self.lease_driver.join(",")),
            ),
            (
                "docker_volumes",
                "--docker-volumes",
                self.docker_volumes.clone(),
            ),
            (
                "plugin_mount_roots",
                "--plugin-mount-root",
                (!self.plugin_mount_root.is_empty()).then(|| self.plugin_mount_root.join(":")),
            ),
            (
                "plugin_connect_secs",
                "--plugin-connect-timeout",
                self.plugin_connect_timeout.clone(),
            ),
            (
                "legacy_checkpoint",
                "--legacy-checkpoint",
                (!self.legacy_checkpoint.is_empty()).then(|| self.legacy_checkpoint.join(":")),
            ),
            ("call_threads", "--call-threads", self.call_threads.clone()),
        ];
        let mut from_flag = Vec::new();
        for (key, flag, value) in flags {
            if let Some(v) = value {
                params.insert(key.to_owned(), v);
                from_flag.push((key, flag));
            }
        }
        let params: Vec<(String, String)> = params.into_iter().collect();
        Config::from_params(&params).map_err(|source| {
            match from_flag.iter().find(|(key, _)| source.key() == Some(key)) {
                Some((_, flag)) => CliError::Flag { flag, source },
                None => CliError::Config(source),
            }
        })
    }
}

fn resolve(config: &Config, args: &ResolveArgs) -> Result<(), CliError> {
    let input = args.input.read()?;
    let resolved = spec::resolve(
        &input.env,
        config.docker_volumes_of(&input.docker_volumes),
        &config.resolve_options(),
    )?;
    for w in &resolved.warnings {
        eprintln!("dvdi: warning: {w}");
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&resolved.volumes).expect("specs serialise")
        );
    } else {
        print_specs(&resolved.volumes);
    }
    Ok(())
}

fn print_specs(specs: &[VolumeSpec]) {
    let rows: Vec<Vec<String>> = specs
        .iter()
        .map(|s| {
            vec![
                s.driver.to_string(),
                s.name.to_string(),
                s.container_path
                    .as_ref()
                    .map_or_else(|| "(host mount point)".to_owned(), ToString::to_string),
                if s.read_only { "ro" } else { "rw" }.to_owned(),
                if s.explicit_create { "no" } else { "yes" }.to_owned(),
                s.opts.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "DRIVER",
                "NAME",
                "CONTAINER PATH",
                "MODE",
                "CREATE",
                "OPTIONS"
            ],
            &rows,
            table::stdout_width()
        )
    );
}

fn status(config: &Config, args: &JsonArg) -> Result<(), CliError> {
    let store = Store::open(&config.work_dir)?;
    let scanned = mesos_dvdi::status::rows(&store, &config.legacy_checkpoint)?;
    if args.json {
        println!("{}", mesos_dvdi::status::to_json(&scanned));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = scanned
        .iter()
        .map(|s| match &s.record {
            Ok(r) => vec![
                r.driver.to_string(),
                r.name.to_string(),
                r.phase.to_string(),
                r.host_path
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |p| p.display().to_string()),
                format!(
                    "{} ({})",
                    r.users.len(),
                    r.users
                        .keys()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                r.last_error.clone().unwrap_or_default(),
            ],
            Err(e) => vec![
                "?".to_owned(),
                s.file.display().to_string(),
                "unreadable".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                e.clone(),
            ],
        })
        .collect();
    if rows.is_empty() {
        println!("no volumes recorded in {}", config.work_dir.display());
    } else {
        print!(
            "{}",
            table::render(
                &["DRIVER", "NAME", "STATE", "HOST PATH", "USERS", "ERROR"],
                &rows,
                table::stdout_width()
            )
        );
    }
    for line in leases::status_section(config) {
        println!("{line}");
    }
    Ok(())
}

fn gc(config: &Config, args: &GcArgs) -> Result<(), CliError> {
    let isolator = Isolator::open(
        config.clone(),
        Arc::new(Registry::new(config.clone(), Arc::new(Host))),
    )?;
    let report = isolator.gc(args.dry_run)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        let verb =
            |done: &'static str, would: &'static str| if args.dry_run { would } else { done };
        for (key, id) in &report.dropped {
            println!(
                "{} {key}: reference of {id} (process gone)",
                verb("dropped", "would drop")
            );
        }
        for key in &report.unmounted {
            println!("{} {key} (no users)", verb("unmounted", "would unmount"));
        }
        for key in &report.remounted {
            println!(
                "{} {key} (in use, mount missing)",
                verb("remounted", "would remount")
            );
        }
        if report.dropped.is_empty() && report.unmounted.is_empty() && report.remounted.is_empty() {
            println!("nothing to do");
        }
    }
    for e in &report.errors {
        eprintln!("dvdi: error: {e}");
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Unresolved(report.errors.len()))
    }
}

fn plugins(config: &Config, args: &JsonArg) -> Result<(), CliError> {
    use mesos_dvdi::backend::plugin::{list_plugins, PluginBackend};
    use mesos_dvdi::backend::{Backend, Timeouts};
    let probe = Timeouts {
        mount: config.mount_timeout.min(std::time::Duration::from_secs(2)),
        unmount: config.unmount_timeout,
    };
    let rows: Vec<serde_json::Value> = list_plugins(&config.plugin_dirs)
        .into_iter()
        .map(|found| match found {
            Err(e) => serde_json::json!({"error": render_chain(&e)}),
            Ok(p) => {
                let answer = mesos_dvdi::spec::DriverName::new(p.name.as_str())
                    .map_err(|e| e.to_string())
                    .and_then(|d| {
                        PluginBackend::at(d, p.addr.clone(), probe)
                            .with_connect_timeout(config.plugin_connect_timeout)
                            .capabilities()
                            .map_err(|e| render_chain(&e))
                    });
                serde_json::json!({
                    "name": p.name, "address": p.addr.to_string(), "file": p.file,
                    "kind": p.kind,
                    "activation": if answer.is_ok() { "ok" } else { "failed" },
                    "scope": answer.as_ref().ok().map(|c| c.scope),
                    "error": answer.err(),
                })
            }
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        );
        return Ok(());
    }
    if rows.is_empty() {
        let dirs: Vec<String> = config
            .plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        println!("no plugins found in {}", dirs.join(", "));
        return Ok(());
    }
    let cell = |v: &serde_json::Value, k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                cell(r, "name"),
                cell(r, "kind"),
                cell(r, "address"),
                cell(r, "activation"),
                cell(r, "scope"),
                cell(r, "error"),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["NAME", "KIND", "ADDRESS", "ACTIVATION", "SCOPE", "ERROR"],
            &table_rows,
            table::stdout_width()
        )
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run(args) = &cli.command {
        let prepared = cli.global.config().and_then(|config| {
            let task = args.input.read()?;
            let sandbox = match &args.sandbox {
                Some(s) => s.clone(),
                None => std::env::current_dir().map_err(CliError::Cwd)?,
            };
            Ok((config, task, sandbox))
        });
        return match prepared {
            Ok((config, task, sandbox)) => run::run(
                &config,
                run::RunRequest {
                    task,
                    rootfs: args.rootfs.clone(),
                    sandbox,
                    argv: args.command.clone(),
                },
            ),
            Err(e) => {
                eprintln!("dvdi: error: {}", render_chain(&e));
                ExitCode::from(run::EXIT_DVDI_FAILED)
            }
        };
    }
    let result = cli.global.config().and_then(|config| match &cli.command {
        Command::Resolve(args) => resolve(&config, args),
        Command::Status(args) => status(&config, args),
        Command::Gc(args) => gc(&config, args),
        Command::Leases(args) => leases::leases(&config, args.json).map_err(CliError::from),
        Command::Plugins(args) => plugins(&config, args),
        Command::Run(_) => unreachable!("handled above"),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dvdi: error: {}", render_chain(&e));
            ExitCode::from(2)
        }
    }
}
