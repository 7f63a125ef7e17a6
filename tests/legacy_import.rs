//! Upgrade in place: the original module's checkpoint (mesos-module-dvdi), written here as it wrote
//! it, is imported at recover and then reconciled like our own records.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::isolator::{Isolator, KnownContainer};
use mesos_dvdi::mount::Host;
use mesos_dvdi::state::{ContainerId, Owner, Phase, Store, VolumeRecord};
use prost::Message;
use support::isolator::{text, Counting, Fixture};

/// The original's `interface.proto`, declared by the test itself so that the module's own
/// declaration is checked against it, not against itself.
mod original {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExternalMount {
        #[prost(string, required, tag = "1")]
        pub containerid: String,
        #[prost(string, required, tag = "2")]
        pub volumedriver: String,
        #[prost(string, required, tag = "3")]
        pub volumename: String,
        #[prost(string, optional, tag = "4")]
        pub mountpoint: Option<String>,
        #[prost(string, optional, tag = "5")]
        pub options: Option<String>,
        #[prost(string, optional, tag = "6")]
        pub container_path: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExternalMountList {
        #[prost(message, repeated, tag = "1")]
        pub mount: Vec<ExternalMount>,
    }
}

/// One mount as the original recorded it: container, driver, volume, options, mount point.
struct Legacy<'a>(&'a str, &'a str, &'a str, &'a str, Option<&'a Path>);

