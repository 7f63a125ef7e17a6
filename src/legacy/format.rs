//! The original module's checkpoint formats, decoded (no I/O here).
//!
//! Read from the original's source (`thecodeteam/mesos-module-dvdi`, `isolator/isolator/`):
//!
//! - From 0.3.0 on, the mount list is the protobuf `ExternalMountList` of its `interface.proto`,
//!   written with Mesos' `slave::state::checkpoint(path, message)`, which is stout's
//!   `protobuf::write`: the message's size as a `uint32_t` in the host's byte order, then the
//!   serialized message (into a temp file renamed over the old one: one record per file). The
//!   original read it back with `ParseFromIstream`, size and all, which fails on its own files;
//!   here the size is read as stout's `protobuf::read` reads it. A file holding several records is
//!   read as their concatenation (what protobuf merging of a repeated field gives).
//! - 0.1.0 and 0.2.0 wrote JSON by hand, with no escaping: `{"mounts": [{"containerid": …,
//!   "volumedriver": …, "volumename": …, "mountoptions": …, "mountpoint": …}]}`.
//!
//! Options (`options`, `mountoptions`) are the task's `DVDI_VOLUME_OPTS` as given: `key=value`
//! items separated by `,`, each passed to dvdcli as one `--volumeopts=` (empty items skipped).

use serde::Deserialize;

/// One mount of the original's `interface.proto` (package `emccode.isolator.mount`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExternalMount {
    /// The container's id (`ContainerID.value`).
    #[prost(string, required, tag = "1")]
    pub containerid: String,
    /// The volume's driver.
    #[prost(string, required, tag = "2")]
    pub volumedriver: String,
    /// The volume's name.
    #[prost(string, required, tag = "3")]
    pub volumename: String,
    /// The host mount point dvdcli answered.
    #[prost(string, optional, tag = "4")]
    pub mountpoint: Option<String>,
    /// The task's options, `key=value,key=value`.
    #[prost(string, optional, tag = "5")]
    pub options: Option<String>,
    /// Where the task saw the volume, inside the container.
    #[prost(string, optional, tag = "6")]
    pub container_path: Option<String>,
}

/// The original's whole checkpoint: one of these per record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExternalMountList {
    /// The mounts, one per container using a volume.
    #[prost(message, repeated, tag = "1")]
    pub mount: Vec<ExternalMount>,
}

/// Why a legacy checkpoint's bytes are not a mount list.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file ends inside a record's size.
    #[error("the file ends inside the size of the record at byte {offset} ({left} byte(s) left; a size takes 4)")]
    TruncatedSize {
        /// Where the record starts.
        offset: usize,
        /// Bytes left in the file.
        left: usize,
    },
    /// A record's size runs past the end of the file.
    #[error("the record at byte {offset} claims {size} bytes but only {left} follow (truncated, or not a protobuf checkpoint)")]
    TruncatedRecord {
        /// Where the record starts.
        offset: usize,
        /// Its size.
        size: usize,
        /// Bytes left after the size.
        left: usize,
    },
    /// A record is not an `ExternalMountList`.
    #[error("the record at byte {offset} is not an ExternalMountList")]
    Protobuf {
        /// Where the record starts.
        offset: usize,
        /// Why.
        #[source]
        source: prost::DecodeError,
    },
    /// The JSON form does not parse.
    #[error("not the JSON mount list {{\"mounts\": [...]}}")]
    Json(#[source] serde_json::Error),
}

/// The original's protobuf checkpoint: size-prefixed `ExternalMountList` records, their mounts in
/// order. An empty file has none.
pub fn decode_protobuf(bytes: &[u8]) -> Result<Vec<ExternalMount>, FormatError> {
    use prost::Message;
    let mut mounts = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some((size, body)) = rest.split_first_chunk::<4>() else {
            return Err(FormatError::TruncatedSize {
                offset,
                left: rest.len(),
            });
        };
        // usize holds any u32 on the 32- and 64-bit targets Mesos runs on.
        let size = u32::from_ne_bytes(*size) as usize;
        let Some(record) = body.get(..size) else {
            return Err(FormatError::TruncatedRecord {
                offset,
                size,
                left: body.len(),
            });
        };
        let list = ExternalMountList::decode(record)
            .map_err(|source| FormatError::Protobuf { offset, source })?;
        mounts.extend(list.mount);
        offset += 4 + size;
    }
    Ok(mounts)
}

/// The JSON form's file.
#[derive(Deserialize)]
struct JsonList {
    mounts: Vec<JsonMount>,
}

/// One mount of the JSON form (0.1.0 and 0.2.0 wrote every field; `options` is accepted as
/// another spelling of `mountoptions`, the protobuf's name for it).
#[derive(Deserialize)]
struct JsonMount {
    containerid: String,
    volumedriver: String,
    volumename: String,
    #[serde(default, alias = "options")]
    mountoptions: Option<String>,
    #[serde(default)]
    mountpoint: Option<String>,
    #[serde(default)]
    container_path: Option<String>,
}

/// The original's JSON checkpoint, as the protobuf form's mounts.
pub fn decode_json(bytes: &[u8]) -> Result<Vec<ExternalMount>, FormatError> {
    let list: JsonList = serde_json::from_slice(bytes).map_err(FormatError::Json)?;
    Ok(list
        .mounts
        .into_iter()
        .map(|m| ExternalMount {
            containerid: m.containerid,
            volumedriver: m.volumedriver,
            volumename: m.volumename,
            mountpoint: m.mountpoint,
            options: m.mountoptions,
            container_path: m.container_path,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record written out by hand from `interface.proto` (the oracle is the wire format, not
    /// this module's own encoder): mount { containerid "c1" volumedriver "rexray" volumename "pg"
    /// mountpoint "/m" }.
    #[test]
    fn decodes_a_record_laid_out_by_hand() {
        let mount: &[u8] = &[
            0x0a, 2, b'c', b'1', // 1: containerid
            0x12, 6, b'r', b'e', b'x', b'r', b'a', b'y', // 2: volumedriver
            0x1a, 2, b'p', b'g', // 3: volumename
            0x22, 2, b'/', b'm', // 4: mountpoint
        ];
        let mut list = vec![0x0a, u8::try_from(mount.len()).unwrap()];
        list.extend_from_slice(mount);
        let mut file = u32::try_from(list.len()).unwrap().to_ne_bytes().to_vec();
        file.extend_from_slice(&list);
        let mounts = decode_protobuf(&file).unwrap();
        assert_eq!(
            mounts,
            [ExternalMount {
                containerid: "c1".into(),
                volumedriver: "rexray".into(),
                volumename: "pg".into(),
                mountpoint: Some("/m".into()),
                options: None,
                container_path: None,
            }]
        );
    }

    #[test]
    fn an_empty_file_has_no_mounts() {
        assert!(decode_protobuf(&[]).unwrap().is_empty());
        assert!(decode_protobuf(&0u32.to_ne_bytes()).unwrap().is_empty());
    }

    #[test]
    fn a_short_size_is_truncated() {
        let e = decode_protobuf(&[1, 0]).unwrap_err();
        assert!(
            matches!(e, FormatError::TruncatedSize { offset: 0, left: 2 }),
            "{e}"
        );
    }
}
