//! Builds and runs the C++ harness (tests/cpp/harness.cpp), which plays the Mesos agent through
//! the cxx bridge: the same calls the isolator shim makes, from C++, with real mounts.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::host::in_private_mount_ns;

/// Builds the library's C artifacts (`cargo test` makes only the rlib) into a target directory of
/// this test's own, so it never waits on the outer cargo's lock. Returns that target directory.
fn build_staticlib() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("harness-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["build", "--lib", "--quiet", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building the staticlib failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target
}

#[test]
fn cpp_harness_plays_the_agent_through_the_bridge() {
    let target = build_staticlib();
    let staticlib = target.join("debug").join("libmesos_dvdi.a");
    assert!(staticlib.exists(), "{} is missing", staticlib.display());
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dvdi-harness");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    // The generated header includes "mesos-dvdi/cpp/log_sink.h": map the crate's name to its
    // root, as cxx-build does for its own compilation.
    let crate_includes = Path::new(env!("CARGO_TARGET_TMPDIR")).join("harness-include");
    std::fs::create_dir_all(&crate_includes).unwrap();
    let link = crate_includes.join("mesos-dvdi");
    // A target directory copied from another checkout keeps a link to that checkout: replace it.
    if std::fs::read_link(&link).ok().as_deref() != Some(Path::new(env!("CARGO_MANIFEST_DIR"))) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(env!("CARGO_MANIFEST_DIR"), &link).unwrap();
    }
    let built = Command::new(&cxx)
        .args(["-std=c++14", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(target.join("cxxbridge"))
        .arg("-I")
        .arg(&crate_includes)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cpp/harness.cpp"))
        .arg(&staticlib)
        .args(["-lpthread", "-ldl", "-lm"])
        .output()
        .expect("run the C++ compiler");
    assert!(
        built.status.success(),
        "compiling the harness failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    // Searchable by others, as an agent's sandboxes are: the task user of the swap scenario
    // must reach its sandbox.
    std::fs::set_permissions(
        dir.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let plugins = dir.path().join("plugins");
    let source = dir.path().join("fuse-source");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&source).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    // A real ZooKeeper for the fencing scenario (two agents leasing one volume).
    let zk = support::zookeeper::ZkServer::start();
    write_original_checkpoint(&scratch);
    let (out, csi_calls) = in_private_mount_ns(|| {
        // The real third-party plugin, in the same private namespace as the harness.
        let _plugin = support::easyfuse::Easyfuse::start(&plugins, dir.path());
        let _ready = support::easyfuse::wait_ready(&plugins);
        // The CSI test plugin lives in this process: the harness reaches it through its socket.
        let (csi, csi_config, csi_volume) = csi_plugin(dir.path());
        let out = Command::new(&exe)
            .arg(&scratch)
            .arg(&plugins)
            .arg(&source)
            .arg(zk.address())
            .env("DVDI_HARNESS_CSI_CONFIG", &csi_config)
            .env("DVDI_HARNESS_CSI_VOLUME", &csi_volume)
            .output()
            .unwrap();
        assert!(csi.is_idle(), "the CSI volume is unpublished and unstaged");
        (out, csi.calls())
    });
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "harness failed:\n{log}");
    assert!(log.contains("harness: all checks passed"), "{log}");
    // The core's log records reached the C++ sink (the shim's is glog; the harness's stderr).
    assert!(
        log.contains("[log 3] mesos-dvdi: volume \"db\" (driver \"loop\"): mounted at"),
        "{log}"
    );
    assert!(
        log.contains("[log 3] mesos-dvdi: recovered: 1 volume(s) in use"),
        "{log}"
    );
    // The fencing scenario ran: agent A's recover fenced its container (checked in C++ too).
    assert!(
        log.contains("mesos-dvdi: fencing container fa1: volume \"ledger\" (driver \"local\")"),
        "{log}"
    );
    // Under the original's name, its isolator_command is ignored with a warning.
    assert!(
        log.contains("[log 2] mesos-dvdi: parameter isolator_command"),
        "{log}"
    );
    // The CSI_VOLUME entry reached the plugin with its secrets, which the harness's log lacks.
    assert!(log.contains("harness: CSI_VOLUME scenario ran"), "{log}");
    let stage = csi_calls
        .iter()
        .find(|c| c.rpc == Some(mesos_dvdi::csi::Rpc::NodeStageVolume))
        .expect("NodeStageVolume");
    assert_eq!(stage.secrets["password"], "harness-stage-secret");
    assert_eq!(stage.mount_flags, ["noatime"]);
    assert_eq!(stage.volume_context["share"], "projects");
    let publish = csi_calls
        .iter()
        .find(|c| c.rpc == Some(mesos_dvdi::csi::Rpc::NodePublishVolume))
        .expect("NodePublishVolume");
    assert_eq!(publish.secrets["token"], "harness-publish-secret");
    assert!(!log.contains("harness-stage-secret") && !log.contains("harness-publish-secret"));
    // What GET /dvdi/volumes and /dvdi/health serve: JSON naming the prepared volume, and ok.
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.join("status.json")).unwrap()).unwrap();
    let names: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["record"]["name"].as_str())
        .collect();
    assert!(names.contains(&"db"), "{status}");
    let health: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.join("health.json")).unwrap()).unwrap();
    assert_eq!(health["ok"], true, "{health}");
}

/// Starts the CSI test plugin under `dir`, writes its configuration and makes one volume for the
/// harness's static CSI_VOLUME entry. Returns the plugin, its configuration directory and the id.
fn csi_plugin(dir: &Path) -> (support::csi::CsiPlugin, PathBuf, String) {
    let plugin = support::csi::CsiPlugin::start(
        &dir.join("csi.sock"),
        &dir.join("csi-plugin"),
        support::csi::Options::default(),
    );
    let config = dir.join("csi-plugins");
    plugin.write_config(&config, "hostpath.csi.k8s.io");
    let id = plugin.provision("hostpath.csi.k8s.io", "for-the-harness");
    (plugin, config, id)
}

/// The original module's checkpoint, as its stout `protobuf::write` left it (size, then an
/// `ExternalMountList`): `old-live` and `old-gone` each use a `local` volume.
fn write_original_checkpoint(dir: &Path) {
    use prost::Message;
    #[derive(Clone, PartialEq, prost::Message)]
    struct ExternalMount {
        #[prost(string, required, tag = "1")]
        containerid: String,
        #[prost(string, required, tag = "2")]
        volumedriver: String,
        #[prost(string, required, tag = "3")]
        volumename: String,
        #[prost(string, optional, tag = "4")]
        mountpoint: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct ExternalMountList {
        #[prost(message, repeated, tag = "1")]
        mount: Vec<ExternalMount>,
    }
    let mount = |container: &str, volume: &str| {
        let mp = dir.join("local").join(volume);
        std::fs::create_dir_all(&mp).unwrap();
        ExternalMount {
            containerid: container.to_owned(),
            volumedriver: "local".to_owned(),
            volumename: volume.to_owned(),
            mountpoint: Some(mp.display().to_string()),
        }
    };
    let body = ExternalMountList {
        mount: vec![mount("old-live", "oldvol"), mount("old-gone", "gonevol")],
    }
    .encode_to_vec();
    let mut bytes = u32::try_from(body.len()).unwrap().to_ne_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let meta = dir.join("agent/meta");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(meta.join("dvdimounts.pb"), bytes).unwrap();
}
