//! An isolator on temp directories, with the production backend registry, for the isolator tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::backend::{
    Backend, BackendError, BackendProvider, Capabilities, MountId, MountRequest, VolumeInfo,
};
use mesos_dvdi::config::Config;
use mesos_dvdi::isolator::{ContainerInput, Isolator};
use mesos_dvdi::mount::Host;
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};

use super::host::THREAD_MOUNTINFO;

/// Temp directories for one isolator: work dir, local and loop roots, a stand-in host `/tmp`.
pub struct Fixture {
    /// Owns every directory below.
    pub dir: tempfile::TempDir,
    /// The configuration the isolators are built from.
    pub config: Config,
    /// Set when the directories belong to another process's fixture.
    foreign: Option<PathBuf>,
}

impl Fixture {
    /// Fresh directories.
    pub fn new() -> Self {
        Self::new_in(&std::env::temp_dir())
    }

    /// Fresh directories under `parent`.
    pub fn new_in(parent: &Path) -> Self {
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let config = Config {
            work_dir: dir.path().join("work"),
            local_root: dir.path().join("local"),
            loop_root: dir.path().join("loop"),
            plugin_dirs: vec![dir.path().join("plugins")],
            default_driver: DriverName::new("local").unwrap(),
            // Never the host's: a test that imports one puts it in its own directory.
            legacy_checkpoint: Vec::new(),
            ..Config::default()
        };
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        Self {
            dir,
            config,
            foreign: None,
        }
    }

    /// The directories of a fixture made by another process under `dir` (which it owns).
    pub fn at(dir: &Path) -> Self {
        // The scratch dir goes inside `dir`, so it is removed with it even when this process is
        // killed (the crash tests SIGKILL the processes that call this).
        let mut fx = Self::new_in(dir);
        fx.config.work_dir = dir.join("work");
        fx.config.local_root = dir.join("local");
        fx.config.loop_root = dir.join("loop");
        fx.config.plugin_dirs = vec![dir.join("plugins")];
        fx.foreign = Some(dir.to_owned());
        fx
    }

    /// The fixture's root directory.
    pub fn root(&self) -> &Path {
        self.foreign.as_deref().unwrap_or(self.dir.path())
    }

    /// A new isolator (as after an agent restart) over the same directories.
    pub fn isolator(&self) -> Isolator {
        self.isolator_with(Arc::new(Registry::new(self.config.clone(), Arc::new(Host))))
    }

    /// A new isolator with its backends from `provider`.
    pub fn isolator_with(&self, provider: Arc<dyn BackendProvider>) -> Isolator {
        Isolator::new(self.config.clone(), provider)
            .expect("isolator")
            .with_mountinfo(PathBuf::from(THREAD_MOUNTINFO))
            .with_host_tmp(self.root().join("tmp"))
    }

    /// A new directory under the fixture (a sandbox or rootfs).
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.root().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A container input with `env`, a sandbox of its own and an optional rootfs.
    pub fn input(&self, name: &str, env: &[(&str, &str)], rootfs: bool) -> ContainerInput {
        ContainerInput {
            env: env
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            sandbox: self.mkdir(&format!("sandboxes/{name}")),
            rootfs: rootfs.then(|| self.mkdir(&format!("rootfs/{name}"))),
            ..ContainerInput::default()
        }
    }

    /// Whether the checkpoint holds a record of `driver`/`name`.
    pub fn recorded(&self, driver: &str, name: &str) -> bool {
        recorded_in(&self.config.work_dir, driver, name)
    }

    /// The `dvdi` binary on this fixture's work dir, local and loop roots, with no plugin dir.
    pub fn dvdi(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dvdi"));
        c.arg("--work-dir")
            .arg(&self.config.work_dir)
            .arg("--local-root")
            .arg(&self.config.local_root)
            .arg("--loop-root")
            .arg(&self.config.loop_root);
        c
    }
}

/// A command's stdout and stderr, for assertions and failure messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether `path` is a mount point in the calling thread's mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let table = mesos_dvdi::mount::read_mountinfo(Path::new(THREAD_MOUNTINFO)).unwrap();
    mesos_dvdi::mount::is_mount_point(&table, path)
}

/// Wraps a provider's backends so tests can count mount and unmount calls (the backends below
/// are real; this only counts).
pub struct Counting {
    inner: Arc<dyn BackendProvider>,
    /// Backend mounts so far.
    pub mounts: Arc<AtomicUsize>,
    /// Backend unmounts so far.
    pub unmounts: Arc<AtomicUsize>,
    before_unmount: Option<UnmountHook>,
    before_mount: Option<UnmountHook>,
}

/// Runs just before each backend unmount (or mount), with the volume's name.
pub type UnmountHook = Arc<dyn Fn(&VolumeName) + Send + Sync>;

impl Counting {
    /// Counts calls to `inner`'s backends.
    pub fn new(inner: Arc<dyn BackendProvider>) -> Self {
        Self {
            inner,
            mounts: Arc::default(),
            unmounts: Arc::default(),
            before_unmount: None,
            before_mount: None,
        }
    }

    /// Also runs `hook` just before each backend mount.
    pub fn before_mount(mut self, hook: UnmountHook) -> Self {
        self.before_mount = Some(hook);
        self
    }

    /// Also runs `hook` just before each backend unmount (to observe what holds then).
    pub fn before_unmount(mut self, hook: UnmountHook) -> Self {
        self.before_unmount = Some(hook);
        self
    }
}

struct CountingBackend {
    inner: Arc<dyn Backend>,
    mounts: Arc<AtomicUsize>,
    unmounts: Arc<AtomicUsize>,
    before_unmount: Option<UnmountHook>,
    before_mount: Option<UnmountHook>,
}

impl BackendProvider for Counting {
    fn backend(
        &self,
        driver: &DriverName,
        dvdcli: Option<&Path>,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(CountingBackend {
            inner: self.inner.backend(driver, dvdcli)?,
            mounts: Arc::clone(&self.mounts),
            unmounts: Arc::clone(&self.unmounts),
            before_unmount: self.before_unmount.clone(),
            before_mount: self.before_mount.clone(),
        }))
    }
}

impl Backend for CountingBackend {
    fn driver(&self) -> &DriverName {
        self.inner.driver()
    }
    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        self.inner.create(name, opts)
    }
    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        self.inner.remove(name)
    }
    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        self.mounts.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = &self.before_mount {
            hook(req.name);
        }
        self.inner.mount(req)
    }
    fn unmount(&self, name: &VolumeName, id: &MountId) -> Result<(), BackendError> {
        self.unmounts.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = &self.before_unmount {
            hook(name);
        }
        self.inner.unmount(name, id)
    }
    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        self.inner.path(name)
    }
    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        self.inner.get(name)
    }
    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        self.inner.list()
    }
    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        self.inner.capabilities()
    }
}

/// Whether the checkpoint under `work_dir` holds a record of `driver`/`name`. A volume's file
/// outlives its record (a tombstone): ask the store, not the directory.
pub fn recorded_in(work_dir: &Path, driver: &str, name: &str) -> bool {
    mesos_dvdi::state::Store::open(work_dir)
        .unwrap()
        .scan()
        .unwrap()
        .iter()
        .any(|s| {
            s.record
                .as_ref()
                .is_ok_and(|r| r.driver.as_str() == driver && r.name.as_str() == name)
        })
}
