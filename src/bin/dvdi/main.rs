//! `dvdi`: inspect, repair and use mesos-dvdi volumes from the command line.
//!
//! The CLI shares the module's core: its global flags are the module's parameters and go through
//! the same parser ([`Config::from_params`]), so the two can never disagree.

/// `eprintln!` that never panics: a closed stderr must not stop `dvdi run` before it has
/// released its volumes (it ignores SIGPIPE, so a write there fails instead of killing it).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod csi;
mod envfile;
mod init;
mod leases;
mod logger;
mod run;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use mesos_dvdi::config::{Config, ConfigError, LEGACY_MODULE_NAME, MODULE_NAME};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{self, VolumeSpec};
use mesos_dvdi::state::{StateError, Store};
use nix::sys::signal::{SigHandler, Signal};

use mesos_dvdi::backend::registry::{check_options, OptionsError, Registry};
use mesos_dvdi::isolator::{GcAction, GcWould, Isolator, IsolatorError, RecoverReport};
use mesos_dvdi::mount::Host;
use mesos_dvdi::state::Phase;

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

/// The module's parameters, as flags. Flags override `--config`.
#[derive(Debug, Args)]
struct Global {
    /// Say more on stderr: -v each mount and unmount, -vv debug, -vvv trace (warnings are shown
    /// by default; RUST_LOG=LEVEL or TARGET=LEVEL sets the level instead, -v raises it)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Read parameters from FILE: a JSON object of module parameters ({"work_dir": "/x", ...}),
    /// or a Mesos modules file such as isolator.json (the dvdi module's parameters)
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
    /// Who mounts CSI_VOLUME entries: handle (dvdi) or ignore (Mesos' volume/csi isolator)
    /// [csi_volumes; default handle]
    #[arg(long, global = true, value_name = "WHO")]
    csi_volumes: Option<String>,
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
    /// Mesos' CSI plugin configuration directory (one CSIPluginInfo JSON per file); each
    /// plugin's type is a driver name [csi_plugin_config_dir; default none]
    #[arg(long, global = true, value_name = "DIR")]
    csi_plugin_config_dir: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Resolve a task's volumes as the module would (the built-in drivers' options judged as their
    /// mount judges them), and show them (exit 2 when invalid)
    #[command(after_help = EXAMPLES)]
    Resolve(ResolveArgs),
    /// Run a command with the volumes a task with this environment would get, in its own mount
    /// and PID namespaces (whatever it starts ends with it); exits with the command's status (125
    /// when dvdi itself fails; 128+signal when Ctrl-C or another signal ended it before the
    /// command ran, what was done undone)
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// List the plugins discovery finds, with their address and whether they answer
    #[command(after_help = EXAMPLES)]
    Plugins(JsonArg),
    /// Show the mount table: volumes, host mount points, users, errors, and what gc would fix
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
        for w in &input.warnings {
            say!("dvdi: warning: {w}");
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
    /// Print JSON (its dry_run says whether it lists what would be done or what was)
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
    #[error("configuration file {}{}", path.display(), module.map(|m| format!(" (read as module {m})")).unwrap_or_default())]
    File {
        path: PathBuf,
        module: Option<&'static str>,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    EnvFile(#[from] envfile::EnvFileError),
    #[error("-e {0:?}: expected NAME=VALUE")]
    BadEnvArg(String),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("{place}{volume}")]
    Options {
        place: String,
        volume: spec::VolumeKey,
        #[source]
        source: Box<OptionsError>,
    },
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
        let file = match &self.config {
            Some(path) => Some((path, Config::read_file(path)?)),
            None => None,
        };
        let module = file.as_ref().map_or(MODULE_NAME, |(_, f)| f.module);
        let mut params: Vec<(String, String)> = file
            .as_ref()
            .map(|(_, f)| f.params.clone())
            .unwrap_or_default();
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
            ("csi_volumes", "--csi-volumes", self.csi_volumes.clone()),
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
            (
                "csi_plugin_config_dir",
                "--csi-plugin-config-dir",
                self.csi_plugin_config_dir.clone(),
            ),
        ];
        let mut from_flag = Vec::new();
        for (key, flag, value) in flags {
            let Some(v) = value else { continue };
            // Under the original module's name, work_dir is the agent's directory and the
            // module's own is state_dir: --work-dir means the latter. Under ours, both
            // spellings are one setting, which the flag replaces whichever the file used.
            let key = match key {
                "work_dir" if module == LEGACY_MODULE_NAME => "state_dir",
                other => other,
            };
            params.retain(|(k, _)| {
                k != key && !(module == MODULE_NAME && key == "work_dir" && k == "state_dir")
            });
            params.push((key.to_owned(), v));
            from_flag.push((key, flag));
        }
        let loaded = Config::from_module_params(module, &params).map_err(|source| {
            match (
                from_flag.iter().find(|(key, _)| source.key() == Some(key)),
                &file,
            ) {
                (Some((_, flag)), _) => CliError::Flag { flag, source },
                (None, Some((path, f))) => CliError::File {
                    path: path.to_path_buf(),
                    module: (f.module != MODULE_NAME).then_some(f.module),
                    source,
                },
                (None, None) => CliError::Config(source),
            }
        })?;
        for w in &loaded.warnings {
            log::warn!("{w}");
        }
        Ok(loaded.config)
    }
}

