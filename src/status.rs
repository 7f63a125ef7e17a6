//! What an operator sees: the mount table as `dvdi status` and `GET /dvdi/volumes` show it, and the
//! module's health (`GET /dvdi/health`). One rendering for the CLI and the agent's endpoints.
//!
//! Read-only: it reads records without their locks (a snapshot; records are replaced whole) and
//! legacy checkpoints, and changes nothing.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::backend::csi::read_record;
use crate::backend::csi::record::CsiRecord;
use crate::coord::CoordStatus;
use crate::error::render_chain;
use crate::state::{StateError, Store, VolumeRecord};

/// One line of the status: a record, or a file that cannot be read as one.
#[derive(Debug)]
pub struct StatusRow {
    /// The record file (or the legacy checkpoint).
    pub file: PathBuf,
    /// The record, or why the file cannot be read (rendered with its causes).
    pub record: Result<VolumeRecord, String>,
    /// For a CSI volume, its CSI record (volume id, staging and target paths, how far each step
    /// got), or why it cannot be read; `None` for other volumes and CSI volumes without one.
    pub csi: Option<Result<CsiRecord, String>>,
}

/// Every record under the store, then every legacy checkpoint of `legacy` that exists but cannot
/// be imported (a file the next recover would leave in place).
pub fn rows(store: &Store, legacy: &[PathBuf]) -> Result<Vec<StatusRow>, StateError> {
    let mut rows: Vec<StatusRow> = store
        .scan()?
        .into_iter()
        .map(|s| {
            let record = s.record.map_err(|e| render_chain(&e));
            let csi = record.as_ref().ok().and_then(|r| {
                read_record(store.work_dir(), &r.driver, &r.name)
                    .map_err(|e| render_chain(&e))
                    .transpose()
            });
            StatusRow {
                file: s.path,
                record,
                csi,
            }
        })
        .collect();
    rows.extend(legacy_rows(legacy));
    Ok(rows)
}

/// The legacy checkpoints of `legacy` that exist but cannot be imported, as rows (all of the
/// status when no store exists yet).
pub fn legacy_rows(legacy: &[PathBuf]) -> Vec<StatusRow> {
    crate::legacy::unreadable(legacy)
        .into_iter()
        .map(|(file, error)| StatusRow {
            file,
            record: Err(error),
            csi: None,
        })
        .collect()
}

/// The rows as `dvdi status --json` prints them (and `GET /dvdi/volumes` serves them): an array of
/// `{"file", "record", "error", "csi"}`, one of `record` and `error` null; `csi` is the CSI
/// record of a CSI volume (`{"error"}` when it cannot be read), else null.
pub fn to_json(rows: &[StatusRow]) -> String {
    let rows: Vec<Value> = rows
        .iter()
        .map(|s| {
            let csi = match &s.csi {
                None => Value::Null,
                Some(Ok(c)) => json!(c),
                Some(Err(e)) => json!({ "error": e }),
            };
            match &s.record {
                Ok(r) => json!({"file": s.file, "record": r, "error": null, "csi": csi}),
                Err(e) => json!({"file": s.file, "record": null, "error": e, "csi": csi}),
            }
        })
        .collect();
    serde_json::to_string_pretty(&rows).expect("rows serialise")
}

/// The status JSON of the store at `work_dir` with `legacy` checkpoints.
pub fn status_json(store: &Store, legacy: &[PathBuf]) -> Result<String, StateError> {
    rows(store, legacy).map(|r| to_json(&r))
}

/// The module's health, judged and rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Nothing needs an operator.
    pub ok: bool,
    /// The JSON: `{"ok", "unreadable", "failing", "recent_errors", "coordination"}`.
    pub json: String,
}

/// The module's health, judged on the state now so that it is ok again once the cause is gone:
/// not ok while a record or legacy checkpoint cannot be read (`unreadable`, `{"file", "error"}`)
/// or a volume's last backend call failed (`failing`, `{"driver", "name", "error"}`; a failed
/// unmount stays there until a retry succeeds). `recent_errors` lists the module's last problems
/// (recover, failed cleanups), for context: each lasting one also shows in the state. With
/// `coordination` (the coordinator's state, when leases are on), not ok either while it has no
/// ZooKeeper session: leased volumes are refused then.
pub fn health(
    rows: &[StatusRow],
    recent_errors: &[String],
    coordination: Option<&CoordStatus>,
) -> Health {
    let unreadable: Vec<Value> = rows
        .iter()
        .filter_map(|s| {
            s.record
                .as_ref()
                .err()
                .map(|e| json!({"file": s.file, "error": e}))
        })
        .collect();
    let failing: Vec<Value> = rows
        .iter()
        .filter_map(|s| s.record.as_ref().ok())
        .filter_map(|r| {
            r.last_error
                .as_ref()
                .map(|e| json!({"driver": r.driver, "name": r.name, "error": e}))
        })
        .collect();
    let ok =
        unreadable.is_empty() && failing.is_empty() && coordination.is_none_or(|c| c.connected);
    let json = serde_json::to_string_pretty(&json!({
        "ok": ok,
        "recent_errors": recent_errors,
        "unreadable": unreadable,
        "failing": failing,
        "coordination": coordination,
    }))
    .expect("health serialises");
    Health { ok, json }
}
