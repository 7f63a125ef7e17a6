//! CSI plugin configuration: a directory of JSON files in the format of Mesos' own
//! `--csi_plugin_config_dir` (`CSIPluginInfo`), so an operator points this project at the
//! directory the agent already has.
//!
//! ```json
//! {"type": "hostpath.csi.k8s.io", "name": "default",
//!  "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "unix:///run/csi/hostpath.sock"},
//!                {"csi_service": "CONTROLLER_SERVICE", "endpoint": "unix:///run/csi/hostpath.sock"}],
//!  "target_path_root": "/var/lib/csi/targets", "target_path_exists": false}
//! ```
//!
//! Every regular file of the directory is read, in name order, except hidden ones (names
//! starting with `.`: editors' temp files). A file that is not such an object, an unknown field,
//! a field of the wrong type, a plugin without a `NODE_SERVICE` endpoint, and two files of one
//! `type` are errors naming the file and the field. `containers` (plugins Mesos launches itself)
//! is refused: this project never launches plugins, so the operator runs the plugin and lists its
//! sockets under `endpoints`. Endpoints are unix sockets: `unix:///path`, or the bare absolute
//! path Mesos' own documentation shows.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::spec::{DriverName, NameError};

/// One configured plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its `type`: the driver name tasks use, and a task's `CSIVolume.plugin_name`.
    pub plugin_type: DriverName,
    /// Its `name` (`default` when not given).
    pub name: String,
    /// The socket of its Node service.
    pub node_socket: PathBuf,
    /// The socket of its Controller service, when it lists one.
    pub controller_socket: Option<PathBuf>,
    /// Where target paths are made, when not under the work directory (`target_path_root`).
    pub target_path_root: Option<PathBuf>,
    /// Whether the plugin expects the target directory to exist already (`target_path_exists`).
    pub target_path_exists: bool,
}

