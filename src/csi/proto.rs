//! The CSI v1 messages this client sends and reads (package `csi.v1`), written as prost derives.
//!
//! Only what the client uses is here: fields a plugin may send that are not listed are skipped by
//! the decoder, as protobuf allows. Field numbers and enum values are the CSI specification's;
//! a change to one breaks the wire format, so each is spelt out next to its field.
//!
//! Fields marked secret in the specification (`secrets`) are never logged or written to a record
//! by the callers of this module; `Debug` is derived for tests and errors only on messages that
//! hold none.

use std::collections::BTreeMap;

/// `google.protobuf.BoolValue`: a `bool` that can be absent.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct BoolValue {
    /// The value.
    #[prost(bool, tag = "1")]
    pub value: bool,
}

/// Identity: `GetPluginInfo` request (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginInfoRequest {}

/// Identity: `GetPluginInfo` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginInfoResponse {
    /// The plugin's name, in domain notation (required).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its version, opaque (required).
    #[prost(string, tag = "2")]
    pub vendor_version: String,
    /// Anything else it says about itself.
    #[prost(btree_map = "string, string", tag = "3")]
    pub manifest: BTreeMap<String, String>,
}

/// Identity: `GetPluginCapabilities` request (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginCapabilitiesRequest {}

/// Identity: `GetPluginCapabilities` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginCapabilitiesResponse {
    /// What the plugin offers.
    #[prost(message, repeated, tag = "1")]
    pub capabilities: Vec<PluginCapability>,
}

/// One capability of the plugin as a whole.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginCapability {
    /// Which kind.
    #[prost(oneof = "plugin_capability::Type", tags = "1")]
    pub r#type: Option<plugin_capability::Type>,
}

/// The parts of [`PluginCapability`].
pub mod plugin_capability {
    /// A service the plugin provides.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Service {
        /// Which service ([`ServiceType`]).
        #[prost(enumeration = "ServiceType", tag = "1")]
        pub r#type: i32,
    }

    /// `PluginCapability.Service.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ServiceType {
        /// Not set.
        Unknown = 0,
        /// The plugin has a Controller service.
        ControllerService = 1,
        /// Its volumes are not reachable from every node alike.
        VolumeAccessibilityConstraints = 2,
        /// The plugin has a GroupController service.
        GroupControllerService = 3,
    }

    /// `PluginCapability.type`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Oneof)]
    pub enum Type {
        /// A service.
        #[prost(message, tag = "1")]
        Service(Service),
    }
}

/// Identity: `Probe` request (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProbeRequest {}

/// Identity: `Probe` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProbeResponse {
    /// Whether the plugin is ready; absent means ready.
    #[prost(message, optional, tag = "1")]
    pub ready: Option<BoolValue>,
}

/// How a volume is to be used: as a file system, with an access mode.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct VolumeCapability {
    /// Block device or file system; this client asks for a file system.
    #[prost(oneof = "volume_capability::AccessType", tags = "1, 2")]
    pub access_type: Option<volume_capability::AccessType>,
    /// Who may read and write it (required).
    #[prost(message, optional, tag = "3")]
    pub access_mode: Option<volume_capability::AccessMode>,
}

/// The parts of [`VolumeCapability`].
pub mod volume_capability {
    /// Access as a raw block device (empty).
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct BlockVolume {}

    /// Access through a mounted file system.
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct MountVolume {
        /// The file system type; empty means the plugin's choice.
        #[prost(string, tag = "1")]
        pub fs_type: String,
        /// Mount options.
        #[prost(string, repeated, tag = "2")]
        pub mount_flags: Vec<String>,
    }

    /// `VolumeCapability.access_type`.
    #[derive(Clone, PartialEq, Eq, prost::Oneof)]
    pub enum AccessType {
        /// A block device.
        #[prost(message, tag = "1")]
        Block(BlockVolume),
        /// A file system.
        #[prost(message, tag = "2")]
        Mount(MountVolume),
    }

