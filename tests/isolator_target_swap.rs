//! A task that swaps a checked component of its bind target for a symbolic link after prepare
//! cannot move the bind: the launcher mounts onto the path string prepare handed it, following
//! links, so every directory on that path must be one only root can change. Where the task's
//! sandbox is the task user's own (the usual Mesos case), the volume is bound in a directory of
//! the agent's and reached through a link at the path the task asked for; elsewhere a path under a
//! directory someone else can change is refused, naming the directory and who.
//!
//! The attacker here is a real unprivileged process (uid 65534, `nobody`), acting from inside the
//! backend's mount call: after the isolator verified the targets, before anyone binds.

mod support;

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::error::render_chain;
use mesos_dvdi::isolator::{ContainerInput, IsolatorError, LaunchPlan};
use mesos_dvdi::mount::{self, Host};
use mesos_dvdi::spec::DockerVolumeInput;
use mesos_dvdi::state::Owner;
use support::host::in_private_mount_ns;
use support::isolator::{Counting, Fixture};

const NOBODY: u32 = 65534;

/// Runs `argv` as `nobody`; returns whether it succeeded (what it says on failure is expected,
/// and dropped).
fn as_nobody(argv: &[&str]) -> bool {
    Command::new(argv[0])
        .args(&argv[1..])
        .uid(NOBODY)
        .gid(NOBODY)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn give_to_nobody(path: &Path, mode: u32) {
    chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(path, mode);
}

fn docker_volume(name: &str, container_path: &str) -> DockerVolumeInput {
    DockerVolumeInput {
        driver: "local".into(),
        name: name.into(),
        container_path: container_path.into(),
        ..Default::default()
    }
}

/// A fixture whose directories `nobody` can reach (as an agent's are: its sandboxes lie under
/// directories everyone may search), with a root-owned `victim` directory holding a marker.
fn reachable_fixture() -> (Fixture, PathBuf) {
    let fx = Fixture::new();
    chmod(fx.root(), 0o755);
    let victim = fx.mkdir("victim");
    fs::write(victim.join("marker"), b"the victim's own").unwrap();
    (fx, victim)
}

/// A container run by `nobody` in a sandbox that `nobody` owns (as Mesos makes it: mode 0750),
/// asking for volume `v` at `container_path` (relative: in the sandbox).
fn nobodys_container(fx: &Fixture, rootfs: bool, container_path: &str) -> ContainerInput {
    let mut input = fx.input("c", &[], rootfs);
    give_to_nobody(&input.sandbox, 0o750);
    input.user = Some("nobody".into());
    input.docker_volumes = vec![docker_volume("v", container_path)];
    input
}

/// What the Mesos launcher does with the plan, in a private mount namespace: each bind, by its
/// target's path string (so following any symlink on it); then `check` runs in there.
fn launch<T: Send>(plan: &LaunchPlan, check: impl FnOnce() -> T + Send) -> T {
    in_private_mount_ns(|| {
        for m in &plan.mounts {
            mount::bind(&Host, &m.source, &m.target, m.read_only).unwrap();
        }
        check()
    })
}

/// The isolator, with `nobody` swapping `sandbox/data` for a symbolic link to `victim` from inside
/// the backend's mount call (after the targets were checked, before any bind).
fn prepare_with_swap(fx: &Fixture, input: &ContainerInput, victim: &Path) -> LaunchPlan {
    let data = input.sandbox.join("data");
    let moved = input.sandbox.join("data.moved");
    let victim = victim.to_owned();
    let swapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::clone(&swapped);
    let provider = Counting::new(Arc::new(Registry::new(fx.config.clone(), Arc::new(Host))))
        .before_mount(Arc::new(move |_| {
            let ok = as_nobody(&["mv", data.to_str().unwrap(), moved.to_str().unwrap()])
                && as_nobody(&["ln", "-s", victim.to_str().unwrap(), data.to_str().unwrap()]);
            seen.store(ok, std::sync::atomic::Ordering::SeqCst);
        }));
    let plan = fx
        .isolator_with(Arc::new(provider))
        .prepare("c", Owner::Mesos, input)
        .unwrap();
    assert!(
        swapped.load(std::sync::atomic::Ordering::SeqCst),
        "the task user could not swap its own sandbox's entry: the test proves nothing"
    );
    plan
}

#[test]
fn a_sandbox_entry_swapped_for_a_symlink_after_prepare_cannot_move_the_bind() {
    for rootfs in [false, true] {
        let (fx, victim) = reachable_fixture();
        let input = nobodys_container(&fx, rootfs, "data");
        let plan = prepare_with_swap(&fx, &input, &victim);
        fs::write(fx.config.local_root.join("v/from-volume"), b"volume").unwrap();
        let victim_seen = launch(&plan, || {
            (
                victim.join("marker").exists(),
                victim.join("from-volume").exists(),
            )
        });
        assert_eq!(
            victim_seen,
            (true, false),
            "the bind landed on the directory the task's link pointed to (rootfs: {rootfs}): \
             {plan:?}"
        );
        fx.isolator().cleanup("c").unwrap();
    }
}

#[test]
fn a_sandbox_relative_path_in_the_task_users_own_sandbox_still_reaches_the_volume() {
    let (fx, _victim) = reachable_fixture();
    let input = nobodys_container(&fx, false, "data");
    let iso = fx.isolator();
    let plan = iso.prepare("c", Owner::Mesos, &input).unwrap();
    fs::write(fx.config.local_root.join("v/from-volume"), b"volume").unwrap();
    // The volume's own permissions are the volume's business: let the task write it.
    give_to_nobody(&fx.config.local_root.join("v"), 0o755);
    let target = plan.mounts[0].target.clone();
    assert!(
        !target.starts_with(&input.sandbox),
        "bound inside a directory the task user owns: {}",
        target.display()
    );
    let data = input.sandbox.join("data");
    let (read, wrote, moved_target) = launch(&plan, || {
        (
            Command::new("cat")
                .arg(data.join("from-volume"))
                .uid(NOBODY)
                .gid(NOBODY)
                .output()
                .unwrap()
                .stdout,
            as_nobody(&["touch", data.join("by-task").to_str().unwrap()]),
            as_nobody(&[
                "mv",
                target.to_str().unwrap(),
                target.with_extension("moved").to_str().unwrap(),
            ]),
        )
    });
    assert_eq!(
        read, b"volume",
        "the task does not see its volume at $MESOS_SANDBOX/data"
    );
    assert!(wrote, "the task cannot write its volume");
    assert!(fx.config.local_root.join("v/by-task").exists());
    assert!(!moved_target, "the task user could move the bind's target");
    iso.cleanup("c").unwrap();
}

#[test]
fn in_a_root_owned_sandbox_the_volume_is_bound_at_the_path_itself() {
    let (fx, _victim) = reachable_fixture();
    let mut input = fx.input("c", &[], false);
    input.docker_volumes = vec![docker_volume("v", "data")];
    let iso = fx.isolator();
    let plan = iso.prepare("c", Owner::Mesos, &input).unwrap();
    assert_eq!(plan.mounts[0].target, input.sandbox.join("data"));
    assert!(input.sandbox.join("data").is_dir());
    iso.cleanup("c").unwrap();
}

/// Prepares `input`, expecting a refused container path; returns the task-facing message.
fn refusal(fx: &Fixture, input: &ContainerInput) -> String {
    let err = fx.isolator().prepare("c", Owner::Mesos, input).unwrap_err();
    let text = render_chain(&err);
    assert!(
        matches!(&*err.cause, IsolatorError::Target { .. }),
        "not a target refusal: {text}"
    );
    text
}

#[test]
fn a_host_path_under_a_directory_another_user_owns_is_refused_naming_it() {
    let (fx, _victim) = reachable_fixture();
    let shared = fx.mkdir("tmp/shared");
    give_to_nobody(&shared, 0o755);
    let target = shared.join("data");
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", target.to_str().unwrap()),
    ];
    let text = refusal(&fx, &fx.input("c", &env, false));
    assert!(
        text.contains(&format!(
            "DVDI_VOLUME_CONTAINERPATH: container path refused: {}: {} is owned by uid 65534 \
             (nobody)",
            target.display(),
            shared.display()
        )),
        "{text}"
    );
    assert!(!target.exists(), "the directory made for it was left");
    assert!(!fx.config.local_root.join("v").exists(), "mounted anyway");
}