/// A plugin configuration that cannot be used; each names the file and, where one is at fault,
/// the field.
#[derive(Debug, thiserror::Error)]
pub enum PluginConfigError {
    /// The directory could not be listed.
    #[error("reading the CSI plugin configuration directory {} failed", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("reading CSI plugin configuration {} failed", file.display())]
    ReadFile {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not JSON.
    #[error("CSI plugin configuration {} is not JSON", file.display())]
    Json {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A field that is missing, unknown or wrong.
    #[error("CSI plugin configuration {}: field {field}: {why}", file.display())]
    Field {
        /// The file.
        file: PathBuf,
        /// The field (`endpoints[1].endpoint`), or `(file)` for the whole object.
        field: String,
        /// What is wrong and what to write instead.
        why: String,
    },
    /// An invalid `type`.
    #[error("CSI plugin configuration {}: field type: {value:?} cannot be a driver name", file.display())]
    BadType {
        /// The file.
        file: PathBuf,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: NameError,
    },
    /// Two files configure one type.
    #[error("CSI plugin type {plugin_type:?} is configured twice, in {} and {}; keep one", first.display(), second.display())]
    DuplicateType {
        /// The type.
        plugin_type: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
}

/// Reads every plugin configuration in `dir` (see the [module docs](self)).
pub fn load_dir(dir: &Path) -> Result<Vec<PluginInfo>, PluginConfigError> {
    let read_dir = |source| PluginConfigError::ReadDir {
        dir: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir)? {
        let entry = entry.map_err(read_dir)?;
        let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
        // Follows a link, as reading the file would: a configuration may be a link into a
        // package's own directory.
        if !hidden && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    let mut plugins: Vec<PluginInfo> = Vec::new();
    for file in files {
        let info = load_file(&file)?;
        if let Some(first) = plugins.iter().find(|p| p.plugin_type == info.plugin_type) {
            return Err(PluginConfigError::DuplicateType {
                plugin_type: info.plugin_type.as_str().to_owned(),
                first: first.file.clone(),
                second: file,
            });
        }
        plugins.push(info);
    }
    Ok(plugins)
}

/// Reads one plugin configuration file.
pub fn load_file(file: &Path) -> Result<PluginInfo, PluginConfigError> {
    let text = fs::read(file).map_err(|source| PluginConfigError::ReadFile {
        file: file.to_owned(),
        source,
    })?;
    let value: Value = serde_json::from_slice(&text).map_err(|source| PluginConfigError::Json {
        file: file.to_owned(),
        source,
    })?;
    parse(file, &value)
}

/// The fields of `CSIPluginInfo`.
const FIELDS: &[&str] = &[
    "type",
    "name",
    "containers",
    "endpoints",
    "target_path_root",
    "target_path_exists",
];

fn parse(file: &Path, value: &Value) -> Result<PluginInfo, PluginConfigError> {
    let bad = |field: &str, why: &str| PluginConfigError::Field {
        file: file.to_owned(),
        field: field.to_owned(),
        why: why.to_owned(),
    };
    let object = value.as_object().ok_or_else(|| {
        bad(
            "(file)",
            "the file must hold one JSON object (a CSIPluginInfo)",
        )
    })?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(
            unknown,
            &format!("unknown field; a CSIPluginInfo has {}", FIELDS.join(", ")),
        ));
    }
    let plugin_type = string(object, "type")
        .map_err(|why| bad("type", why))?
        .ok_or_else(|| bad("type", "missing; name the plugin's type (its driver name)"))?;
    let plugin_type =
        DriverName::new(plugin_type).map_err(|source| PluginConfigError::BadType {
            file: file.to_owned(),
            value: plugin_type.to_owned(),
            source,
        })?;
    let name = string(object, "name")
        .map_err(|why| bad("name", why))?
        .unwrap_or("default")
        .to_owned();
    if object.get("containers").is_some_and(|c| !c.is_null()) {
        return Err(bad(
            "containers",
            "plugins that Mesos launches itself are not supported: run the plugin as a service of its own and list its sockets under endpoints ([{\"csi_service\": \"NODE_SERVICE\", \"endpoint\": \"unix:///path/to/csi.sock\"}])",
        ));
    }
    let mut node_socket = None;
    let mut controller_socket = None;
    let endpoints = match object.get("endpoints") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(e)) => e,
        Some(_) => return Err(bad("endpoints", "must be a list of endpoints")),
    };
    for (i, endpoint) in endpoints.iter().enumerate() {
        let at = |f: &str| format!("endpoints[{i}]{f}");
        let e = endpoint.as_object().ok_or_else(|| {
            bad(
                &at(""),
                "must be an object {\"csi_service\": …, \"endpoint\": …}",
            )
        })?;
        if let Some(unknown) = e.keys().find(|k| *k != "csi_service" && *k != "endpoint") {
            return Err(bad(
                &at(&format!(".{unknown}")),
                "unknown field; an endpoint has csi_service and endpoint",
            ));
        }
        // Protobuf's JSON form allows an enum's number as well as its name.
        let slot = match e.get("csi_service") {
            Some(Value::String(s)) if s == "NODE_SERVICE" => &mut node_socket,
            Some(Value::String(s)) if s == "CONTROLLER_SERVICE" => &mut controller_socket,
            Some(Value::Number(n)) if n.as_u64() == Some(2) => &mut node_socket,
            Some(Value::Number(n)) if n.as_u64() == Some(1) => &mut controller_socket,
            _ => {
                return Err(bad(
                    &at(".csi_service"),
                    "must be NODE_SERVICE or CONTROLLER_SERVICE",
                ))
            }
        };
        if slot.is_some() {
            return Err(bad(
                &at(".csi_service"),
                "this service is listed twice; list each service once",
            ));
        }
        let endpoint = e
            .get("endpoint")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&at(".endpoint"), "missing; give unix:///path/to/csi.sock"))?;
        *slot = Some(socket_path(endpoint).map_err(|why| bad(&at(".endpoint"), &why))?);
    }
    let node_socket = node_socket.ok_or_else(|| {
        bad(
            "endpoints",
            "no NODE_SERVICE endpoint; every plugin needs one (add {\"csi_service\": \"NODE_SERVICE\", \"endpoint\": \"unix:///path/to/csi.sock\"})",
        )
    })?;
    let target_path_root = string(object, "target_path_root")
        .map_err(|why| bad("target_path_root", why))?
        .map(|root| {
            let p = PathBuf::from(root);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(bad("target_path_root", "must be an absolute path"))
            }
        })
        .transpose()?;
    let target_path_exists = match object.get("target_path_exists") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("target_path_exists", "must be true or false")),
    };
    Ok(PluginInfo {
        file: file.to_owned(),
        plugin_type,
        name,
        node_socket,
        controller_socket,
        target_path_root,
        target_path_exists,
    })
}

