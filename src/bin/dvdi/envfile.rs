//! `--env-file`: NAME=VALUE lines, or a Marathon app definition.
//!
//! From a Marathon app: its `env` object, and each `container.volumes[]` entry whose
//! `external.provider` is `dvdi`, mapped the way Marathon's DVDIProvider hands it to the Mesos
//! containerizer: a `DOCKER_VOLUME` with driver `external.options["dvdi/driver"]` (required),
//! name `external.name`, every other `dvdi/*` option as a driver option without its prefix and
//! with its value trimmed, `external.size` as the option `size` (it wins over `dvdi/size`, as in
//! Marathon), `containerPath` and `mode`. A JSON object has no order, so the options come out in key
//! order (Marathon's own map keeps none either). An external volume of another provider is not
//! this module's to mount: it is left out with a warning naming the provider.

use std::path::{Path, PathBuf};

use mesos_dvdi::spec::DockerVolumeInput;
use serde_json::Value;

/// What a task would ask for.
#[derive(Debug, Default)]
pub struct TaskInput {
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// External volumes.
    pub docker_volumes: Vec<DockerVolumeInput>,
    /// What was read but is not acted on (an external volume of another provider), said.
    pub warnings: Vec<String>,
}

/// An env file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// The file could not be read.
    #[error("reading {path} failed")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is neither UTF-8 lines nor JSON.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// A line without `=`.
    #[error("{path}:{line}: expected NAME=VALUE, found {text:?}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
    /// Not valid JSON.
    #[error("{path} starts like JSON but is not a valid Marathon app definition")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A field of the Marathon app with the wrong shape.
    #[error("{path}: {field} {problem}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `env.SECRET` or `container.volumes[2].external.name`.
        field: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Reads an env file of either form (a file whose first non-blank character is `{` is JSON).
pub fn read(path: &Path) -> Result<TaskInput, EnvFileError> {
    let bytes = std::fs::read(path).map_err(|source| EnvFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| EnvFileError::NotText {
        path: path.to_owned(),
    })?;
    if text.trim_start().starts_with('{') {
        marathon(path, &text)
    } else {
        lines(path, &text)
    }
}

fn lines(path: &Path, text: &str) -> Result<TaskInput, EnvFileError> {
    let mut input = TaskInput::default();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (k, v) = trimmed
            .split_once('=')
            .ok_or_else(|| EnvFileError::BadLine {
                path: path.to_owned(),
                line: i + 1,
                text: line.to_owned(),
            })?;
        input.env.push((k.to_owned(), v.to_owned()));
    }
    Ok(input)
}

fn marathon(path: &Path, text: &str) -> Result<TaskInput, EnvFileError> {
    let app: Value = serde_json::from_str(text).map_err(|source| EnvFileError::Json {
        path: path.to_owned(),
        source,
    })?;
    let field = |field: String, problem: &'static str| EnvFileError::Field {
        path: path.to_owned(),
        field,
        problem,
    };
    let mut input = TaskInput::default();
    match app.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(env)) => {
            for (k, v) in env {
                let v = v.as_str().ok_or_else(|| {
                    field(
                        format!("env.{k}"),
                        "is not a string (secret references cannot be resolved here)",
                    )
                })?;
                input.env.push((k.clone(), v.to_owned()));
            }
        }
        Some(_) => return Err(field("env".into(), "is not an object")),
    }
    let volumes = app.pointer("/container/volumes").unwrap_or(&Value::Null);
    let volumes = match volumes {
        Value::Null => &[][..],
        Value::Array(v) => v.as_slice(),
        _ => return Err(field("container.volumes".into(), "is not an array")),
    };
    for (i, vol) in volumes.iter().enumerate() {
        let Some(external) = vol.get("external") else {
            continue;
        };
        let place = |f: &str| format!("container.volumes[{i}].{f}");
        match external.get("provider").and_then(Value::as_str) {
            Some("dvdi") => {}
            // Another provider's volume (Marathon has others) is not ours to mount; a task
            // author who meant dvdi's must hear that it will not be mounted.
            provider => {
                let name = external.get("name").and_then(Value::as_str).unwrap_or("?");
                let provider = provider.map_or_else(|| "none".to_owned(), |p| format!("{p:?}"));
                input.warnings.push(format!(
                    "{}: external volume {name:?} has provider {provider}, not \"dvdi\": ignored (only provider dvdi volumes are mounted by this module)",
                    place("external.provider")
                ));
                continue;
            }
        }
        let str_field = |v: &Value, f: &str| -> Result<String, EnvFileError> {
            v.get(f)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| field(place(f), "is missing or not a string"))
        };
        let name = str_field(external, "name")
            .map_err(|_| field(place("external.name"), "is missing or not a string"))?;
        let container_path = str_field(vol, "containerPath")?;
        let read_only = match vol.get("mode").and_then(Value::as_str) {
            None | Some("RW") => false,
            Some("RO") => true,
            Some(_) => return Err(field(place("mode"), "is neither RW nor RO")),
        };
        let mut driver = String::new();
        let mut driver_options: Vec<(String, String)> = Vec::new();
        if let Some(options) = external.get("options") {
            let options = options
                .as_object()
                .ok_or_else(|| field(place("external.options"), "is not an object"))?;
            for (k, v) in options {
                let v = v
                    .as_str()
                    .ok_or_else(|| {
                        field(place(&format!("external.options.{k}")), "is not a string")
                    })?
                    .trim();
                match k.strip_prefix("dvdi/") {
                    Some("driver") => driver = v.to_owned(),
                    Some(opt) => driver_options.push((opt.to_owned(), v.to_owned())),
                    // Options of other providers are not ours.
                    None => {}
                }
            }
        }
        if driver.is_empty() {
            return Err(field(
                place("external.options[\"dvdi/driver\"]"),
                "is missing; Marathon requires it for dvdi volumes (e.g. \"rexray\")",
            ));
        }
        // external.size wins over dvdi/size, as in Marathon.
        match external.get("size") {
            None | Some(Value::Null) => {}
            Some(size) => {
                let size = size
                    .as_u64()
                    .ok_or_else(|| field(place("external.size"), "is not a whole number of GiB"))?;
                driver_options.retain(|(k, _)| k != "size");
                driver_options.push(("size".to_owned(), size.to_string()));
            }
        }
        input.docker_volumes.push(DockerVolumeInput {
            driver,
            name,
            driver_options,
            container_path,
            read_only,
        });
    }
    Ok(input)
}