fn resolve(config: &Config, args: &ResolveArgs) -> Result<(), CliError> {
    let input = args.input.read()?;
    let resolved = spec::resolve(
        &input.env,
        config.docker_volumes_of(&input.docker_volumes),
        &[],
        &config.resolve_options(),
    )?;
    for w in &resolved.warnings {
        eprintln!("dvdi: warning: {w}");
    }
    // The built-in drivers' options, as their mount will judge them: refused here what `run`
    // would refuse, and said what it would ignore.
    for v in &resolved.volumes {
        let place = v
            .origin
            .0
            .as_ref()
            .map(|o| format!("{}: ", o.opts_place()))
            .unwrap_or_default();
        let warnings = check_options(&v.driver, &v.opts).map_err(|source| CliError::Options {
            place: place.clone(),
            volume: v.key(),
            source: Box::new(source),
        })?;
        for w in warnings {
            eprintln!("dvdi: warning: {place}{}: {w}", v.key());
        }
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

/// The checkpoint under the work dir, for a command that only reads it: `None`, with a warning,
/// when there is none (a mistyped --work-dir is said, never created).
fn existing_store(config: &Config) -> Result<Option<Store>, CliError> {
    let store = Store::open_existing(&config.work_dir)?;
    if store.is_none() {
        log::warn!(
            "{} holds no checkpoint (nothing was ever recorded there); check --work-dir or the work_dir parameter",
            config.work_dir.display()
        );
    }
    Ok(store)
}

fn status(config: &Config, args: &JsonArg) -> Result<(), CliError> {
    let store = existing_store(config)?;
    let scanned = match &store {
        Some(store) => mesos_dvdi::status::rows(store, &config.legacy_checkpoint)?,
        None => mesos_dvdi::status::legacy_rows(&config.legacy_checkpoint),
    };
    if args.json {
        println!("{}", mesos_dvdi::status::to_json(&scanned));
        return Ok(());
    }
    // What gc would fix, judged as gc judges (without its locks).
    let records: Vec<&mesos_dvdi::state::VolumeRecord> = scanned
        .iter()
        .filter_map(|s| s.record.as_ref().ok())
        .collect();
    let mut would = match store {
        Some(_) if !records.is_empty() => Isolator::new(
            config.clone(),
            Arc::new(Registry::new(config.clone(), Arc::new(Host))),
        )?
        .gc_would(&records)?,
        _ => Vec::new(),
    }
    .into_iter();
    let rows: Vec<Vec<String>> = scanned
        .iter()
        .map(|s| match &s.record {
            Ok(r) => {
                let (state, problems) = judged(r, would.next());
                vec![
                    r.driver.to_string(),
                    r.name.to_string(),
                    state,
                    r.host_path
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |p| p.display().to_string()),
                    if r.users.is_empty() {
                        "-".to_owned()
                    } else {
                        format!(
                            "{} ({})",
                            r.users.len(),
                            r.users
                                .keys()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    },
                    r.last_error
                        .iter()
                        .chain(&problems)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; "),
                ]
            }
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
    if let Some(section) = csi::status_section(&scanned) {
        print!("{section}");
    }
    for line in leases::status_section(config) {
        println!("{line}");
    }
    Ok(())
}

/// A status row's STATE (the phase, and what `dvdi gc` would do, in short) and what is wrong
/// that gc would fix or refuses to (for the last column).
fn judged(r: &mesos_dvdi::state::VolumeRecord, would: Option<GcWould>) -> (String, Vec<String>) {
    let Some(GcWould { gone, action }) = would else {
        return (r.phase.to_string(), Vec::new());
    };
    let mut fixes = Vec::new();
    let mut problems: Vec<String> = gone
        .iter()
        .map(|id| format!("user {id}: its process is gone"))
        .collect();
    if !gone.is_empty() {
        fixes.push(format!("drops {} gone user(s)", gone.len()));
    }
    match action {
        None => {}
        Some(GcAction::Unmount) => fixes.push("unmounts".to_owned()),
        Some(GcAction::ReleaseLease) => fixes.push("gives the lease back".to_owned()),
        Some(GcAction::Remount) => {
            if r.phase == Phase::Mounted {
                problems.push("its mount is missing".to_owned());
            }
            fixes.push("mounts again".to_owned());
        }
        Some(GcAction::Refuse(why)) => {
            problems.push(why);
            fixes.push("cannot mount again".to_owned());
        }
    }
    if fixes.is_empty() {
        return (r.phase.to_string(), problems);
    }
    (format!("{} (gc {})", r.phase, fixes.join(", ")), problems)
}

/// `dvdi gc --json`: the report, and whether it is what would be done (`--dry-run`) or what was.
#[derive(serde::Serialize)]
struct GcJson<'a> {
    dry_run: bool,
    #[serde(flatten)]
    report: &'a RecoverReport,
}

fn gc(config: &Config, args: &GcArgs) -> Result<(), CliError> {
    if existing_store(config)?.is_none() {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&GcJson {
                    dry_run: args.dry_run,
                    report: &Default::default()
                })
                .expect("report serialises")
            );
        } else {
            println!("nothing to do");
        }
        return Ok(());
    }
    let isolator = Isolator::open(
        config.clone(),
        Arc::new(Registry::new(config.clone(), Arc::new(Host))),
    )?;
    let report = isolator.gc(args.dry_run)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&GcJson {
                dry_run: args.dry_run,
                report: &report
            })
            .expect("report serialises")
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
    let csi_rows = csi::rows(config, probe.mount);
    if args.json {
        let all: Vec<&serde_json::Value> = rows.iter().chain(&csi_rows).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&all).expect("rows serialise")
        );
        return Ok(());
    }
    if !csi_rows.is_empty() {
        print!("{}", csi::render(&csi_rows));
        if rows.is_empty() {
            return Ok(());
        }
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

/// What a write to a closed pipe does: `Kill` (the default action, as for `ls | head`: the
/// command ends quietly, 141 in the shell) or `Ignore` (the write fails; `dvdi run`, whose
/// cleanup must run whatever becomes of its stderr).
fn on_sigpipe(action: SigHandler) {
    // SAFETY: signal(2) with SIG_DFL or SIG_IGN installs no handler code; nothing else in this
    // process changes SIGPIPE's disposition.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, action) };
}

fn main() -> ExitCode {
    // The Rust runtime ignores SIGPIPE, so a closed stdout (`dvdi status | head -1`) would make
    // every print panic; ended by the signal instead, a command stops quietly like any filter.
    on_sigpipe(SigHandler::SigDfl);
    let cli = Cli::parse();
    logger::install(cli.global.verbose);
    if let Command::Run(args) = &cli.command {
        on_sigpipe(SigHandler::SigIgn);
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
                say!("dvdi: error: {}", render_chain(&e));
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