    /// An access mode.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct AccessMode {
        /// Which ([`Mode`]).
        #[prost(enumeration = "Mode", tag = "1")]
        pub mode: i32,
    }

    /// `VolumeCapability.AccessMode.Mode`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Mode {
        /// Not set.
        Unknown = 0,
        /// Read-write, published once on one node.
        SingleNodeWriter = 1,
        /// Read-only, published once on one node.
        SingleNodeReaderOnly = 2,
        /// Read-only on many nodes.
        MultiNodeReaderOnly = 3,
        /// Many nodes, one of them writing.
        MultiNodeSingleWriter = 4,
        /// Many nodes, all writing.
        MultiNodeMultiWriter = 5,
        /// One node, one writer (CSI 1.5).
        SingleNodeSingleWriter = 6,
        /// One node, published there many times read-write (CSI 1.5).
        SingleNodeMultiWriter = 7,
    }
}

/// A size range in bytes; 0 means unspecified.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct CapacityRange {
    /// At least this many bytes.
    #[prost(int64, tag = "1")]
    pub required_bytes: i64,
    /// At most this many bytes.
    #[prost(int64, tag = "2")]
    pub limit_bytes: i64,
}

/// A provisioned volume as the controller describes it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Volume {
    /// Its size in bytes; 0 when unknown.
    #[prost(int64, tag = "1")]
    pub capacity_bytes: i64,
    /// Its id, used in every later call (required).
    #[prost(string, tag = "2")]
    pub volume_id: String,
    /// Opaque properties passed back in publish and stage calls.
    #[prost(btree_map = "string, string", tag = "3")]
    pub volume_context: BTreeMap<String, String>,
}

/// Controller: `CreateVolume` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateVolumeRequest {
    /// The name; the same name gives the same volume (required).
    #[prost(string, tag = "1")]
    pub name: String,
    /// The size wanted.
    #[prost(message, optional, tag = "2")]
    pub capacity_range: Option<CapacityRange>,
    /// How it will be used (required).
    #[prost(message, repeated, tag = "3")]
    pub volume_capabilities: Vec<VolumeCapability>,
    /// Plugin-specific parameters.
    #[prost(btree_map = "string, string", tag = "4")]
    pub parameters: BTreeMap<String, String>,
    /// Secrets (never logged).
    #[prost(btree_map = "string, string", tag = "5")]
    pub secrets: BTreeMap<String, String>,
}

/// Controller: `CreateVolume` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateVolumeResponse {
    /// The volume (required).
    #[prost(message, optional, tag = "1")]
    pub volume: Option<Volume>,
}

/// Controller: `DeleteVolume` request (the test plugin serves it; this client never sends it).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// Secrets (never logged).
    #[prost(btree_map = "string, string", tag = "2")]
    pub secrets: BTreeMap<String, String>,
}

/// Controller: `DeleteVolume` answer (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteVolumeResponse {}

/// Controller: `ControllerPublishVolume` request (attach to a node).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerPublishVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// The node, as its `NodeGetInfo` named it.
    #[prost(string, tag = "2")]
    pub node_id: String,
    /// How it will be used.
    #[prost(message, optional, tag = "3")]
    pub volume_capability: Option<VolumeCapability>,
    /// Attach read-only.
    #[prost(bool, tag = "4")]
    pub readonly: bool,
    /// Secrets (never logged).
    #[prost(btree_map = "string, string", tag = "5")]
    pub secrets: BTreeMap<String, String>,
    /// The volume's context from `CreateVolume`.
    #[prost(btree_map = "string, string", tag = "6")]
    pub volume_context: BTreeMap<String, String>,
}

/// Controller: `ControllerPublishVolume` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerPublishVolumeResponse {
    /// Passed to the node's stage and publish calls.
    #[prost(btree_map = "string, string", tag = "1")]
    pub publish_context: BTreeMap<String, String>,
}

/// Controller: `ControllerUnpublishVolume` request (detach from a node).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerUnpublishVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// The node.
    #[prost(string, tag = "2")]
    pub node_id: String,
    /// Secrets (never logged).
    #[prost(btree_map = "string, string", tag = "3")]
    pub secrets: BTreeMap<String, String>,
}

/// Controller: `ControllerUnpublishVolume` answer (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerUnpublishVolumeResponse {}

/// Controller: `ControllerGetCapabilities` request (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerGetCapabilitiesRequest {}

