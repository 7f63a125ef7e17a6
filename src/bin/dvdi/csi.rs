//! The CSI parts of `dvdi plugins` (the configured CSI plugins, each asked about itself) and of
//! `dvdi status` (each CSI volume's id, paths and how far its steps got).

use mesos_dvdi::backend::csi::identify_plugin;
use mesos_dvdi::backend::csi::record::CsiRecord;
use mesos_dvdi::config::Config;
use mesos_dvdi::error::render_chain;

use super::table;

/// One JSON row per configured CSI plugin: type, file, endpoints, whether it answered and is
/// ready, its node id and capabilities, or the error.
pub fn rows(config: &Config, probe: std::time::Duration) -> Vec<serde_json::Value> {
    config
        .csi_plugins
        .iter()
        .map(|info| {
            let endpoints: Vec<String> =
                std::iter::once(format!("node=unix://{}", info.node_socket.display()))
                    .chain(
                        info.controller_socket
                            .iter()
                            .map(|s| format!("controller=unix://{}", s.display())),
                    )
                    .collect();
            let answer = identify_plugin(info, probe).map_err(|e| render_chain(&e));
            let state = answer.as_ref().ok();
            serde_json::json!({
                "name": info.plugin_type.as_str(),
                "kind": "csi",
                "file": info.file,
                "endpoints": endpoints,
                "ready": answer.is_ok(),
                "plugin_name": state.map(|s| &s.name),
                "vendor_version": state.map(|s| &s.vendor_version),
                "node_id": state.map(|s| &s.node_id),
                "capabilities": state.map(|s| {
                    s.plugin_capabilities
                        .iter()
                        .chain(&s.controller_capabilities)
                        .chain(&s.node_capabilities)
                        .cloned()
                        .collect::<Vec<_>>()
                }),
                "error": answer.err(),
            })
        })
        .collect()
}

/// The rows as a table.
pub fn render(rows: &[serde_json::Value]) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            [
                "name",
                "endpoints",
                "ready",
                "node_id",
                "capabilities",
                "error",
            ]
            .iter()
            .map(|k| text(&r[*k]))
            .collect()
        })
        .collect();
    table::render(
        &[
            "CSI TYPE",
            "ENDPOINTS",
            "READY",
            "NODE ID",
            "CAPABILITIES",
            "ERROR",
        ],
        &table_rows,
        table::stdout_width(),
    )
}

/// `dvdi status`'s CSI table: per CSI volume its id, each step with where it is
/// (`node_stage=done`, `node_publish=calling`, …), the staging and target paths. `None` without
/// CSI volumes.
pub fn status_section(rows: &[mesos_dvdi::status::StatusRow]) -> Option<String> {
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|s| {
            let name = s
                .record
                .as_ref()
                .ok()
                .map(|r| (r.driver.to_string(), r.name.to_string()));
            let (driver, volume) = name?;
            Some(match s.csi.as_ref()? {
                Ok(c) => vec![
                    driver,
                    volume,
                    c.volume_id.clone().unwrap_or_else(|| "-".to_owned()),
                    steps(c),
                    c.staging_path.display().to_string(),
                    c.target_path.display().to_string(),
                ],
                Err(e) => vec![
                    driver,
                    volume,
                    "?".to_owned(),
                    e.clone(),
                    "-".to_owned(),
                    "-".to_owned(),
                ],
            })
        })
        .collect();
    if table_rows.is_empty() {
        return None;
    }
    Some(table::render(
        &[
            "CSI TYPE",
            "NAME",
            "VOLUME ID",
            "STEPS",
            "STAGING",
            "TARGET",
        ],
        &table_rows,
        table::stdout_width(),
    ))
}

/// `create_volume=done,node_stage=done,node_publish=calling`: the steps in order, in the record's
/// own words; `none` before the first.
fn steps(record: &CsiRecord) -> String {
    let word = |v: serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let steps: Vec<String> = record
        .steps
        .iter()
        .map(|(step, state)| {
            format!(
                "{}={}",
                word(serde_json::json!(step)),
                word(serde_json::json!(state))
            )
        })
        .collect();
    if steps.is_empty() {
        "none".to_owned()
    } else {
        steps.join(",")
    }
}