#[test]
fn a_rootfs_path_under_a_directory_another_user_owns_is_refused_in_the_containers_terms() {
    let (fx, _victim) = reachable_fixture();
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", "/home/app/data"),
    ];
    let input = fx.input("c", &env, true);
    let rootfs = input.rootfs.clone().unwrap();
    fs::create_dir_all(rootfs.join("home/app")).unwrap();
    give_to_nobody(&rootfs.join("home/app"), 0o755);
    let text = refusal(&fx, &input);
    assert!(
        text.contains("/home/app/data: /home/app is owned by uid 65534 (nobody)"),
        "{text}"
    );
    assert!(!text.contains(rootfs.to_str().unwrap()), "{text}");
}

#[test]
fn group_and_world_writable_directories_are_refused_and_a_sticky_one_only_for_others_entries() {
    let (fx, _victim) = reachable_fixture();
    let host = |name: &str| {
        let dir = fx.mkdir(&format!("tmp/{name}"));
        [
            ("DVDI_VOLUME_NAME", "v".to_owned()),
            (
                "DVDI_VOLUME_CONTAINERPATH",
                dir.join("data").to_str().unwrap().to_owned(),
            ),
        ]
    };
    let input = |env: &[(&str, String); 2]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fx.input("c", &env, false)
    };

    let group = host("group");
    chmod(&fx.root().join("tmp/group"), 0o775);
    assert!(refusal(&fx, &input(&group)).contains("is writable by group"));

    let world = host("world");
    chmod(&fx.root().join("tmp/world"), 0o777);
    assert!(refusal(&fx, &input(&world)).contains("is writable by everyone"));

    // Like /tmp: others may add names, but not replace root's.
    let sticky = host("sticky");
    chmod(&fx.root().join("tmp/sticky"), 0o1777);
    let iso = fx.isolator();
    iso.prepare("c", Owner::Mesos, &input(&sticky)).unwrap();
    iso.cleanup("c").unwrap();
    let theirs = fx.root().join("tmp/sticky/theirs");
    fs::create_dir(&theirs).unwrap();
    give_to_nobody(&theirs, 0o755);
    let target = theirs.join("data");
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", target.to_str().unwrap()),
    ];
    let text = refusal(&fx, &fx.input("c", &env, false));
    assert!(
        text.contains(&format!(
            "{} is owned by uid 65534 (nobody)",
            theirs.display()
        )),
        "{text}"
    );
}