/// Controller: `ControllerGetCapabilities` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerGetCapabilitiesResponse {
    /// What the controller offers.
    #[prost(message, repeated, tag = "1")]
    pub capabilities: Vec<ControllerServiceCapability>,
}

/// One capability of the Controller service.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ControllerServiceCapability {
    /// An RPC it offers.
    #[prost(oneof = "controller_service_capability::Type", tags = "1")]
    pub r#type: Option<controller_service_capability::Type>,
}

/// The parts of [`ControllerServiceCapability`].
pub mod controller_service_capability {
    /// An RPC the controller offers.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Rpc {
        /// Which ([`RpcType`]).
        #[prost(enumeration = "RpcType", tag = "1")]
        pub r#type: i32,
    }

    /// `ControllerServiceCapability.RPC.Type` (the values this client reads, and the common rest).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum RpcType {
        /// Not set.
        Unknown = 0,
        /// `CreateVolume` and `DeleteVolume`.
        CreateDeleteVolume = 1,
        /// `ControllerPublishVolume` and `ControllerUnpublishVolume`.
        PublishUnpublishVolume = 2,
        /// `ListVolumes`.
        ListVolumes = 3,
        /// `GetCapacity`.
        GetCapacity = 4,
        /// Snapshots.
        CreateDeleteSnapshot = 5,
        /// `ListSnapshots`.
        ListSnapshots = 6,
        /// Cloning.
        CloneVolume = 7,
        /// Read-only attachment.
        PublishReadonly = 8,
        /// Expansion.
        ExpandVolume = 9,
        /// `ListVolumes` names the nodes.
        ListVolumesPublishedNodes = 10,
        /// Volume health.
        VolumeCondition = 11,
        /// `ControllerGetVolume`.
        GetVolume = 12,
        /// The `SINGLE_NODE_*_WRITER` access modes.
        SingleNodeMultiWriter = 13,
        /// `ControllerModifyVolume`.
        ModifyVolume = 14,
    }

    /// `ControllerServiceCapability.type`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Oneof)]
    pub enum Type {
        /// An RPC.
        #[prost(message, tag = "1")]
        Rpc(Rpc),
    }
}

/// Node: `NodeStageVolume` request (mount once on this node, at a staging path).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeStageVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// From `ControllerPublishVolume`.
    #[prost(btree_map = "string, string", tag = "2")]
    pub publish_context: BTreeMap<String, String>,
    /// The staging directory, made by the caller.
    #[prost(string, tag = "3")]
    pub staging_target_path: String,
    /// How it will be used.
    #[prost(message, optional, tag = "4")]
    pub volume_capability: Option<VolumeCapability>,
    /// Secrets (never logged).
    #[prost(btree_map = "string, string", tag = "5")]
    pub secrets: BTreeMap<String, String>,
    /// The volume's context.
    #[prost(btree_map = "string, string", tag = "6")]
    pub volume_context: BTreeMap<String, String>,
}

/// Node: `NodeStageVolume` answer (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeStageVolumeResponse {}

/// Node: `NodeUnstageVolume` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnstageVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// The staging directory it was staged at.
    #[prost(string, tag = "2")]
    pub staging_target_path: String,
}

/// Node: `NodeUnstageVolume` answer (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnstageVolumeResponse {}

/// Node: `NodePublishVolume` request (make the volume appear at a target path).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodePublishVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// From `ControllerPublishVolume`.
    #[prost(btree_map = "string, string", tag = "2")]
    pub publish_context: BTreeMap<String, String>,
    /// The staging directory, when the node stages.
    #[prost(string, tag = "3")]
    pub staging_target_path: String,
    /// Where the volume is to appear; its parent exists.
    #[prost(string, tag = "4")]
    pub target_path: String,
    /// How it will be used.
    #[prost(message, optional, tag = "5")]
    pub volume_capability: Option<VolumeCapability>,
    /// Publish read-only.
    #[prost(bool, tag = "6")]
    pub readonly: bool,
    /// Secrets (never logged).
    #[prost(btree_map = "string, string", tag = "7")]
    pub secrets: BTreeMap<String, String>,
    /// The volume's context.
    #[prost(btree_map = "string, string", tag = "8")]
    pub volume_context: BTreeMap<String, String>,
}

/// Node: `NodePublishVolume` answer (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodePublishVolumeResponse {}

