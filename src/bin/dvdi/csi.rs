//! `dvdi plugins`, CSI part: the configured CSI plugins, each asked about itself.

use mesos_dvdi::backend::csi::identify_plugin;
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