fn mounts(entries: &[Legacy<'_>]) -> original::ExternalMountList {
    original::ExternalMountList {
        mount: entries
            .iter()
            .map(|Legacy(c, d, v, o, m)| original::ExternalMount {
                containerid: (*c).to_owned(),
                volumedriver: (*d).to_owned(),
                volumename: (*v).to_owned(),
                mountpoint: m.map(|m| m.display().to_string()),
                options: (!o.is_empty()).then(|| (*o).to_owned()),
                container_path: Some("/data".to_owned()),
            })
            .collect(),
    }
}

/// The bytes stout's `protobuf::write` makes: the size (uint32, host order), then the message.
fn protobuf_file(entries: &[Legacy<'_>]) -> Vec<u8> {
    let body = mounts(entries).encode_to_vec();
    let mut bytes = u32::try_from(body.len()).unwrap().to_ne_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

/// The original's 0.1.0/0.2.0 JSON, written by hand as it wrote it.
fn json_file(entries: &[Legacy<'_>]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|Legacy(c, d, v, o, m)| {
            format!(
                "{{\n\"containerid\": \"{c}\",\n\"volumedriver\": \"{d}\",\n\"volumename\": \"{v}\",\n\"mountoptions\": \"{o}\",\n\"mountpoint\": \"{}\"\n}}",
                m.map(|m| m.display().to_string()).unwrap_or_default()
            )
        })
        .collect();
    format!("{{\"mounts\": [\n{}\n]}}\n", items.join(",\n"))
}

fn known(ids: &[&str]) -> Vec<KnownContainer> {
    ids.iter()
        .map(|id| KnownContainer {
            id: ContainerId::new(*id).unwrap(),
        })
        .collect()
}

/// A fixture whose isolator imports `legacy` (in the fixture's own directory), with backend calls
/// counted; the `local` driver's volumes `names` exist as the original left them.
struct Upgrade {
    fx: Fixture,
    legacy: PathBuf,
    counting: Arc<Counting>,
}

impl Upgrade {
    fn new(file_name: &str, volumes: &[&str]) -> Self {
        let mut fx = Fixture::new();
        let legacy = fx.root().join("agent/meta").join(file_name);
        fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        fx.config.legacy_checkpoint = vec![legacy.clone()];
        for v in volumes {
            fs::create_dir_all(fx.config.local_root.join(v)).unwrap();
        }
        let counting = Arc::new(Counting::new(Arc::new(Registry::new(
            fx.config.clone(),
            Arc::new(Host),
        ))));
        Self {
            fx,
            legacy,
            counting,
        }
    }

    fn volume(&self, name: &str) -> PathBuf {
        self.fx.config.local_root.join(name)
    }

    fn isolator(&self) -> Isolator {
        let provider: Arc<Counting> = Arc::clone(&self.counting);
        self.fx.isolator_with(provider)
    }

    fn record(&self, name: &str) -> Option<VolumeRecord> {
        let store = Store::open(&self.fx.config.work_dir).unwrap();
        let key = mesos_dvdi::spec::VolumeKey {
            driver: "local".parse().unwrap(),
            name: name.parse().unwrap(),
        };
        store.lock(&key).unwrap().load().unwrap()
    }

    fn aside(&self) -> PathBuf {
        let mut p = self.legacy.clone().into_os_string();
        p.push(".imported");
        PathBuf::from(p)
    }

    fn unmounts(&self) -> usize {
        self.counting.unmounts.load(Ordering::SeqCst)
    }

    /// `dvdi status --json` over this fixture, with its legacy checkpoint.
    fn status(&self) -> Vec<serde_json::Value> {
        let out = self
            .fx
            .dvdi()
            .arg("--legacy-checkpoint")
            .arg(&self.legacy)
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn users(r: &VolumeRecord) -> Vec<&str> {
    r.users.keys().map(ContainerId::as_str).collect()
}

#[test]
fn recover_imports_the_original_checkpoint_keeps_known_containers_and_releases_gone_ones() {
    let up = Upgrade::new("dvdimounts.pb", &["pgdata", "scratch"]);
    fs::write(
        &up.legacy,
        protobuf_file(&[
            Legacy(
                "live",
                "local",
                "pgdata",
                "size=20,,volumetype=gp2",
                Some(&up.volume("pgdata")),
            ),
            Legacy("gone", "local", "scratch", "", Some(&up.volume("scratch"))),
        ]),
    )
    .unwrap();

    let report = up.isolator().recover(&known(&["live"]), &[]).unwrap();

    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.kept.len(), 1, "{report:?}");
    assert_eq!(report.kept[0].name.as_str(), "pgdata");
    assert_eq!(report.unmounted.len(), 1, "{report:?}");
    assert_eq!(report.unmounted[0].name.as_str(), "scratch");
    // The gone container's volume was released through the backend, once; the live one's not.
    assert_eq!(up.unmounts(), 1);
    assert!(up.record("scratch").is_none());
    let kept = up
        .record("pgdata")
        .expect("the live container's volume is recorded");
    assert_eq!(users(&kept), ["live"]);
    assert_eq!(
        kept.users[&ContainerId::new("live").unwrap()].owner,
        Owner::Mesos
    );
    assert_eq!(kept.phase, Phase::Mounted);
    assert_eq!(
        kept.host_path.as_deref(),
        Some(up.volume("pgdata").as_path())
    );
    assert_eq!(kept.opts.to_string(), "size=20,volumetype=gp2");
    assert!(kept.explicit_create, "a remount must never create");
    // The file is set aside, not deleted, and the next recover finds nothing to import.
    assert!(!up.legacy.exists());
    assert!(up.aside().exists());
    let again = up.isolator().recover(&known(&["live"]), &[]).unwrap();
    assert_eq!(again.kept.len(), 1, "{again:?}");
    assert_eq!(up.unmounts(), 1);
}

/// The original's checkpoint with one `local` volume used by containers c1 and c2.
fn shared_by_c1_and_c2() -> Upgrade {
    let up = Upgrade::new("dvdimounts.pb", &["shared"]);
    let mp = up.volume("shared");
    fs::write(
        &up.legacy,
        protobuf_file(&[
            Legacy("c1", "local", "shared", "", Some(&mp)),
            Legacy("c2", "local", "shared", "", Some(&mp)),
        ]),
    )
    .unwrap();
    up
}

#[test]
fn a_volume_shared_by_two_containers_is_one_record_released_after_its_last_user() {
    let up = shared_by_c1_and_c2();
    let iso = up.isolator();
    let report = iso.recover(&known(&["c1", "c2"]), &[]).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(users(&up.record("shared").unwrap()), ["c1", "c2"]);

    iso.cleanup("c1").unwrap();
    assert_eq!(up.unmounts(), 0, "released while c2 still uses it");
    assert_eq!(users(&up.record("shared").unwrap()), ["c2"]);
    iso.cleanup("c2").unwrap();
    assert_eq!(up.unmounts(), 1);
    assert!(up.record("shared").is_none());
}

#[test]
fn a_shared_volume_whose_containers_are_both_gone_is_released_once() {
    let up = shared_by_c1_and_c2();
    let report = up.isolator().recover(&[], &[]).unwrap();
    assert_eq!(report.dropped.len(), 2, "{report:?}");
    assert_eq!(up.unmounts(), 1);
    assert!(up.record("shared").is_none());
}

#[test]
fn the_json_form_is_imported_too() {
    let up = Upgrade::new("dvdimounts.json", &["web", "old"]);
    fs::write(
        &up.legacy,
        json_file(&[
            Legacy("live", "local", "web", "size=1", Some(&up.volume("web"))),
            Legacy("gone", "local", "old", "", Some(&up.volume("old"))),
        ]),
    )
    .unwrap();
    let report = up.isolator().recover(&known(&["live"]), &[]).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    let web = up.record("web").unwrap();
    assert_eq!(users(&web), ["live"]);
    assert_eq!(web.opts.to_string(), "size=1");
    assert!(up.record("old").is_none());
    assert_eq!(up.unmounts(), 1);
    assert!(up.aside().exists() && !up.legacy.exists());
}

#[test]
fn a_crash_between_import_and_rename_imports_again_and_changes_nothing() {
    let up = Upgrade::new("dvdimounts.pb", &["a", "b"]);
    let bytes = protobuf_file(&[
        Legacy("c1", "local", "a", "", Some(&up.volume("a"))),
        Legacy("c2", "local", "a", "", Some(&up.volume("a"))),
        Legacy("c3", "local", "b", "", None),
    ]);
    fs::write(&up.legacy, &bytes).unwrap();
    let store = Store::open(&up.fx.config.work_dir).unwrap();
    let first = mesos_dvdi::legacy::import(&store, &up.fx.config.legacy_checkpoint);
    assert_eq!(first.added, 3, "{first:?}");
    // The state a crash after the records and before the rename leaves: both, and the file.
    fs::write(&up.legacy, &bytes).unwrap();
    // A record's bytes and its inode (every save renames a new file into place).
    let records = |name: &str| {
        let path = up
            .fx
            .config
            .work_dir
            .join(format!("volumes/local/{name}.json"));
        (fs::read(&path).unwrap(), fs::metadata(&path).unwrap().ino())
    };
    let (a, b) = (records("a"), records("b"));

    let second = mesos_dvdi::legacy::import(&store, &up.fx.config.legacy_checkpoint);
    assert_eq!(second.added, 0, "{second:?}");
    assert!(second.errors.is_empty(), "{second:?}");
    assert_eq!(records("a"), a, "a second import wrote a record");
    assert_eq!(records("b"), b, "a second import wrote a record");
    assert!(!up.legacy.exists() && up.aside().exists());

    // And once more through recover: every user once, nothing released or mounted twice.
    fs::write(&up.legacy, &bytes).unwrap();
    let report = up
        .isolator()
        .recover(&known(&["c1", "c2", "c3"]), &[])
        .unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(report.dropped.is_empty(), "{report:?}");
    assert_eq!(users(&up.record("a").unwrap()), ["c1", "c2"]);
    // b had no mount point (its mount may not have happened): mounted again for its user.
    assert_eq!(report.remounted.len(), 1, "{report:?}");
    assert_eq!(users(&up.record("b").unwrap()), ["c3"]);
    assert_eq!(up.unmounts(), 0);
}

/// Recover with `bytes` as the legacy checkpoint: it goes on, reports the file, and leaves it.
fn unparseable_is_left_in_place_and_reported(file_name: &str, bytes: &[u8], why: &str) {
    let up = Upgrade::new(file_name, &[]);
    fs::write(&up.legacy, bytes).unwrap();
    let report = up.isolator().recover(&[], &[]).unwrap();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    let e = &report.errors[0];
    assert!(e.contains(&up.legacy.display().to_string()), "{e}");
    assert!(e.contains("cannot be parsed and was left in place"), "{e}");
    assert!(e.contains(why), "{e}");
    assert_eq!(fs::read(&up.legacy).unwrap(), bytes, "the file was changed");
    assert!(!up.aside().exists());
    // dvdi status names the file and why.
    let rows = up.status();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["file"], up.legacy.display().to_string());
    assert!(rows[0]["record"].is_null());
    let shown = rows[0]["error"].as_str().unwrap();
    assert!(shown.contains(why), "{shown}");
}

#[test]
fn a_truncated_checkpoint_is_left_in_place_and_reported() {
    let mut bytes = protobuf_file(&[Legacy("c1", "local", "pgdata", "", None)]);
    bytes.truncate(bytes.len() - 3);
    unparseable_is_left_in_place_and_reported("dvdimounts.pb", &bytes, "only");
}

#[test]
fn a_garbage_checkpoint_is_left_in_place_and_reported() {
    // A size that fits, then bytes that are no ExternalMountList (field 1 with wire type 7).
    let mut bytes = 4u32.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&[0x0f, 0xff, 0xff, 0xff]);
    unparseable_is_left_in_place_and_reported("dvdimounts.pb", &bytes, "not an ExternalMountList");
    unparseable_is_left_in_place_and_reported(
        "dvdimounts.pb",
        b"this is not a checkpoint",
        "claims",
    );
    unparseable_is_left_in_place_and_reported("dvdimounts.json", b"{\"mounts\": [", "JSON");
}

#[test]
fn entries_that_break_our_rules_are_skipped_naming_file_and_entry() {
    let up = Upgrade::new("dvdimounts.pb", &["good"]);
    fs::write(
        &up.legacy,
        protobuf_file(&[
            Legacy("c1", "local", "../etc", "", None),
            Legacy("c2", "local", "good", "", Some(&up.volume("good"))),
            Legacy("c3", "local", "bad-opts", "novalue", None),
        ]),
    )
    .unwrap();
    let report = up.isolator().recover(&known(&["c2"]), &[]).unwrap();
    assert_eq!(report.errors.len(), 2, "{report:?}");
    let file = up.legacy.display().to_string();
    assert!(
        report.errors[0].contains(&file)
            && report.errors[0].contains("entry 0")
            && report.errors[0].contains("\"../etc\"")
            && report.errors[0].contains("volume name"),
        "{}",
        report.errors[0]
    );
    assert!(
        report.errors[1].contains("entry 2") && report.errors[1].contains("options"),
        "{}",
        report.errors[1]
    );
    assert_eq!(users(&up.record("good").unwrap()), ["c2"]);
    // What could be imported was: the file is set aside with the skipped entries in it.
    assert!(up.aside().exists());
}