/// Node: `NodeUnpublishVolume` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnpublishVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// The target it was published at.
    #[prost(string, tag = "2")]
    pub target_path: String,
}

/// Node: `NodeUnpublishVolume` answer (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnpublishVolumeResponse {}

/// Node: `NodeGetCapabilities` request (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetCapabilitiesRequest {}

/// Node: `NodeGetCapabilities` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetCapabilitiesResponse {
    /// What the node service offers.
    #[prost(message, repeated, tag = "1")]
    pub capabilities: Vec<NodeServiceCapability>,
}

/// One capability of the Node service.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct NodeServiceCapability {
    /// An RPC it offers.
    #[prost(oneof = "node_service_capability::Type", tags = "1")]
    pub r#type: Option<node_service_capability::Type>,
}

/// The parts of [`NodeServiceCapability`].
pub mod node_service_capability {
    /// An RPC the node service offers.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Rpc {
        /// Which ([`RpcType`]).
        #[prost(enumeration = "RpcType", tag = "1")]
        pub r#type: i32,
    }

    /// `NodeServiceCapability.RPC.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum RpcType {
        /// Not set.
        Unknown = 0,
        /// `NodeStageVolume` and `NodeUnstageVolume`.
        StageUnstageVolume = 1,
        /// `NodeGetVolumeStats`.
        GetVolumeStats = 2,
        /// `NodeExpandVolume`.
        ExpandVolume = 3,
        /// Volume health.
        VolumeCondition = 4,
        /// The `SINGLE_NODE_*_WRITER` access modes.
        SingleNodeMultiWriter = 5,
        /// `volume_mount_group`.
        VolumeMountGroup = 6,
    }

    /// `NodeServiceCapability.type`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Oneof)]
    pub enum Type {
        /// An RPC.
        #[prost(message, tag = "1")]
        Rpc(Rpc),
    }
}

/// Node: `NodeGetInfo` request (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetInfoRequest {}

/// Node: `NodeGetInfo` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetInfoResponse {
    /// This node's id, as the controller knows it (required).
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// How many volumes the node takes; 0 means no limit.
    #[prost(int64, tag = "2")]
    pub max_volumes_per_node: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Bytes written by hand from the specification's field numbers and wire types, so a wrong
    /// tag in a derive above fails here rather than against a plugin.
    #[test]
    fn node_publish_request_uses_the_specification_field_numbers() {
        let req = NodePublishVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: "s".into(),
            target_path: "t".into(),
            readonly: true,
            ..Default::default()
        };
        // 1:"v" 3:"s" 4:"t" 6:true
        assert_eq!(
            req.encode_to_vec(),
            [0x0a, 1, b'v', 0x1a, 1, b's', 0x22, 1, b't', 0x30, 1]
        );
    }

    #[test]
    fn capabilities_decode_from_the_specification_encoding() {
        // GetPluginCapabilitiesResponse{ capabilities: [ { service: { type: CONTROLLER_SERVICE } } ] }
        let bytes = [0x0a, 4, 0x0a, 2, 0x08, 1];
        let caps = GetPluginCapabilitiesResponse::decode(&bytes[..]).unwrap();
        assert_eq!(
            caps.capabilities[0].r#type,
            Some(plugin_capability::Type::Service(
                plugin_capability::Service {
                    r#type: plugin_capability::ServiceType::ControllerService as i32
                }
            ))
        );
        // NodeGetInfoResponse{ node_id: "n", max_volumes_per_node: 3 }
        let info = NodeGetInfoResponse::decode(&[0x0a, 1, b'n', 0x10, 3][..]).unwrap();
        assert_eq!((info.node_id.as_str(), info.max_volumes_per_node), ("n", 3));
        // VolumeCapability{ mount: { fs_type: "x" }, access_mode: { mode: SINGLE_NODE_WRITER } }
        let cap = VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(
                volume_capability::MountVolume {
                    fs_type: "x".into(),
                    mount_flags: vec![],
                },
            )),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::Mode::SingleNodeWriter as i32,
            }),
        };
        assert_eq!(
            cap.encode_to_vec(),
            [0x12, 3, 0x0a, 1, b'x', 0x1a, 2, 0x08, 1]
        );
    }
}