/// A string field, `None` when absent or null.
fn string<'a>(object: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, &'static str> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(Value::String(_)) => Err("is empty"),
        Some(_) => Err("must be a string"),
    }
}

/// The socket path of an endpoint: `unix:///abs/path`, `unix:/abs/path` or `/abs/path`.
fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if endpoint.contains("://") && !endpoint.starts_with("unix://") {
        return Err(format!(
            "{endpoint:?}: only unix sockets are supported; give unix:///path/to/csi.sock"
        ));
    }
    if !path.starts_with('/') || path.contains('\0') {
        return Err(format!(
            "{endpoint:?} is not a unix socket's absolute path; give unix:///path/to/csi.sock"
        ));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(text: &str) -> Result<PluginInfo, PluginConfigError> {
        parse(
            Path::new("/etc/csi/p.json"),
            &serde_json::from_str(text).unwrap(),
        )
    }

    #[test]
    fn reads_mesos_unmanaged_plugin_configuration() {
        let p = parse_json(
            r#"{"type": "hostpath.csi.k8s.io",
                "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "unix:///run/h.sock"},
                              {"csi_service": "CONTROLLER_SERVICE", "endpoint": "/run/c.sock"}],
                "target_path_root": "/mnt/t", "target_path_exists": true}"#,
        )
        .unwrap();
        assert_eq!(p.plugin_type.as_str(), "hostpath.csi.k8s.io");
        assert_eq!(p.name, "default");
        assert_eq!(p.node_socket, Path::new("/run/h.sock"));
        assert_eq!(
            p.controller_socket.as_deref(),
            Some(Path::new("/run/c.sock"))
        );
        assert_eq!(p.target_path_root.as_deref(), Some(Path::new("/mnt/t")));
        assert!(p.target_path_exists);
    }

    #[test]
    fn names_the_field_at_fault_and_what_to_write() {
        let cases = [
            (r#"[]"#, "(file)", "one JSON object"),
            (r#"{"endpoints": []}"#, "type", "missing"),
            (r#"{"type": "a", "tpye": 1}"#, "tpye", "unknown field"),
            (r#"{"type": "a"}"#, "endpoints", "no NODE_SERVICE"),
            (
                r#"{"type": "a", "containers": [{"services": ["NODE_SERVICE"]}]}"#,
                "containers",
                "run the plugin",
            ),
            (
                r#"{"type": "a", "endpoints": [{"csi_service": "NODE", "endpoint": "/s"}]}"#,
                "endpoints[0].csi_service",
                "NODE_SERVICE or CONTROLLER_SERVICE",
            ),
            (
                r#"{"type": "a", "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "tcp://h:1"}]}"#,
                "endpoints[0].endpoint",
                "only unix sockets",
            ),
            (
                r#"{"type": "a", "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "s.sock"}]}"#,
                "endpoints[0].endpoint",
                "absolute path",
            ),
            (
                r#"{"type": "a", "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "/a"},
                                               {"csi_service": 2, "endpoint": "/b"}]}"#,
                "endpoints[1].csi_service",
                "listed twice",
            ),
            (
                r#"{"type": "a", "target_path_root": "rel", "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "/a"}]}"#,
                "target_path_root",
                "absolute",
            ),
            (
                r#"{"type": "a", "target_path_exists": "yes", "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "/a"}]}"#,
                "target_path_exists",
                "true or false",
            ),
        ];
        for (text, field, why) in cases {
            let e = parse_json(text).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("/etc/csi/p.json"), "{text}: {msg}");
            assert!(msg.contains(&format!("field {field}:")), "{text}: {msg}");
            assert!(msg.contains(why), "{text}: {msg}");
        }
        let e = parse_json(r#"{"type": "a/b"}"#).unwrap_err();
        assert!(e.to_string().contains("field type"), "{e}");
    }

    #[test]
    fn a_directory_with_two_files_of_one_type_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let body =
            r#"{"type": "t", "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "/s"}]}"#;
        fs::write(dir.path().join("a.json"), body).unwrap();
        fs::write(dir.path().join(".a.json.swp"), "not json").unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().len(), 1);
        fs::write(dir.path().join("b.json"), body).unwrap();
        let msg = load_dir(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("a.json") && msg.contains("b.json"), "{msg}");
    }
}