#[test]
fn re_homing_refuses_a_name_already_taken_and_says_why() {
    let (fx, _victim) = reachable_fixture();
    let input = nobodys_container(&fx, false, "data");
    fs::create_dir(input.sandbox.join("data")).unwrap();
    let text = refusal(&fx, &input);
    assert!(
        text.contains("$MESOS_SANDBOX/data already exists")
            && text.contains("$MESOS_SANDBOX is owned by uid 65534 (nobody)"),
        "{text}"
    );
    assert!(!text.contains(input.sandbox.to_str().unwrap()), "{text}");
}

#[test]
fn re_homing_needs_a_bind_directory_the_task_user_can_reach() {
    let (fx, _victim) = reachable_fixture();
    let input = nobodys_container(&fx, false, "data");
    chmod(fx.root(), 0o700);
    let text = refusal(&fx, &input);
    assert!(
        text.contains(&format!(
            "{} is not searchable by others (mode 0700)",
            fx.root().display()
        )),
        "{text}"
    );
    assert!(!input.sandbox.join("data").exists(), "the link was left");
}

#[test]
fn a_link_left_by_an_earlier_run_is_replaced_and_anyone_elses_refused() {
    let (fx, _victim) = reachable_fixture();
    let input = nobodys_container(&fx, false, "data");
    let iso = fx.isolator();
    iso.prepare("c", Owner::Mesos, &input).unwrap();
    iso.cleanup("c").unwrap();
    // The link stays in the sandbox (Mesos removes sandboxes); a new prepare takes it over.
    let link = input.sandbox.join("data");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    iso.prepare("c", Owner::Mesos, &input).unwrap();
    iso.cleanup("c").unwrap();
    fs::remove_file(&link).unwrap();
    symlink("/etc", &link).unwrap();
    let text = refusal(&fx, &input);
    assert!(
        text.contains("$MESOS_SANDBOX/data already exists"),
        "{text}"
    );
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/etc"));
}

#[test]
fn a_failed_prepare_takes_its_links_back_and_keeps_the_shared_bind_directories() {
    let (fx, _victim) = reachable_fixture();
    let mut input = nobodys_container(&fx, false, "data");
    input.docker_volumes.push(docker_volume("w", "taken"));
    fs::write(input.sandbox.join("taken"), b"the task's file").unwrap();
    let text = refusal(&fx, &input);
    assert!(
        text.contains("$MESOS_SANDBOX/taken already exists"),
        "{text}"
    );
    assert!(
        fs::symlink_metadata(input.sandbox.join("data")).is_err(),
        "the first volume's link was left"
    );
    assert_eq!(
        fs::read(input.sandbox.join("taken")).unwrap(),
        b"the task's file"
    );
    // Another container may have chosen it meanwhile: never taken back.
    assert!(fx.config.work_dir.join("binds/0").is_dir());
}
